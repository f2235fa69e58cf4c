"""400 where Cosmos DB answers 400: bad ids, throughput below the minimums, invalid defaultTtl,
over-deep hierarchical keys, invalid vector policies, incomplete or empty partition keys, and
features the emulator does not have (named, never a bare 404 or a grammar error)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from azure.cosmos import PartitionKey, ThroughputProperties
from azure.cosmos.aio import ContainerProxy, DatabaseProxy
from azure.cosmos.exceptions import CosmosHttpResponseError

from tests.conftest import Cosmos, needs_emulator
from tests.helpers import raw_request, unique

INDEXING = {"indexingMode": "consistent", "automatic": True, "includedPaths": [{"path": "/*"}],
            "excludedPaths": [{"path": '/"_etag"/?'}, {"path": "/embedding/*"}]}


def _vectors(**overrides: Any) -> dict[str, Any]:
    entry = {"path": "/embedding", "dataType": "float32", "distanceFunction": "cosine", "dimensions": 8}
    return {"vectorEmbeddings": [{**entry, **overrides}]}


async def _status(call: Any) -> tuple[int, str]:
    with pytest.raises(CosmosHttpResponseError) as caught:
        await call
    return caught.value.status_code, str(caught.value.message)


@pytest.fixture
async def container(database: DatabaseProxy) -> ContainerProxy:
    return await database.create_container(unique("c"), PartitionKey("/pk"))


async def test_ids_over_255_characters(database: DatabaseProxy, container: ContainerProxy) -> None:
    assert (await container.create_item({"id": "x" * 255, "pk": "a"}))["id"] == "x" * 255
    status, _ = await _status(container.create_item({"id": "x" * 256, "pk": "a"}))
    assert status == 400
    status, _ = await _status(database.create_container("c" * 256, PartitionKey("/pk")))
    assert status == 400


async def test_throughput_minimums(database: DatabaseProxy) -> None:
    status, message = await _status(database.create_container(
        unique("c"), PartitionKey("/pk"), offer_throughput=ThroughputProperties(auto_scale_max_throughput=500)))
    assert status == 400 and "autoscale" in message.lower()
    status, _ = await _status(database.create_container(unique("c"), PartitionKey("/pk"), offer_throughput=300))
    assert status == 400
    ok = await database.create_container(unique("c"), PartitionKey("/pk"),
                                         offer_throughput=ThroughputProperties(auto_scale_max_throughput=1000))
    assert (await ok.get_throughput()).auto_scale_max_throughput == 1000
    status, _ = await _status(ok.replace_throughput(ThroughputProperties(auto_scale_max_throughput=1500)))
    assert status == 400


@pytest.mark.parametrize("ttl", [0, -2, -100])
async def test_default_ttl_must_be_minus_one_or_positive(database: DatabaseProxy, ttl: int) -> None:
    status, message = await _status(database.create_container(unique("c"), PartitionKey("/pk"), default_ttl=ttl))
    assert status == 400 and "defaultTtl" in message
    container = await database.create_container(unique("c"), PartitionKey("/pk"), default_ttl=-1)
    status, _ = await _status(database.replace_container(container, PartitionKey("/pk"), default_ttl=ttl))
    assert status == 400
    assert (await database.replace_container(container, PartitionKey("/pk"), default_ttl=60)).id == container.id


async def test_hierarchical_key_depth_is_checked_before_the_id_conflict(database: DatabaseProxy) -> None:
    name = unique("h")
    await database.create_container(name, PartitionKey(path=["/a", "/b", "/c"], kind="MultiHash"))
    status, message = await _status(database.create_container(
        name, PartitionKey(path=["/a", "/b", "/c", "/d"], kind="MultiHash")))
    assert status == 400 and "3" in message


async def test_incomplete_hierarchical_key_on_a_point_operation_is_400(database: DatabaseProxy) -> None:
    container = await database.create_container(unique("h"), PartitionKey(path=["/a", "/b"], kind="MultiHash"))
    await container.create_item({"id": "x", "a": "A", "b": "B"})
    status, _ = await _status(container.read_item("x", partition_key=["A"]))
    assert status == 400
    assert (await container.read_item("x", partition_key=["A", "B"]))["id"] == "x"


@needs_emulator  # the SDK never sends an empty list; this is the raw request
async def test_a_query_with_an_empty_partition_key_is_400(cosmos: Cosmos, database: DatabaseProxy,
                                                           container: ContainerProxy) -> None:
    status, _, body = await raw_request(
        cosmos.endpoint, cosmos.key, "POST", f"/dbs/{database.id}/colls/{container.id}/docs",
        headers={"x-ms-documentdb-isquery": "True", "Content-Type": "application/query+json",
                 "x-ms-documentdb-partitionkey": "[]"},
        body=b'{"query": "SELECT * FROM c"}')
    assert status == 400 and b"empty" in body


@pytest.mark.parametrize(("vectors", "indexing_change", "named"), [
    (_vectors(dimensions=0), None, "dimensions"),
    (_vectors(dimensions=5000), None, "dimensions"),
    (_vectors(dataType="float64"), None, "data type"),
    (_vectors(distanceFunction="manhattan"), None, "distance"),
    (_vectors(path="/embedding/*"), None, "path"),
    (_vectors(), {"vectorIndexes": [{"path": "/other", "type": "quantizedFlat"}]}, "/other"),
    (_vectors(), {"vectorIndexes": [{"path": "/embedding", "type": "hnsw"}]}, "type"),
    (_vectors(dimensions=1000), {"vectorIndexes": [{"path": "/embedding", "type": "flat"}]}, "505"),
    (_vectors(), {"vectorIndexes": [{"path": "/embedding", "type": "quantizedFlat"}],
                  "excludedPaths": [{"path": '/"_etag"/?'}]}, "excluded"),
])
async def test_invalid_vector_policies(database: DatabaseProxy, vectors: dict[str, Any],
                                       indexing_change: dict[str, Any] | None, named: str) -> None:
    indexing = {**INDEXING, **(indexing_change or {})}
    status, message = await _status(database.create_container(
        unique("v"), PartitionKey("/pk"), vector_embedding_policy=vectors, indexing_policy=indexing))
    assert status == 400 and named in message


async def test_a_valid_vector_container_is_created(database: DatabaseProxy) -> None:
    indexing = {**INDEXING, "vectorIndexes": [{"path": "/embedding", "type": "quantizedFlat"}]}
    container = await database.create_container(unique("v"), PartitionKey("/pk"), vector_embedding_policy=_vectors(),
                                                indexing_policy=indexing)
    assert (await container.read())["vectorEmbeddingPolicy"] == _vectors()


@needs_emulator  # the 413 message and its exact boundary are the emulator's
async def test_the_2_mb_limit_is_measured_on_the_body_as_sent(container: ContainerProxy) -> None:
    limit = 2 * 1024 * 1024
    padding = limit - len(json.dumps({"id": "big", "pk": "a", "pad": ""}, separators=(",", ":")))
    # Exactly 2 MB as sent: accepted even though the stored copy (with _rid, _etag...) is larger.
    created = await container.create_item({"id": "big", "pk": "a", "pad": "x" * padding})
    assert len(created["pad"]) == padding
    status, _ = await _status(container.upsert_item({"id": "big", "pk": "a", "pad": "x" * (padding + 1)}))
    assert status == 413


@needs_emulator  # messages naming what this emulator lacks
@pytest.mark.parametrize(("suffix", "named"), [
    ("users", "users"), ("colls/{c}/sprocs", "stored procedures"), ("colls/{c}/triggers", "triggers"),
    ("colls/{c}/udfs", "user-defined functions"), ("colls/{c}/conflicts", "conflicts"),
])
async def test_unsupported_resources_are_400_naming_the_feature(
        cosmos: Cosmos, database: DatabaseProxy, container: ContainerProxy, suffix: str, named: str) -> None:
    path = f"/dbs/{database.id}/" + suffix.format(c=container.id)
    status, _, body = await raw_request(cosmos.endpoint, cosmos.key, "GET", path)
    assert status == 400 and named in json.loads(body)["message"]


@needs_emulator
async def test_unsupported_features_through_the_sdk(database: DatabaseProxy, container: ContainerProxy) -> None:
    status, message = await _status(container.scripts.create_stored_procedure({"id": "p", "body": "function(){}"}))
    assert status == 400 and "stored procedures" in message
    status, message = await _status(database.create_user({"id": "u"}))
    assert status == 400 and "users" in message
    query = "SELECT * FROM c WHERE ST_DISTANCE(c.loc, {'type': 'Point', 'coordinates': [0, 0]}) < 10"
    status, message = await _status(container.query_items(query, partition_key="a").__anext__())
    assert status == 400 and "spatial" in message
