"""Point operations, patch, conditional requests, errors, transactional batch and RU charges."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, DatabaseProxy
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosBatchOperationError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from tests.conftest import Cosmos, needs_emulator
from tests.helpers import raw_request, unique

SYSTEM = {"_rid", "_self", "_etag", "_attachments", "_ts"}


@pytest.fixture
async def container(database: DatabaseProxy) -> AsyncIterator[ContainerProxy]:
    yield await database.create_container(unique("items"), PartitionKey("/pk"))


def charge(result: Any) -> float:
    return float(result.get_response_headers()["x-ms-request-charge"])


async def test_create_read_replace_upsert_delete(container: ContainerProxy) -> None:
    created = await container.create_item({"id": "a b", "pk": "x", "n": 1})
    assert SYSTEM <= set(created) and created["n"] == 1
    assert created["_self"].endswith(f"docs/{created['_rid']}/")
    headers = created.get_response_headers()
    assert headers["etag"] == created["_etag"] and created["_etag"].startswith('"')
    assert isinstance(created["_ts"], int)
    assert headers["x-ms-session-token"].split(":")[1].startswith("-1#")

    read = await container.read_item("a b", partition_key="x")
    assert read == created

    replaced = await container.replace_item("a b", {"id": "a b", "pk": "x", "n": 2})
    assert replaced["n"] == 2 and replaced["_etag"] != created["_etag"] and replaced["_rid"] == created["_rid"]

    upserted = await container.upsert_item({"id": "a b", "pk": "x", "n": 3})
    assert upserted["n"] == 3 and upserted["_rid"] == created["_rid"]
    new = await container.upsert_item({"id": "other", "pk": "x"})
    assert new["_rid"] != created["_rid"]
    # System properties in a written body are the server's to set, not the client's.
    sneaky = await container.upsert_item({"id": "s", "pk": "x", "_etag": '"mine"', "_ts": 1, "_rid": "zz"})
    assert sneaky["_etag"] != '"mine"' and sneaky["_ts"] != 1 and sneaky["_rid"] != "zz"

    deleted = await container.delete_item("a b", partition_key="x")
    assert deleted is None
    with pytest.raises(CosmosResourceNotFoundError):
        await container.read_item("a b", partition_key="x")
    # Same id, other partition key: a different document.
    await container.create_item({"id": "other", "pk": "y", "v": "y"})
    assert (await container.read_item("other", partition_key="y"))["v"] == "y"
    assert "v" not in await container.read_item("other", partition_key="x")


async def test_no_response_returns_an_empty_body(container: ContainerProxy) -> None:
    result = await container.upsert_item({"id": "quiet", "pk": "x"}, no_response=True)
    assert dict(result) == {}
    assert charge(result) > 0
    assert (await container.read_item("quiet", partition_key="x"))["id"] == "quiet"


async def test_error_statuses(container: ContainerProxy) -> None:
    await container.create_item({"id": "dup", "pk": "x"})
    with pytest.raises(CosmosResourceExistsError) as exists:
        await container.create_item({"id": "dup", "pk": "x"})
    assert exists.value.status_code == 409 and "x-ms-request-charge" in exists.value.headers
    with pytest.raises(CosmosResourceNotFoundError) as missing:
        await container.read_item("nope", partition_key="x")
    assert missing.value.status_code == 404 and missing.value.sub_status in (None, 0)
    with pytest.raises(CosmosResourceNotFoundError):
        await container.replace_item("nope", {"id": "nope", "pk": "x"})
    with pytest.raises(CosmosResourceNotFoundError):
        await container.delete_item("nope", partition_key="x")
    with pytest.raises(CosmosResourceNotFoundError):
        await container.patch_item("nope", partition_key="x", patch_operations=[{"op": "set", "path": "/a", "value": 1}])


async def test_conditional_requests(container: ContainerProxy) -> None:
    first = await container.create_item({"id": "c", "pk": "x", "n": 1})
    second = await container.replace_item("c", {"id": "c", "pk": "x", "n": 2},
                                          etag=first["_etag"], match_condition=MatchConditions.IfNotModified)
    with pytest.raises(CosmosAccessConditionFailedError) as stale:
        await container.replace_item("c", {"id": "c", "pk": "x", "n": 3},
                                     etag=first["_etag"], match_condition=MatchConditions.IfNotModified)
    assert stale.value.status_code == 412
    with pytest.raises(CosmosAccessConditionFailedError):
        await container.upsert_item({"id": "c", "pk": "x", "n": 3},
                                    etag=first["_etag"], match_condition=MatchConditions.IfNotModified)
    with pytest.raises(CosmosAccessConditionFailedError):
        await container.patch_item("c", partition_key="x", patch_operations=[{"op": "set", "path": "/n", "value": 9}],
                                   etag=first["_etag"], match_condition=MatchConditions.IfNotModified)
    with pytest.raises(CosmosAccessConditionFailedError):
        await container.delete_item("c", partition_key="x", etag=first["_etag"],
                                    match_condition=MatchConditions.IfNotModified)
    assert (await container.read_item("c", partition_key="x"))["n"] == 2  # nothing above changed it
    await container.delete_item("c", partition_key="x", etag=second["_etag"],
                                match_condition=MatchConditions.IfNotModified)


async def test_patch(container: ContainerProxy) -> None:
    await container.create_item({"id": "p", "pk": "x", "n": 1, "tags": ["a"], "gone": True, "keep": "k",
                                 "nested": {"v": 1}})
    patched = await container.patch_item("p", partition_key="x", patch_operations=[
        {"op": "incr", "path": "/n", "value": 5},
        {"op": "set", "path": "/s", "value": "z"},
        {"op": "add", "path": "/tags/-", "value": "b"},
        {"op": "remove", "path": "/gone"},
        {"op": "replace", "path": "/nested/v", "value": 2},
        {"op": "move", "from": "/keep", "path": "/kept"},
    ])
    assert patched["n"] == 6 and patched["s"] == "z" and patched["tags"] == ["a", "b"]
    assert "gone" not in patched and patched["nested"] == {"v": 2}
    assert patched["kept"] == "k" and "keep" not in patched
    assert await container.read_item("p", partition_key="x") == patched
    with pytest.raises(CosmosAccessConditionFailedError):
        await container.patch_item("p", partition_key="x", patch_operations=[{"op": "set", "path": "/n", "value": 0}],
                                   filter_predicate="FROM c WHERE c.n = 1")
    ok = await container.patch_item("p", partition_key="x", patch_operations=[{"op": "set", "path": "/n", "value": 0}],
                                    filter_predicate="FROM c WHERE c.n = 6")
    assert ok["n"] == 0
    with pytest.raises(CosmosHttpResponseError) as bad:
        await container.patch_item("p", partition_key="x", patch_operations=[{"op": "incr", "path": "/s", "value": 1}])
    assert bad.value.status_code == 400


async def test_partition_key_value_types(container: ContainerProxy) -> None:
    from azure.cosmos.partition_key import NonePartitionKeyValue, NullPartitionKeyValue

    await container.create_item({"id": "num", "pk": 5})
    assert (await container.read_item("num", partition_key=5.0))["pk"] == 5  # 5 and 5.0 are one key
    with pytest.raises(CosmosResourceExistsError):
        await container.create_item({"id": "num", "pk": 5.0})
    await container.create_item({"id": "num", "pk": "5"})  # but "5" is another
    await container.create_item({"id": "b", "pk": True})
    assert (await container.read_item("b", partition_key=True))["pk"] is True
    with pytest.raises(CosmosResourceNotFoundError):
        await container.read_item("b", partition_key=1)
    await container.create_item({"id": "null", "pk": None})
    assert (await container.read_item("null", partition_key=NullPartitionKeyValue))["pk"] is None
    await container.create_item({"id": "undefined"})
    assert (await container.read_item("undefined", partition_key=NonePartitionKeyValue))["id"] == "undefined"
    with pytest.raises(CosmosResourceNotFoundError):
        await container.read_item("undefined", partition_key=NullPartitionKeyValue)


async def test_delete_all_items_by_partition_key(container: ContainerProxy) -> None:
    await asyncio.gather(*(container.create_item({"id": f"{pk}{i}", "pk": pk}) for pk in "ab" for i in range(5)))
    await container.delete_all_items_by_partition_key("a")
    left = sorted([d["id"] async for d in container.read_all_items()])
    assert left == [f"b{i}" for i in range(5)]


async def test_document_over_2_mb_is_413(container: ContainerProxy) -> None:
    with pytest.raises(CosmosHttpResponseError) as caught:
        await container.create_item({"id": "big", "pk": "x", "blob": "a" * (2 * 1024 * 1024 + 10)})
    assert caught.value.status_code == 413
    with pytest.raises(CosmosResourceNotFoundError):
        await container.read_item("big", partition_key="x")
    with pytest.raises(CosmosHttpResponseError) as caught:  # past the HTTP layer's own limit too
        await container.create_item({"id": "huge", "pk": "x", "blob": "a" * (17 * 1024 * 1024)})
    assert caught.value.status_code == 413 and "x-ms-request-charge" in caught.value.headers
    just_under = await container.create_item({"id": "big", "pk": "x", "blob": "a" * (2 * 1024 * 1024 - 400)})
    assert len(just_under["blob"]) == 2 * 1024 * 1024 - 400


async def test_ids_with_forbidden_characters_are_400(cosmos: Cosmos, database: DatabaseProxy,
                                                    container: ContainerProxy) -> None:
    for bad in ("a/b", "a\\b", "a?b", "a#b"):
        with pytest.raises(ValueError):  # the SDK refuses these client-side for create and upsert
            await container.create_item({"id": bad, "pk": "x"})
        # ... a batch carries them to the server, which answers 400 for that operation.
        with pytest.raises(CosmosBatchOperationError) as caught:
            await container.execute_item_batch([("create", ({"id": bad, "pk": "x"},))], partition_key="x")
        assert caught.value.error_index == 0
        assert caught.value.operation_responses[0]["statusCode"] == 400
        # ... and so does a hand-signed request.
        status, headers, body = await raw_request(
            cosmos.endpoint, cosmos.key, "POST", f"/dbs/{database.id}/colls/{container.id}/docs",
            headers={"x-ms-documentdb-partitionkey": '["x"]', "Content-Type": "application/json"},
            body=json.dumps({"id": bad, "pk": "x"}).encode())
        assert status == 400, bad
        assert json.loads(body)["code"] == "BadRequest" and "x-ms-request-charge" in headers
    assert [d async for d in container.read_all_items()] == []


async def test_partition_key_header_must_match_the_body(cosmos: Cosmos, database: DatabaseProxy,
                                                        container: ContainerProxy) -> None:
    path = f"/dbs/{database.id}/colls/{container.id}/docs"
    for header, doc in ((['y'], {"id": "m", "pk": "x"}), ([5], {"id": "m", "pk": "5"}), ([{}], {"id": "m", "pk": None})):
        status, _, body = await raw_request(
            cosmos.endpoint, cosmos.key, "POST", path, body=json.dumps(doc).encode(),
            headers={"x-ms-documentdb-partitionkey": json.dumps(header), "Content-Type": "application/json"})
        assert status == 400, (header, doc)
        assert json.loads(body)["code"] == "BadRequest"
    # The header is JSON: 5 and 5.0 agree, and a non-ASCII key arrives \\u-escaped.
    for header, doc in (("[5.0]", {"id": "n", "pk": 5}), ('["\\u00fc"]', {"id": "u", "pk": "ü"})):
        status, _, _ = await raw_request(
            cosmos.endpoint, cosmos.key, "POST", path, body=json.dumps(doc).encode(),
            headers={"x-ms-documentdb-partitionkey": header, "Content-Type": "application/json"})
        assert status == 201, header
    assert (await container.read_item("u", partition_key="ü"))["pk"] == "ü"
    with pytest.raises(CosmosBatchOperationError) as caught:
        await container.execute_item_batch([("upsert", ({"id": "m", "pk": "x"},))], partition_key="y")
    assert caught.value.operation_responses[0]["statusCode"] == 400


async def test_batch_success(container: ContainerProxy) -> None:
    await container.create_item({"id": "r", "pk": "b", "n": 1})
    await container.create_item({"id": "gone", "pk": "b"})
    results = await container.execute_item_batch([
        ("create", ({"id": "b1", "pk": "b"},)),
        ("upsert", ({"id": "b2", "pk": "b", "n": 1},)),
        ("read", ("r",)),
        ("replace", ("b2", {"id": "b2", "pk": "b", "n": 2})),
        ("patch", ("r", [{"op": "incr", "path": "/n", "value": 1}])),
        ("delete", ("gone",)),
    ], partition_key="b")
    assert [r["statusCode"] for r in results] == [201, 201, 200, 200, 200, 204]
    assert results[2]["resourceBody"]["n"] == 1 and results[4]["resourceBody"]["n"] == 2
    assert all(r["requestCharge"] > 0 for r in results)
    assert charge(results) == pytest.approx(sum(r["requestCharge"] for r in results), abs=0.05)
    ids = sorted([d["id"] async for d in container.read_all_items()])
    assert ids == ["b1", "b2", "r"]
    assert (await container.read_item("b2", partition_key="b"))["n"] == 2


async def test_failed_batch_is_all_or_nothing(container: ContainerProxy) -> None:
    await container.create_item({"id": "exists", "pk": "b", "n": 1})
    with pytest.raises(CosmosBatchOperationError) as caught:
        await container.execute_item_batch([
            ("create", ({"id": "new1", "pk": "b"},)),
            ("upsert", ({"id": "exists", "pk": "b", "n": 2},)),
            ("create", ({"id": "exists", "pk": "b"},)),
            ("create", ({"id": "new2", "pk": "b"},)),
        ], partition_key="b")
    error = caught.value
    assert error.error_index == 2 and error.status_code == 409
    assert [r["statusCode"] for r in error.operation_responses] == [424, 424, 409, 424]
    ids = sorted([d["id"] async for d in container.read_all_items()])
    assert ids == ["exists"]
    assert (await container.read_item("exists", partition_key="b"))["n"] == 1
    # The LSN did not move either: the change feed shows only the first write.
    changes = [d async for d in container.query_items_change_feed(start_time="Beginning")]
    assert [c["id"] for c in changes] == ["exists"]


async def test_batch_limits(container: ContainerProxy) -> None:
    too_many = [("create", ({"id": f"i{i}", "pk": "b"},)) for i in range(101)]
    with pytest.raises(CosmosHttpResponseError) as caught:
        await container.execute_item_batch(too_many, partition_key="b")
    assert caught.value.status_code == 400
    hundred = await container.execute_item_batch(too_many[:100], partition_key="b")
    assert len(hundred) == 100
    big = [("upsert", ({"id": f"big{i}", "pk": "b", "blob": "x" * 800_000},)) for i in range(3)]
    with pytest.raises(CosmosHttpResponseError) as caught:
        await container.execute_item_batch(big, partition_key="b")
    assert caught.value.status_code == 413
    assert len([d async for d in container.read_all_items()]) == 100


def _doc_of_size(doc_id: str, size: int) -> dict[str, Any]:
    base = {"id": doc_id, "pk": "ru", "pad": ""}
    overhead = len(json.dumps(base, separators=(",", ":"))) + 150  # system properties added by the server
    return {**base, "pad": "x" * max(0, size - overhead)}


@needs_emulator
async def test_request_charges_follow_the_published_table(container: ContainerProxy) -> None:
    expected = {1024: 4.95, 32 * 1024: 11.23, 64 * 1024: 22.67}
    for size, ru in expected.items():
        written = await container.upsert_item(_doc_of_size(f"w{size}", size))
        assert charge(written) == pytest.approx(ru, rel=0.06), size
    read = await container.read_item("w1024", partition_key="ru")
    assert charge(read) == pytest.approx(1.0, abs=0.01)
    read64 = await container.read_item(f"w{64 * 1024}", partition_key="ru")
    assert charge(read) < charge(read64) < 6
    replaced = await container.replace_item("w1024", _doc_of_size("w1024", 1024))
    assert charge(replaced) == pytest.approx(4.95, rel=0.06)
    deleted_charge: list[float] = []
    await container.delete_item("w1024", partition_key="ru",
                                response_hook=lambda h, _: deleted_charge.append(float(h["x-ms-request-charge"])))
    assert deleted_charge and deleted_charge[0] > 0


@needs_emulator
async def test_excluding_the_embedding_from_indexing_makes_writes_cheaper(database: DatabaseProxy) -> None:
    indexed = await database.create_container(unique("idx"), PartitionKey("/pk"))
    excluded = await database.create_container(unique("noidx"), PartitionKey("/pk"), indexing_policy={
        "indexingMode": "consistent", "automatic": True, "includedPaths": [{"path": "/*"}],
        "excludedPaths": [{"path": "/embedding/*"}, {"path": '/"_etag"/?'}]})
    doc = {"id": "v", "pk": "p", "embedding": [i / 768 for i in range(768)]}
    with_index = charge(await indexed.upsert_item(doc))
    without = charge(await excluded.upsert_item(doc))
    assert with_index - without > 3, (with_index, without)


async def test_every_response_carries_a_request_charge(container: ContainerProxy) -> None:
    charges: list[str] = []

    def hook(headers: Any, _: Any) -> None:
        charges.append(headers["x-ms-request-charge"])

    await container.upsert_item({"id": "h", "pk": "x"}, response_hook=hook)
    await container.read_item("h", partition_key="x", response_hook=hook)
    [d async for d in container.query_items("SELECT * FROM c", response_hook=hook)]
    [d async for d in container.query_items_change_feed(start_time="Beginning", response_hook=hook)]
    await container.read(response_hook=hook)
    assert len(charges) >= 5 and all(float(c) >= 0 for c in charges)
    with pytest.raises(CosmosResourceNotFoundError) as caught:
        await container.read_item("missing", partition_key="x")
    assert "x-ms-request-charge" in caught.value.headers


async def test_batch_conditions(container: ContainerProxy) -> None:
    first = await container.create_item({"id": "e", "pk": "b", "n": 1})
    await container.replace_item("e", {"id": "e", "pk": "b", "n": 2})
    for operation in (("replace", ("e", {"id": "e", "pk": "b", "n": 3}), {"if_match_etag": first["_etag"]}),
                      ("upsert", ({"id": "e", "pk": "b", "n": 3},), {"if_match_etag": first["_etag"]}),
                      ("delete", ("e",), {"if_match_etag": first["_etag"]}),
                      ("patch", ("e", [{"op": "set", "path": "/n", "value": 3}]), {"if_match_etag": first["_etag"]}),
                      ("patch", ("e", [{"op": "set", "path": "/n", "value": 3}]),
                       {"filter_predicate": "FROM c WHERE c.n = 1"})):
        with pytest.raises(CosmosBatchOperationError) as caught:
            await container.execute_item_batch([operation], partition_key="b")  # type: ignore[list-item]
        assert caught.value.operation_responses[0]["statusCode"] == 412, operation
    assert (await container.read_item("e", partition_key="b"))["n"] == 2
    with pytest.raises(CosmosBatchOperationError) as caught:
        await container.execute_item_batch([("read", ("nope",))], partition_key="b")
    assert caught.value.operation_responses[0]["statusCode"] == 404


async def test_malformed_batches_are_400_and_leave_the_emulator_working(
        cosmos: Cosmos, database: DatabaseProxy, container: ContainerProxy) -> None:
    path = f"/dbs/{database.id}/colls/{container.id}/docs"
    headers = {"x-ms-cosmos-is-batch-request": "True", "x-ms-cosmos-batch-atomic": "True",
               "x-ms-documentdb-partitionkey": '["b"]', "Content-Type": "application/json"}
    for body in ([1], [{"operationType": "Patch", "id": "x"}],
                 [{"operationType": "Create", "resourceBody": {"id": "q", "pk": "b"}}, {"operationType": "Patch", "id": "q"}],
                 [{"operationType": "Explode", "id": "q"}], {"not": "a list"}, []):
        status, _, answer = await raw_request(cosmos.endpoint, cosmos.key, "POST", path, headers=headers,
                                              body=json.dumps(body).encode())
        assert status in (207, 400), (body, status, answer)
        if status == 207:
            assert 400 in [op["statusCode"] for op in json.loads(answer)]
    # Nothing persisted, and writes still work (a malformed batch once left a transaction open).
    assert [d async for d in container.read_all_items()] == []
    assert (await container.create_item({"id": "after", "pk": "b"}))["id"] == "after"


async def test_a_recreated_container_is_seen_by_a_client_with_cached_properties(
        cosmos: Cosmos, database: DatabaseProxy) -> None:
    from azure.cosmos.aio import CosmosClient

    name = unique("again")
    old = await database.create_container(name, PartitionKey("/pk"))
    await old.upsert_item({"id": "old", "pk": "p"})
    await database.delete_container(name)
    async with CosmosClient(cosmos.endpoint, credential=cosmos.key) as other:
        await other.get_database_client(database.id).create_container(name, PartitionKey("/pk"))
    await old.upsert_item({"id": "new", "pk": "p"})  # the SDK still holds the old _rid
    assert [d["id"] async for d in old.query_items("SELECT * FROM c")] == ["new"]
    assert [d["id"] async for d in old.query_items_change_feed(start_time="Beginning")] == ["new"]


async def test_nested_partition_key_path(database: DatabaseProxy) -> None:
    container = await database.create_container(unique("nested"), PartitionKey("/meta/tenant"))
    await container.create_item({"id": "a", "meta": {"tenant": "t1"}})
    await container.create_item({"id": "b", "meta": {"tenant": "t2"}})
    assert (await container.read_item("a", partition_key="t1"))["meta"] == {"tenant": "t1"}
    with pytest.raises(CosmosResourceNotFoundError):
        await container.read_item("a", partition_key="t2")
    fr = await container.feed_range_from_partition_key("t2")
    assert [d["id"] async for d in container.query_items("SELECT * FROM c", feed_range=fr)] == ["b"]


@needs_emulator
async def test_replacing_the_indexing_policy_changes_write_charges(database: DatabaseProxy) -> None:
    container = await database.create_container(unique("reidx"), PartitionKey("/pk"))
    doc = {"id": "v", "pk": "p", "embedding": [i / 768 for i in range(768)]}
    before = charge(await container.upsert_item(doc))
    await database.replace_container(container, PartitionKey("/pk"), indexing_policy={
        "indexingMode": "consistent", "includedPaths": [{"path": "/*"}], "excludedPaths": [{"path": "/embedding/*"}]})
    after = charge(await container.upsert_item(doc))
    assert before - after > 3, (before, after)
