"""The lean path's bulk batches against what an official SDK sends for the same upserts.

The Python SDK has no bulk mode, so the reference is the JavaScript SDK's ``executeBulkOperations``
(tests/js/bulk_wire.mjs, run with node). Both clients talk to the emulator through a small capturing
proxy in this process that forwards every request unchanged (the Host header too, so the emulator
advertises the proxy as the account's endpoint and the JS SDK keeps using it). Compared: method,
path, the headers that decide how the request is served, and the meaning of the body (operations,
each key's JSON text as a value, each document), for string, number, boolean, null, undefined and
hierarchical keys and unicode ids (integers beyond 2^53 only on the lean side: JavaScript numbers cannot
carry them).

Then canned error replies (an in-process aiohttp server): the same refusal is classified the same
on both write paths, whether it answers the whole request or one operation of a 207.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient, DatabaseProxy

from asyncmig.connection import CosmosEndpoint
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.connect import cosmos_client_kwargs
from asyncmig.core.cosmos.lean_writer import LeanContainer, LeanWriter, bulk_operations
from asyncmig.core.cosmos.retry import Failure, classify
from asyncmig.core.cosmos.sink import CosmosSink, operation_failure
from asyncmig.core.engine.governor import Governor
from tests.conftest import Cosmos, needs_emulator
from tests.helpers import unique

JS_DIR = Path(__file__).resolve().parents[1] / "js"
NODE = shutil.which("node")
JS_READY = NODE is not None and (JS_DIR / "node_modules" / "@azure" / "cosmos").is_dir()

# Headers that decide how a bulk request is served; compared by value (case-insensitively).
SERVING_HEADERS = ("x-ms-cosmos-is-batch-request", "x-ms-cosmos-batch-atomic", "x-ms-cosmos-batch-continue-on-error")


@dataclass
class Captured:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class CapturingProxy:
    """Forwards every request to ``upstream`` and keeps a copy of it."""

    upstream: str
    requests: list[Captured] = field(default_factory=list)
    url: str = ""

    def bulk(self) -> list[Captured]:
        return [r for r in self.requests if r.headers.get("x-ms-cosmos-is-batch-request")]


@pytest.fixture
async def proxy(cosmos: Cosmos) -> AsyncIterator[CapturingProxy]:
    captured = CapturingProxy(cosmos.endpoint.rstrip("/"))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:

        async def forward(request: web.Request) -> web.Response:
            body = await request.read()
            headers = {k.lower(): v for k, v in request.headers.items()}
            captured.requests.append(Captured(request.method, request.path, headers, body))
            async with session.request(request.method, captured.upstream + request.path_qs, data=body,
                                       headers=dict(request.headers)) as reply:
                payload = await reply.read()
                kept = {k: v for k, v in reply.headers.items()
                        if k.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection")}
                return web.Response(status=reply.status, body=payload, headers=kept)

        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(runner, sock)
        await site.start()
        captured.url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        try:
            yield captured
        finally:
            await runner.cleanup()


async def _run_js(proxy: CapturingProxy, cosmos: Cosmos, database: str, container: str,
                  operations: list[Any]) -> None:
    """Run the node script without blocking the event loop the proxy serves on."""
    assert NODE is not None
    with anyio.fail_after(60):
        completed = await anyio.run_process(
            [NODE, str(JS_DIR / "bulk_wire.mjs")], cwd=JS_DIR, check=False,
            env={**os.environ, "COSMOS_ENDPOINT": proxy.url, "COSMOS_KEY": cosmos.key, "COSMOS_DATABASE": database,
                 "COSMOS_CONTAINER": container, "OPERATIONS": json.dumps(operations)},
        )
    result = json.loads(completed.stdout.decode().strip().splitlines()[-1])
    assert "error" not in result and all(200 <= s < 300 for s in result["statuses"]), (result, completed.stderr)


def _operations(requests: list[Captured]) -> dict[str, tuple[str, Any, Any]]:
    """Every bulk operation sent, by document id: (type, key as a value, document)."""
    found: dict[str, tuple[str, Any, Any]] = {}
    for request in requests:
        for op in jsoncodec.loads(request.body):
            body = op["resourceBody"]
            found[body["id"]] = (op["operationType"], jsoncodec.loads(op["partitionKey"]), body)
    return found


def _serving(request: Captured) -> dict[str, Any]:
    return {
        "method": request.method,
        "path": request.path.rstrip("/").rsplit("/colls/", 1)[0] + "/colls/*/docs",
        **{name: request.headers.get(name, "").lower() for name in SERVING_HEADERS},
        "range addressed": "x-ms-documentdb-partitionkeyrangeid" in request.headers,
        "key header": "x-ms-documentdb-partitionkey" in request.headers,
        "content-type": request.headers.get("content-type", "").split(";")[0],
    }


KEY_CASES = {
    "string": (PartitionKey("/pk"), [{"id": f"s-{i}-ü😀", "pk": f"ключ-{i % 7}", "n": i} for i in range(40)]),
    "number": (PartitionKey("/pk"), [{"id": f"n{i}", "pk": i * 1.5 - 7, "big": 2**53 - 1} for i in range(40)]),
    "boolean": (PartitionKey("/pk"), [{"id": f"b{i}", "pk": i % 2 == 0} for i in range(20)]),
    "null": (PartitionKey("/pk"), [{"id": f"z{i}", "pk": None} for i in range(10)]),
    "undefined": (PartitionKey("/pk"), [{"id": f"u{i}", "v": i} for i in range(10)]),  # no key field
    "hierarchical": (PartitionKey(["/t", "/u"], kind="MultiHash"),
                     [{"id": f"h{i}", "t": f"tenant-{i % 3}", "u": i % 5} for i in range(40)]),
}


@needs_emulator
@pytest.mark.skipif(not JS_READY, reason="node and the JavaScript SDK (npm ci --prefix tests/js) are needed")
@pytest.mark.parametrize("case", sorted(KEY_CASES))
async def test_bulk_batches_are_what_the_javascript_sdk_sends(
    cosmos: Cosmos, database: DatabaseProxy, proxy: CapturingProxy, case: str
) -> None:
    definition, docs = KEY_CASES[case]
    js_target = await database.create_container(unique("js"), partition_key=definition)
    lean_target = await database.create_container(unique("lean"), partition_key=definition)
    key_paths = [p.lstrip("/") for p in (definition["paths"])]
    # ({} is the JS SDK's literal for an undefined key: it refuses an operation without partitionKey.)
    operations = [{"resourceBody": d, "partitionKey": d.get(key_paths[0], {}) if len(key_paths) == 1
                   else [d[p] for p in key_paths]} for d in docs]
    await _run_js(proxy, cosmos, database.id, js_target.id, operations)
    js_requests = proxy.bulk()
    proxy.requests.clear()
    endpoint = CosmosEndpoint(proxy.url, cosmos.key)
    async with CosmosClient(proxy.url, credential=cosmos.key, **cosmos_client_kwargs(endpoint)) as client:
        container = client.get_database_client(database.id).get_container_client(lean_target.id)
        async with CosmosSink({"t": container}, Governor(), endpoint=endpoint, write_path="lean") as sink:
            await sink.open({})
            units, _ = sink.plan("t", docs)
            for unit in units:
                assert (await sink.write(unit)).rejected == []
    lean_requests = proxy.bulk()
    assert js_requests and lean_requests
    assert {json.dumps(_serving(r), sort_keys=True) for r in lean_requests} == \
        {json.dumps(_serving(r), sort_keys=True) for r in js_requests}
    assert _operations(lean_requests) == _operations(js_requests)
    # Each request goes to the range that serves its keys, grouped the same way.
    def by_range(requests: list[Captured]) -> dict[str, set[str]]:
        grouped: dict[str, set[str]] = {}
        for r in requests:
            grouped.setdefault(r.headers["x-ms-documentdb-partitionkeyrangeid"], set()).update(_operations([r]))
        return grouped
    assert by_range(lean_requests) == by_range(js_requests)


def test_big_integers_and_unicode_reach_the_body_exactly() -> None:
    """What JavaScript cannot send (integers beyond 2^53 lose digits in JSON.parse), the lean path
    keeps: the document's bytes are spliced in as orjson wrote them, the key as its JSON text."""
    document = jsoncodec.dumps({"id": "ü😀", "pk": 2**64 + 1, "n": -(2**63) - 5})
    (op,) = jsoncodec.loads(b"[" + bulk_operations([2**64 + 1], [document])[0] + b"]")
    assert op == {"operationType": "Upsert", "partitionKey": "[18446744073709551617]", "minimalReturnPreference": True,
                  "resourceBody": {"id": "ü😀", "pk": 2**64 + 1, "n": -(2**63) - 5}}


