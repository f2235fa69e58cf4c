"""Every resource reachable by its ``_self`` link (RID paths), as the SDKs use them."""

from __future__ import annotations

import json

from azure.cosmos import PartitionKey
from azure.cosmos.aio import DatabaseProxy
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from tests.conftest import Cosmos, needs_emulator
from tests.helpers import raw_request, unique


async def test_replace_and_delete_item_given_the_item_dict(database: DatabaseProxy) -> None:
    container = await database.create_container(unique("rid"), PartitionKey("/pk"))
    created = await container.create_item({"id": "a", "pk": "p", "n": 1})
    replaced = await container.replace_item(created, {**created, "n": 2})  # the SDK follows _self
    assert replaced["n"] == 2 and replaced["_rid"] == created["_rid"]
    assert (await container.read_item("a", partition_key="p"))["n"] == 2
    await container.delete_item(replaced, partition_key="p")
    try:
        await container.read_item("a", partition_key="p")
        raise AssertionError("the item should be gone")
    except CosmosResourceNotFoundError:
        pass


@needs_emulator
async def test_self_links_of_every_resource_answer(database: DatabaseProxy, cosmos: Cosmos) -> None:
    container = await database.create_container(unique("rid"), PartitionKey("/pk"), offer_throughput=400)
    doc = await container.create_item({"id": "a", "pk": "p"})
    db_self = (await database.read())["_self"]
    coll = await container.read()
    ranges_body = json.loads((await raw_request(cosmos.endpoint, cosmos.key, "GET", coll["_self"] + "pkranges"))[2])
    offer = await container.get_throughput()
    for link, expected_id in [(db_self, database.id), (coll["_self"], container.id), (doc["_self"], "a"),
                              (ranges_body["PartitionKeyRanges"][0]["_self"], "0"),
                              (offer.properties["_self"], offer.properties["id"])]:
        headers = {"x-ms-documentdb-partitionkey": '["p"]'} if "/docs/" in link else {}
        status, _, body = await raw_request(cosmos.endpoint, cosmos.key, "GET", link, headers=headers)
        assert status == 200, (link, body)
        assert json.loads(body)["id"] == expected_id
    status, _, _ = await raw_request(cosmos.endpoint, cosmos.key, "GET", doc["_self"])
    assert status == 400  # a point read needs its partition key, by name or by RID
    status, _, _ = await raw_request(cosmos.endpoint, cosmos.key, "GET", coll["_self"] + "docs/AAAAAAAAAAA=",
                                     headers={"x-ms-documentdb-partitionkey": '["p"]'})
    assert status == 404
