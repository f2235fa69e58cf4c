"""Leases in a Cosmos DB container: which worker copies which source feed range, and where it is.

Several workers (processes on several machines, or Ray actors) share one copy by sharing one lease
container, as Microsoft's change feed processor does. Each source feed range has one lease
document: its owner, when the ownership expires, and the range's sealed progress (change-feed
continuation, documents covered, documents written ahead of it). Every change to a lease is a
replace conditioned on the etag the writer last saw (``If-Match``), so:

* two workers racing for a free or expired lease cannot both win (the loser gets 412);
* a worker that lost its lease (it stalled past the expiry and another took over) is *fenced*: its
  next commit fails with 412 and it stops writing progress for that range, raising
  :class:`LeaseLost`;
* a lease that is taken over resumes from the state the previous owner last committed, so what
  is copied twice is at most what the previous owner had in flight.

Leases are keyed by the source feed range (an effective-partition-key interval) a copy started
with. That interval stays valid when the physical partition behind it splits: the change-feed
reader continues it across the children, so a split does not change which lease covers which data.

Expiry is judged on the workers' wall clocks (as the change feed processor does): machines that
share a copy need synchronised clocks, and the lease time-to-live should be well above any skew.
All leases of one copy share one logical partition (``/copy``), so listing them is one
single-partition query.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, DatabaseProxy
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.lease_defaults import DEFAULT_TTL_SECONDS
from asyncmig.core.cosmos.retry import classify
from asyncmig.core.engine.checkpoint import RangeState
from asyncmig.errors import LeaseLost


def copy_id(identity: dict[str, Any]) -> str:
    """A stable id for one copy, from its checkpoint identity (hosts and names, never keys)."""
    return hashlib.sha256(jsoncodec.dumps(identity)).hexdigest()[:24]


def _lease_id(range_key: str) -> str:
    # Range keys hold characters Cosmos ids may not ('/'); a digest is short and safe.
    return hashlib.sha256(range_key.encode()).hexdigest()[:32]


@dataclass
class Lease:
    """One feed range's lease as last read or written by this worker (``etag`` fences the next write)."""

    range_key: str
    feed_range: Any
    owner: str | None
    expires_at: float
    state: RangeState
    etag: str
    takeovers: int = 0

    def free_for(self, owner: str, now: float) -> bool:
        """Whether ``owner`` may take this lease: unowned, its own, or expired."""
        return self.owner is None or self.owner == owner or self.expires_at <= now


@dataclass
class LeaseStatistics:
    acquired: int = 0
    taken_over: int = 0
    commits: int = 0
    lost: int = 0
    conflicts: int = 0
    owners: dict[str, int] = field(default_factory=dict)


def _state_json(state: RangeState) -> dict[str, Any]:
    return {"position": state.position, "read": state.read, "written": state.written,
            "done": state.done, "written_ahead": list(state.written_ahead)}