# --------------------------------------------------------------------------------------------
# Canned refusals: classified the same on both write paths

CANNED = [  # status, sub-status, extra headers
    (429, 3200, {"x-ms-retry-after-ms": "123"}),
    (410, 1002, {}),  # the SDK re-reads the ranges (unchanged here), then gives up as the lean path does
    (449, None, {}),
    (408, None, {}),
    (503, None, {}),
    (403, 1014, {}),
    (413, None, {}),
]


@dataclass
class Canned:
    """What the canned server answers to every document write."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@pytest.fixture
async def canned() -> AsyncIterator[tuple[str, Canned]]:
    answer = Canned()

    async def account(_: web.Request) -> web.Response:
        return web.json_response({"id": "canned", "writableLocations": [], "readableLocations": [],
                                  "userConsistencyPolicy": {"defaultConsistencyLevel": "Session"}})

    async def container(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["coll"], "_rid": "cannedrid=",
                                  "partitionKey": {"paths": ["/pk"], "kind": "Hash", "version": 2}})

    async def ranges(request: web.Request) -> web.Response:  # the SDK re-reads them after a 410
        if request.headers.get("If-None-Match") == '"1"':  # its change feed of ranges: nothing new
            return web.Response(status=304, headers={"etag": '"1"'})
        return web.json_response({"_rid": "cannedrid=", "_count": 1, "PartitionKeyRanges": [
            {"id": "0", "minInclusive": "", "maxExclusive": "FF", "parents": []}]}, headers={"etag": '"1"'})

    async def docs(_: web.Request) -> web.Response:
        return web.Response(status=answer.status, body=answer.body,
                            headers={"Content-Type": "application/json", **answer.headers})

    app = web.Application()
    app.router.add_get("/", account)
    app.router.add_get("/dbs/{db}/colls/{coll}/", container)
    app.router.add_get("/dbs/{db}/colls/{coll}", container)
    app.router.add_get("/dbs/{db}/colls/{coll}/pkranges", ranges)
    app.router.add_get("/dbs/{db}/colls/{coll}/pkranges/", ranges)
    app.router.add_post("/dbs/{db}/colls/{coll}/docs", docs)
    app.router.add_post("/dbs/{db}/colls/{coll}/docs/", docs)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/", answer
    finally:
        await runner.cleanup()


KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="


async def _sdk_failure(url: str) -> Failure:
    endpoint = CosmosEndpoint(url, KEY)
    async with CosmosClient(url, credential=KEY, **cosmos_client_kwargs(endpoint)) as client:
        container = client.get_database_client("d").get_container_client("c")
        with pytest.raises(Exception) as caught:  # noqa: PT011 - whatever the SDK raises is the reference
            await container.upsert_item({"id": "a", "pk": "k"}, no_response=True)
    return classify(caught.value)


async def _lean_failure(url: str) -> Failure:
    async def read_rid() -> str:
        return "cannedrid="

    writer = LeanWriter(CosmosEndpoint(url, KEY), connections=2)
    try:
        with pytest.raises(Exception) as caught:  # noqa: PT011 - classified below
            await writer.bulk(LeanContainer("dbs/d/colls/c", "cannedrid=", read_rid), "0",
                              bulk_operations(["k"], [b'{"id":"a","pk":"k"}']))
    finally:
        await writer.close()
    return classify(caught.value)


def _same(a: Failure, b: Failure) -> tuple[Any, ...]:
    assert (a.kind, a.status, a.sub_status, a.retry_after_s) == (b.kind, b.status, b.sub_status, b.retry_after_s)
    return a.kind, a.status, a.sub_status


@pytest.mark.parametrize(("status", "sub_status", "headers"), CANNED)
async def test_a_refused_request_is_classified_alike(
    canned: tuple[str, Canned], status: int, sub_status: int | None, headers: dict[str, str]
) -> None:
    url, answer = canned
    answer.status = status
    answer.headers = {**headers, **({"x-ms-substatus": str(sub_status)} if sub_status else {})}
    answer.body = json.dumps({"code": "Canned", "message": f"canned {status}"}).encode()
    _same(await _sdk_failure(url), await _lean_failure(url))


@pytest.mark.parametrize(("status", "sub_status", "headers"), CANNED)
async def test_a_failed_operation_is_classified_like_the_same_refusal(
    canned: tuple[str, Canned], status: int, sub_status: int | None, headers: dict[str, str]
) -> None:
    """One operation of a 207 carries the status; the lean path reads it from the operation's result
    exactly as the SDK path reads the same status answering its single upsert."""
    url, answer = canned
    answer.status = status
    answer.headers = {**headers, **({"x-ms-substatus": str(sub_status)} if sub_status else {})}
    answer.body = json.dumps({"code": "Canned", "message": f"canned {status}"}).encode()
    reference = await _sdk_failure(url)
    result: dict[str, Any] = {"statusCode": status, "requestCharge": 0.0, "message": f"Canned: canned {status}"}
    if sub_status:
        result["subStatusCode"] = sub_status
    if "x-ms-retry-after-ms" in headers:
        result["retryAfterMilliseconds"] = int(headers["x-ms-retry-after-ms"])
    answer.status, answer.headers = 207, {}
    answer.body = json.dumps([{"statusCode": 200, "requestCharge": 5.0}, result]).encode()

    async def read_rid() -> str:
        return "cannedrid="

    writer = LeanWriter(CosmosEndpoint(url, KEY), connections=2)
    try:
        reply = await writer.bulk(LeanContainer("dbs/d/colls/c", "cannedrid=", read_rid), "0",
                                  bulk_operations(["k"], [b'{"id":"a","pk":"k"}']) * 2)
    finally:
        await writer.close()
    assert reply.results[0]["statusCode"] == 200
    _same(reference, operation_failure(reply.results[1]))

