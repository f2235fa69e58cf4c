"""Physical range layout: initial tiling of the EPK space and split points.

EPKs come from :mod:`asyncmig.core.cosmos.partition_keys`, shared with the copier's sink, so the
client's routing and the server's document placement can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncmig.core.cosmos.partition_keys import (  # noqa: F401 - re-exported for the emulator's modules
    MAX_EPK,
    MIN_EPK,
    effective_partition_key,
    partition_key_values,
    same_partition_key,
    v1_boundary,
    v1_boundary_hash,
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


_V1_SPACE = 1 << 32  # a V1 EPK starts with its 32-bit hash, encoded as a number


def initial_boundaries(count: int, *, hash_v1: bool = False) -> list[tuple[str, str]]:
    """``count`` ranges tiling ``""`` to ``"FF"`` so that keys spread evenly over them.

    V2 EPKs start with a byte <= 0x3F, so the cuts divide 00-40. V1 EPKs start with their 32-bit
    hash in Cosmos' number encoding (``05C1...``), so the cuts are encoded hash values, as the
    boundaries of a real V1 container are (``05C1DFFFFFFFFC`` and the like).
    """
    if count < 1:
        raise ValueError("a container needs at least one physical range")
    if hash_v1:
        cuts = [v1_boundary(i * _V1_SPACE // count) for i in range(1, count)]
    else:
        cuts = [_to_boundary((i * 0x40 << (4 * (_WIDTH - 2))) // count) for i in range(1, count)]
    edges = [MIN_EPK, *cuts, MAX_EPK]
    return list(zip(edges[:-1], edges[1:], strict=True))


def split_point(low: str, high: str, *, hash_v1: bool = False) -> str:
    """Midpoint between two boundaries, as an upper-case hex boundary strictly inside (low, high)."""
    if hash_v1:
        lo_hash, hi_hash = v1_boundary_hash(low), v1_boundary_hash(high)
        if hi_hash - lo_hash < 2:
            raise ValueError(f"range [{low}, {high}) is too narrow to split")
        return v1_boundary((lo_hash + hi_hash) // 2)
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
