"""Request-unit costs of point operations, from Microsoft's published measurements.

"Understand request unit consumption" (learn.microsoft.com) lists, for session consistency and
default indexing, point reads of 1.00 RU (1 KB) up to 291.8 RU (2 MB) and writes of 4.95 RU (1 KB),
11.23 RU (32 KB) and 22.67 RU (64 KB). Sizes in between are interpolated linearly. Used by the
emulator to charge requests and by ``--dry-run`` to estimate a copy's RU before it starts.
"""

from __future__ import annotations

from bisect import bisect_left

# (size in KB, RU) from the published table.
_READ: list[tuple[float, float]] = [(1, 1.00), (2, 1.04), (4, 1.14), (8, 1.33), (16, 1.67), (32, 2.19), (64, 4.76), (128, 9.95),
         (256, 20.28), (1024, 145.9), (2048, 291.8)]
_WRITE: list[tuple[float, float]] = [(1, 4.95), (2, 6.29), (4, 6.67), (8, 7.04), (16, 9.52), (32, 11.23), (64, 22.67), (128, 48.19),
          (256, 98.29), (1024, 625.0), (2048, 1250.0)]

# Microsoft says write cost grows with indexed terms but publishes no formula: this is our assumption.
TERM_RU = 0.01
FREE_TERMS = 16


def _interpolate(table: list[tuple[float, float]], size_bytes: int) -> float:
    kb = max(size_bytes, 1) / 1024
    if kb <= table[0][0]:
        return table[0][1]
    i = bisect_left([k for k, _ in table], kb)
    if i >= len(table):
        (k0, r0), (k1, r1) = table[-2], table[-1]
    else:
        (k0, r0), (k1, r1) = table[i - 1], table[i]
    return r0 + (r1 - r0) * (kb - k0) / (k1 - k0)


def point_read(size_bytes: int) -> float:
    return round(_interpolate(_READ, size_bytes), 2)


def write(size_bytes: int, indexed_terms: int) -> float:
    return round(_interpolate(_WRITE, size_bytes) + TERM_RU * max(0, indexed_terms - FREE_TERMS), 2)
