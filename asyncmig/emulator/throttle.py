"""Per-physical-range RU budgets, as Cosmos DB meters them.

A container's provisioned RU/s (manual, or the autoscale maximum) is split evenly over its online
physical ranges. Each range holds a token bucket of at most one second of budget that refills
continuously; a request finding it empty or overdrawn is refused with 429 / 3200 and a
``x-ms-retry-after-ms`` that says when it may come back. A request that is admitted is charged
afterwards, so a large write can overdraw the bucket (as in Cosmos).

Retry-after values are staggered: each throttled request is given its own future slot, one
average request cost of refill after the previous one. Telling every throttled request "come back
when the bucket turns positive" sent them all back at the same instant, where one got in and the
rest were throttled again; with 30 concurrent writers per range the SDK's 9 retries ran out and a
default client failed (found by tests/emulator/test_throttling.py).

Low-priority requests are refused earlier while high-priority ones are active on the range, and a
throughput bucket is one more bucket at its share of the range's rate: see
:mod:`asyncmig.emulator.priority` for the model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from asyncmig.emulator.priority import HIGH_PRIORITY_WINDOW_S, LOW_PRIORITY_RESERVE


@dataclass(slots=True)
class _Bucket:
    rate: float
    tokens: float
    stamp: float
    promised: float = 0.0     # monotonic time up to which refill is already promised to throttled requests
    avg_cost: float = 1.0     # moving average of the RU an admitted request costs here
    promised_low: float = 0.0  # the same queue for low-priority requests, kept apart so they never delay high ones
    high_seen: float = -math.inf  # monotonic time of the last high-priority request


class Throttle:
    def __init__(self, *, enabled: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = enabled
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def _bucket(self, key: tuple[str, str], rate: float) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[key] = _Bucket(rate, rate, now)
        else:
            bucket.tokens = min(rate, bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
        return bucket

    def admit(self, coll: str, range_id: str, rate: float | None, *, low_priority: bool = False) -> int | None:
        """``None`` when the request may run, else the milliseconds the client must wait.

        A low-priority request must leave :data:`LOW_PRIORITY_RESERVE` of a second's budget in the
        bucket while high-priority requests are active here; otherwise both may empty it.
        """
        if not self.enabled or rate is None:
            return None
        bucket = self._bucket((coll, range_id), rate)
        now = bucket.stamp
        floor = 0.0
        if not low_priority:
            bucket.high_seen = now
        elif now - bucket.high_seen < HIGH_PRIORITY_WINDOW_S:
            floor = LOW_PRIORITY_RESERVE * rate
        if bucket.tokens > floor:
            return None
        above_floor = now - (bucket.tokens - floor) / rate  # when the bucket is back above the floor
        if low_priority:
            start = max(above_floor, bucket.promised_low)
            bucket.promised_low = start + bucket.avg_cost / rate
        else:
            start = max(above_floor, bucket.promised)  # positive again, or after the queue
            bucket.promised = start + bucket.avg_cost / rate
        return max(1, math.ceil((start - now) * 1000) + 1)

    def charge(self, coll: str, range_id: str, rate: float | None, ru: float) -> None:
        if self.enabled and rate is not None:
            bucket = self._bucket((coll, range_id), rate)
            bucket.tokens -= ru
            bucket.avg_cost = 0.8 * bucket.avg_cost + 0.2 * ru

    def forget(self, coll: str) -> None:
        for key in [k for k in self._buckets if k[0] == coll]:
            del self._buckets[key]


@dataclass(slots=True)
class Stats:
    """Counters the admin endpoint reports, so tests can compare a client's RU total with ours."""

    requests: int = 0
    throttled: int = 0
    charged_ru: dict[str, float] | None = None

    def add_charge(self, container: str, ru: float) -> None:
        if self.charged_ru is None:
            self.charged_ru = {}
        self.charged_ru[container] = self.charged_ru.get(container, 0.0) + ru
