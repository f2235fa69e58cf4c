"""The lean read path: one feed range's change feed, requested by hand and decoded with orjson.

Why it exists: profiling a copy showed about two thirds of the copier's CPU in the SDK's change-feed
decoding (the standard library's JSON parser, run on the event loop, plus the SDK's per-page
bookkeeping). The SDK has no hook to change its decoder, so the source sends the same requests
itself, through :class:`~asyncmig.core.cosmos.transport.Transport`, and parses each page with
:func:`asyncmig.core.jsoncodec.loads` (orjson, with the exact fallback for integers wider than
64 bits). Measured figures are in docs/throughput.md ("The lean read path").

What is sent is what ``azure-cosmos`` 4.17.1 sends for ``query_items_change_feed(feed_range=...)``:
``GET /dbs/{db}/colls/{coll}/docs/`` with

* ``A-IM: Incremental Feed`` (latest version), or ``Full-Fidelity Feed`` plus
  ``x-ms-cosmos-changefeed-wire-format-version`` for all versions and deletes;
* ``If-None-Match``: the sub-range's last etag; ``*`` to start from now; absent to start from the
  beginning (a start time adds ``If-Modified-Since``);
* ``x-ms-max-item-count``, ``x-ms-cosmos-intended-collection-rid``;
* ``x-ms-documentdb-partitionkeyrangeid`` of the one physical range holding the sub-range, and for
  a sub-range narrower than that physical range ``x-ms-read-key-type: EffectivePartitionKeyRange``
  with ``x-ms-start-epk``/``x-ms-end-epk``.

Left out on purpose: the session token and consistency level (the source is only read, so there
is no own write to read back; every page resumes from an etag, so a lagging replica can only
answer "nothing new yet"), and the SDK's telemetry and client-capability headers.

Positions are the SDK's own continuation tokens, byte for byte (base64 of the change-feed state
JSON: container ``_rid``, mode, start, and one ``{token, range}`` entry per sub-range), so a
checkpoint written by either read path resumes on the other. Sub-ranges are read round-robin as
the SDK does; a range is finished when every sub-range has answered "nothing new" in a row. Unlike
the SDK, an empty 200 whose etag moved is not taken for the end (the service does answer pages
with no documents while more changes follow); one whose etag did not move is, so it cannot loop.

A split (410 with sub-status 1002 or 1007) refreshes the partition key ranges and replaces the
sub-range by its children, each continuing from the parent's etag, as the SDK does (the children
are clipped to the sub-range, which the SDK does not do). Everything else is retried through
:func:`~asyncmig.core.cosmos.retry.classify` and :class:`~asyncmig.core.cosmos.retry.Backoff`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from asyncmig.connection import CosmosEndpoint
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.links import normalized_bounds, parsed_range, path_from_link
from asyncmig.core.cosmos.metadata import PhysicalRange, read_physical_ranges
from asyncmig.core.cosmos.retry import Backoff, Failure, classify, wait_to_retry
from asyncmig.core.cosmos.transport import (
    Authorizer,
    CosmosHttpError,
    EntraAuthorizer,
    MasterKeyAuthorizer,
    Response,
    Transport,
    priority_headers,
    token_scope,
)
from asyncmig.core.engine.source import SourcePage
from asyncmig.core.engine.transform import Document
from asyncmig.errors import AsyncmigError, CorruptState, UsageError

__all__ = [
    "ENV_READ_PATH",
    "FeedPosition",
    "LeanChangeFeed",
    "Mode",
    "ReadPath",
    "Start",
    "chosen_read_path",
    "sdk_client_authorizer",
]

ReadPath = Literal["lean", "sdk"]
# Chooses the read path when the caller does not: an operational escape hatch back to the SDK's
# change-feed iterator, and how tests and benchmarks run the copier on either path.
ENV_READ_PATH = "ASYNCMIG_READ_PATH"

Mode = Literal["LatestVersion", "AllVersionsAndDeletes"]
Start = Literal["Beginning", "Now"]
_SPLIT_SUB_STATUSES = (1002, 1007)  # the range is gone / a split is completing
_NOT_MODIFIED = 304


def chosen_read_path(explicit: ReadPath | None = None) -> ReadPath:
    """The read path to use: ``explicit``, else :data:`ENV_READ_PATH`, else lean.

    :raises UsageError: the variable names neither path.
    """
    chosen = explicit or os.environ.get(ENV_READ_PATH) or "lean"
    if chosen not in ("lean", "sdk"):
        raise UsageError(f"{ENV_READ_PATH} must be 'lean' or 'sdk', not {chosen!r}")
    return "lean" if chosen == "lean" else "sdk"


# --------------------------------------------------------------------------------------------
# Positions: the SDK's composite continuation token


@dataclass(slots=True)
class _Cursor:
    """One sub-range ``[low, high)`` and the etag to continue it from (None: from the start)."""

    low: str
    high: str
    etag: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.etag,
                "range": {"min": self.low, "max": self.high, "isMinInclusive": True, "isMaxInclusive": False}}


class FeedPosition:
    """Where one feed range's change feed stands, in the SDK's continuation-token format.

    :ivar cursors: the sub-ranges, the one to read next first (rotated after every answer).
    """

    def __init__(self, container_rid: str, mode: str, start_from: dict[str, Any], scope: dict[str, Any],
                 cursors: deque[_Cursor]) -> None:
        self.container_rid = container_rid
        self.mode = mode
        self.start_from = start_from
        self.scope = scope  # {"Range": {...}}: the feed range the token was made for
        self.cursors = cursors

    @classmethod
    def beginning(cls, container_rid: str, feed_range: Mapping[str, Any], *, mode: Mode = "LatestVersion",
                  start_from: Start = "Beginning") -> FeedPosition:
        """A new position for ``feed_range`` (a ``read_feed_ranges()`` entry), from the beginning or now."""
        low, high = normalized_bounds(feed_range["Range"])
        return cls(container_rid, mode, {"Type": start_from}, {"Range": parsed_range(feed_range["Range"])},
                   deque([_Cursor(low, high, None)]))

    @classmethod
    def parse(cls, token: str, container_rid: str) -> FeedPosition:
        """Read a continuation token written by either read path.

        :raises CorruptState: the token is not a feed-range continuation, or was made for a
            container with another ``_rid`` (deleted and re-created since).
        """
        try:
            state = json.loads(base64.b64decode(token, validate=True))
            continuation = state["continuation"]
            if state.get("v") != "v2" or continuation.get("v") != "v2" or "Range" not in continuation:
                raise ValueError("not a version 2 feed-range continuation")
            entries = continuation["continuation"]
            if not isinstance(entries, list) or not entries:
                raise ValueError("no sub-ranges")
            cursors = deque(_cursor(entry) for entry in entries)
            start_from = dict(state["startFrom"])
            mode = str(state["mode"])
            rid = str(state["containerRid"])
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise CorruptState(f"the saved change-feed position cannot be read ({exc}); pass --restart to "
                               "start over") from None
        if rid != container_rid:
            raise CorruptState("the saved change-feed position belongs to a container that was deleted and "
                               "re-created since; pass --restart to start over")
        return cls(rid, mode, start_from, {"Range": continuation["Range"]}, cursors)

    def encode(self) -> str:
        """The token, byte for byte as the SDK writes it (its ``json.dumps`` defaults included)."""
        state = {
            "v": "v2", "containerRid": self.container_rid, "mode": self.mode, "startFrom": self.start_from,
            "continuation": {"v": "v2", "rid": self.container_rid,
                             "continuation": [c.to_dict() for c in self.cursors], **self.scope},
        }
        return base64.b64encode(json.dumps(state).encode("utf-8")).decode("ascii")

    @property
    def current(self) -> _Cursor:
        return self.cursors[0]

    def rotate(self) -> None:
        """Move to the next sub-range (the SDK reads its sub-ranges round-robin)."""
        self.cursors.rotate(-1)

    def split(self, children: list[tuple[str, str]]) -> None:
        """Replace the current sub-range by its children, clipped to it, each from its etag."""
        parent = self.cursors.popleft()
        for low, high in children:
            self.cursors.append(_Cursor(max(low, parent.low), min(high, parent.high), parent.etag))
        self.cursors.rotate(len(children))  # the first child is read next, where the parent was


def _cursor(entry: Mapping[str, Any]) -> _Cursor:
    low, high = normalized_bounds(entry["range"])
    etag = entry.get("token")
    return _Cursor(low, high, None if etag is None else str(etag))


# --------------------------------------------------------------------------------------------
# Routing: which physical range holds a sub-range


class _RoutingMap:
    """The container's current partition key ranges, reloaded when a split is reported."""

    def __init__(self) -> None:
        self.ranges: list[PhysicalRange] = []
        self.generation = 0
        self._lock = anyio.Lock()

    def overlapping(self, low: str, high: str) -> list[PhysicalRange]:
        return [r for r in self.ranges if r.low < high and low < r.high]

    async def refresh(self, transport: Transport, link: str, rid: str, seen: int) -> None:
        """Reload the ranges unless another reader already did since generation ``seen``."""
        async with self._lock:
            if self.generation != seen:
                return
            self.ranges = await read_physical_ranges(transport, link, rid)
            self.generation += 1


