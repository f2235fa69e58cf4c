"""RU pacing and per-partition adaptive concurrency.

Two controls, as in the .NET and Java bulk executors:

* :class:`RUBudget` paces the whole sink to a chosen RU/s with a token bucket. The bucket holds
  only 0.1 s worth of RU (``burst_seconds``), because Cosmos DB meters each physical partition per
  second: a large bucket lets a burst land in one second and get throttled even though the average
  is within budget. A request larger than the bucket is let through once the bucket is full and
  leaves it in debt, so large batches are paced too. Estimates are corrected with the real charge
  (:meth:`RUBudget.settle`), so the long-run rate is the budget whatever the estimates.
* :class:`PartitionGate` limits requests in flight per target partition key range with AIMD:
  +1 after a window of clean completions (a window is as many completions as the current limit,
  i.e. about one round trip of every slot), halved on a 429 — at most once per window, because
  the in-flight requests that were sent under the old limit report their 429s after the first
  one — plus a pause until the server's ``x-ms-retry-after-ms`` that every task of that
  partition respects. Until the first 429 the limit grows every window (a fast start); after it,
  at most once per ``increase_interval`` (0.25 s). Without that, a partition whose round trip is
  a few milliseconds would add dozens of slots within one metering second and overshoot by all
  of them at once; in simulations of Cosmos-style per-second metering (``tests/core``) this keeps
  429s at 0.3-3 % of requests while using 82-100 % of what the server allows.

With a budget below what the server allows, the bucket is the binding limit and 429s stay near
zero; without a budget (serverless, or none given) the gates find the server's limit and the
pauses keep 429s to a few percent of requests.

Everything reads time from ``anyio.current_time()`` and waits with anyio primitives, so it is
cancellation-safe and a virtual-time event loop can drive it in tests.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import anyio.lowlevel

from asyncmig.core.engine.shared_budget import SharedBudget, range_share
from asyncmig.errors import UsageError

__all__ = [
    "BudgetStatistics",
    "GateStatistics",
    "Governor",
    "PartitionGate",
    "RUBudget",
    "Slot",
    "Ticket",
    "budget_from",
]

DEFAULT_BURST_SECONDS = 0.1
INITIAL_CREDIT_SECONDS = 1.0
DEFAULT_RATE_WINDOW = 5.0
DEFAULT_INITIAL_CONCURRENCY = 2
DEFAULT_MAX_CONCURRENCY = 32
DEFAULT_DECREASE = 0.5
DEFAULT_INCREASE_INTERVAL = 0.25
_EPSILON = 1e-6  # RU; absorbs float error so a waiter does not sleep again for nanoseconds


def budget_from(
    provisioned_ru: float | None, ru_budget: float | None, ru_fraction: float | None
) -> float | None:
    """The RU/s budget for a sink: an absolute budget wins, else a fraction of the provisioned
    throughput, where no fraction means all of it (pacing to what the target was given keeps 429s
    rare instead of finding the limit by hitting it), else ``None`` when nothing is provisioned
    (serverless: pace on 429 feedback alone).

    :raises UsageError: for a budget that is not a positive finite number or a fraction outside
        (0, 1].
    """
    if ru_budget is not None:
        if not (math.isfinite(ru_budget) and ru_budget > 0):
            raise UsageError(f"--ru-budget must be a positive number of RU/s, got {ru_budget}")
        return float(ru_budget)
    if ru_fraction is not None:
        if not 0 < ru_fraction <= 1:
            raise UsageError(f"--ru-fraction must be more than 0 and at most 1, got {ru_fraction}")
    if provisioned_ru is not None:
        return provisioned_ru * (1.0 if ru_fraction is None else ru_fraction)
    return None


# --------------------------------------------------------------------------------------------
# RU budget


@dataclass(frozen=True, slots=True)
class BudgetStatistics:
    """A snapshot of an :class:`RUBudget`.

    ``available`` is the RU in the bucket now (negative while in debt; ``None`` when unlimited);
    ``consumed`` the sum of actual charges; ``recent_rate`` the RU/s charged over the last few
    seconds.
    """

    budget: float | None
    burst: float | None
    available: float | None
    consumed: float
    requests: int
    recent_rate: float
    waiting: int


class RUBudget:
    """A token bucket in RU/s shared by every writer of one sink.

    Call :meth:`acquire` with an estimate before each request and :meth:`settle` with the
    estimate and the real ``x-ms-request-charge`` after it, on every path (a throttled request
    usually costs 0).
    """

    def __init__(
        self,
        budget: float | None,
        *,
        burst_seconds: float = DEFAULT_BURST_SECONDS,
        rate_window: float = DEFAULT_RATE_WINDOW,
        initial_credit_seconds: float | None = None,
    ) -> None:
        if budget is not None and not (math.isfinite(budget) and budget > 0):
            raise ValueError(f"an RU budget must be positive and finite, got {budget}")
        self._rate = budget
        self._capacity = budget * burst_seconds if budget is not None else math.inf
        # ``initial_credit_seconds`` lets a sink start with more than the burst: Cosmos meters per
        # second, so an idle partition accepts a whole second of budget at once. The credit is spent
        # down and never refilled above the burst.
        credit = burst_seconds if initial_credit_seconds is None else initial_credit_seconds
        self._tokens = budget * credit if budget is not None else math.inf
        self._last: float | None = None
        self._lock = anyio.Lock()
        self._waiting = 0
        self._consumed = 0.0
        self._requests = 0
        self._rate_window = rate_window
        self._window: deque[tuple[float, float]] = deque()
        self._window_sum = 0.0
        self._first_seen: float | None = None

    @property
    def budget(self) -> float | None:
        """RU/s, or ``None`` for unlimited."""
        return self._rate

    def _refill(self, now: float) -> None:
        if self._rate is None:
            return
        if self._last is not None and self._tokens < self._capacity:
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now

    async def acquire(self, estimated_ru: float) -> None:
        """Wait until the bucket can pay for a request of ``estimated_ru``, then deduct it.

        Waiters are served first come, first served. Cancellation while waiting deducts nothing.

        :raises ValueError: for a negative estimate.
        """
        if estimated_ru < 0:
            raise ValueError(f"an RU estimate cannot be negative, got {estimated_ru}")
        if self._rate is None:
            await anyio.lowlevel.checkpoint()
            return
        rate = self._rate
        self._waiting += 1
        try:
            async with self._lock:
                # A request bigger than the bucket waits for a full bucket, then runs it into debt.
                need = min(estimated_ru, self._capacity)
                while True:
                    self._refill(anyio.current_time())
                    shortfall = need - self._tokens
                    if shortfall <= _EPSILON:
                        break
                    await anyio.sleep(shortfall / rate)
                self._tokens -= estimated_ru
        finally:
            self._waiting -= 1

    def settle(self, estimated_ru: float, actual_ru: float) -> None:
        """Correct the bucket by the real charge of a request paid for with :meth:`acquire`.

        :raises ValueError: for a negative charge.
        """
        if actual_ru < 0:
            raise ValueError(f"a request charge cannot be negative, got {actual_ru}")
        now = anyio.current_time()
        self._consumed += actual_ru
        self._requests += 1
        if self._first_seen is None:
            self._first_seen = now
        self._window.append((now, actual_ru))
        self._window_sum += actual_ru
        self._trim(now)
        if self._rate is not None:
            self._refill(now)
            self._tokens = min(self._capacity, self._tokens + estimated_ru - actual_ru)

    def _trim(self, now: float) -> None:
        horizon = now - self._rate_window
        while self._window and self._window[0][0] < horizon:
            self._window_sum -= self._window.popleft()[1]

    def statistics(self) -> BudgetStatistics:
        """A snapshot for progress output and benchmarks (call from the event loop)."""
        now = anyio.current_time()
        self._trim(now)
        self._refill(now)
        elapsed = now - self._first_seen if self._first_seen is not None else 0.0
        # At least one second, so the first charges of a run do not read as an enormous rate.
        span = max(min(self._rate_window, elapsed), 1.0)
        return BudgetStatistics(
            budget=self._rate,
            burst=self._capacity if self._rate is not None else None,
            available=self._tokens if self._rate is not None else None,
            consumed=self._consumed,
            requests=self._requests,
            recent_rate=max(self._window_sum, 0.0) / span,
            waiting=self._waiting,
        )


# --------------------------------------------------------------------------------------------
# Per-partition AIMD gate


@dataclass(frozen=True, slots=True)
class GateStatistics:
    """A snapshot of a :class:`PartitionGate`; ``paused_for`` is the seconds of pause left."""

    limit: int
    in_flight: int
    waiting: int
    completions: int
    throttles: int
    decreases: int
    failures: int
    paused_for: float


class Slot:
    """One request's permission to run; report a 429 with :meth:`throttled`.

    Leaving the ``async with`` normally counts as a clean completion unless :meth:`throttled` was
    called; leaving with an exception counts as a failure, which neither grows nor shrinks the
    limit.
    """

    __slots__ = ("_epoch", "_gate", "_throttled")

    def __init__(self, gate: PartitionGate, epoch: int) -> None:
        self._gate = gate
        self._epoch = epoch
        self._throttled = False

    def throttled(self, retry_after_s: float | None = None) -> None:
        """Report a 429: pause the partition for ``retry_after_s`` and shrink the limit.

        A second call for the same slot only extends the pause.
        """
        self._gate._on_throttle(self, retry_after_s)


class PartitionGate:
    """AIMD concurrency limit plus a shared pause for one target partition key range.

    Waiters are served in arrival order; a retry should leave its slot and enter a new one so
    that it respects the pause.
    """

    def __init__(
        self,
        *,
        initial: int = DEFAULT_INITIAL_CONCURRENCY,
        minimum: int = 1,
        maximum: int = DEFAULT_MAX_CONCURRENCY,
        decrease: float = DEFAULT_DECREASE,
        increase_interval: float = DEFAULT_INCREASE_INTERVAL,
    ) -> None:
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError(f"need 1 <= minimum <= initial <= maximum, got {minimum}, {initial}, {maximum}")
        if not 0 < decrease < 1:
            raise ValueError(f"the decrease factor must be in (0, 1), got {decrease}")
        self._limit = initial
        self._minimum = minimum
        self._maximum = maximum
        self._decrease = decrease
        self._increase_interval = increase_interval
        self._congested = False  # a 429 has been seen: growth is now paced by increase_interval
        self._last_change = -math.inf
        self._in_flight = 0
        self._queue: deque[anyio.Event] = deque()
        self._freed: anyio.Event | None = None
        self._paused_until = -math.inf
        self._epoch = 0  # bumped on every decrease; 429s from slots of older epochs do not decrease again
        self._clean = 0
        self._completions = 0
        self._throttles = 0
        self._decreases = 0
        self._failures = 0

    @property
    def limit(self) -> int:
        """Requests currently allowed in flight."""
        return self._limit

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """Wait while the partition is paused or at its limit, then hold a slot for one request."""
        await self._enter()
        slot = Slot(self, self._epoch)
        ok = False
        try:
            yield slot
            ok = True
        finally:
            self._leave(slot, ok)

    async def _enter(self) -> None:
        if not self._queue and self._in_flight < self._limit and anyio.current_time() >= self._paused_until:
            await anyio.lowlevel.checkpoint_if_cancelled()
            self._in_flight += 1
            return
        ticket = anyio.Event()
        self._queue.append(ticket)
        try:
            if self._queue[0] is not ticket:
                await ticket.wait()  # set when this task reaches the head of the queue
            while True:
                now = anyio.current_time()
                if now < self._paused_until:
                    await anyio.sleep(self._paused_until - now)
                elif self._in_flight < self._limit:
                    self._in_flight += 1
                    break
                else:
                    self._freed = anyio.Event()
                    await self._freed.wait()
        finally:
            was_head = self._queue[0] is ticket
            self._queue.remove(ticket)
            if was_head and self._queue:
                self._queue[0].set()

    def _leave(self, slot: Slot, ok: bool) -> None:
        self._in_flight -= 1
        if not ok and not slot._throttled:
            self._failures += 1
        elif ok and not slot._throttled:
            self._completions += 1
            if slot._epoch == self._epoch:
                self._clean += 1
                if self._clean >= self._limit and self._limit < self._maximum:
                    now = anyio.current_time()
                    if not self._congested or now - self._last_change >= self._increase_interval:
                        self._limit += 1
                        self._clean = 0
                        self._last_change = now
        if self._freed is not None:
            self._freed.set()

    def _on_throttle(self, slot: Slot, retry_after_s: float | None) -> None:
        if retry_after_s is not None and retry_after_s > 0:
            self._paused_until = max(self._paused_until, anyio.current_time() + retry_after_s)
        if slot._throttled:
            return
        slot._throttled = True
        self._throttles += 1
        if slot._epoch == self._epoch:
            self._limit = max(self._minimum, int(self._limit * self._decrease))
            self._epoch += 1
            self._clean = 0
            self._decreases += 1
            self._congested = True
            self._last_change = anyio.current_time()

    def statistics(self) -> GateStatistics:
        """A snapshot for progress output and benchmarks (call from the event loop)."""
        return GateStatistics(
            limit=self._limit,
            in_flight=self._in_flight,
            waiting=len(self._queue),
            completions=self._completions,
            throttles=self._throttles,
            decreases=self._decreases,
            failures=self._failures,
            paused_for=max(0.0, self._paused_until - anyio.current_time()),
        )


# --------------------------------------------------------------------------------------------
# Governor


class Ticket:
    """A request admitted by :meth:`Governor.request`; set :attr:`charge` from the response."""

    __slots__ = ("charge", "estimated_ru", "slot")

    def __init__(self, slot: Slot, estimated_ru: float) -> None:
        self.slot = slot
        self.estimated_ru = estimated_ru
        self.charge: float | None = None

    def throttled(self, retry_after_s: float | None, charge: float | None = None) -> None:
        """Report a 429 (which costs nothing unless the response said otherwise)."""
        self.charge = charge if charge is not None else 0.0
        self.slot.throttled(retry_after_s)


class Governor:
    """One RU budget for a sink and a :class:`PartitionGate` per target partition key range."""

    def __init__(
        self,
        budget: float | None = None,
        *,
        initial_concurrency: int = DEFAULT_INITIAL_CONCURRENCY,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        burst_seconds: float = DEFAULT_BURST_SECONDS,
        shared: SharedBudget | None = None,
        container_ru: float | None = None,
    ) -> None:
        """``shared`` paces several workers' sinks together, in total and per target range (see
        :mod:`asyncmig.core.engine.shared_budget`); it takes the place of ``budget``.
        ``container_ru`` is the target container's own RU/s, which sets each range's share (see
        :func:`~asyncmig.core.engine.shared_budget.range_share`); None when unknown or shared by its database."""
        self.shared = shared
        self.container_ru = container_ru
        self.budget = RUBudget(budget, burst_seconds=burst_seconds, initial_credit_seconds=INITIAL_CREDIT_SECONDS)
        self._burst = burst_seconds
        self._initial = initial_concurrency
        self._maximum = max_concurrency
        self._gates: dict[str, PartitionGate] = {}
        self._lane_budgets: dict[str, RUBudget] = {}

    def share_budget(self, lanes: list[str]) -> None:
        """Give each of the target's physical ranges (one lane each) its share of the budget.

        Cosmos DB meters every physical partition on its own, at the provisioned RU/s divided by
        the number of partitions; a global bucket alone lets a hot range take more than that share
        and be throttled. Each lane gets :func:`~asyncmig.core.engine.shared_budget.range_share`; the global bucket caps their sum. No
        budget: nothing to share (429 feedback alone).
        """
        if self.shared is not None:
            self.shared.lanes = max(len(lanes), 1)
        if self.budget.budget is not None and lanes:
            share = range_share(self.budget.budget, self.container_ru, len(lanes))
            for lane in lanes:
                self._lane_budgets[lane] = RUBudget(share, burst_seconds=self._burst,
                                                    initial_credit_seconds=INITIAL_CREDIT_SECONDS)

    def gate(self, lane: str) -> PartitionGate:
        """The gate of a lane (one target physical range, see :meth:`share_budget`), created on first use."""
        gate = self._gates.get(lane)
        if gate is None:
            gate = PartitionGate(initial=self._initial, maximum=self._maximum)
            self._gates[lane] = gate
        return gate

    @asynccontextmanager
    async def request(self, lane: str, estimated_ru: float) -> AsyncIterator[Ticket]:
        """Admit one request to ``lane``: a slot of its gate first, then the RU; settle the charge on exit.

        The slot comes first so that RU are not paid for while the partition is paused. On exit
        the budget is settled with :attr:`Ticket.charge`, or with the estimate when no charge is
        known (a request that failed in transit may still have been executed).
        """
        lane_budget = self._lane_budgets.get(lane)
        async with self.gate(lane).slot() as slot:
            if lane_budget is not None:
                await lane_budget.acquire(estimated_ru)
            await self.budget.acquire(estimated_ru)
            if self.shared is not None:
                await self.shared.acquire(lane, estimated_ru)
            ticket = Ticket(slot, estimated_ru)
            try:
                yield ticket
            finally:
                charge = ticket.charge if ticket.charge is not None else estimated_ru
                self.budget.settle(estimated_ru, charge)
                if self.shared is not None:
                    self.shared.settle(lane, estimated_ru, charge)
                if lane_budget is not None:
                    lane_budget.settle(estimated_ru, charge)
