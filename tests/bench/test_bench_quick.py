"""Smoke test of the benchmark harness (``make bench``): its smallest pieces, end to end.

Runs ``python -m bench`` for scenarios 1 and 2 at 200 documents against its own emulator: the
three copiers as separate processes, then every target read back. Asserts that the harness
measured what the issue asks for, that every peer's target equals the source when nothing is
throttled (and asyncmig's also when it is), and that a peer that loses documents under 429s is
reported as failed rather than passed; never speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = 200


def test_quick_benchmark_measures_every_peer_and_verifies_every_target(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ASYNCMIG_BENCH_COSMOS"}  # always the local emulator
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--scenarios", "1,2", "--docs", str(DOCS),
         "--results", str(tmp_path), "--no-charts"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [path] = tmp_path.glob("bench-*-quick.json")
    report = json.loads(path.read_text())

    assert report["machine"]["versions"]["azure-cosmos"] and report["machine"]["load_average_at_start"] is not None
    assert report["parameters"]["quick"] is True and report["parameters"]["scenarios"] == [1, 2]
    s1, s2 = report["scenarios"]["1"], report["scenarios"]["2"]
    assert not s1.get("error") and not s2.get("error")
    assert s1["source"]["count"] == s2["source"]["count"] == DOCS

    assert set(s1["peers"]) == {"original", "sdk-gather", "asyncmig"}
    assert set(s2["peers"]) == {"sdk-gather", "asyncmig"}
    for scenario in (s1, s2):
        for peer, entry in scenario["peers"].items():
            check = entry["verification"]
            for figure in ("wall_s", "cpu_s", "peak_rss_mb", "documents_per_s", "documents_per_cpu_s",
                           "emulator_cores_busy"):
                assert entry[figure] and entry[figure] > 0, (peer, figure)
            assert entry["emulator"]["ru"] > 0
            # The verdict is the harness's own reading of the target, consistent with the copier's exit.
            assert check["equal_to_source"] == (check["target_count"] == DOCS
                                                and check["target_digest"] == scenario["source"]["digest"])
            assert entry["ok"] == (entry["returncode"] == 0 and check["equal_to_source"]), (peer, entry)
            if scenario is s1 or peer == "asyncmig":
                # Unthrottled, every copier must deliver; throttled, asyncmig must.
                assert entry["ok"] and check["equal_to_source"], (peer, check, entry.get("stderr_tail"))
                assert check["writes"] >= DOCS  # the emulator saw at least one write per document
            elif not check["equal_to_source"]:
                # sdk-gather under 429s can exhaust the SDK's 9 retries: then it must have said so.
                assert entry["returncode"] != 0 and entry["self_report"]["errors"] > 0, (peer, entry)
    for figure in ("asyncmig_speedup_vs_original_wall", "asyncmig_vs_sdk_gather_documents_per_cpu_s"):
        assert s1["ratios"][figure] > 0
    for peer, entry in s2["peers"].items():
        ru_bound = entry["ru_bound"]
        assert ru_bound["utilization"] > 0 and ru_bound["throttled_share"] is not None, peer
        assert ru_bound["theoretical_minimum_s"] > 0 and entry["timeline"], peer
    assert {t["target"] for t in report["targets"]} >= {"S1 wall time vs original", "S2 RU utilization"}
    assert all(t["measured"] is not None for t in report["targets"])
    assert "| asyncmig |" in report["markdown"]
