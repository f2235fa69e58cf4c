"""Partition key values the sink must get right before spending RU: object/array values are
dead-lettered up front, and legacy ``systemKey`` containers (migrated from non-partitioned ones)
take documents that have no partition key value at all."""

from __future__ import annotations

from typing import Any

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient, DatabaseProxy

from asyncmig.connection import CosmosEndpoint
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.partition_keys import (
    MIN_EPK,
    effective_partition_key,
    partition_key_problem,
    partition_key_values,
)
from asyncmig.core.cosmos.sink import CosmosSink
from asyncmig.core.engine.governor import Governor
from asyncmig.core.engine.transform import strip_system
from tests.conftest import Cosmos
from tests.helpers import unique

HASH = {"paths": ["/pk"], "kind": "Hash", "version": 2}
HIERARCHICAL = {"paths": ["/tenant", "/user"], "kind": "MultiHash", "version": 2}
SYSTEM_KEY = {"paths": ["/_partitionKey"], "kind": "Hash", "systemKey": True}


@pytest.mark.parametrize(("definition", "document", "words"), [
    (HASH, {"id": "a", "pk": {"x": 1}}, "/pk holds a JSON object"),
    (HASH, {"id": "a", "pk": {}}, "/pk holds a JSON object"),  # an empty object is not "no value"
    (HASH, {"id": "a", "pk": [1, 2]}, "/pk holds a JSON array"),
    (HIERARCHICAL, {"id": "a", "tenant": "t", "user": ["u"]}, "/user holds a JSON array"),
])
def test_object_and_array_values_are_a_problem(definition: dict[str, Any], document: dict[str, Any],
                                               words: str) -> None:
    problem = partition_key_problem(definition, document)
    assert problem is not None and words in problem and "string, number, boolean or null" in problem


@pytest.mark.parametrize("document", [
    {"id": "a", "pk": "p"}, {"id": "a", "pk": 5}, {"id": "a", "pk": None}, {"id": "a", "pk": False}, {"id": "a"},
])
def test_scalar_null_and_missing_values_are_fine(document: dict[str, Any]) -> None:
    assert partition_key_problem(HASH, document) is None


def test_a_system_key_container_takes_documents_without_a_key_as_the_sdk_does() -> None:
    # The SDK sends [] ("empty", the partition of migrated non-partitioned data) for such a
    # document, not [{}] ("undefined"), which is what a missing value means in other containers.
    assert partition_key_values(SYSTEM_KEY, {"id": "a"}) == []
    assert effective_partition_key(SYSTEM_KEY, []) == MIN_EPK
    assert partition_key_values(SYSTEM_KEY, {"id": "a", "_partitionKey": "k"}) == ["k"]
    assert partition_key_values(HASH, {"id": "a"}) == [{}]


@pytest.mark.parametrize("write_path", ["lean", "sdk"])
async def test_the_sink_rejects_bad_keys_up_front_and_writes_system_key_containers(
    cosmos: Cosmos, database: DatabaseProxy, write_path: str
) -> None:
    system_key = PartitionKey("/_partitionKey", version=1)
    system_key["systemKey"] = True  # as a container migrated from the non-partitioned kind reports it
    created = await database.create_container(unique("legacy"), partition_key=system_key)
    keyed = await database.create_container(unique("keyed"), partition_key=PartitionKey("/pk"))
    async with CosmosClient(cosmos.endpoint, credential=cosmos.key) as client:
        legacy = client.get_database_client(database.id).get_container_client(created.id)
        plain = client.get_database_client(database.id).get_container_client(keyed.id)
        async with CosmosSink({"legacy": legacy, "plain": plain}, Governor(),
                              endpoint=CosmosEndpoint(cosmos.endpoint, cosmos.key), write_path=write_path) as sink:
            await sink.open({})
            assert (await legacy.read())["partitionKey"].get("systemKey") is True
            bad = [{"id": "obj", "pk": {"a": 1}}, {"id": "arr", "pk": ["x"]}]
            units, rejected = sink.plan("plain", [*bad, {"id": "ok", "pk": "p"}])
            assert [r.document["id"] for r in rejected] == ["obj", "arr"]
            assert all(r.status == 400 and "partition key" in r.reason for r in rejected)
            assert [d["id"] for u in units for d in u.documents] == ["ok"]
            # two without a key (one batch), one with a key of its own
            legacy_docs = [{"id": "n1", "v": 1}, {"id": "n2", "v": 2}, {"id": "k1", "_partitionKey": "k"}]
            units, rejected = sink.plan("legacy", legacy_docs)
            assert rejected == []
            for unit in units:
                outcome = await sink.write(unit)
                assert outcome.rejected == [] and outcome.written == len(unit.documents)
        found = {d["id"]: jsoncodec.canonical(strip_system(d)) async for d in legacy.read_all_items()}
    assert found == {d["id"]: jsoncodec.canonical(d) for d in legacy_docs}
