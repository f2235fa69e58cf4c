"""One RU budget shared by many workers: a central bucket hands out short grants.

A copy spread over several workers (processes or Ray actors) must still spend at most the RU/s
the user allowed in total. Asking a central service before every request would put a network
round trip in front of each write; splitting the budget statically wastes what an idle worker
does not use. The Spark connector's global throughput control and this module take the middle
road: each worker holds a small *reserve* of RU granted by the central :class:`BudgetBank` and
fetches the next grant (about 75 ms of the budget) before the reserve runs dry.

* The bank refills at the budget's rate and starts **empty**, also after a restart (a restarted
  bank must not let a burst through), and it never holds more than one grant per worker
  (``max_banked_seconds``), so an idle period does not turn into a burst either.
* A worker spends its reserve with the real charges of its requests: a request is paid with an
  estimate first, then settled with the actual ``x-ms-request-charge``; the difference is
  returned to (or taken from) the reserve, so the long-run rate follows real charges.
* Per-range AIMD and the 429 pauses stay in each worker's :class:`~asyncmig.core.engine.governor.Governor`;
  the shared budget only caps the sum.
"""

from __future__ import annotations

import math
from typing import Protocol

import anyio

DEFAULT_GRANT_SECONDS = 0.075
DEFAULT_MAX_BANKED_SECONDS = 0.25


def range_share(budget: float, container_ru: float | None, ranges: int) -> float:
    """The RU/s one of a target's ``ranges`` physical ranges may use within ``budget``.

    Cosmos DB meters each physical partition at the container's RU/s divided by its partitions, so
    that is what a range can take without 429s; with a budget below the container's RU/s a busy
    range may use all of its partition's share while others idle (a skewed key space, or a copy
    that reaches the ranges in turn), the whole budget still capping the total. Splitting the budget
    evenly instead left 32-44 % of it unused on such copies. ``container_ru`` is None when unknown
    or shared by the database (whose partitions other containers use too): then an even split.
    """
    ranges = max(ranges, 1)
    if container_ru is None:
        return budget / ranges
    return min(budget, container_ru / ranges)


class Bank(Protocol):
    """Where grants come from: in-process (:class:`BudgetBank`) or a remote actor wrapping one."""

    async def grant(self, worker: str, lane: str, lanes: int, want: float) -> float:
        """Up to ``want`` RU for ``worker`` to spend on target range ``lane`` (one of ``lanes``), now;
        possibly 0 when the bank (or that range's share of it) is empty."""
        ...


class _Bucket:
    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = 0.0  # empty at start and after a restart: no burst
        self.last: float | None = None

    def refill(self, now: float) -> None:
        if self.last is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now


class BudgetBank:
    """The central token buckets: the whole budget, and each target range's share of it.

    Cosmos DB meters every physical partition on its own at the provisioned RU/s divided by the
    number of partitions, and every worker writes to every partition; so the bank paces each range
    too, across workers, as one process paces its own lanes (shares as :func:`range_share` gives
    them, from ``container_ru``).
    """

    def __init__(self, budget: float, *, max_banked_seconds: float = DEFAULT_MAX_BANKED_SECONDS,
                 container_ru: float | None = None) -> None:
        if not (math.isfinite(budget) and budget > 0):
            raise ValueError(f"a shared RU budget must be positive and finite, got {budget}")
        self.budget = budget
        self.container_ru = container_ru
        self._banked = max_banked_seconds
        self._total = _Bucket(budget, budget * max_banked_seconds)
        self._lanes: dict[str, _Bucket] = {}
        self.granted = 0.0
        self.by_worker: dict[str, float] = {}

    def _lane(self, lane: str, lanes: int) -> _Bucket:
        bucket = self._lanes.get(lane)
        rate = range_share(self.budget, self.container_ru, lanes)
        if bucket is None or bucket.rate != rate:  # first use, or the target's ranges changed (a split)
            bucket = self._lanes[lane] = _Bucket(rate, rate * self._banked)
        return bucket

    async def grant(self, worker: str, lane: str, lanes: int, want: float) -> float:
        now = anyio.current_time()
        share = self._lane(lane, lanes)
        self._total.refill(now)
        share.refill(now)
        given = max(0.0, min(want, self._total.tokens, share.tokens))
        self._total.tokens -= given
        share.tokens -= given
        self.granted += given
        self.by_worker[worker] = self.by_worker.get(worker, 0.0) + given
        return given


class SharedBudget:
    """A worker's side of the shared budget: a reserve of granted RU per target range, refilled ahead of need."""

    def __init__(self, bank: Bank, worker: str, budget: float, *,
                 grant_seconds: float = DEFAULT_GRANT_SECONDS, container_ru: float | None = None) -> None:
        self.bank = bank
        self.worker = worker
        self.budget = budget
        self.container_ru = container_ru
        self.grant_seconds = grant_seconds
        self.lanes = 1  # the target's physical ranges; set when the sink knows them
        self._reserve: dict[str, float] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self.consumed = 0.0

    async def acquire(self, lane: str, estimated_ru: float) -> None:
        """Wait until the range's reserve can pay ``estimated_ru`` (a request larger than one grant waits
        for a full grant, then runs the reserve into debt that later grants pay back)."""
        rate = range_share(self.budget, self.container_ru, self.lanes)
        grant = rate * self.grant_seconds
        lock = self._locks.setdefault(lane, anyio.Lock())
        async with lock:
            need = min(estimated_ru, grant)
            # The reserve is read afresh after every wait: requests in flight settle meanwhile.
            while (reserve := self._reserve.get(lane, 0.0)) < need:
                granted = await self.bank.grant(self.worker, lane, self.lanes, grant)
                self._reserve[lane] = reserve = self._reserve.get(lane, 0.0) + granted
                if reserve < need:
                    # The bank is empty: wait about as long as it takes to refill the gap.
                    await anyio.sleep(max((need - reserve) / rate, 0.001))
            self._reserve[lane] = reserve - estimated_ru

    def settle(self, lane: str, estimated_ru: float, actual_ru: float) -> None:
        """Return the estimate's surplus to the range's reserve, or take the shortfall from it."""
        self.consumed += actual_ru
        self._reserve[lane] = self._reserve.get(lane, 0.0) + estimated_ru - actual_ru
