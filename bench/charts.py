"""PNG charts for a benchmark report (matplotlib, the optional ``bench`` extra).

* scenario 1: documents/s per peer, beside documents per client-CPU-second;
* scenario 2: RU/s charged to each target over time against the provisioned budget, 429s marked.

:func:`available` is False when matplotlib is not installed; the benchmark then skips the charts and
says so in its report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

plt: Any
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # the bench extra is not installed
    plt = None

COLOURS = {"original": "#9e9e9e", "sdk-gather": "#e08a2c", "asyncmig": "#2b6cb0"}


def available() -> bool:
    return plt is not None


def throughput_chart(s1: dict[str, Any], path: Path) -> Path:
    assert plt is not None
    peers = list(s1["peers"])
    rates = [s1["peers"][p]["documents_per_s"] or 0 for p in peers]
    per_cpu = [s1["peers"][p]["documents_per_cpu_s"] or 0 for p in peers]
    colours = [COLOURS.get(p, "#555555") for p in peers]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, values, label in ((left, rates, "documents/s (wall)"), (right, per_cpu, "documents per client-CPU-second")):
        bars = ax.bar(peers, values, color=colours)
        ax.set_title(label)
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=2)
        ax.set_ylim(0, max(values + [1]) * 1.15)
        ax.grid(axis="y", alpha=0.3)
    params = s1["parameters"]
    fig.suptitle(f"Scenario 1: {params['documents']:,} vector documents ({params['dimensions']} numbers), "
                 "emulator rate limit off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _rate(timeline: list[list[float]], window: float = 1.0) -> tuple[list[float], list[float]]:
    """RU/s over a trailing ``window`` seconds at each sample."""
    times, rates = [], []
    start = 0
    for i in range(1, len(timeline)):
        t, ru = timeline[i][0], timeline[i][1]
        while timeline[start][0] < t - window:
            start += 1
        j = min(start, i - 1)
        t0, ru0 = timeline[j][0], timeline[j][1]
        if t > t0:
            times.append(t)
            rates.append((ru - ru0) / (t - t0))
    return times, rates


def ru_timeline_chart(s2: dict[str, Any], path: Path) -> Path | None:
    assert plt is not None
    budget = s2["parameters"]["target_provisioned_ru_per_s"]
    peers = [p for p, e in s2.get("peers", {}).items() if e.get("timeline")]
    if not peers:
        return None
    fig, axes = plt.subplots(len(peers), 1, figsize=(10, 3.2 * len(peers)), sharex=True, squeeze=False)
    for ax, peer in zip(axes[:, 0], peers, strict=True):
        entry = s2["peers"][peer]
        timeline = entry["timeline"]
        times, rates = _rate(timeline)
        ax.plot(times, rates, color=COLOURS.get(peer, "#555555"), label=f"{peer}: RU/s (1 s trailing window)")
        ax.axhline(budget, color="#c53030", linestyle="--", label=f"provisioned {budget:,.0f} RU/s")
        throttled_at = [s[0] for prev, s in zip(timeline, timeline[1:], strict=False) for _ in range(int(s[2] - prev[2]))]
        if throttled_at:
            ax.plot(throttled_at, [budget * 0.03] * len(throttled_at), "|", color="#c53030", markersize=10,
                    alpha=0.6, label=f"429 ({len(throttled_at)})")
        rb = entry.get("ru_bound", {})
        ax.set_title(f"{peer}: utilization {rb.get('utilization')}, 429 share {rb.get('throttled_share')}, "
                     f"{entry['wall_s']:.1f} s (minimum {rb.get('theoretical_minimum_s')} s)")
        ax.set_ylabel("RU/s")
        ax.set_ylim(0, max(rates + [budget]) * 1.25)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds since the copier started")
    fig.suptitle(f"Scenario 2: {s2['parameters']['documents']:,} vector documents into a target at {budget:,.0f} RU/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_charts(report: dict[str, Any], prefix: Path) -> list[str]:
    """Write the charts the report has data for; returns their paths."""
    if not available():
        return []
    written: list[Path | None] = []
    s1 = report["scenarios"].get("1")
    if s1 and s1.get("peers"):
        written.append(throughput_chart(s1, prefix.with_name(prefix.name + "-s1-throughput.png")))
    s2 = report["scenarios"].get("2")
    if s2 and s2.get("peers"):
        written.append(ru_timeline_chart(s2, prefix.with_name(prefix.name + "-s2-ru-timeline.png")))
    return [str(p) for p in written if p is not None]
