"""Container definitions read back as Cosmos DB returns them."""

from __future__ import annotations

from azure.cosmos import PartitionKey
from azure.cosmos.aio import DatabaseProxy

from tests.helpers import unique

ETAG = '/"_etag"/?'


async def test_partial_indexing_policy_is_completed(database: DatabaseProxy) -> None:
    container = await database.create_container(
        unique("idx"), PartitionKey("/pk"), indexing_policy={"excludedPaths": [{"path": "/big/*"}]})
    policy = (await container.read())["indexingPolicy"]
    assert policy["indexingMode"] == "consistent" and policy["automatic"] is True
    assert policy["includedPaths"] == [{"path": "/*"}]
    assert {p["path"] for p in policy["excludedPaths"]} == {"/big/*", ETAG}


async def test_replaced_policy_keeps_the_etag_exclusion_and_lower_case_mode(database: DatabaseProxy) -> None:
    container = await database.create_container(unique("idx"), PartitionKey("/pk"))
    assert (await container.read())["indexingPolicy"]["excludedPaths"] == [{"path": ETAG}]
    replaced = await database.replace_container(container, PartitionKey("/pk"), indexing_policy={
        "indexingMode": "Consistent", "includedPaths": [{"path": "/a/?"}], "excludedPaths": [{"path": "/*"}]})
    policy = (await replaced.read())["indexingPolicy"]
    assert policy["indexingMode"] == "consistent"
    assert policy["includedPaths"] == [{"path": "/a/?"}]  # the root is already placed (excluded)
    assert [p["path"] for p in policy["excludedPaths"]] == ["/*", ETAG]


async def test_partition_key_kind_is_filled_in_and_version_left_as_sent(database: DatabaseProxy) -> None:
    v2 = await database.create_container(unique("pk"), PartitionKey("/pk"))
    assert (await v2.read())["partitionKey"] == {"paths": ["/pk"], "kind": "Hash", "version": 2}