class LeaseStore:
    """The leases of one copy, owned on behalf of one worker (``owner``).

    Use :meth:`ensure_container` to create the container, :meth:`seed` once per copy (idempotent:
    several workers may seed concurrently), then :meth:`acquire`, :meth:`commit` and
    :meth:`release`.
    """

    def __init__(self, container: ContainerProxy, copy: str, owner: str, *,
                 ttl_seconds: float = DEFAULT_TTL_SECONDS) -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"a lease time-to-live must be positive, got {ttl_seconds}")
        self.container = container
        self.copy = copy
        self.owner = owner
        self.ttl = ttl_seconds
        self.stats = LeaseStatistics()

    @staticmethod
    async def ensure_container(database: DatabaseProxy, name: str) -> ContainerProxy:
        """The lease container, created (partitioned on ``/copy``) when it does not exist yet."""
        try:
            return await database.create_container_if_not_exists(name, partition_key=PartitionKey("/copy"))
        except CosmosResourceExistsError:  # another worker created it between our read and our create
            container = database.get_container_client(name)
            await container.read()
            return container
        except Exception as exc:  # noqa: BLE001 - translated at this boundary
            raise classify(exc).as_error(f"creating the lease container {name!r}") from exc

    async def seed(self, ranges: dict[str, Any]) -> None:
        """Create a free lease for every range that has none; existing leases are kept as they are."""
        for key, feed_range in ranges.items():
            body = {"id": _lease_id(key), "copy": self.copy, "range": key, "feed_range": feed_range,
                    "owner": None, "expires_at": 0.0, "takeovers": 0, "state": _state_json(RangeState(feed_range))}
            try:
                await self.container.create_item(body)
            except CosmosResourceExistsError:
                continue
            except Exception as exc:  # noqa: BLE001 - translated at this boundary
                raise classify(exc).as_error("creating a lease") from exc

    async def list(self) -> list[Lease]:
        """Every lease of this copy, as stored now."""
        try:
            items = [item async for item in self.container.query_items(
                "SELECT * FROM c WHERE c.copy = @copy", parameters=[{"name": "@copy", "value": self.copy}],
                partition_key=self.copy)]
        except Exception as exc:  # noqa: BLE001 - translated at this boundary
            raise classify(exc).as_error("listing leases") from exc
        return sorted((self._from_item(item) for item in items), key=lambda lease: lease.range_key)

    @staticmethod
    def _from_item(item: dict[str, Any]) -> Lease:
        s = item["state"]
        state = RangeState(feed_range=item["feed_range"], position=s["position"], read=int(s["read"]),
                           written=int(s["written"]), done=bool(s["done"]),
                           written_ahead=[str(k) for k in s["written_ahead"]])
        return Lease(range_key=item["range"], feed_range=item["feed_range"], owner=item["owner"],
                     expires_at=float(item["expires_at"]), state=state, etag=item["_etag"],
                     takeovers=int(item.get("takeovers", 0)))

    async def _replace(self, lease: Lease, *, owner: str | None, expires_at: float, state: RangeState,
                       takeovers: int) -> Lease:
        body = {"id": _lease_id(lease.range_key), "copy": self.copy, "range": lease.range_key,
                "feed_range": lease.feed_range, "owner": owner, "expires_at": expires_at,
                "takeovers": takeovers, "state": _state_json(state)}
        try:
            item = await self.container.replace_item(
                body["id"], body, etag=lease.etag, match_condition=MatchConditions.IfNotModified)
        except (CosmosAccessConditionFailedError, CosmosResourceNotFoundError):
            raise
        except Exception as exc:  # noqa: BLE001 - translated at this boundary
            raise classify(exc).as_error(f"updating the lease of {lease.range_key}") from exc
        return self._from_item(item)

    async def acquire(self, lease: Lease, now: float | None = None) -> Lease | None:
        """Take ``lease`` for this worker if it is free, ours or expired; ``None`` when another won it."""
        now = time.time() if now is None else now
        if not lease.free_for(self.owner, now):
            return None
        taken_over = lease.owner not in (None, self.owner)
        try:
            won = await self._replace(lease, owner=self.owner, expires_at=now + self.ttl, state=lease.state,
                                      takeovers=lease.takeovers + (1 if taken_over else 0))
        except (CosmosAccessConditionFailedError, CosmosResourceNotFoundError):
            self.stats.conflicts += 1
            return None
        self.stats.acquired += 1
        self.stats.taken_over += 1 if taken_over else 0
        return won

    async def commit(self, lease: Lease, state: RangeState, now: float | None = None) -> Lease:
        """Store the range's progress and extend the ownership, fenced by the lease's etag.

        :raises LeaseLost: another worker changed the lease since this worker last wrote it.
        """
        now = time.time() if now is None else now
        try:
            stored = await self._replace(lease, owner=self.owner, expires_at=now + self.ttl, state=state,
                                         takeovers=lease.takeovers)
        except (CosmosAccessConditionFailedError, CosmosResourceNotFoundError) as exc:
            self.stats.lost += 1
            raise LeaseLost(f"the lease of range {lease.range_key} was taken over by another worker; "
                            "this worker stops copying it (the new owner resumes from its last commit)") from exc
        self.stats.commits += 1
        return stored

    async def release(self, lease: Lease) -> Lease | None:
        """Give the lease up (keeping its state) so another worker can take it at once."""
        try:
            return await self._replace(lease, owner=None, expires_at=0.0, state=lease.state,
                                       takeovers=lease.takeovers)
        except (CosmosAccessConditionFailedError, CosmosResourceNotFoundError):
            return None
