"""Non-atomic (bulk) batches as the .NET, Java and JavaScript SDKs send them, and patch bodies given
as a bare array. Raw signed requests: the Python SDK has no bulk mode (tests/js drives the JS one)."""

from __future__ import annotations

import itertools
import json
from typing import Any

from azure.cosmos import PartitionKey
from azure.cosmos.aio import DatabaseProxy

from asyncmig.core.cosmos.partition_keys import effective_partition_key
from tests.conftest import Cosmos, needs_emulator
from tests.helpers import raw_request, unique


def _op(kind: str, doc: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"operationType": kind, "partitionKey": json.dumps([doc["pk"]]), "resourceBody": doc, **extra}


async def _ranges(cosmos: Cosmos, path: str) -> list[dict[str, Any]]:
    status, _, body = await raw_request(cosmos.endpoint, cosmos.key, "GET", f"{path}/pkranges")
    assert status == 200
    return list(json.loads(body)["PartitionKeyRanges"])


async def _bulk(cosmos: Cosmos, path: str, range_id: str, ops: list[dict[str, Any]], *,
                continue_on_error: bool = True) -> tuple[int, list[dict[str, Any]]]:
    headers = {
        "x-ms-cosmos-is-batch-request": "True", "x-ms-cosmos-batch-atomic": "False",
        "x-ms-cosmos-batch-continue-on-error": str(continue_on_error), "x-ms-documentdb-partitionkeyrangeid": range_id,
        "Content-Type": "application/json",
    }
    status, _, body = await raw_request(cosmos.endpoint, cosmos.key, "POST", f"{path}/docs", headers=headers,
                                        body=json.dumps(ops).encode())
    return status, json.loads(body)


def _keys_in(definition: dict[str, Any], r: dict[str, Any], count: int) -> list[str]:
    keys = (f"k{n}" for n in range(100_000))
    inside = (k for k in keys if r["minInclusive"] <= effective_partition_key(definition, [k]) < r["maxExclusive"])
    return list(itertools.islice(inside, count))


async def _setup(database: DatabaseProxy, cosmos: Cosmos, **kwargs: Any) -> tuple[Any, str, dict[str, Any], list[dict[str, Any]]]:
    container = await database.create_container(unique("bulk"), PartitionKey("/pk"), **kwargs)
    path = f"dbs/{database.id}/colls/{container.id}"
    definition = (await container.read())["partitionKey"]
    return container, path, definition, await _ranges(cosmos, path)


@needs_emulator
async def test_each_operation_runs_on_its_own(database: DatabaseProxy, cosmos: Cosmos) -> None:
    container, path, definition, ranges = await _setup(database, cosmos)
    first = ranges[0]
    a, b = _keys_in(definition, first, 2)
    await container.create_item({"id": "taken", "pk": a})
    ops = [
        _op("Create", {"id": "new", "pk": a}),
        _op("Create", {"id": "taken", "pk": a}),            # 409, the others still commit
        _op("Upsert", {"id": "other", "pk": b}),
        {"operationType": "Patch", "id": "taken", "partitionKey": json.dumps([a]),
         "resourceBody": [{"op": "set", "path": "/n", "value": 1}]},
        {"operationType": "Read", "id": "missing", "partitionKey": json.dumps([b])},
    ]
    status, results = await _bulk(cosmos, path, first["id"], ops)
    assert status == 207
    assert [r["statusCode"] for r in results] == [201, 409, 201, 200, 404]
    assert results[0]["resourceBody"]["id"] == "new" and results[0]["eTag"]
    assert (await container.read_item("new", partition_key=a))["pk"] == a
    assert (await container.read_item("other", partition_key=b))["pk"] == b
    assert (await container.read_item("taken", partition_key=a))["n"] == 1

    status, results = await _bulk(cosmos, path, first["id"], [_op("Upsert", {"id": "x", "pk": a})])
    assert (status, [r["statusCode"] for r in results]) == (200, [201])


