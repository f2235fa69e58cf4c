"""Print the fault matrix as a markdown table from the JSON lines ``make faults`` collects."""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def main(path: str) -> int:
    rows: dict[str, list[dict]] = defaultdict(list)
    for line in Path(path).read_text().splitlines():
        outcome = json.loads(line)
        rows[outcome["fault"]].append(outcome)
    baseline = statistics.fmean(o["seconds"] for o in rows.get("none (baseline)", [])) if "none (baseline)" in rows else None
    print("| fault | trials | faults landed | lost | duplicated | validated | mean time | overhead |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for fault, outcomes in rows.items():
        validated = sum(1 for o in outcomes if o["validated"] and o["final_exit"] == 0)
        mean = statistics.fmean(o["seconds"] for o in outcomes)
        overhead = f"{mean / baseline:.1f}x" if baseline else "n/a"
        landed = sum(o["interruptions"] for o in outcomes)
        # Validation compares every target document with its source id by id: a validated trial lost
        # nothing and has no extra (duplicated) document.
        lost = duplicated = "0" if validated == len(outcomes) else "see failures"
        print(f"| {fault} | {len(outcomes)} | {landed} | {lost} | {duplicated} | {validated}/{len(outcomes)} "
              f"| {mean:.1f}s | {overhead} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/faults.jsonl"))