# --------------------------------------------------------------------------------------------
# The reader


class LeanChangeFeed:
    """Reads feed ranges of one container through their change feed, over hand-sent requests.

    One instance serves every feed range of the container (they share the routing map); each
    :meth:`pages` call holds its own connection, closed when it ends.

    :param link: the SDK's container link, ``dbs/{db}/colls/{coll}`` (``ContainerProxy.container_link``).
    :param rid: the container's ``_rid``: positions made for another container are refused.
    :param on_charge: called with the request charge of every answered read (200 or 304).
    :param mode: latest versions, or all versions and deletes (which Cosmos DB serves only from now on).
    :param start: where a range without a position starts: its beginning, or now.
    :param priority: sent as ``x-ms-cosmos-priority-level`` on every read (``Low``: throttled first).
    """

    def __init__(self, endpoint: CosmosEndpoint, link: str, rid: str, *, page_size: int,
                 on_charge: Callable[[float], None], mode: Mode = "LatestVersion", start: Start = "Beginning",
                 insecure: bool = False, authorizer: Authorizer | None = None,
                 priority: Literal["High", "Low"] | None = None) -> None:
        self._endpoint = endpoint
        self._politeness = priority_headers(priority)
        self._insecure = insecure
        self._authorizer = authorizer
        self.link = link
        self.rid = rid
        self.page_size = page_size
        self.mode: Mode = mode
        self.start: Start = start
        self._on_charge = on_charge
        self._path = path_from_link(link, "docs")
        self._routing = _RoutingMap()

    def _transport(self) -> Transport:
        return Transport(self._endpoint, connections=1, insecure=self._insecure, authorizer=self._authorizer)

    async def pages(self, feed_range: Mapping[str, Any], position: str | None, *,
                    what: str = "") -> AsyncGenerator[SourcePage, None]:
        """Pages of ``feed_range`` after ``position`` (None: from the beginning), then a last empty
        page carrying the range's final position when it moved without documents.

        :raises CorruptState: ``position`` cannot be resumed (see :meth:`FeedPosition.parse`).
        :raises AsyncmigError: a fault that is not retried, or persisted through every retry.
        """
        state = FeedPosition.parse(position, self.rid) if position else FeedPosition.beginning(
            self.rid, feed_range, mode=self.mode, start_from=self.start)
        transport = self._transport()
        try:
            async for page in self._read(transport, state, position, what or self.link):
                yield page
        finally:
            with anyio.CancelScope(shield=True):
                await transport.close()

    async def now(self, feed_range: Mapping[str, Any]) -> str:
        """The position of "now" for ``feed_range`` in this reader's mode: one read per sub-range from
        ``*``, answered 304 with the etag to go on from, as the SDK keeps it after its first read from
        now. Not retried here.

        :raises CosmosHttpError: the account refused (400: it does not offer the mode).
        """
        state = FeedPosition.beginning(self.rid, feed_range, mode=self.mode, start_from="Now")
        transport = self._transport()
        try:
            asked = 0
            while asked < len(state.cursors):
                headers = await self._headers(transport, state)
                if headers is None:
                    continue  # split locally: each child is asked in turn
                reply = await transport.request("GET", self._path, headers)
                if not reply.ok and reply.status != _NOT_MODIFIED:
                    raise reply.error()
                if reply.charge is not None:
                    self._on_charge(reply.charge)
                state.current.etag = reply.headers.get("etag") or state.current.etag
                state.rotate()
                asked += 1
            return state.encode()
        finally:
            with anyio.CancelScope(shield=True):
                await transport.close()

    async def _read(self, transport: Transport, state: FeedPosition, position: str | None,
                    what: str) -> AsyncGenerator[SourcePage, None]:
        backoff = Backoff()
        idle = 0  # sub-ranges that answered "nothing new" in a row
        while idle < len(state.cursors):
            cursor = state.current
            try:
                headers = await self._headers(transport, state)
                if headers is None:
                    continue  # the sub-range was split locally: read its first child
                reply = await transport.request("GET", self._path, headers)
                if not reply.ok and reply.status != _NOT_MODIFIED:
                    raise reply.error()
                documents = _documents(reply)
            except Exception as exc:  # noqa: BLE001 - classified: retried or turned into an asyncmig error
                failure = classify(exc)
                await self._recover(transport, cursor, failure, backoff, exc, f"reading {what}")
                continue
            if reply.charge is not None:
                self._on_charge(reply.charge)
            etag = reply.headers.get("etag")
            moved = etag is not None and etag != cursor.etag
            if etag is not None:
                cursor.etag = etag
            if documents:
                idle = 0
                state.rotate()
                position = state.encode()
                backoff = Backoff()  # the budget is for one fault, not for the whole range
                yield SourcePage(documents, position, numbers_checked=True)
            elif reply.status == _NOT_MODIFIED or not moved:
                idle += 1
                state.rotate()
            # else: an empty 200 that moved the etag: this sub-range has more to say
        final = state.encode()
        if final != position:
            yield SourcePage([], final)

    async def _headers(self, transport: Transport, state: FeedPosition) -> dict[str, str] | None:
        """The request headers for the current sub-range, or None after splitting it locally
        because the (refreshed) routing map shows it now spans several physical ranges."""
        cursor = state.current
        if not self._routing.ranges:
            await self._routing.refresh(transport, self.link, self.rid, self._routing.generation)
        physical = self._routing.overlapping(cursor.low, cursor.high)
        if not physical:
            raise AsyncmigError(f"no partition key range of {self.link} covers [{cursor.low},{cursor.high})")
        if len(physical) > 1:
            state.split([(r.low, r.high) for r in physical])
            return None
        headers = {"x-ms-max-item-count": str(self.page_size), "x-ms-cosmos-intended-collection-rid": self.rid,
                   "x-ms-documentdb-partitionkeyrangeid": physical[0].id, **self._politeness}
        if (physical[0].low, physical[0].high) != (cursor.low, cursor.high):
            headers.update({"x-ms-read-key-type": "EffectivePartitionKeyRange",
                            "x-ms-start-epk": cursor.low, "x-ms-end-epk": cursor.high})
        if state.mode == "AllVersionsAndDeletes":  # a position keeps the mode it was made in
            headers.update({"A-IM": "Full-Fidelity Feed", "x-ms-cosmos-changefeed-wire-format-version": "2021-09-15"})
        else:
            headers["A-IM"] = "Incremental Feed"
        start = state.start_from.get("Type")
        if start == "PointInTime":
            headers["If-Modified-Since"] = _http_date_from_ms(state.start_from["PointInTimeMs"])
        if cursor.etag is not None:
            headers["If-None-Match"] = cursor.etag
        elif start == "Now":
            headers["If-None-Match"] = "*"
        elif start == "Lease" and state.start_from.get("Etag"):
            headers["If-None-Match"] = str(state.start_from["Etag"])
        return headers

    async def _recover(self, transport: Transport, cursor: _Cursor, failure: Failure, backoff: Backoff,
                       exc: Exception, context: str) -> None:
        """Wait out a retryable failure, or raise. After a split the routing map is read again, and
        the sub-range is retried at once when it now maps elsewhere (while a split is still
        completing, the map is unchanged and the wait applies)."""
        delay = await wait_to_retry(backoff, failure, what=context, sleep=False, cause=exc)
        if isinstance(exc, CosmosHttpError) and exc.status == 410 and exc.sub_status in _SPLIT_SUB_STATUSES:
            before = self._routing.overlapping(cursor.low, cursor.high)
            await self._routing.refresh(transport, self.link, self.rid, self._routing.generation)
            if self._routing.overlapping(cursor.low, cursor.high) != before:
                return
        await anyio.sleep(delay)


