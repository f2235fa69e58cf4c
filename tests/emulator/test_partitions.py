"""Physical partitions of a new container follow its throughput as on Cosmos DB (one per 6,000 RU/s
at creation, at least one); ``--partitions`` and the per-container header remain test overrides."""

from __future__ import annotations

import pytest
from azure.cosmos import PartitionKey, ThroughputProperties
from azure.cosmos.aio import CosmosClient, DatabaseProxy

from tests.conftest import needs_emulator
from tests.helpers import EmulatorProcess

pytestmark = needs_emulator


async def _ranges(db: DatabaseProxy, name: str, **kwargs: object) -> int:
    container = await db.create_container(name, PartitionKey("/pk"), **kwargs)  # type: ignore[arg-type]
    return len([r async for r in container.read_feed_ranges()])


async def test_partitions_follow_throughput() -> None:
    with EmulatorProcess() as process:
        async with CosmosClient(process.endpoint, process.key) as client:
            db = await client.create_database("sizes")
            assert await _ranges(db, "small", offer_throughput=400) == 1
            assert await _ranges(db, "exactly-one", offer_throughput=6000) == 1
            assert await _ranges(db, "just-over", offer_throughput=6100) == 2
            assert await _ranges(db, "big", offer_throughput=40_000) == 7
            assert await _ranges(db, "autoscale", offer_throughput=ThroughputProperties(
                auto_scale_max_throughput=20_000)) == 4
            assert await _ranges(db, "serverless") == 1
            assert await _ranges(db, "override", offer_throughput=400,
                                 headers={"x-asyncmig-partition-count": "3"}) == 3
            shared = await client.create_database("shared", offer_throughput=12_000)
            assert await _ranges(shared, "inside") == 2


@pytest.mark.parametrize("count", ["2", "5"])
async def test_the_command_line_override_wins(count: str) -> None:
    with EmulatorProcess("--partitions", count) as process:
        async with CosmosClient(process.endpoint, process.key) as client:
            db = await client.create_database("fixed")
            assert await _ranges(db, "big", offer_throughput=40_000) == int(count)
            assert await _ranges(db, "small", offer_throughput=400) == int(count)
