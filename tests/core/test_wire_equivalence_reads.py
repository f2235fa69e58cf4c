"""What the lean reader sends is what the SDK sends: both read paths go through a capturing proxy
(an in-process HTTP server in front of the emulator) and their requests are compared header by
header; canned error replies are classified the same on both paths, and both recover from the
same one-off faults."""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient

from asyncmig.connection import CosmosEndpoint
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.connect import cosmos_client_kwargs
from asyncmig.core.cosmos.container import Account
from asyncmig.core.cosmos.lean_reader import LeanChangeFeed, Mode
from asyncmig.core.cosmos.retry import classify
from asyncmig.core.cosmos.source import CosmosSource
from asyncmig.core.cosmos.transport import Transport
from asyncmig.errors import AsyncmigError
from tests.conftest import Cosmos
from tests.helpers import unique

PAGE = 3
# Headers whose presence and value decide what the service answers to a change-feed read.
MATTERS = ("a-im", "if-none-match", "if-modified-since", "x-ms-max-item-count", "x-ms-documentdb-partitionkeyrangeid",
           "x-ms-read-key-type", "x-ms-start-epk", "x-ms-end-epk", "x-ms-cosmos-intended-collection-rid",
           "x-ms-version", "x-ms-cosmos-changefeed-wire-format-version", "accept")
# What the SDK sends and the lean reader leaves out on purpose (see asyncmig/core/cosmos/lean_reader.py).
OMITTED = {"x-ms-session-token", "x-ms-consistency-level", "x-ms-documentdb-query-iscontinuationexpected",
           "x-ms-cosmos-sdk-supportedcapabilities", "x-ms-client-id", "x-ms-thinclient-proxy-resource-type",
           "x-ms-thinclient-proxy-operation-type", "cache-control", "content-length"}


@dataclass
class Captured:
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0
    body: bytes = b""

    @property
    def change_feed(self) -> bool:
        return self.path.endswith("/docs/") and "a-im" in self.headers

    def mattering(self) -> tuple[str, str, dict[str, str]]:
        return self.method, self.path, {h: v for h, v in self.headers.items() if h in MATTERS}


@dataclass
class Canned:
    status: int
    sub_status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


