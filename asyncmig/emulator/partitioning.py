"""Physical range layout: initial tiling of the EPK space and split points.

The server reuses ``azure.cosmos.partition_key`` so that ``feed_range_from_partition_key()`` on the
client and document placement on the server can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncmig.core.cosmos.partition_keys import (  # noqa: F401 - re-exported for the emulator's modules
    MAX_EPK,
    MIN_EPK,
    effective_partition_key,
    partition_key_values,
    same_partition_key,
)

_WIDTH = 32  # hex characters in a single-level V2 EPK
INITIAL_RU_PER_PARTITION = 6000  # what Cosmos DB provisions per physical partition at creation
MAX_RU_PER_PARTITION = 10_000    # what one physical partition can serve


def partitions_for_throughput(throughput: int | None) -> int:
    """Physical partitions Cosmos DB gives a new container: ``ceil(RU/s / 6,000)``, at least one.

    Cosmos DB creates a container with enough partitions to serve its throughput (manual RU/s or
    the autoscale maximum) at 6,000 RU/s each, so that each can later scale to 10,000 RU/s without
    a split; a container created at P x 6,000 RU/s starts with P partitions. Storage (50 GB per
    partition) never matters at emulator sizes; no throughput (serverless) means one partition.
    """
    if not throughput or throughput <= 0:
        return 1
    return max(1, -(-int(throughput) // INITIAL_RU_PER_PARTITION))


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