@needs_emulator
async def test_minimal_return_preference_leaves_the_document_out(database: DatabaseProxy, cosmos: Cosmos) -> None:
    """The Java SDK's bulk mode sets ``minimalReturnPreference`` on write operations when content on
    write is off: the result keeps its status, charge and etag but not the document."""
    container, path, definition, ranges = await _setup(database, cosmos)
    first = ranges[0]
    (a,) = _keys_in(definition, first, 1)
    await container.create_item({"id": "p", "pk": a, "n": 1})
    ops = [
        _op("Upsert", {"id": "quiet", "pk": a}, minimalReturnPreference=True),
        _op("Create", {"id": "loud", "pk": a}),
        {"operationType": "Patch", "id": "p", "partitionKey": json.dumps([a]), "minimalReturnPreference": True,
         "resourceBody": {"operations": [{"op": "set", "path": "/n", "value": 2}]}},
        {"operationType": "Read", "id": "p", "partitionKey": json.dumps([a]), "minimalReturnPreference": True},
    ]
    status, results = await _bulk(cosmos, path, first["id"], ops)
    assert status == 200
    assert [r["statusCode"] for r in results] == [201, 201, 200, 200]
    assert "resourceBody" not in results[0] and results[0]["eTag"] and results[0]["requestCharge"] > 0
    assert results[1]["resourceBody"]["id"] == "loud"
    assert "resourceBody" not in results[2] and results[2]["eTag"]
    assert results[3]["resourceBody"]["n"] == 2  # a read always returns its document
    assert (await container.read_item("quiet", partition_key=a))["pk"] == a


@needs_emulator
async def test_stop_at_the_first_failure_without_continue_on_error(database: DatabaseProxy, cosmos: Cosmos) -> None:
    container, path, definition, ranges = await _setup(database, cosmos)
    (a,) = _keys_in(definition, ranges[1], 1)
    await container.create_item({"id": "taken", "pk": a})
    ops = [_op("Create", {"id": "one", "pk": a}), _op("Create", {"id": "taken", "pk": a}),
           _op("Create", {"id": "three", "pk": a})]
    status, results = await _bulk(cosmos, path, ranges[1]["id"], ops, continue_on_error=False)
    assert status == 207
    assert [r["statusCode"] for r in results] == [201, 409, 424]
    assert sorted([d["id"] async for d in container.read_all_items()]) == ["one", "taken"]


@needs_emulator
async def test_a_key_outside_the_addressed_range_is_gone(database: DatabaseProxy, cosmos: Cosmos) -> None:
    container, path, definition, ranges = await _setup(database, cosmos)
    (inside,) = _keys_in(definition, ranges[0], 1)
    (outside,) = _keys_in(definition, ranges[2], 1)
    status, results = await _bulk(cosmos, path, ranges[0]["id"],
                                  [_op("Upsert", {"id": "a", "pk": inside}), _op("Upsert", {"id": "b", "pk": outside})])
    assert status == 207
    assert results[0]["statusCode"] == 201
    assert (results[1]["statusCode"], results[1]["subStatusCode"]) == (410, 1002)
    assert [d["id"] async for d in container.read_all_items()] == ["a"]
    # After a split, the parent range itself is gone for the whole request.
    assert cosmos.emulator is not None
    cosmos.emulator.admin("split", {"database": database.id, "container": container.id, "range": ranges[0]["id"]})
    status, _ = await _bulk(cosmos, path, ranges[0]["id"], [_op("Upsert", {"id": "c", "pk": inside})])
    assert status == 410


@needs_emulator
async def test_throttled_operations_get_their_own_429(database: DatabaseProxy, cosmos: Cosmos) -> None:
    container, path, definition, ranges = await _setup(database, cosmos, offer_throughput=400)
    keys = _keys_in(definition, ranges[3], 5)
    filler = "x" * 20_000  # ~20 RU a write: 100 RU/s per range is spent after a handful
    ops = [_op("Upsert", {"id": f"d{n}", "pk": keys[n % 5], "fill": filler}) for n in range(40)]
    status, results = await _bulk(cosmos, path, ranges[3]["id"], ops)
    assert status == 207
    codes = [r["statusCode"] for r in results]
    assert codes[0] == 201 and 429 in codes, codes
    throttled = [r for r in results if r["statusCode"] == 429]
    assert all(r["subStatusCode"] == 3200 and r["retryAfterMilliseconds"] > 0 for r in throttled)
    written = sorted([d["id"] async for d in container.read_all_items()], key=lambda i: int(i[1:]))
    assert written == [f"d{n}" for n, code in enumerate(codes) if code == 201]


@needs_emulator
async def test_patch_body_may_be_a_bare_array(database: DatabaseProxy, cosmos: Cosmos) -> None:
    container, path, _, _ = await _setup(database, cosmos)
    await container.create_item({"id": "p", "pk": "k", "n": 1})
    status, _, body = await raw_request(
        cosmos.endpoint, cosmos.key, "PATCH", f"{path}/docs/p",
        headers={"x-ms-documentdb-partitionkey": '["k"]', "Content-Type": "application/json"},
        body=json.dumps([{"op": "incr", "path": "/n", "value": 2}, {"op": "add", "path": "/t", "value": "x"}]).encode())
    assert status == 200, body
    assert (await container.read_item("p", partition_key="k"))["n"] == 3