class CapturingProxy:
    """Forwards every request to the emulator and records it; change-feed reads can be answered
    with canned replies instead (queued in :attr:`canned`, one per request)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.captured: list[Captured] = []
        self.canned: deque[Canned] = deque()
        self.url = ""

    async def __aenter__(self) -> CapturingProxy:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()
        await self._runner.cleanup()

    def reset(self) -> None:
        self.captured.clear()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        entry = Captured(request.method, request.raw_path, {k.lower(): v for k, v in request.headers.items()}, body=body)
        self.captured.append(entry)
        if entry.change_feed and self.canned:
            canned = self.canned.popleft()
            entry.status = canned.status
            headers = {"x-ms-activity-id": "canned", "x-ms-request-charge": "1", **canned.headers}
            if canned.sub_status is not None:
                headers["x-ms-substatus"] = str(canned.sub_status)
            payload = canned.body if canned.body is not None else jsoncodec.dumps(
                {"code": "Canned", "message": f"canned {canned.status}"})
            return web.Response(status=canned.status, body=payload, headers=headers,
                                content_type="application/json")
        forwarded = {k: v for k, v in request.headers.items() if k.lower() not in ("content-length", "accept-encoding")}
        async with self._session.request(request.method, self.upstream + request.raw_path, headers=forwarded,
                                         data=body or None) as reply:
            payload = await reply.read()
            entry.status = reply.status
            headers = {k: v for k, v in reply.headers.items()
                       if k.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection")}
            return web.Response(status=reply.status, body=payload, headers=headers)


@pytest.fixture
async def proxy(cosmos: Cosmos) -> AsyncIterator[CapturingProxy]:
    async with CapturingProxy(cosmos.endpoint) as capturing:
        yield capturing


@pytest.fixture
async def container(proxy: CapturingProxy, cosmos: Cosmos) -> AsyncIterator[ContainerProxy]:
    endpoint = CosmosEndpoint(proxy.url, cosmos.key)
    async with CosmosClient(proxy.url, credential=cosmos.key, **cosmos_client_kwargs(endpoint)) as client:
        database = await client.create_database(unique("wire"))
        try:
            created = await database.create_container(unique("c"), PartitionKey("/pk"))
            for i in range(20):
                await created.upsert_item({"id": f"d{i}", "pk": f"p{i}", "n": i})
            yield created
        finally:
            await client.delete_database(database.id)


async def _read(container: ContainerProxy, path: str, feed_range: Any, position: str | None = None,
                priority: Any = None) -> list[str]:
    source = CosmosSource(container, page_size=PAGE, read_path=path, priority=priority)  # type: ignore[arg-type]
    await source.open()
    return [doc["id"] async for page in source.pages(feed_range, position) for doc in page.documents]


async def _feed_ranges(container: ContainerProxy) -> list[Any]:
    return [fr async for fr in container.read_feed_ranges(force_refresh=True)]


def _feed_requests(proxy: CapturingProxy) -> list[Captured]:
    return [c for c in proxy.captured if c.change_feed]


def _assert_same_wire(sdk: list[Captured], lean: list[Captured]) -> None:
    assert [c.mattering() for c in lean] == [c.mattering() for c in sdk]
    scheme = "type%3Dmaster%26ver%3D1.0%26sig%3D"
    for theirs, ours in zip(sdk, lean, strict=True):
        assert set(ours.headers) - set(theirs.headers) <= {"user-agent"}
        assert set(theirs.headers) - set(ours.headers) <= OMITTED | {"user-agent"}
        assert theirs.headers["authorization"].startswith(scheme) and ours.headers["authorization"].startswith(scheme)


async def _both_paths(proxy: CapturingProxy, container: ContainerProxy,
                      feed_range: Any) -> tuple[list[Captured], list[Captured], list[str], list[str]]:
    results: dict[str, tuple[list[Captured], list[str]]] = {}
    for path in ("sdk", "lean"):
        proxy.reset()
        ids = await _read(container, path, feed_range)
        results[path] = (_feed_requests(proxy), ids)
    sdk, lean = results["sdk"][0], results["lean"][0]
    # Over the SDK, the source reads on from the position the closing 304 moved to until a read no
    # longer moves it (the SDK also stops at an empty 200 page, so only that proves the end); the lean
    # reader sees the reply itself and needs no such confirmation. Those extra reads find nothing.
    extra = sdk[len(lean):]
    assert all(c.status == 304 for c in extra), [c.status for c in extra]
    return sdk[:len(lean)], lean, results["sdk"][1], results["lean"][1]


async def test_feed_range_reads_send_the_same_requests(proxy: CapturingProxy, container: ContainerProxy) -> None:
    for feed_range in await _feed_ranges(container):
        sdk, lean, sdk_ids, lean_ids = await _both_paths(proxy, container, feed_range)
        assert lean_ids == sdk_ids
        assert len(sdk) >= 2  # at least the first page and the closing 304
        assert "if-none-match" not in sdk[0].headers  # from the beginning
        _assert_same_wire(sdk, lean)


async def test_low_priority_reads_say_so_on_both_paths(proxy: CapturingProxy, container: ContainerProxy) -> None:
    """``--priority low`` covers the source's reads too (a live source is the application's own
    container): every change-feed request and the count query carry the priority header."""
    feed_range = (await _feed_ranges(container))[0]
    sent: dict[str, list[Captured]] = {}
    for path in ("sdk", "lean"):
        proxy.reset()
        source = CosmosSource(container, page_size=PAGE, read_path=path, priority="Low")  # type: ignore[arg-type]
        await source.open()
        assert [d async for page in source.pages(feed_range, None) for d in page.documents]
        assert await source.count_partition(feed_range) is not None
        sent[path] = [c for c in proxy.captured if c.change_feed or c.method == "POST"]
    for path, requests in sent.items():
        assert requests and all(c.headers.get("x-ms-cosmos-priority-level") == "Low" for c in requests), path
    _assert_same_wire(_feed_requests_of(sent["sdk"])[:len(_feed_requests_of(sent["lean"]))],
                      _feed_requests_of(sent["lean"]))


async def test_a_copys_metadata_requests_are_the_sdks(proxy: CapturingProxy, container: ContainerProxy,
                                                      cosmos: Cosmos) -> None:
    """A copy opens its containers without the SDK (asyncmig/core/cosmos/container.py): the container
    read and the per-range COUNT it sends are the requests the SDK sends for the same answers, a low
    priority included."""
    feed_range = (await _feed_ranges(container))[0]
    sdk_source = CosmosSource(container, read_path="sdk", priority="Low")
    proxy.reset()
    await sdk_source.open()
    expected = await sdk_source.count_partition(feed_range)
    sdk = list(proxy.captured)
    async with Account(CosmosEndpoint(proxy.url, cosmos.key)) as account:
        lean_source = CosmosSource(account.container(*container.container_link.split("/")[1::2]), priority="Low")
        proxy.reset()
        await lean_source.open()
        assert await lean_source.count_partition(feed_range) == expected == len(await _read(container, "sdk", feed_range))
        lean = list(proxy.captured)

    def counts(requests: list[Captured]) -> list[Captured]:
        return [c for c in requests if c.method == "POST" and "x-ms-documentdb-partitionkeyrangeid" in c.headers]

    (sdk_count,), (lean_count,) = counts(sdk), counts(lean)
    assert lean_count.mattering() == sdk_count.mattering()
    for header in ("x-ms-documentdb-isquery", "content-type", "x-ms-cosmos-priority-level"):
        assert lean_count.headers.get(header) == sdk_count.headers.get(header), header
    assert lean_count.body == sdk_count.body
    # (the ranges feed is compared by test_the_routing_read_matches_the_sdks: one reader serves both)
    properties = "/colls/" + container.id + "/"
    sdk_reads = {_frozen(c) for c in sdk if c.method == "GET" and c.path.endswith(properties)}
    lean_reads = {_frozen(c) for c in lean if c.method == "GET" and c.path.endswith(properties)}
    assert lean_reads and lean_reads <= sdk_reads


def _frozen(request: Captured) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    method, path, headers = request.mattering()
    return method, path, tuple(sorted(headers.items()))


def _feed_requests_of(requests: list[Captured]) -> list[Captured]:
    return [c for c in requests if c.change_feed]


async def test_a_sub_range_of_a_physical_range_sends_the_same_epk_filter(
    proxy: CapturingProxy, container: ContainerProxy
) -> None:
    first = (await _feed_ranges(container))[0]["Range"]
    middle = format(int(first["max"] or "FF", 16) // 2, "02X")
    narrow = {"Range": {"min": first["min"], "max": middle, "isMinInclusive": True, "isMaxInclusive": False}}
    sdk, lean, sdk_ids, lean_ids = await _both_paths(proxy, container, narrow)
    assert lean_ids == sdk_ids
    assert sdk[0].headers["x-ms-read-key-type"] == "EffectivePartitionKeyRange"
    assert sdk[0].headers["x-ms-end-epk"] == middle
    _assert_same_wire(sdk, lean)


async def test_the_routing_read_matches_the_sdks(proxy: CapturingProxy, container: ContainerProxy) -> None:
    feed_range = (await _feed_ranges(container))[0]
    proxy.reset()
    await container.read_feed_ranges(force_refresh=True).__anext__()
    sdk = [c for c in proxy.captured if c.path.endswith("/pkranges/")]
    proxy.reset()
    await _read(container, "lean", feed_range)
    lean = [c for c in proxy.captured if c.path.endswith("/pkranges/")]
    assert [c.status for c in lean] == [c.status for c in sdk] == [200, 304]  # drained until 304
    _assert_same_wire(sdk, lean)


@pytest.mark.parametrize(("status", "sub_status", "headers"), [
    (429, 3200, {"x-ms-retry-after-ms": "7"}),
    (410, 1002, {}),
    (449, None, {}),
    (408, None, {}),
    (503, None, {}),
    (403, 1014, {}),
])
async def test_canned_errors_are_classified_the_same(
    proxy: CapturingProxy, container: ContainerProxy, cosmos: Cosmos, status: int, sub_status: int | None,
    headers: dict[str, str],
) -> None:
    feed_range = (await _feed_ranges(container))[0]
    canned = Canned(status, sub_status, headers)
    proxy.canned.extend([canned] * 50)  # enough to outlast the SDK's own retries of 408/503
    sdk_exception: BaseException | None = None
    if status == 410:  # the SDK's change feed refreshes routing and retries a 410 forever
        proxy.canned.clear()
    else:
        with pytest.raises(Exception) as raised:  # noqa: PT011 - whatever the SDK raises is what is compared
            pager = container.query_items_change_feed(feed_range=feed_range, start_time="Beginning").by_page()
            await pager.__anext__()
        sdk_exception = raised.value
    proxy.canned.clear()
    proxy.canned.append(canned)
    transport = Transport(CosmosEndpoint(proxy.url, cosmos.key), connections=1)
    try:
        reply = await transport.request("GET", f"/{container.container_link}/docs/", {"A-IM": "Incremental Feed"})
    finally:
        await transport.close()
    lean = classify(reply.error())
    assert (lean.status, lean.sub_status) == (status, sub_status)
    if sdk_exception is not None:
        sdk = classify(sdk_exception)
        assert (sdk.kind, sdk.status, sdk.sub_status, sdk.retry_after_s) == \
            (lean.kind, lean.status, lean.sub_status, lean.retry_after_s)
    else:
        assert lean.kind == "split"


@pytest.mark.parametrize(("status", "sub_status"),
                         [(429, 3200), (410, 1002), (410, 1007), (449, None), (408, None), (503, None)])
async def test_both_paths_recover_from_a_one_off_fault(
    proxy: CapturingProxy, container: ContainerProxy, status: int, sub_status: int | None
) -> None:
    feed_range = (await _feed_ranges(container))[0]
    expected = await _read(container, "sdk", feed_range)
    for path in ("sdk", "lean"):
        proxy.reset()
        proxy.canned.append(Canned(status, sub_status, {"x-ms-retry-after-ms": "1"}))
        assert await _read(container, path, feed_range) == expected, path
        statuses = [c.status for c in _feed_requests(proxy)]
        assert statuses[0] == status and 200 in statuses[1:]
        if sub_status == 1002:  # the range is gone: the routing is read again before the retry
            gone = next(i for i, c in enumerate(proxy.captured) if c.status == 410)
            retry = next(i for i, c in enumerate(proxy.captured) if i > gone and c.change_feed)
            assert any(c.path.endswith("/pkranges/") for c in proxy.captured[gone:retry]), path


async def test_a_permanent_fault_ends_both_paths_the_same_way(proxy: CapturingProxy, container: ContainerProxy) -> None:
    feed_range = (await _feed_ranges(container))[0]
    messages = {}
    for path in ("sdk", "lean"):
        proxy.canned.clear()
        proxy.canned.append(Canned(403, 1014))
        with pytest.raises(AsyncmigError) as raised:
            await _read(container, path, feed_range)
        messages[path] = str(raised.value)
    assert messages["lean"] == messages["sdk"]


async def test_an_empty_page_ends_the_read_only_when_the_etag_stops_moving(
    proxy: CapturingProxy, container: ContainerProxy
) -> None:
    """Cosmos DB may answer 200 with no documents and a later etag (its changes fell outside the
    EPK sub-range read): that is not the end. The SDK's iterator takes it for one; the source reads
    on past it on both paths (over the SDK by reading again from the moved position)."""
    feed_range = (await _feed_ranges(container))[0]
    everything = await _read(container, "sdk", feed_range)
    assert everything
    empty = jsoncodec.dumps({"_rid": "x", "Documents": [], "_count": 0})
    for path, expected in (("sdk", everything), ("lean", everything)):
        proxy.canned.append(Canned(200, None, {"etag": '"0"'}, empty))
        assert await _read(container, path, feed_range) == expected, path
    # a finished position answered by an empty 200 with the same etag: the end, after one request
    source = CosmosSource(container, page_size=PAGE, read_path="lean")
    await source.open()
    final = [page async for page in source.pages(feed_range, None)][-1].position
    assert final is not None
    proxy.reset()
    etag = jsoncodec.loads(base64.b64decode(final))["continuation"]["continuation"][0]["token"]
    proxy.canned.append(Canned(200, None, {"etag": etag}, empty))
    pages = [page async for page in source.pages(feed_range, final)]
    assert [page.documents for page in pages] == [[]] and pages[0].caught_up  # only the closing page
    assert len(_feed_requests(proxy)) == 1


@pytest.mark.parametrize("mode", ["LatestVersion", "AllVersionsAndDeletes"])
async def test_reading_from_now_sends_the_same_requests_in_both_modes(
    proxy: CapturingProxy, container: ContainerProxy, cosmos: Cosmos, mode: Mode
) -> None:
    """Started from now (the only start the all-versions feed has), then continued from the token
    each path handed out after a few writes: the same requests and the same changes."""
    feed_range = (await _feed_ranges(container))[0]
    lean_reader = LeanChangeFeed(CosmosEndpoint(proxy.url, cosmos.key), container.container_link,
                                 (await container.read())["_rid"], page_size=PAGE, on_charge=lambda _: None,
                                 mode=mode, start="Now")
    proxy.reset()
    pages = container.query_items_change_feed(feed_range=feed_range, start_time="Now", mode=mode,
                                              max_item_count=PAGE).by_page()
    assert [page async for page in pages] == []
    sdk_token = container.client_connection.last_response_headers["etag"]  # no page: the token is only here
    sdk_start = _feed_requests(proxy)
    proxy.reset()
    lean_start_pages = [page async for page in lean_reader.pages(feed_range, None)]
    assert [page.documents for page in lean_start_pages] == [[]]
    _assert_same_wire(sdk_start, _feed_requests(proxy))
    assert sdk_start[0].headers["if-none-match"] == "*"
    assert lean_start_pages[0].position == sdk_token

    for i in range(12):
        await container.upsert_item({"id": f"d{i}", "pk": f"p{i}", "n": -i})
    await container.delete_item("d0", partition_key="p0")
    proxy.reset()
    pages = container.query_items_change_feed(continuation=sdk_token, mode=mode, max_item_count=PAGE).by_page()
    sdk_changes = [change async for page in pages async for change in page]
    sdk_next = _feed_requests(proxy)
    proxy.reset()
    lean_changes = [change async for page in lean_reader.pages(feed_range, sdk_token) for change in page.documents]
    _assert_same_wire(sdk_next, _feed_requests(proxy))
    assert lean_changes == sdk_changes and lean_changes


async def test_a_reply_that_is_not_a_change_feed_page_is_an_error_not_a_crash(
    proxy: CapturingProxy, container: ContainerProxy
) -> None:
    feed_range = (await _feed_ranges(container))[0]
    proxy.canned.append(Canned(200, None, {"etag": '"1"'}, b'{"unexpected": true}'))
    with pytest.raises(AsyncmigError, match="without a Documents list"):
        await _read(container, "lean", feed_range)
