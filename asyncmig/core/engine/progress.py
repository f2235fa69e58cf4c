"""Progress bars: documents with rate and ETA, RU/s and 429s, and how far a live copy is behind its
source, drawn on stderr while a run works."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from asyncmig.core.engine.pipeline import RunStatistics

if TYPE_CHECKING:
    from tqdm import tqdm


class ProgressBar:
    """A tqdm bar of documents on stderr, with the RU/s measured between two updates; nothing at all
    (not even tqdm's import and monitor thread) when it is not shown."""

    def __init__(self, description: str, total: int | None, *, enabled: bool | None = None) -> None:
        self._bar: tqdm | None = None
        if sys.stderr.isatty() if enabled is None else enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=description, unit="doc", unit_scale=True, dynamic_ncols=True,
                             file=sys.stderr, smoothing=0.1)
        self._last = (time.monotonic(), 0.0)
        self._ru_rate = 0.0

    def update(self, documents: int, ru: float, details: str) -> None:
        """Move the bar to ``documents``; show the RU/s since the last update and ``details``."""
        if self._bar is None:
            return
        now = time.monotonic()
        then, ru_then = self._last
        if now > then:
            rate = (ru - ru_then) / (now - then)
            self._ru_rate = rate if ru_then else 0.0
        self._last = (now, ru)
        if documents > self._bar.n:
            self._bar.update(documents - self._bar.n)
        self._bar.set_postfix_str(f"{self._ru_rate:,.0f} RU/s, {details}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class CopyProgress(ProgressBar):
    """The bar of one run, fed from :class:`RunStatistics` snapshots (the pipeline calls it twice a second)."""

    def __call__(self, stats: RunStatistics) -> None:
        self.update(stats.processed, stats.ru,
                    f"429s {stats.throttled}, dead {stats.dead_lettered}{lag_text(stats)}")


def lag_text(stats: RunStatistics) -> str:
    """``, behind 12 changes / 3.4 s`` (the worst range), or nothing before any range reported."""
    if not stats.lag:
        return ""
    documents = [v["documents"] for v in stats.lag.values() if v["documents"] is not None]
    seconds = [v["seconds"] for v in stats.lag.values() if v["seconds"] is not None]
    shown = [f"{max(documents):,.0f} changes" if documents else "", f"{max(seconds):.1f} s" if seconds else ""]
    return ", behind " + " / ".join(t for t in shown if t) if any(shown) else ""
