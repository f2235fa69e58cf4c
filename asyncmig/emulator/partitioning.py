"""Effective partition keys and physical range layout, computed exactly as the SDK computes them.

The server reuses ``azure.cosmos.partition_key`` so that ``feed_range_from_partition_key()`` on the
client and document placement on the server can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azure.cosmos.partition_key import PartitionKey, _Undefined

MIN_EPK = ""
MAX_EPK = "FF"
_WIDTH = 32  # hex characters in a single-level V2 EPK


def partition_key_object(definition: dict[str, Any]) -> PartitionKey:
    kind = definition.get("kind", "Hash")
    paths = definition["paths"]
    return PartitionKey(
        path=paths if kind == "MultiHash" else paths[0], kind=kind, version=definition.get("version", 1)
    )


def effective_partition_key(definition: dict[str, Any], values: list[Any]) -> str:
    """EPK of a partition key value list (the JSON array of the ``x-ms-documentdb-partitionkey`` header)."""
    if values == []:
        return MIN_EPK
    components = [_Undefined() if value == {} else value for value in values]
    return str(partition_key_object(definition)._get_effective_partition_key_string(components))


_MISSING = object()


def _value_at(document: dict[str, Any], path: str) -> Any:
    node: Any = document
    for part in path.strip("/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def partition_key_values(definition: dict[str, Any], document: dict[str, Any]) -> list[Any]:
    """The partition key component values of a document, ``{}`` standing for undefined (as on the wire)."""
    values = []
    for path in definition["paths"]:
        value = _value_at(document, path)
        values.append({} if value is _MISSING else value)
    return values


def same_partition_key(a: list[Any], b: list[Any]) -> bool:
    """Compare two component lists the way Cosmos does: 5 and 5.0 are the same key, True is not 1."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, bool) or isinstance(y, bool):
            if x is not y:
                return False
        elif isinstance(x, int | float) and isinstance(y, int | float):
            if float(x) != float(y):
                return False
        elif x != y:
            return False
    return True


def _to_int(boundary: str) -> int:
    return int(boundary.ljust(_WIDTH, "0")[:_WIDTH] or "0", 16) if boundary else 0


def _to_boundary(value: int) -> str:
    text = f"{value:0{_WIDTH}X}".rstrip("0") or "00"
    return text + "0" if len(text) % 2 else text  # whole bytes, like the boundaries Cosmos returns


def initial_boundaries(count: int) -> list[tuple[str, str]]:
    """``count`` ranges tiling ``""`` to ``"FF"``. V2 EPKs start with a byte <= 0x3F, so split 00-40."""
    if count < 1:
        raise ValueError("a container needs at least one physical range")
    cuts = [_to_boundary((i * 0x40 << (4 * (_WIDTH - 2))) // count) for i in range(1, count)]
    edges = [MIN_EPK, *cuts, MAX_EPK]
    return list(zip(edges[:-1], edges[1:], strict=True))


def split_point(low: str, high: str) -> str:
    """Midpoint between two boundaries, as an upper-case hex boundary strictly inside (low, high)."""
    lo = _to_int(low)
    hi = _to_int(high) if high != MAX_EPK else 0x40 << (4 * (_WIDTH - 2))
    if hi - lo < 2:
        raise ValueError(f"range [{low}, {high}) is too narrow to split")
    return _to_boundary((lo + hi) // 2)


@dataclass(frozen=True, slots=True)
class PhysicalRange:
    id: str
    min: str
    max: str
    parents: tuple[str, ...] = ()

    def contains(self, epk: str) -> bool:
        return self.min <= epk < self.max
