"""Request-unit charges, calibrated to Microsoft's published measurements.

Sources (see README "RU cost model"): "Understand request unit consumption" gives, for session
consistency and default indexing, point reads of 1.00 RU (1 KB) to 291.8 RU (2 MB) and writes of
4.95 RU (1 KB), 11.23 RU (32 KB) and 22.67 RU (64 KB). Between published sizes we interpolate
linearly. Microsoft states that write cost also grows with the number of indexed terms but gives no
formula, so the model adds ``TERM_RU`` per indexed leaf value beyond ``FREE_TERMS`` (an assumption,
documented as such): a 768-number embedding that is indexed costs ~7.5 RU more per write than one
excluded with ``/embedding/*``.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

# (size in KB, RU) from the published table.
_READ = [(1, 1.00), (2, 1.04), (4, 1.14), (8, 1.33), (16, 1.67), (32, 2.19), (64, 4.76), (128, 9.95),
         (256, 20.28), (1024, 145.9), (2048, 291.8)]
_WRITE = [(1, 4.95), (2, 6.29), (4, 6.67), (8, 7.04), (16, 9.52), (32, 11.23), (64, 22.67), (128, 48.19),
          (256, 98.29), (1024, 625.0), (2048, 1250.0)]

TERM_RU = 0.01
FREE_TERMS = 16
QUERY_BASE_RU = 2.0          # per page: compilation and index lookup
QUERY_DOC_FRACTION = 0.25    # loading a document in a query costs a quarter of its point read
CHANGE_FEED_EMPTY_RU = 1.0
METADATA_RU = 1.0


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


def query_page(loaded_bytes: list[int]) -> float:
    return round(QUERY_BASE_RU + sum(QUERY_DOC_FRACTION * _interpolate(_READ, n) for n in loaded_bytes), 2)


class IndexingPolicy:
    """Counts the leaf values an indexing policy would index (the "terms" that make writes dearer)."""

    def __init__(self, policy: dict[str, Any] | None) -> None:
        policy = policy or {}
        self.none = policy.get("indexingMode", "consistent").lower() == "none"
        self.excluded = [self._prefix(p["path"]) for p in policy.get("excludedPaths", [])]
        included = [p["path"] for p in policy.get("includedPaths", [{"path": "/*"}])]
        self.included = None if "/*" in included or not included else [self._prefix(p) for p in included]

    @staticmethod
    def _prefix(path: str) -> str:
        return path.removesuffix("/*").removesuffix("/?").replace('"', "") + "/"

    def terms(self, document: dict[str, Any]) -> int:
        if self.none:
            return 0
        return sum(self._count(v, f"/{k}/") for k, v in document.items() if not k.startswith("_"))

    def _count(self, value: Any, path: str) -> int:
        if any(path.startswith(p) for p in self.excluded):
            return 0
        if isinstance(value, dict):
            return sum(self._count(v, f"{path}{k}/") for k, v in value.items())
        if isinstance(value, list):  # array elements share their array's path in an indexing policy
            return sum(self._count(v, path) for v in value)
        return 1 if self.included is None or any(path.startswith(p) for p in self.included) else 0
