"""``python -m bench [--quick] [--scenarios 1,2,...]``: asyncmig against the approaches users would
otherwise take, side by side, on the same data and the same emulator (method: docs/benchmarks.md).

Writes ``bench/results/bench-<time>[-quick].json`` (machine, versions, parameters, every figure,
the targets met or missed), PNG charts beside it when matplotlib is installed, and prints markdown
tables at the end. With ``ASYNCMIG_BENCH_COSMOS`` set to a connection string the scenarios run
against that account instead of a local emulator (scenario 5, which measures the emulator, is then
skipped). Absolute times on a shared machine are noise: read the ratios.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import charts
from bench.measure import REPO, close_launcher, cpu_plan, load_average, machine_info
from bench.scenarios import PEERS, SCENARIOS, SDK_GATHER_CONCURRENCY, Context, Sizes, scenario_1

RESULTS = REPO / "bench" / "results"
ENV_EXTERNAL = "ASYNCMIG_BENCH_COSMOS"

# (id, scenario, requirement, how to read the measured figure, comparison, threshold)
TARGETS = (
    ("S1 wall time vs original", "1", "asyncmig >= 20x faster than original (wall time)",
     ("ratios", "asyncmig_speedup_vs_original_wall"), ">=", 20.0),
    ("S1 CPU efficiency vs sdk-gather", "1", "asyncmig >= 3x sdk-gather in documents per client-CPU-second",
     ("ratios", "asyncmig_vs_sdk_gather_documents_per_cpu_s"), ">=", 3.0),
    ("S1 CPU efficiency vs sdk-gather (bulk)", "1", "asyncmig >= 8x sdk-gather in documents per client-CPU-second",
     ("ratios", "asyncmig_vs_sdk_gather_documents_per_cpu_s"), ">=", 8.0),
    ("S1 documents per client CPU-second", "1", "asyncmig >= 5,000 vector documents per client CPU-second",
     ("peers", "asyncmig", "documents_per_cpu_s"), ">=", 5000.0),
    ("S7 CPU efficiency vs sdk-gather, unique keys", "7",
     "asyncmig >= 8x sdk-gather in documents per client-CPU-second on /id keys",
     ("ratios", "asyncmig_vs_sdk_gather_documents_per_cpu_s"), ">=", 8.0),
    ("S7 requests per 100 documents, unique keys", "7", "asyncmig <= 5 requests per 100 documents on /id keys",
     ("peers", "asyncmig", "write_requests_per_100_documents"), "<=", 5.0),
    ("S2 RU utilization", "2", "asyncmig utilization = RU / (budget x wall time) >= 0.95",
     ("peers", "asyncmig", "ru_bound", "utilization"), ">=", 0.95),
    ("S2 429 share", "2", "asyncmig 429s <= 5 % of requests",
     ("peers", "asyncmig", "ru_bound", "throttled_share"), "<=", 0.05),
    ("S3 memory flat", "3", "peak RSS at the large size within 10 % of the small size",
     ("ratios", "peak_rss_large_vs_small"), "<=", 1.10),
    ("S4 written twice", "4", "documents written twice <= 1 % of the total",
     ("resume", "written_twice_share"), "<=", 0.01),
    ("S6 budget held, 2 workers", "6", "server-metered RU/s over the write window within 5 % above the budget",
     ("runs", "2", "server", "budget_ratio"), "<=", 1.05),
    ("S6 429 share, 2 workers", "6", "429s <= 5 % of requests with 2 workers",
     ("runs", "2", "server", "throttled_share"), "<=", 0.05),
)


def _get(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def evaluate_targets(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, number, requirement, path, op, threshold in TARGETS:
        if number not in scenarios:
            continue
        value = _get(scenarios[number], path)
        met = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        out.append({"target": name, "scenario": int(number), "requirement": requirement,
                    "measured": value, "threshold": f"{op} {threshold}", "met": met})
    return out


# -- markdown ---------------------------------------------------------------------------------------
def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    parts: list[str] = []
    sc = report["scenarios"]
    mode = "quick" if report["parameters"]["quick"] else "full"
    parts.append(f"## asyncmig benchmark ({mode}), {report['started']}, load average "
                 f"{report['machine']['load_average_at_start']} -> {report.get('load_average_at_end')}")
    for number in ("1", "7", "8"):
        s1 = sc.get(number)
        if not (s1 and s1.get("peers")):
            continue
        rows = []
        for peer, e in s1["peers"].items():
            rows.append([peer, e["wall_s"], e["documents_per_s"], e["cpu_s"], e["documents_per_cpu_s"],
                         e["client_cpu_ms_per_document"], e.get("emulator_cpu_ms_per_document"),
                         e.get("write_requests_per_100_documents"), e.get("requests_per_100_documents"),
                         e["peak_rss_mb"], e.get("emulator_cores_busy"), e.get("client_cores_busy"),
                         e.get("startup", {}).get("cpu_s"), e["verification"]["equal_to_source"]])
        r = s1["ratios"]
        latency = next((a for a in s1["parameters"]["emulator_args"][1:] if a.replace(".", "").isdigit()), None)
        key = s1["parameters"].get("partition_key", "/personality")
        parts.append(f"### Scenario {number}: unlimited RU, {s1['parameters']['documents']:,} vector documents "
                     f"keyed by {key}"
                     + (f", emulator latency {latency} ms per request" if latency else "") + "\n\n" + _table(
            ["peer", "wall s", "docs/s", "client CPU s", "docs per CPU-s", "client CPU ms/doc", "emulator CPU ms/doc",
             "write requests per 100 docs", "all requests per 100 docs (emulator)", "peak RSS MB", "emulator cores busy", "client cores busy", "startup CPU s",
             "target == source"], rows)
            + f"\n\nasyncmig vs original, wall time: **{_f(r['asyncmig_speedup_vs_original_wall'])}x**; "
              f"vs sdk-gather: {_f(r['asyncmig_speedup_vs_sdk_gather_wall'])}x. "
              f"Documents per client-CPU-second, asyncmig vs sdk-gather: "
              f"**{_f(r['asyncmig_vs_sdk_gather_documents_per_cpu_s'])}x**; vs original: "
              f"{_f(r['asyncmig_vs_original_documents_per_cpu_s'])}x. Ceiling on this emulator (original's wall "
              f"time / asyncmig's emulator CPU seconds): {_f(r.get('ceiling_vs_original_if_emulator_core_saturated'))}x.")
    s2 = sc.get("2")
    if s2 and s2.get("peers"):
        rows = []
        for peer, e in s2["peers"].items():
            rb = e["ru_bound"]
            rows.append([peer, e["wall_s"], rb["ru"], rb["ru_per_s"], rb["utilization"], rb["utilization_in_write_window"],
                         rb["throttled"], rb["requests"], rb["throttled_share"], rb["theoretical_minimum_s"],
                         rb["time_vs_minimum"], rb.get("partition_bound_minimum_s"),
                         rb.get("utilization_vs_partition_bound"), e["verification"]["equal_to_source"]])
        share = next((e["ru_bound"].get("busiest_range_ru_share") for e in s2["peers"].values()), None)
        ranges = next((e["ru_bound"].get("physical_ranges") for e in s2["peers"].values()), None)
        parts.append(f"### Scenario 2: RU-bound, target at {s2['parameters']['target_provisioned_ru_per_s']:,.0f} RU/s, "
                     f"{s2['parameters']['documents']:,} documents\n\n" + _table(
                         ["peer", "wall s", "RU", "RU/s", "utilization", "utilization (write window)", "429s",
                          "requests", "429 share", "minimum s (RU / budget)", "time / minimum",
                          "partition-bound minimum s", "utilization vs partition bound", "target == source"], rows)
                     + f"\n\nThe budget is split evenly over {_f(ranges)} physical ranges and metered per range; the "
                       f"busiest range holds {_f(100 * share if share is not None else None, 1)} % of the write RU, "
                       "so no copier can finish before the partition-bound minimum.")
    s3 = sc.get("3")
    if s3 and s3.get("runs"):
        rows = [[e["documents"], e["wall_s"], e["documents_per_s"], e["cpu_s"], e["peak_rss_mb"],
                 (e.get("self_report") or {}).get("memory", {}).get("peak_in_flight") if e.get("self_report") else None,
                 e["verification"]["equal_to_source"]] for e in s3["runs"]]
        r = s3.get("ratios", {})
        parts.append("### Scenario 3: scale and memory (asyncmig)\n\n" + _table(
            ["documents", "wall s", "docs/s", "client CPU s", "peak RSS MB", "in-flight peak (its report)",
             "target == source"], rows)
            + f"\n\nPeak RSS large/small: **{_f(r.get('peak_rss_large_vs_small'), 3)}**; "
              f"docs/s large/small: {_f(r.get('documents_per_s_large_vs_small'), 3)}.")
    s4 = sc.get("4")
    if s4 and s4.get("resume"):
        rs = s4["resume"]
        rows = [["uninterrupted", s4["uninterrupted"]["wall_s"], s4["uninterrupted"]["verification"].get("writes"), "", ""],
                ["killed (SIGKILL)", s4["killed_run"]["wall_s"], s4["killed_run"].get("writes_at_kill"), "", ""],
                ["resumed", s4["resumed_run"]["wall_s"], s4["verification"].get("writes"),
                 rs["documents_written_twice"], s4["verification"]["equal_to_source"]]]
        parts.append(f"### Scenario 4: resume after SIGKILL, {s4['parameters']['documents']:,} documents\n\n" + _table(
            ["run", "wall s", "target writes so far", "written twice", "target == source"], rows)
            + f"\n\nWritten twice: **{_f(rs['documents_written_twice'])} "
              f"({_f(100 * rs['written_twice_share'] if rs['written_twice_share'] is not None else None, 2)} %)**; "
              f"killed + resumed time vs uninterrupted: **{_f(rs['interrupted_vs_uninterrupted_time'], 3)}x**.")
    s5 = sc.get("5")
    if s5:
        if s5.get("capacity"):
            parts.append("### Scenario 5: emulator capacity (one emulator core; load from aiohttp + orjson)\n\n"
                         + s5["capacity"]["table"])
        else:
            parts.append(f"### Scenario 5: {s5.get('skipped') or s5.get('error')}")
    profile = (s1 or {}).get("profile")
    if profile and not profile.get("skipped"):
        for role in ("asyncmig", "emulator"):
            data = profile.get(role, {})
            if data.get("top_self"):
                rows = [[name, f"{100 * share:.1f} %"] for name, share in data["top_self"][:10]]
                parts.append(f"### py-spy: {role} during an asyncmig copy, self time ({data['samples']:,} samples, "
                             f"{data['file']})\n\n" + _table(["function (file)", "share of samples"], rows))
    errors = [(k, v["error"]) for k, v in sc.items() if v.get("error")]
    for number, error in errors:
        parts.append(f"**Scenario {number} failed:** {error.splitlines()[-1] if error else error}")
    if report.get("targets"):
        rows = [[t["target"], t["requirement"], _f(t["measured"], 3), t["met"] if t["met"] is not None else "n/a"]
                for t in report["targets"]]
        note = ("\n\nQuick sizes: interpreter start-up and first requests dominate, so these checks are only "
                "indicative; the targets are judged on the full run (`make bench`)." if report["parameters"]["quick"] else "")
        parts.append("### Targets\n\n" + _table(["target", "requirement", "measured", "met"], rows) + note)
    return "\n\n".join(parts)


# -- main -------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0].replace("\n", " "),
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (~1 minute), e.g. for CI")
    p.add_argument("--scenarios", default="1,2,3,4,5,6,7,8", help="comma-separated scenario numbers")
    p.add_argument("--docs", type=int, help="override every scenario's document count (scenario 3: N and 5N)")
    p.add_argument("--peers", default=",".join(PEERS), help="scenario 1 peers (scenario 2 never runs original)")
    p.add_argument("--s1-latency-ms", type=float, default=0.0,
                   help="scenario 1: latency the emulator adds to every request, to model a network round trip")
    p.add_argument("--s2-partitions", type=int, default=Sizes.s2_partitions,
                   help="scenario 2: the emulator's physical ranges per container (Cosmos DB gives 1 at 4,000 RU/s)")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the JSON and charts go")
    p.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    p.add_argument("--no-pin", action="store_true", help="do not pin the emulator and the copiers to separate CPUs")
    p.add_argument("--keep-work", action="store_true", help="keep the work folder (checkpoints, copier output)")
    p.add_argument("--asyncmig-arg", action="append", default=[], metavar="ARG",
                   help="add an option to every `asyncmig copy` (repeatable, e.g. --asyncmig-arg=--ru-fraction=0.95); "
                   "the issue's figures use none")
    p.add_argument("--profile", action="store_true",
                   help="scenario 1: one more asyncmig run under py-spy, the emulator profiled too (needs py-spy)")
    p.add_argument("--external-ru", type=int, default=10_000,
                   help=f"with {ENV_EXTERNAL}: RU/s for the containers of the unlimited scenarios")
    args = p.parse_args(argv)
    try:
        args.scenario_list = sorted({int(s) for s in args.scenarios.split(",") if s.strip()})
    except ValueError:
        p.error("--scenarios takes numbers, e.g. 1,2")
    unknown = set(args.scenario_list) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; there are {sorted(SCENARIOS)}")
    args.peer_list = tuple(x.strip() for x in args.peers.split(",") if x.strip())
    if set(args.peer_list) - set(PEERS):
        p.error(f"peers are {', '.join(PEERS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.docs:
        sizes = sizes.with_documents(args.docs)
    sizes = replace(sizes, s2_partitions=args.s2_partitions, s1_latency_ms=args.s1_latency_ms)
    external = os.environ.get(ENV_EXTERNAL) or None
    cpus = cpu_plan(not args.no_pin)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"bench-{stamp}{'-quick' if args.quick else ''}"
    args.results.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="asyncmig-bench-"))
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    # Byte-compile asyncmig (and the peers) as installing a package does: an editable install run with
    # PYTHONDONTWRITEBYTECODE set would otherwise compile every module in every copier start-up
    # (~0.1 s of CPU charged to asyncmig and not to the SDK peers, whose packages are compiled).
    compileall.compile_dir(REPO / "asyncmig", quiet=1)
    compileall.compile_dir(REPO / "bench", quiet=1)
    ctx = Context(work, cpus, external=external, external_ru=args.external_ru, log=log, profile=args.profile,
                  results=args.results, name=name, asyncmig_extra=tuple(args.asyncmig_arg))
    report: dict[str, Any] = {
        "name": name, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "parameters": {"quick": args.quick, "scenarios": args.scenario_list, "sizes": sizes.__dict__,
                       "peers": list(args.peer_list), "sdk_gather_concurrency": SDK_GATHER_CONCURRENCY,
                       "asyncmig_extra_options": list(args.asyncmig_arg),
                       "asyncmig_write_path_env": os.environ.get("ASYNCMIG_WRITE_PATH"),
                       "endpoint": "external (ASYNCMIG_BENCH_COSMOS)" if external else "local emulator, one per scenario",
                       "pinning": cpus or "off", "work_dir": str(work) if args.keep_work else None},
        "notes": [
            "Shared machine: absolute times are noise, compare the ratios. Other work on the machine shows in the "
            "load averages recorded per scenario.",
            "client CPU and peak RSS are the copier process's own (os.wait4 rusage); copiers are forked by a small "
            "launcher process so that this harness's memory does not count as theirs (machine.rss_floor_mb is what "
            "a /bin/true shows when launched the same way). The emulator is a separate process whose CPU is "
            "reported as 'emulator cores busy' (CPU seconds / wall seconds).",
            "'startup CPU s' is starting the interpreter and importing the peer's modules without copying anything.",
            "Every copier's target is read back and compared with the source: count and a content digest.",
        ],
        "scenarios": {},
    }
    log(f"{name}: scenarios {args.scenario_list}, sizes {sizes}, pinning {cpus or 'off'}, work in {work}")
    failed = False
    for number in args.scenario_list:
        log(f"scenario {number}")
        try:
            if number == 1:
                result = scenario_1(ctx, sizes, args.peer_list)
            else:
                result = SCENARIOS[number](ctx, sizes)
        except Exception:  # noqa: BLE001 - record it, go on with the other scenarios
            result = {"scenario": number, "error": traceback.format_exc()}
            log(f"scenario {number} FAILED:\n{result['error']}")
        report["scenarios"][str(number)] = result
        if result.get("error"):
            failed = True
        elif number in (1, 2, 3, 7, 8):
            entries = result.get("peers", {}).values() if number != 3 else result.get("runs", [])
            failed |= any(not e["ok"] for e in entries if e["peer"] == "asyncmig")
        elif number == 4:
            failed |= not result.get("ok", False)
        elif number == 6:
            failed |= any(not run["ok"] for run in result.get("runs", {}).values())
    close_launcher()
    report["load_average_at_end"] = load_average()
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["targets"] = evaluate_targets(report["scenarios"])
    prefix = args.results / name
    if args.no_charts:
        report["charts"] = "skipped (--no-charts)"
    elif not charts.available():
        report["charts"] = "skipped: matplotlib is not installed (pip install -e '.[bench]')"
    else:
        try:
            report["charts"] = charts.make_charts(report, prefix)
        except Exception:  # noqa: BLE001 - a chart must not lose the measurements
            report["charts"] = f"failed: {traceback.format_exc()[-800:]}"
    table = markdown(report)
    report["markdown"] = table
    path = prefix.with_suffix(".json")
    path.write_text(json.dumps(report, indent=2) + "\n")
    if not args.keep_work:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print()
    print(table)
    print(f"\nresults: {path}")
    if isinstance(report["charts"], list):
        for chart in report["charts"]:
            print(f"chart:   {chart}")
    else:
        print(f"charts:  {report['charts']}")
    print(f"total:   {report['seconds']} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
