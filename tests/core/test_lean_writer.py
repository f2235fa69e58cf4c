"""The lean write path against the emulator as a real server, compared with the SDK's own requests.

The SDK is the reference throughout: the lean writer must send what it sends (path, headers,
signature, body meaning) and fail the way it fails, as :func:`classify` sees it.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import pytest
import yarl
from aiohttp import web
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy

from asyncmig.connection import CosmosEndpoint
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos import signing
from asyncmig.core.cosmos.connect import cosmos_client_kwargs
from asyncmig.core.cosmos.lean_writer import LeanContainer, LeanWriter, bulk_operations
from asyncmig.core.cosmos.partition_keys import effective_partition_key
from asyncmig.core.cosmos.retry import Failure, classify
from asyncmig.core.cosmos.sink import CosmosSink
from asyncmig.core.cosmos.transport import signed_resource
from asyncmig.core.engine.governor import Governor
from asyncmig.core.engine.sink import WriteUnit
from asyncmig.core.engine.transform import strip_system
from asyncmig.errors import AuthenticationFailed, UsageError
from tests.conftest import Cosmos, needs_emulator
from tests.helpers import raw_request, unique

FRAGILE = {"long": 2100.607537417505, "neg_zero": -0.0, "tiny": 1e-7, "big": 2**53 + 1, "bigger": 2**64 + 1,
           "text": "धर्म 😀 naïve — ünïcode", "nested": {"a": [{"b": [1, {"c": None}]}], "e": {}}}


def _endpoint(cosmos: Cosmos) -> CosmosEndpoint:
    return CosmosEndpoint(cosmos.endpoint, cosmos.key)


def _address(container: ContainerProxy, rid: str) -> LeanContainer:
    async def read_rid() -> str:
        return str((await container.read())["_rid"])
    return LeanContainer(container.container_link, rid, read_rid)


async def _lean(container: ContainerProxy) -> LeanContainer:
    return _address(container, (await container.read())["_rid"])


@pytest.fixture
async def writer(cosmos: Cosmos) -> AsyncIterator[LeanWriter]:
    lean = LeanWriter(_endpoint(cosmos), connections=8)
    try:
        yield lean
    finally:
        await lean.close()


@pytest.fixture
async def sdk(cosmos: Cosmos) -> AsyncIterator[CosmosClient]:
    """A client with the SDK's throttle retries off, as asyncmig runs it: every 429 surfaces."""
    async with CosmosClient(cosmos.endpoint, credential=cosmos.key, **cosmos_client_kwargs(_endpoint(cosmos))) as c:
        yield c


async def _raw_document(cosmos: Cosmos, container: ContainerProxy, doc_id: str, key: Any) -> bytes:
    status, _, body = await raw_request(
        cosmos.endpoint, cosmos.key, "GET", f"/{container.container_link}/docs/{doc_id}/",
        headers={"x-ms-documentdb-partitionkey": jsoncodec.dumps([key]).decode()},
    )
    assert status == 200, body
    return body


async def _failure(call: Callable[[], Awaitable[Any]]) -> Failure:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - whatever the SDK raises is the reference
        await call()
    return classify(caught.value)


def _same_failure(lean: Failure, sdk: Failure) -> None:
    assert (lean.kind, lean.status, lean.sub_status, lean.charge, lean.error_index) == \
           (sdk.kind, sdk.status, sdk.sub_status, sdk.charge, sdk.error_index)
    assert (lean.retry_after_s is None) == (sdk.retry_after_s is None)


