"""Account, auth, databases, containers, offers and partition key ranges, through the real SDK."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from azure.cosmos import PartitionKey, ThroughputProperties
from azure.cosmos.aio import CosmosClient, DatabaseProxy
from azure.cosmos.exceptions import (
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)
from azure.cosmos.partition_key import NonePartitionKeyValue, NullPartitionKeyValue

from tests.conftest import Cosmos, needs_emulator
from tests.helpers import raw_request, unique

OTHER_KEY = "b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXktb3RoZXIta2V5LW90aGVyLWtleQ=="


@needs_emulator
async def test_database_account_advertises_the_endpoint_the_client_used(cosmos: Cosmos) -> None:
    status, headers, body = await raw_request(cosmos.endpoint, cosmos.key, "GET", "/")
    assert status == 200
    assert float(headers["x-ms-request-charge"]) >= 0
    account = json.loads(body)
    for key in ("writableLocations", "readableLocations"):
        assert [loc["databaseAccountEndpoint"] for loc in account[key]] == [cosmos.endpoint]
    # The same account through "localhost" advertises "localhost": whatever Host the client used.
    other = cosmos.endpoint.replace("127.0.0.1", "localhost")
    status, _, body = await raw_request(other, cosmos.key, "GET", "/")
    assert status == 200
    assert json.loads(body)["writableLocations"][0]["databaseAccountEndpoint"] == other
    assert json.loads(body)["userConsistencyPolicy"]["defaultConsistencyLevel"] == "Session"


async def test_wrong_key_is_refused_with_401_and_a_cosmos_error_body(cosmos: Cosmos) -> None:
    with pytest.raises(CosmosHttpResponseError) as caught:
        async with asyncio.timeout(30):
            async with CosmosClient(cosmos.endpoint, credential=OTHER_KEY) as bad:
                await bad.create_database(unique("never"))
    assert caught.value.status_code == 401
    assert "Unauthorized" in str(caught.value)
    status, headers, body = await raw_request(cosmos.endpoint, OTHER_KEY, "GET", "/dbs")
    assert status == 401
    assert json.loads(body)["code"] == "Unauthorized"
    assert "x-ms-request-charge" in headers
    # Right key, tampered signature input (another date than the one signed): also 401.
    status, _, body = await raw_request(cosmos.endpoint, cosmos.key, "GET", "/dbs",
                                        headers={"x-ms-date": "Thu, 01 Jan 1970 00:00:00 GMT"})
    assert status == 401 and json.loads(body)["code"] == "Unauthorized"


async def test_database_lifecycle(client: CosmosClient) -> None:
    name = unique("db life ü")  # spaces and non-ASCII survive URL quoting and signing
    db = await client.create_database(name)
    try:
        props = await db.read()
        assert props["id"] == name and props["_rid"] and props["_self"].startswith("dbs/")
        with pytest.raises(CosmosResourceExistsError):
            await client.create_database(name)
        assert name in [d["id"] async for d in client.list_databases()]
        found = [d async for d in client.query_databases(
            "SELECT * FROM root r WHERE r.id=@id", parameters=[{"name": "@id", "value": name}])]
        assert [d["id"] for d in found] == [name]
        again = await client.create_database_if_not_exists(name)
        assert (await again.read())["_rid"] == props["_rid"]
    finally:
        await client.delete_database(name)
    with pytest.raises(CosmosResourceNotFoundError):
        await client.get_database_client(name).read()
    with pytest.raises(CosmosResourceNotFoundError):
        await client.delete_database(name)


async def test_container_lifecycle_and_definitions(database: DatabaseProxy) -> None:
    indexing = {
        "indexingMode": "consistent", "automatic": True, "includedPaths": [{"path": "/*"}],
        "excludedPaths": [{"path": "/embedding/*"}, {"path": '/"_etag"/?'}],
    }
    vectors = {"vectorEmbeddings": [
        {"path": "/embedding", "dataType": "float32", "distanceFunction": "cosine", "dimensions": 3}]}
    unique_keys = {"uniqueKeys": [{"paths": ["/email"]}]}
    name = unique("c")
    container = await database.create_container(
        name, PartitionKey("/pk"), indexing_policy=indexing, default_ttl=3600,
        vector_embedding_policy=vectors, unique_key_policy=unique_keys,
    )
    props = await container.read()
    assert props["partitionKey"] == {"paths": ["/pk"], "kind": "Hash", "version": 2}
    assert props["indexingPolicy"]["excludedPaths"] == indexing["excludedPaths"]
    assert props["defaultTtl"] == 3600
    assert props["vectorEmbeddingPolicy"] == vectors
    assert props["uniqueKeyPolicy"] == unique_keys
    assert props["_self"].startswith("dbs/") and props["_rid"]
    with pytest.raises(CosmosResourceExistsError):
        await database.create_container(name, PartitionKey("/pk"))
    assert name in [c["id"] async for c in database.list_containers()]
    queried = [c async for c in database.query_containers(
        "SELECT * FROM r WHERE r.id=@id", parameters=[{"name": "@id", "value": name}])]
    assert [c["id"] for c in queried] == [name]

    replaced = await database.replace_container(container, PartitionKey("/pk"), default_ttl=60,
                                                indexing_policy=indexing)
    after = await replaced.read()
    assert after["defaultTtl"] == 60 and after["_rid"] == props["_rid"]
    assert after["partitionKey"]["version"] == 2

    await database.delete_container(name)
    with pytest.raises(CosmosResourceNotFoundError):
        await container.read()
    with pytest.raises(CosmosResourceNotFoundError):
        await database.delete_container(name)


async def test_hierarchical_partition_key(database: DatabaseProxy) -> None:
    container = await database.create_container(
        unique("hpk"), PartitionKey(path=["/tenant", "/user"], kind="MultiHash"))
    props = await container.read()
    assert props["partitionKey"] == {"paths": ["/tenant", "/user"], "kind": "MultiHash", "version": 2}
    docs = [{"id": f"d{i}", "tenant": f"T{i % 3}", "user": f"U{i % 2}", "n": i} for i in range(24)]
    for doc in docs:
        await container.create_item(doc)
    item = await container.read_item("d5", partition_key=["T2", "U1"])
    assert item["n"] == 5
    with pytest.raises(CosmosResourceNotFoundError):
        await container.read_item("d5", partition_key=["T2", "U0"])
    full = await container.feed_range_from_partition_key(["T1", "U0"])
    got = {d["id"] async for d in container.query_items("SELECT * FROM c", feed_range=full)}
    assert got == {d["id"] for d in docs if (d["tenant"], d["user"]) == ("T1", "U0")}
    prefix = await container.feed_range_from_partition_key(["T1"])
    got = [d["id"] async for d in container.query_items("SELECT * FROM c", feed_range=prefix)]
    assert sorted(got) == sorted(d["id"] for d in docs if d["tenant"] == "T1")
    got = [d["id"] async for d in container.query_items("SELECT * FROM c", partition_key=["T0"])]
    assert sorted(got) == sorted(d["id"] for d in docs if d["tenant"] == "T0")


async def test_offers_manual_and_autoscale(database: DatabaseProxy) -> None:
    manual = await database.create_container(unique("m"), PartitionKey("/pk"), offer_throughput=400)
    offer = await manual.get_throughput()
    assert offer.offer_throughput == 400 and offer.auto_scale_max_throughput is None
    await manual.replace_throughput(800)
    assert (await manual.get_throughput()).offer_throughput == 800

    auto = await database.create_container(
        unique("a"), PartitionKey("/pk"), offer_throughput=ThroughputProperties(auto_scale_max_throughput=4000))
    offer = await auto.get_throughput()
    assert offer.auto_scale_max_throughput == 4000
    await auto.replace_throughput(ThroughputProperties(auto_scale_max_throughput=5000))
    assert (await auto.get_throughput()).auto_scale_max_throughput == 5000
    # The manual container's offer is untouched by the other container's replace.
    assert (await manual.get_throughput()).offer_throughput == 800
    # (A container without an offer is not tested: the SDK itself turns the empty Offers list into
    # 404/10004 and then fails refreshing its cache with a None link, an SDK bug.)


async def test_database_offer(client: CosmosClient) -> None:
    db = await client.create_database(unique("shared"), offer_throughput=400)
    try:
        assert (await db.get_throughput()).offer_throughput == 400
        await db.replace_throughput(1000)
        assert (await db.get_throughput()).offer_throughput == 1000
    finally:
        await client.delete_database(db.id)


def _tiles(ranges: list[dict[str, Any]]) -> bool:
    bounds = sorted((r["minInclusive"], r["maxExclusive"]) for r in ranges)
    return (bounds[0][0] == "" and bounds[-1][1] == "FF"
            and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False)))


@needs_emulator
async def test_partition_key_ranges_tile_and_answer_304(cosmos: Cosmos, database: DatabaseProxy) -> None:
    container = await database.create_container(unique("r"), PartitionKey("/pk"))
    path = f"/dbs/{database.id}/colls/{container.id}/pkranges/"
    status, headers, body = await raw_request(
        cosmos.endpoint, cosmos.key, "GET", path, headers={"A-IM": "Incremental Feed", "x-ms-max-item-count": "-1"})
    assert status == 200
    ranges = json.loads(body)["PartitionKeyRanges"]
    assert len(ranges) == 4 and _tiles(ranges)
    assert all(isinstance(r["id"], str) and r["parents"] == [] for r in ranges)
    assert all(r["minInclusive"] == r["minInclusive"].upper() for r in ranges)
    etag = headers["etag"]
    status, headers, body = await raw_request(
        cosmos.endpoint, cosmos.key, "GET", path, headers={"A-IM": "Incremental Feed", "If-None-Match": etag})
    assert status == 304 and headers["etag"] == etag and body == b""
    # An unknown (stale) etag gets the full list again.
    status, _, body = await raw_request(
        cosmos.endpoint, cosmos.key, "GET", path, headers={"A-IM": "Incremental Feed", "If-None-Match": '"999"'})
    assert status == 200 and _tiles(json.loads(body)["PartitionKeyRanges"])


@needs_emulator
async def test_partition_count_per_container_via_request_headers(database: DatabaseProxy) -> None:
    # azure-cosmos 4.17.1 maps initial_headers= into an option that nothing reads, so it never reaches
    # the wire; azure-core's per-request headers= does.
    two = await database.create_container(unique("two"), PartitionKey("/pk"),
                                          headers={"x-asyncmig-partition-count": "2"})
    assert len([r async for r in two.read_feed_ranges()]) == 2
    default = await database.create_container(unique("four"), PartitionKey("/pk"))
    assert len([r async for r in default.read_feed_ranges()]) == 4


def _keys() -> list[Any]:
    return [f"p{i}" for i in range(20)] + [0, 5, 7.5, -3, True, False, None, "ü-key", ""]


async def test_documents_are_placed_where_the_sdk_hashes_them(database: DatabaseProxy) -> None:
    container = await database.create_container(unique("epk"), PartitionKey("/pk"))
    docs = [{"id": f"d{i}-{j}", "pk": key} for i, key in enumerate(_keys()) for j in range(3)]
    docs += [{"id": "no-pk-1"}, {"id": "no-pk-2"}]  # undefined partition key
    await asyncio.gather(*(container.create_item(d) for d in docs))
    feed_ranges = [r async for r in container.read_feed_ranges()]
    seen: Counter[str] = Counter()
    owner: dict[str, int] = {}
    for index, fr in enumerate(feed_ranges):
        async for item in container.query_items("SELECT * FROM c", feed_range=fr):
            seen[item["id"]] += 1
            owner[item["id"]] = index
    assert seen == Counter(d["id"] for d in docs), "union of per-range reads must be every document once"
    if len(feed_ranges) > 1:  # (a small container on a real account has one range)
        assert len({owner[d["id"]] for d in docs}) > 1, "keys should spread over several ranges"
    for i, key in enumerate(_keys()):
        pk_range = await container.feed_range_from_partition_key(key)
        got = sorted([d["id"] async for d in container.query_items("SELECT * FROM c", feed_range=pk_range)])
        assert got == [f"d{i}-{j}" for j in range(3)], key
        # The SDK's own subset test agrees with where the server put the documents.
        assert await container.is_feed_range_subset(feed_ranges[owner[f"d{i}-0"]], pk_range)
        # For query_items, partition_key=None means "no key" (cross-partition): say null explicitly.
        sdk_key = NullPartitionKeyValue if key is None else key
        by_pk = sorted([d["id"] async for d in container.query_items("SELECT * FROM c", partition_key=sdk_key)])
        assert by_pk == got
    undefined = await container.feed_range_from_partition_key(NonePartitionKeyValue)
    got = sorted([d["id"] async for d in container.query_items("SELECT * FROM c", feed_range=undefined)])
    assert got == ["no-pk-1", "no-pk-2"]
    assert (await container.read_item("no-pk-1", partition_key=NonePartitionKeyValue))["id"] == "no-pk-1"
    # read_all_items (no range header) sees everything too.
    assert sorted([d["id"] async for d in container.read_all_items(max_item_count=7)]) == sorted(seen)
