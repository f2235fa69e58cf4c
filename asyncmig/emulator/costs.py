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

from typing import Any

from asyncmig.core.cosmos.rucost import point_read, write  # noqa: F401 - write is re-exported for the handlers

QUERY_BASE_RU = 2.0          # per page: compilation and index lookup
QUERY_DOC_FRACTION = 0.25    # loading a document in a query costs a quarter of its point read
CHANGE_FEED_EMPTY_RU = 1.0
NOT_FOUND_READ_RU = 1.0      # a point read that finds nothing is still charged, as on Cosmos DB


_SMALLEST = 1024
_SMALLEST_READ_RU = point_read(_SMALLEST)


def query_page(loaded_bytes: list[int]) -> float:
    # Documents up to 1 KB all cost the table's first entry; skipping the interpolation for them took
    # a fifth of a 100-document query page's server time (py-spy).
    total = sum(_SMALLEST_READ_RU if n <= _SMALLEST else point_read(n) for n in loaded_bytes)
    return round(QUERY_BASE_RU + QUERY_DOC_FRACTION * total, 2)


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

    def indexes(self, path: str) -> bool:
        """Whether a property path (``/a/b``) is indexed under this policy."""
        if self.none:
            return False
        prefix = path + "/"
        if any(prefix.startswith(p) for p in self.excluded):
            return False
        return self.included is None or any(prefix.startswith(p) for p in self.included)

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
            # Scalar elements are counted in one step (same path, same answer): a 768-number vector
            # used to cost 768 recursive calls per write.
            if dict not in (kinds := set(map(type, value))) and list not in kinds:  # C-speed scan
                return len(value) if value and self._included(path) else 0
            nested = [v for v in value if isinstance(v, dict | list)]
            scalars = len(value) - len(nested)
            return sum(self._count(v, path) for v in nested) + (scalars if scalars and self._included(path) else 0)
        return 1 if self._included(path) else 0

    def _included(self, path: str) -> bool:
        return self.included is None or any(path.startswith(p) for p in self.included)
