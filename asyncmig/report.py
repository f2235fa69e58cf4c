"""Summaries a person reads (aligned tables) and reports a program reads (JSON), from the same data.

Reports are written atomically and owner-only, and pass through redaction: nothing that leaves the
process may carry an account key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asyncmig.core.files.fsutil import atomic_write
from asyncmig.redaction import redact


def duration(seconds: float) -> str:
    """Compact durations as pgcopydb prints them: 302ms, 4s496, 2m05s, 1h02m."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{int(seconds)}s{int((seconds % 1) * 1000):03d}"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned table; numbers right-aligned, text left-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) for row in rows) if rows else False for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json_report(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` as indented JSON, atomically, mode 0600, with secrets redacted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = redact(json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False))
    atomic_write(path, text.encode("utf-8") + b"\n")