@needs_emulator
async def test_a_batch_and_single_upserts_land_byte_exact_and_charges_are_the_emulators(
    cosmos: Cosmos, database: DatabaseProxy, writer: LeanWriter
) -> None:
    container = await database.create_container(unique("lean"), partition_key=PartitionKey("/pk"))
    address = await _lean(container)
    name = f"{database.id}/{container.id}"
    before = cosmos.emulator.admin("stats")["charged_ru"].get(name, 0.0)
    batch = [{"id": f"b{i}", "pk": "ü key", "n": i, **FRAGILE, "vector": [i / 7 for i in range(64)]} for i in range(30)]
    singles = [{"id": "s-number", "pk": 5, **FRAGILE}, {"id": "s-null", "pk": None}, {"id": "s-undefined", "n": 1}]
    encoded = [jsoncodec.dumps(d) for d in batch]
    charges = [await writer.upsert_batch(address, ["ü key"], encoded)]
    charges += [await writer.upsert(address, [d.get("pk", {})] if "pk" in d else [{}], jsoncodec.dumps(d))
                for d in singles]
    charges.append(await writer.upsert_batch(address, ["ü key"], encoded))  # an upsert again replaces
    assert all(c is not None and c > 0 for c in charges)
    charged = cosmos.emulator.admin("stats")["charged_ru"][name] - before
    assert sum(charges) == pytest.approx(charged, abs=0.01 * len(charges))
    for doc, raw in zip(batch, encoded, strict=True):
        stored = await _raw_document(cosmos, container, doc["id"], "ü key")
        assert stored.startswith(raw[:-1] + b',"_rid":')  # the very bytes sent, system properties appended
    stored = jsoncodec.loads(await _raw_document(cosmos, container, "s-number", 5))
    assert jsoncodec.canonical(strip_system(stored)) == jsoncodec.canonical(singles[0])
    everything = {d["id"]: d async for d in container.read_all_items()}
    assert sorted(everything) == sorted(d["id"] for d in batch + singles)
    assert everything["s-null"]["pk"] is None and "pk" not in everything["s-undefined"]


