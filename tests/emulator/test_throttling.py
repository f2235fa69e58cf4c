"""429 throttling against provisioned RU/s, per physical range, as the SDK sees it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos._retry_options import RetryOptions
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.documents import ConnectionPolicy
from azure.cosmos.exceptions import CosmosHttpResponseError

from tests.conftest import needs_emulator
from tests.helpers import EmulatorProcess

pytestmark = needs_emulator


def no_retry_client(process: EmulatorProcess) -> CosmosClient:
    policy = ConnectionPolicy()
    policy.RetryOptions = RetryOptions(max_retry_attempt_count=0)
    return CosmosClient(process.endpoint, process.key, connection_policy=policy)


async def setup_container(client: CosmosClient, throughput: int = 400) -> ContainerProxy:
    db = await client.create_database("throttle")
    return await db.create_container("c", PartitionKey("/pk"), offer_throughput=throughput)


def doc(i: int, pk: str | None = None) -> dict[str, Any]:
    return {"id": f"d{i}", "pk": pk or f"p{i % 16}", "pad": "x" * 800}


async def hammer(container: ContainerProxy, count: int, pk: str | None = None) -> list[Any]:
    return await asyncio.gather(*(container.upsert_item(doc(i, pk)) for i in range(count)), return_exceptions=True)


async def test_hammering_400_rus_gets_429_with_retry_after() -> None:
    with EmulatorProcess() as process:
        async with no_retry_client(process) as client:
            container = await setup_container(client)
            results = await hammer(container, 300)
            throttled = [r for r in results if isinstance(r, CosmosHttpResponseError)]
            assert not [r for r in results if isinstance(r, BaseException) and r not in throttled]
            assert throttled and len(throttled) < len(results)
            for error in throttled:
                assert error.status_code == 429 and error.sub_status == 3200
                assert int(error.headers["x-ms-retry-after-ms"]) > 0
                assert "x-ms-request-charge" in error.headers
            # A 429 changed nothing: exactly the accepted writes are stored.
            process.admin("throttle", {"enabled": False})
            stored = {d["id"] async for d in container.read_all_items()}
            accepted = {r["id"] for r in results if not isinstance(r, BaseException)}
            assert stored == accepted
        assert process.admin("stats")["throttled"] >= len(throttled)


async def test_buckets_are_per_physical_range() -> None:
    with EmulatorProcess("--partitions", "4") as process:  # 400 RU/s alone would give one range
        async with no_retry_client(process) as client:
            container = await setup_container(client)
            results = await hammer(container, 60, pk="hot")  # one logical partition, one range
            assert any(isinstance(r, CosmosHttpResponseError) and r.status_code == 429 for r in results)
            hot = (await container.feed_range_from_partition_key("hot"))["Range"]["min"]
            ranges = [r["Range"] async for r in container.read_feed_ranges()]
            hot_range = next(r for r in ranges if r["min"] <= hot < r["max"])
            cold = ""
            for i in range(100):
                epk = (await container.feed_range_from_partition_key(f"k{i}"))["Range"]["min"]
                if not hot_range["min"] <= epk < hot_range["max"]:
                    cold = f"k{i}"
                    break
            written = await container.upsert_item(doc(0, cold))  # another range still has its budget
            assert written["pk"] == cold


async def test_default_client_retries_until_it_succeeds() -> None:
    with EmulatorProcess() as process:
        async with CosmosClient(process.endpoint, process.key) as client:
            container = await setup_container(client)
            results = await hammer(container, 120)
            assert all(not isinstance(r, BaseException) for r in results)
            assert len([d async for d in container.read_all_items()]) == 120
        assert process.admin("stats")["throttled"] > 0


async def test_no_rate_limit_never_throttles() -> None:
    with EmulatorProcess("--no-rate-limit") as process:
        async with no_retry_client(process) as client:
            container = await setup_container(client)
            results = await hammer(container, 300)
            assert all(not isinstance(r, BaseException) for r in results)
        assert process.admin("stats")["throttled"] == 0


async def test_throttling_can_be_switched_at_runtime() -> None:
    with EmulatorProcess() as process:
        async with no_retry_client(process) as client:
            container = await setup_container(client)
            assert process.admin("throttle", {"enabled": False}) == {"enabled": False}
            assert all(not isinstance(r, BaseException) for r in await hammer(container, 200))
            process.admin("throttle", {"enabled": True})
            results = await hammer(container, 200)
            assert any(isinstance(r, CosmosHttpResponseError) and r.status_code == 429 for r in results)


@pytest.mark.parametrize("throughput", [10_000])
async def test_enough_throughput_does_not_throttle(throughput: int) -> None:
    with EmulatorProcess() as process:
        async with no_retry_client(process) as client:
            container = await setup_container(client, throughput)
            assert all(not isinstance(r, BaseException) for r in await hammer(container, 100))
