"""Priority-based execution and throughput buckets through the SDK's ``priority=`` and
``throughput_bucket=`` keywords: low priority is throttled first on a contended range, a bucket is
capped at its configured share of the container's throughput (429 / 3212), invalid values get 400.

Every test uses a fresh one-range container at a known RU/s and ~96 RU writes (256 KB documents),
so a range's budget runs out within a few sequential requests, long before it refills.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos._retry_options import RetryOptions
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy
from azure.cosmos.documents import ConnectionPolicy
from azure.cosmos.exceptions import CosmosHttpResponseError

from tests.conftest import Cosmos, needs_emulator
from tests.helpers import raw_request, unique

pytestmark = needs_emulator
PAD = "x" * 256_000  # a write costs ~96 RU in the emulator's model


@pytest.fixture
async def no_retry(cosmos: Cosmos) -> AsyncIterator[DatabaseProxy]:
    """A database on a client that surfaces every 429 instead of retrying it."""
    policy = ConnectionPolicy()
    policy.RetryOptions = RetryOptions(max_retry_attempt_count=0)
    async with CosmosClient(cosmos.endpoint, cosmos.key, connection_policy=policy) as client:
        db = await client.create_database(unique("prio"))
        try:
            yield db
        finally:
            await client.delete_database(db.id)


async def one_range_container(db: DatabaseProxy, throughput: int) -> ContainerProxy:
    return await db.create_container(unique("c"), PartitionKey("/pk"), offer_throughput=throughput,
                                     headers={"x-asyncmig-partition-count": "1"})


async def write_until_throttled(container: ContainerProxy, **kwargs: Any) -> tuple[float, CosmosHttpResponseError]:
    """Sequential ~96 RU writes until the first 429; returns the RU admitted before it and the 429."""
    admitted = 0.0
    for i in range(40):
        try:
            await container.upsert_item({"id": f"w{i}", "pk": "p", "pad": PAD}, **kwargs)
        except CosmosHttpResponseError as error:
            assert error.status_code == 429, error
            return admitted, error
        admitted += float(container.client_connection.last_response_headers["x-ms-request-charge"])
    raise AssertionError(f"40 writes of ~96 RU were never throttled ({admitted} RU admitted)")


async def test_low_priority_alone_may_use_the_whole_budget(no_retry: DatabaseProxy) -> None:
    container = await one_range_container(no_retry, 400)
    admitted, error = await write_until_throttled(container, priority="Low")
    assert admitted >= 400, "with no high-priority traffic, low priority is not held back"
    assert error.sub_status == 3200 and int(error.headers["x-ms-retry-after-ms"]) > 0


async def test_low_priority_is_throttled_first_while_high_priority_gets_through(no_retry: DatabaseProxy) -> None:
    container = await one_range_container(no_retry, 400)
    await container.upsert_item({"id": "user", "pk": "p"}, priority="High")  # a high-priority workload is active
    admitted, error = await write_until_throttled(container, priority="Low")
    assert admitted >= 200, "low priority may spend down to the reserve (half a second's budget)"
    assert error.sub_status == 3200 and int(error.headers["x-ms-retry-after-ms"]) > 0
    # The reserve is still there: high priority (the default) gets through where low did not.
    written = await container.upsert_item({"id": "urgent", "pk": "p", "pad": PAD})
    assert written["id"] == "urgent"
    with pytest.raises(CosmosHttpResponseError) as again:
        await container.upsert_item({"id": "later", "pk": "p", "pad": PAD}, priority="Low")
    assert again.value.status_code == 429


async def test_a_low_priority_client_succeeds_with_the_sdks_retries(cosmos: Cosmos, database: DatabaseProxy) -> None:
    container = await one_range_container(database, 400)
    await container.upsert_item({"id": "user", "pk": "p"})  # high priority, from the default client
    assert cosmos.emulator is not None
    throttled_before = cosmos.emulator.admin("stats")["throttled"]
    async with CosmosClient(cosmos.endpoint, cosmos.key, priority="Low") as low_client:  # a client-wide default
        low = low_client.get_database_client(database.id).get_container_client(container.id)
        for i in range(8):  # ~770 RU through a 400 RU/s range with 200 RU held back: needs the retry-after waits
            await low.upsert_item({"id": f"w{i}", "pk": "p", "pad": PAD})
    assert cosmos.emulator.admin("stats")["throttled"] > throttled_before
    assert len([d async for d in container.read_all_items()]) == 9


async def set_buckets(cosmos: Cosmos, container: ContainerProxy, buckets: Any) -> tuple[int, dict[str, Any]]:
    """Replace the container's offer with ``throughputBuckets`` in its content, as a Cosmos DB client does."""
    offer = (await container.get_throughput()).properties
    assert offer is not None
    body = {**offer, "content": {**offer["content"], "throughputBuckets": buckets}}
    status, _, raw = await raw_request(cosmos.endpoint, cosmos.key, "PUT", f"/offers/{offer['_rid']}",
                                       headers={"Content-Type": "application/json"}, body=json.dumps(body).encode())
    return status, json.loads(raw)


async def test_a_throughput_bucket_is_capped_at_its_share(cosmos: Cosmos, no_retry: DatabaseProxy) -> None:
    container = await one_range_container(no_retry, 1000)
    status, offer = await set_buckets(cosmos, container, [{"id": 1, "maxThroughputPercentage": 20},
                                                          {"id": 2, "maxThroughputPercentage": 50}])
    assert status == 200 and offer["content"]["offerThroughput"] == 1000
    read_back = (await container.get_throughput()).properties
    assert read_back is not None and read_back["content"]["throughputBuckets"][0] == {
        "id": 1, "maxThroughputPercentage": 20}

    admitted, error = await write_until_throttled(container, throughput_bucket=1)
    assert 200 <= admitted < 500, "bucket 1 may use 20 % of 1000 RU/s (plus what refills meanwhile)"
    assert error.sub_status == 3212 and int(error.headers["x-ms-retry-after-ms"]) > 0
    # The container still has budget: other buckets, unconfigured ids and unbucketed requests get through.
    for kwargs in ({"throughput_bucket": 2}, {"throughput_bucket": 5}, {}):
        await container.upsert_item({"id": "other", "pk": "p", "pad": PAD}, **kwargs)
    # The SDK's replace_throughput keeps the buckets (it sends back the offer's content).
    await container.replace_throughput(1200)
    replaced = (await container.get_throughput()).properties
    assert replaced is not None and len(replaced["content"]["throughputBuckets"]) == 2


async def test_invalid_bucket_ids_priorities_and_configurations_are_refused(
        cosmos: Cosmos, database: DatabaseProxy) -> None:
    container = await one_range_container(database, 400)
    for bucket in (-1, 6):  # (the SDK does not send 0: it drops falsy options)
        with pytest.raises(CosmosHttpResponseError) as error:
            await container.upsert_item({"id": "a", "pk": "p"}, throughput_bucket=bucket)
        assert error.value.status_code == 400
    with pytest.raises(CosmosHttpResponseError) as error:
        await container.upsert_item({"id": "a", "pk": "p"}, priority="Medium")  # type: ignore[arg-type]
    assert error.value.status_code == 400
    for buckets in ([{"id": 7, "maxThroughputPercentage": 10}], [{"id": 1, "maxThroughputPercentage": 0}],
                    [{"id": 1, "maxThroughputPercentage": 10}, {"id": 1, "maxThroughputPercentage": 20}]):
        status, _ = await set_buckets(cosmos, container, buckets)
        assert status == 400, buckets
    assert [d async for d in container.read_all_items()] == [], "a refused request wrote nothing"
