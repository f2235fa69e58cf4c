"""Who may spend a range's RU budget: priority levels and throughput buckets, as Cosmos DB meters them.

Two request headers narrow what a request may draw from its physical range's budget
(:mod:`asyncmig.emulator.throttle`):

``x-ms-cosmos-priority-level: Low`` (priority-based execution)
    Requests are ``High`` unless they say otherwise. Either level may use the whole budget when the
    other is absent. While high-priority requests are active on a range (one arrived within the last
    :data:`HIGH_PRIORITY_WINDOW_S`), a low-priority request is admitted only while the range's bucket
    holds more than :data:`LOW_PRIORITY_RESERVE` of a second's budget; the rest is kept for
    high-priority requests, which are admitted down to an empty bucket. So when a range runs short,
    low-priority requests get 429 (substatus 3200) first while high-priority ones still get through.

``x-ms-cosmos-throughput-bucket: N`` (throughput buckets, N in 1..5)
    The container's offer may configure up to five buckets in its content,
    ``"throughputBuckets": [{"id": 1, "maxThroughputPercentage": 20}, ...]`` (replace the offer to
    change them, as on Cosmos DB). A request naming a configured bucket may use at most that share
    of its range's budget: it has its own token bucket at that share of the range's rate, and gets
    429 with substatus 3212 when it is empty. It is still charged to the range as a whole (throughput
    is capped, not reserved). A bucket id that is valid but not configured only meters against the
    container, and an id outside 1..5 is refused with 400, as Cosmos DB does.

The server sets the request's :class:`RequestClass` for the duration of each request
(:func:`classified`), so every metering point applies it without threading headers through.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from asyncmig.emulator.protocol import bad_request

PRIORITY_HEADER = "x-ms-cosmos-priority-level"
BUCKET_HEADER = "x-ms-cosmos-throughput-bucket"
LOW_PRIORITY_RESERVE = 0.5   # fraction of a second's budget low priority may not touch while high is active
HIGH_PRIORITY_WINDOW_S = 1.0  # how long after a high-priority request the range counts as contended
BUCKET_IDS = range(1, 6)
BUCKET_THROTTLED_SUBSTATUS = 3212


@dataclass(frozen=True, slots=True)
class RequestClass:
    low_priority: bool = False
    bucket: int | None = None


_DEFAULT = RequestClass()  # high priority, no bucket: what a request without either header is
_current: ContextVar[RequestClass] = ContextVar("request_class", default=_DEFAULT)


def classify(headers: Any) -> RequestClass:
    """The request's class from its headers; 400 for a priority or bucket Cosmos DB would refuse."""
    level = str(headers.get(PRIORITY_HEADER, "High")).strip().lower()
    if level not in ("high", "low"):
        raise bad_request(f"Invalid {PRIORITY_HEADER} {headers.get(PRIORITY_HEADER)!r}: use High or Low.")
    bucket = headers.get(BUCKET_HEADER)
    bucket_id: int | None = None
    if bucket is not None:
        try:
            bucket_id = int(bucket)
        except ValueError:
            bucket_id = 0
        if bucket_id not in BUCKET_IDS:
            raise bad_request(f"Invalid {BUCKET_HEADER} {bucket!r}: throughput bucket ids are 1 to 5.")
    return RequestClass(low_priority=level == "low", bucket=bucket_id)


@contextmanager
def classified(headers: Any) -> Iterator[RequestClass]:
    """Make the request's class current while it is served."""
    request_class = classify(headers)
    token = _current.set(request_class)
    try:
        yield request_class
    finally:
        _current.reset(token)


def current() -> RequestClass:
    return _current.get()


def bucket_share(offer_content: dict[str, Any], bucket: int | None) -> float | None:
    """The fraction of the container's throughput ``bucket`` may use, ``None`` when unconfigured."""
    if bucket is None:
        return None
    for configured in offer_content.get("throughputBuckets") or []:
        if configured.get("id") == bucket:
            return float(configured["maxThroughputPercentage"]) / 100
    return None


def validate_offer_content(content: Any) -> None:
    """Refuse an offer whose throughput buckets Cosmos DB would refuse (ids 1..5, shares 1..100 %)."""
    if not isinstance(content, dict):
        raise bad_request('An offer needs a "content" object.')
    buckets = content.get("throughputBuckets")
    if buckets is None:
        return
    if not isinstance(buckets, list) or len(buckets) > len(BUCKET_IDS):
        raise bad_request("throughputBuckets must be a list of at most 5 buckets.")
    seen: set[Any] = set()
    for configured in buckets:
        bucket_id = configured.get("id") if isinstance(configured, dict) else None
        share = configured.get("maxThroughputPercentage") if isinstance(configured, dict) else None
        if (isinstance(bucket_id, bool) or bucket_id not in BUCKET_IDS or bucket_id in seen
                or isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 100):
            raise bad_request(f"Invalid throughput bucket {configured!r}: each needs a distinct id from 1 to 5 "
                              "and a maxThroughputPercentage from 1 to 100.")
        seen.add(bucket_id)