def _documents(reply: Response) -> list[Document]:
    """The page's documents (none in a 304).

    :raises ValueError: the body is not a change-feed page.
    """
    if reply.status == _NOT_MODIFIED or not reply.body:
        return []
    page = jsoncodec.loads(reply.body)
    documents = page.get("Documents") if isinstance(page, dict) else None
    if not isinstance(documents, list):
        raise ValueError(f"a change-feed reply without a Documents list (HTTP {reply.status})")
    return documents


def _http_date_from_ms(milliseconds: int) -> str:
    from email.utils import formatdate  # noqa: PLC0415 - only start-time reads need it

    return formatdate(milliseconds / 1000, usegmt=True)


def sdk_client_authorizer(client_connection: Any) -> tuple[CosmosEndpoint, Authorizer, bool] | None:
    """The account URL, an authorizer and ``insecure`` taken from an SDK client connection, so the
    lean reader authenticates exactly as the source's SDK client does (its key, or its Entra ID
    credential, not closed here); None for resource-token clients, which the lean path does not serve."""
    url = str(client_connection.url_connection)
    insecure = bool(client_connection.connection_policy.DisableSSLVerification)
    if client_connection.master_key:
        key = str(client_connection.master_key)
        return CosmosEndpoint(url, key), MasterKeyAuthorizer(key), insecure
    if client_connection.aad_credentials is not None:
        scope, overridden = token_scope(url)
        endpoint = CosmosEndpoint(url)
        authorizer = EntraAuthorizer(client_connection.aad_credentials, scope, owned=False, overridden=overridden,
                                     account=endpoint.host)
        return endpoint, authorizer, insecure
    return None
