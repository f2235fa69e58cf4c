"""The all versions and deletes change feed through the SDK (``mode="AllVersionsAndDeletes"``):
every create, replace and delete in order with its metadata, per feed range and per partition key,
only from now or a continuation, across a restart and a split."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy

from tests.conftest import Cosmos, needs_emulator
from tests.helpers import EmulatorProcess, raw_request, unique

AVAD = "AllVersionsAndDeletes"


@pytest.fixture
async def container(database: DatabaseProxy) -> AsyncIterator[ContainerProxy]:
    yield await database.create_container(unique("avad"), PartitionKey("/pk"))


async def drain(container: ContainerProxy, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
    """Every change the feed has now and the continuation to resume from ("Now" with nothing new
    yields no page, so the token is then only in the last response's etag)."""
    pager = container.query_items_change_feed(mode=AVAD, **kwargs).by_page()
    changes: list[dict[str, Any]] = []
    async for page in pager:
        changes.extend([c async for c in page])
    token = pager.continuation_token or container.client_connection.last_response_headers["etag"]
    assert json.loads(base64.b64decode(token))["mode"] == AVAD
    return changes, token


async def tokens_from_now(container: ContainerProxy) -> list[str]:
    tokens = []
    for feed_range in [r async for r in container.read_feed_ranges()]:
        changes, token = await drain(container, feed_range=feed_range, start_time="Now")
        assert changes == []
        tokens.append(token)
    return tokens


async def test_every_version_in_order_with_metadata(container: ContainerProxy) -> None:
    await container.upsert_item({"id": "old", "pk": "p1"})  # before "now": not in the feed
    _, token = await drain(container)
    created = await container.create_item({"id": "d1", "pk": "p1", "v": 1, "big": 2**64 + 1, "neg": -0.0})
    replaced = await container.upsert_item({"id": "d1", "pk": "p1", "v": 2, "big": 2**64 + 1, "neg": -0.0})
    patched = await container.patch_item("d1", "p1", [{"op": "incr", "path": "/v", "value": 1}])
    await container.delete_item("d1", partition_key="p1")
    await container.delete_item("old", partition_key="p1")

    changes, token = await drain(container, continuation=token)
    operations = [(c["metadata"]["operationType"], c["current"].get("v")) for c in changes]
    assert operations == [("create", 1), ("replace", 2), ("replace", 3), ("delete", None), ("delete", None)]
    lsns = [c["metadata"]["lsn"] for c in changes]
    assert lsns == sorted(lsns) and len(set(lsns)) == 5
    first, second, third, delete, delete_old = changes
    assert "previousImageLSN" not in first["metadata"]
    assert second["metadata"]["previousImageLSN"] == first["metadata"]["lsn"]
    assert third["metadata"]["previousImageLSN"] == second["metadata"]["lsn"]
    for change, written in zip((first, second, third), (created, replaced, patched), strict=True):
        assert change["current"]["_lsn"] == change["metadata"]["lsn"]
        assert {k: v for k, v in change["current"].items() if k != "_lsn"} == written
        assert change["metadata"]["crts"] == written["_ts"]
    assert first["current"]["big"] == 2**64 + 1 and str(first["current"]["neg"]) == "-0.0"
    assert delete["current"] == {}
    assert delete["metadata"]["id"] == "d1" and delete["metadata"]["partitionKey"] == {"pk": "p1"}
    assert delete["metadata"]["previousImageLSN"] == third["metadata"]["lsn"]
    assert delete["metadata"]["timeToLiveExpired"] is False
    assert delete["previous"]["v"] == 3
    assert delete_old["metadata"]["id"] == "old"

    # The latest-version feed of the same container still shows only surviving documents.
    latest = [i async for i in container.query_items_change_feed(start_time="Beginning")]
    assert latest == []
    assert (await drain(container, continuation=token))[0] == [], "caught up: nothing more"


async def test_batches_and_partition_deletes_log_every_operation(container: ContainerProxy) -> None:
    _, token = await drain(container)
    await container.execute_item_batch([
        ("create", ({"id": "a", "pk": "p"},)), ("create", ({"id": "b", "pk": "p"},)),
        ("replace", ("a", {"id": "a", "pk": "p", "v": 2})), ("delete", ("b",)),
    ], partition_key="p")
    await container.upsert_item({"id": "c", "pk": "p"})
    await container.delete_all_items_by_partition_key("p")
    changes, _ = await drain(container, continuation=token)
    assert [(c["metadata"]["operationType"], c["current"].get("id") or c["metadata"]["id"]) for c in changes] == [
        ("create", "a"), ("create", "b"), ("replace", "a"), ("delete", "b"), ("create", "c"),
        ("delete", "a"), ("delete", "c"),
    ]
    assert changes[-2]["metadata"]["previousImageLSN"] == changes[2]["metadata"]["lsn"]


async def test_per_feed_range_and_per_partition_key(container: ContainerProxy) -> None:
    tokens = await tokens_from_now(container)
    _, pk_token = await drain(container, partition_key="k3", start_time="Now")
    for i in range(30):
        await container.upsert_item({"id": f"d{i}", "pk": f"k{i % 5}"})
    for i in range(0, 30, 3):
        await container.delete_item(f"d{i}", partition_key=f"k{i % 5}")

    seen: Counter[tuple[str, str]] = Counter()
    for token in tokens:
        changes, after = await drain(container, continuation=token)
        lsns = [c["metadata"]["lsn"] for c in changes]
        assert lsns == sorted(lsns)
        seen.update((c["metadata"]["operationType"], c["current"].get("id") or c["metadata"]["id"]) for c in changes)
        assert (await drain(container, continuation=after))[0] == []
    assert seen == Counter([("create", f"d{i}") for i in range(30)] + [("delete", f"d{i}") for i in range(0, 30, 3)])

    changes, _ = await drain(container, continuation=pk_token)
    assert [(c["metadata"]["operationType"], c["current"].get("id") or c["metadata"]["id"]) for c in changes] == (
        [("create", f"d{i}") for i in range(30) if i % 5 == 3]
        + [("delete", f"d{i}") for i in range(0, 30, 3) if i % 5 == 3]
    )


@needs_emulator
async def test_only_from_now_or_a_continuation(cosmos: Cosmos, database: DatabaseProxy,
                                               container: ContainerProxy) -> None:
    await container.upsert_item({"id": "x", "pk": "p"})
    path = f"/dbs/{database.id}/colls/{container.id}/docs/"
    base = {"A-IM": "Full-Fidelity Feed", "x-ms-cosmos-changefeed-wire-format-version": "2021-09-15",
            "x-ms-documentdb-partitionkeyrangeid": "0"}

    async def feed(**extra: str) -> tuple[int, dict[str, str], bytes]:
        return await raw_request(cosmos.endpoint, cosmos.key, "GET", path, headers={**base, **extra})

    status, _, body = await feed()  # from the beginning
    assert status == 400 and b"If-None-Match" in body
    status, _, _ = await feed(**{"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"})  # a point in time
    assert status == 400
    status, headers, _ = await feed(**{"If-None-Match": "*"})
    assert status == 304 and headers["etag"] == '"1"' and "x-ms-request-charge" in headers
    status, headers, body = await feed(**{"If-None-Match": '"0"', "x-ms-max-item-count": "5"})
    if status == 200:  # the document may hash to another range: then range 0 has nothing
        assert json.loads(body)["Documents"][0]["metadata"]["operationType"] == "create"
    else:
        assert status == 304
    assert headers["etag"] == '"1"'


@needs_emulator
async def test_survives_a_split_and_a_restart(tmp_path: Path) -> None:
    expected = Counter(
        [("replace", f"d{i}") for i in range(0, 20, 2)] + [("delete", f"d{i}") for i in range(0, 20, 4)]
        + [("create", "late"), ("delete", "late")]
    )

    async def resume(container: ContainerProxy, tokens: list[str]) -> Counter[tuple[str, str]]:
        seen: Counter[tuple[str, str]] = Counter()
        for token in tokens:
            changes, _ = await drain(container, continuation=token)
            seen.update((c["metadata"]["operationType"], c["current"].get("id") or c["metadata"]["id"])
                        for c in changes)
        return seen

    process = EmulatorProcess("--partitions", "4", data_dir=tmp_path / "data").start()
    try:
        async with CosmosClient(process.endpoint, process.key) as client:
            db = await client.create_database("avad")
            container = await db.create_container("c", PartitionKey("/pk"))
            for i in range(20):
                await container.upsert_item({"id": f"d{i}", "pk": f"p{i % 7}"})
            saved = json.dumps(await tokens_from_now(container))  # a checkpoint written before anything else
            for i in range(0, 20, 2):
                await container.upsert_item({"id": f"d{i}", "pk": f"p{i % 7}", "v": 2})
            for i in range(0, 20, 4):
                await container.delete_item(f"d{i}", partition_key=f"p{i % 7}")
            # Split while this client caches the old routing map: resuming meets the 410 and re-maps.
            process.admin("split", {"database": "avad", "container": "c", "range": "0"})
            await container.upsert_item({"id": "late", "pk": "p1"})
            await container.delete_item("late", partition_key="p1")
            assert await resume(container, json.loads(saved)) == expected

        process.restart()
        async with CosmosClient(process.endpoint, process.key) as client:
            container = client.get_database_client("avad").get_container_client("c")
            assert len([r async for r in container.read_feed_ranges()]) == 5
            assert await resume(container, json.loads(saved)) == expected
    finally:
        process.stop()
