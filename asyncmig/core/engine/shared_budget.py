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
DEFAULT_MAX_BANKED_SECONDS = 0.1


class Bank(Protocol):
    """Where grants come from: in-process (:class:`BudgetBank`) or a remote actor wrapping one."""

    async def grant(self, worker: str, want: float) -> float:
        """Up to ``want`` RU for ``worker`` now (possibly 0 when the bank is empty)."""
        ...


class BudgetBank:
    """The central token bucket in RU/s; grants what it holds, up to what is asked."""

    def __init__(self, budget: float, *, max_banked_seconds: float = DEFAULT_MAX_BANKED_SECONDS) -> None:
        if not (math.isfinite(budget) and budget > 0):
            raise ValueError(f"a shared RU budget must be positive and finite, got {budget}")
        self.budget = budget
        self._capacity = budget * max_banked_seconds
        self._tokens = 0.0  # empty at start and after a restart: no burst
        self._last: float | None = None
        self.granted = 0.0
        self.by_worker: dict[str, float] = {}

    def _refill(self, now: float) -> None:
        if self._last is not None:
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self.budget)
        self._last = now

    async def grant(self, worker: str, want: float) -> float:
        self._refill(anyio.current_time())
        given = max(0.0, min(want, self._tokens))
        self._tokens -= given
        self.granted += given
        self.by_worker[worker] = self.by_worker.get(worker, 0.0) + given
        return given


class SharedBudget:
    """A worker's side of the shared budget: a reserve of granted RU, refilled ahead of need."""

    def __init__(self, bank: Bank, worker: str, budget: float, *,
                 grant_seconds: float = DEFAULT_GRANT_SECONDS) -> None:
        self.bank = bank
        self.worker = worker
        self.budget = budget
        self.grant_size = budget * grant_seconds
        self._reserve = 0.0
        self._lock = anyio.Lock()
        self.consumed = 0.0

    async def acquire(self, estimated_ru: float) -> None:
        """Wait until the reserve can pay ``estimated_ru`` (a request larger than one grant waits
        for a full grant, then runs the reserve into debt that later grants pay back)."""
        async with self._lock:
            need = min(estimated_ru, self.grant_size)
            while self._reserve < need:
                got = await self.bank.grant(self.worker, self.grant_size)
                self._reserve += got
                if self._reserve < need:
                    # The bank is empty: wait about as long as the bank takes to refill the gap.
                    await anyio.sleep(max((need - self._reserve) / self.budget, 0.001))
            self._reserve -= estimated_ru

    def settle(self, estimated_ru: float, actual_ru: float) -> None:
        """Return the estimate's surplus to the reserve, or take the shortfall from it."""
        self.consumed += actual_ru
        self._reserve += estimated_ru - actual_ru