Captured = list[tuple[str, dict[str, str], bytes]]


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[int, Captured]]:
    """A server that records each request (raw path, headers, body) and answers 200 charging 1.5 RU."""
    captured: Captured = []

    async def record(request: web.Request) -> web.Response:
        captured.append((request.raw_path, dict(request.headers), await request.read()))
        return web.Response(status=200, headers={"x-ms-request-charge": "1.5"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1], captured
    finally:
        await runner.cleanup()


async def test_requests_are_the_sdks_requests(
    cosmos: Cosmos, sdk: CosmosClient, recorder: tuple[int, Captured]
) -> None:
    """Same path, same meaningful headers, a signature the SDK would compute, bodies equal as JSON."""
    db_name = unique("db 2 ü(x)")
    await sdk.create_database(db_name)
    try:
        container = await sdk.get_database_client(db_name).create_container("c ü'1", partition_key=PartitionKey("/pk"))
        doc = {"id": "a", "pk": "ü", **FRAGILE}
        seen: Captured = []

        def hook(request: Any) -> None:
            http = request.http_request
            body = http.body if isinstance(http.body, bytes) else str(http.body).encode()
            seen.append((yarl.URL(http.url).raw_path, dict(http.headers), body))  # as aiohttp puts it on the wire

        await container.execute_item_batch([("upsert", (doc,))], partition_key="ü", raw_request_hook=hook)
        await container.upsert_item(doc, no_response=True, raw_request_hook=hook)

        port, captured = recorder
        lean = LeanWriter(CosmosEndpoint(f"http://127.0.0.1:{port}/", cosmos.key), connections=2)
        try:
            address = await _lean(container)
            assert await lean.upsert_batch(address, ["ü"], [jsoncodec.dumps(doc)]) == 1.5
            assert await lean.upsert(address, ["ü"], jsoncodec.dumps(doc)) == 1.5
        finally:
            await lean.close()

        meaningful = {"x-ms-version", "x-ms-documentdb-partitionkey", "x-ms-cosmos-is-batch-request",
                      "x-ms-cosmos-batch-atomic", "x-ms-cosmos-batch-continue-on-error", "x-ms-documentdb-is-upsert",
                      "prefer", "x-ms-cosmos-intended-collection-rid", "content-type", "accept"}
        key = base64.b64decode(cosmos.key)
        for (sdk_path, sdk_headers, sdk_body), (path, headers, body) in zip(seen, captured, strict=True):
            assert path == sdk_path
            sdk_h = {k.lower(): v for k, v in sdk_headers.items()}
            lean_h = {k.lower(): v for k, v in headers.items()}
            assert {k: v for k, v in lean_h.items() if k in meaningful} == \
                   {k: v for k, v in sdk_h.items() if k in meaningful}
            assert jsoncodec.loads(body) == jsoncodec.loads(sdk_body)
            resource_type, link = signing.resource_type_and_link(
                [*container.container_link.split("/"), "docs"])
            assert signing.authorization(key, "post", resource_type, link, sdk_h["x-ms-date"]) == sdk_h["authorization"]
            assert signing.authorization(key, "post", resource_type, link, lean_h["x-ms-date"]) == lean_h["authorization"]
        assert b'"resourceBody":' + jsoncodec.dumps(doc) in captured[0][2]  # spliced bytes, not re-encoded
    finally:
        await sdk.delete_database(db_name)


async def test_the_environments_proxy_is_used_as_the_sdk_uses_it(
    recorder: tuple[int, Captured], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, captured = recorder
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://mig:secret@127.0.0.1:{port}")
    writer = LeanWriter(CosmosEndpoint("http://account.invalid:8081/", base64.b64encode(b"k" * 64).decode()),
                        connections=1)
    try:
        assert await writer.upsert(LeanContainer("dbs/d/colls/c", "rid", _never_called), ["p"], b"{}") == 1.5
    finally:
        await writer.close()
    [(_, headers, _)] = captured
    assert headers["Host"] == "account.invalid:8081"
    assert headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"mig:secret").decode()


async def test_a_database_name_the_sdk_mistakes_for_a_rid_is_signed_as_the_sdk_signs_it(
    cosmos: Cosmos, sdk: CosmosClient, writer: LeanWriter
) -> None:
    db_name = "abcdEA=="  # 8 characters of base64 decoding to 4 bytes: IsNameBased() says "RID"
    database = await sdk.create_database_if_not_exists(db_name)
    try:
        container = await database.create_container(unique("Mixed"), partition_key=PartitionKey("/pk"))
        address = await _lean(container)
        assert signed_resource(address.path) == ("docs", container.id.lower())  # only the last "RID", lower-cased
        assert await writer.upsert(address, ["x"], b'{"id":"a","pk":"x"}')
        assert (await container.read_item("a", partition_key="x"))["pk"] == "x"
    finally:
        await sdk.delete_database(db_name)


@needs_emulator
async def test_a_429_is_classified_as_the_sdks_throttled_error(
    database: DatabaseProxy, sdk: CosmosClient, writer: LeanWriter
) -> None:
    created = await database.create_container(unique("hot"), partition_key=PartitionKey("/pk"), offer_throughput=400)
    container = sdk.get_database_client(database.id).get_container_client(created.id)
    address = await _lean(container)
    docs = [{"id": f"h{i}", "pk": "p", "pad": "y" * 2000} for i in range(60)]
    assert await writer.upsert_batch(address, ["p"], [jsoncodec.dumps(d) for d in docs])  # overdraws the range
    lean = await _failure(lambda: writer.upsert_batch(address, ["p"], [jsoncodec.dumps(d) for d in docs]))
    single = await _failure(lambda: writer.upsert(address, ["p"], jsoncodec.dumps(docs[0])))
    reference = await _failure(lambda: container.execute_item_batch([("upsert", (d,)) for d in docs], partition_key="p"))
    assert lean.kind == "throttled" and lean.status == 429 and lean.sub_status == 3200
    assert lean.retry_after_s is not None and lean.retry_after_s > 0
    _same_failure(lean, reference)
    _same_failure(single, reference)


async def test_a_failed_operation_gives_the_sdks_batch_error(
    database: DatabaseProxy, sdk: CosmosClient, writer: LeanWriter
) -> None:
    created = await database.create_container(unique("b"), partition_key=PartitionKey("/pk"))
    container = sdk.get_database_client(database.id).get_container_client(created.id)
    address = await _lean(container)
    docs = [{"id": "ok0", "pk": "p"}, {"id": "ok1", "pk": "p"}, {"id": "wrong-key", "pk": "q"}, {"id": "ok3", "pk": "p"}]
    lean = await _failure(lambda: writer.upsert_batch(address, ["p"], [jsoncodec.dumps(d) for d in docs]))
    reference = await _failure(lambda: container.execute_item_batch([("upsert", (d,)) for d in docs], partition_key="p"))
    assert lean.kind == "permanent" and lean.status == 400 and lean.error_index == 2
    _same_failure(lean, reference)
    assert [r["statusCode"] for r in lean.operation_responses] == [424, 424, 400, 424]
    assert [d async for d in container.read_all_items()] == []  # atomic: nothing was written


async def test_a_too_large_batch_gives_the_sdks_413(
    database: DatabaseProxy, sdk: CosmosClient, writer: LeanWriter
) -> None:
    created = await database.create_container(unique("big"), partition_key=PartitionKey("/pk"))
    container = sdk.get_database_client(database.id).get_container_client(created.id)
    address = await _lean(container)
    docs = [{"id": f"big{i}", "pk": "p", "pad": "z" * 1_100_000} for i in range(2)]
    lean = await _failure(lambda: writer.upsert_batch(address, ["p"], [jsoncodec.dumps(d) for d in docs]))
    reference = await _failure(lambda: container.execute_item_batch([("upsert", (d,)) for d in docs], partition_key="p"))
    assert lean.kind == "permanent" and lean.status == 413
    _same_failure(lean, reference)


async def test_a_wrong_key_is_a_fatal_401_as_with_the_sdk(cosmos: Cosmos, database: DatabaseProxy) -> None:
    container = await database.create_container(unique("k"), partition_key=PartitionKey("/pk"))
    wrong = base64.b64encode(b"not the key" * 6).decode()
    lean_writer = LeanWriter(CosmosEndpoint(cosmos.endpoint, wrong), connections=1)
    try:
        lean = await _failure(lambda: _lean_upsert(lean_writer, container))
    finally:
        await lean_writer.close()
    reference = await _failure(lambda: _sdk_connect(cosmos.endpoint, wrong))
    assert lean.kind == "fatal" and lean.status == 401
    _same_failure(lean, reference)
    assert isinstance(lean.as_error("writing"), AuthenticationFailed)


async def _sdk_connect(url: str, key: str) -> None:
    client = CosmosClient(url, credential=key)
    try:
        await client.__aenter__()  # the SDK's first request (GET /) is signed with the key
    finally:
        await client.close()  # (a failed __aenter__ leaves the client open)


async def _lean_upsert(writer: LeanWriter, container: ContainerProxy) -> float | None:
    return await writer.upsert(await _lean(container), ["p"], b'{"id":"a","pk":"p"}')


async def test_a_recreated_container_is_found_by_its_new_rid_and_written(
    database: DatabaseProxy, writer: LeanWriter
) -> None:
    name = unique("again")
    first = await database.create_container(name, partition_key=PartitionKey("/pk"))
    address = await _lean(first)
    old_rid = address.rid
    assert await writer.upsert(address, ["p"], b'{"id":"before","pk":"p"}')
    await database.delete_container(name)
    second = await database.create_container(name, partition_key=PartitionKey("/pk"))
    assert await writer.upsert_batch(address, ["p"], [b'{"id":"after1","pk":"p"}', b'{"id":"after2","pk":"p"}'])
    assert address.rid != old_rid and address.rid == (await second.read())["_rid"]
    assert sorted([d["id"] async for d in second.read_all_items()]) == ["after1", "after2"]


async def test_a_refused_connection_is_transient() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    writer = LeanWriter(CosmosEndpoint(f"http://127.0.0.1:{port}/", base64.b64encode(b"k" * 64).decode()),
                        connections=1)
    try:
        address = LeanContainer("dbs/d/colls/c", "rid", _never_called)
        failure = await _failure(lambda: writer.upsert(address, ["p"], b'{"id":"a","pk":"p"}'))
    finally:
        await writer.close()
    assert failure.kind == "transient" and failure.retryable


async def _never_called() -> str:
    raise AssertionError("the container's rid was not in question")


@pytest.mark.parametrize("write_path", ["lean", "sdk"])
async def test_the_sink_splits_a_failed_batch_and_writes_the_rest_from_their_own_bytes(
    cosmos: Cosmos, database: DatabaseProxy, sdk: CosmosClient, write_path: str
) -> None:
    created = await database.create_container(unique("sink"), partition_key=PartitionKey("/pk"))
    container = sdk.get_database_client(database.id).get_container_client(created.id)
    docs = [{"id": f"d{i}", "pk": "p", "n": i, **FRAGILE} for i in range(5)]
    docs[2]["pk"] = "elsewhere"  # refused inside the batch (400/1001): the others must still land
    async with CosmosSink({"t": container}, Governor(), endpoint=_endpoint(cosmos), write_path=write_path) as sink:
        await sink.open({})
        lane = sink.plan("t", docs[:1])[0][0].lane
        unit = WriteUnit("t", lane, docs, "p", batch=True, encoded=[jsoncodec.dumps(d) for d in docs])
        outcome = await sink.write(unit)
    assert outcome.written == 4 and [r.document["id"] for r in outcome.rejected] == ["d2"]
    assert outcome.rejected[0].status == 400
    written = {d["id"]: jsoncodec.canonical(strip_system(d)) async for d in container.read_all_items()}
    assert written == {d["id"]: jsoncodec.canonical(d) for d in docs if d["id"] != "d2"}


def test_the_lean_path_needs_the_account() -> None:
    with pytest.raises(UsageError, match="endpoint"):
        CosmosSink({}, Governor(), write_path="lean")
    assert CosmosSink({}, Governor(), write_path="sdk").write_path == "sdk"


@pytest.mark.parametrize(("verb", "path", "resource_id", "resource_type"), [
    ("post", "dbs/db 2 ü/colls/c'1/docs", "dbs/db 2 ü/colls/c'1", "docs"),
    ("get", "dbs/d/colls/c/docs/a b", "dbs/d/colls/c/docs/a b", "docs"),
    ("post", "dbs/abcdEA==/colls/Cee/docs", "Cee", "docs"),  # base64 of 4 bytes: signed as a RID
    ("put", "offers/erEB", "erEB", "offers"),
    ("post", "dbs", "", "dbs"),
    ("get", "", "", "databaseaccount"),
])
def test_signing_is_the_sdks_signing(verb: str, path: str, resource_id: str, resource_type: str) -> None:
    """What the SDK signs, from its own call into azure.cosmos.auth with the arguments GetHeaders passes."""
    from types import SimpleNamespace

    from azure.cosmos import auth
    from azure.cosmos._base import IsNameBased

    key_b64 = base64.b64encode(bytes(range(64))).decode()
    date = signing.http_date()
    connection = SimpleNamespace(master_key=key_b64, resource_tokens=None)
    expected = auth._get_authorization_header(connection, verb, path, resource_id, IsNameBased(resource_id),
                                              "" if resource_type == "databaseaccount" else resource_type,
                                              {"x-ms-date": date})
    signed_type, link = signing.resource_type_and_link([s for s in path.split("/") if s])
    assert signing.authorization(signing.decode_key(key_b64), verb, signed_type, link, date) == \
        quote(expected, safe="-_.!~*'()")


@needs_emulator
async def test_a_bulk_reply_carries_no_documents_and_they_are_stored_exactly(
    cosmos: Cosmos, database: DatabaseProxy, writer: LeanWriter
) -> None:
    """The lean writer's bulk upserts ask for a minimal reply: the results say what happened (status,
    charge, etag) without echoing the documents, which land byte-exact all the same."""
    container = await database.create_container(unique("minimal"), partition_key=PartitionKey("/pk"))
    lean = await _lean(container)
    documents = [{"id": f"m{i}", "pk": "p", **FRAGILE} for i in range(3)]
    epk = effective_partition_key((await container.read())["partitionKey"], ["p"])
    (serving,) = [r for r in await writer.physical_ranges(lean) if r.low <= epk < r.high]
    reply = await writer.bulk(lean, serving.id, bulk_operations(["p"], [jsoncodec.dumps(d) for d in documents]))
    assert [r["statusCode"] for r in reply.results] == [201, 201, 201]
    assert all("resourceBody" not in r and r["eTag"] and r["requestCharge"] > 0 for r in reply.results)
    for d in documents:
        stored = jsoncodec.loads(await _raw_document(cosmos, container, d["id"], d["pk"]))
        assert jsoncodec.canonical(strip_system(stored)) == jsoncodec.canonical(d)
