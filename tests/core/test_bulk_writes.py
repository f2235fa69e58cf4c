"""The lean path's bulk batches per target physical range, against the emulator as a real server.

What is checked: the request count (a container keyed by ``/id`` needs one request per range per
100 documents, not one per document), exact bytes, per-operation 429s behind the range's gate,
re-routing after a split, per-operation refusals dead-lettered while the rest land, and the SDK
fallback still writing transactional batches.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy

from asyncmig.cli import _politeness
from asyncmig.connection import CosmosEndpoint
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.connect import cosmos_client_kwargs
from asyncmig.core.cosmos.lean_writer import bulk_operations
from asyncmig.core.cosmos.sink import CosmosSink, Politeness
from asyncmig.core.engine.governor import Governor
from asyncmig.core.engine.sink import WriteOutcome, WriteUnit
from asyncmig.core.engine.transform import strip_system
from asyncmig.errors import UsageError
from tests.conftest import Cosmos, needs_emulator
from tests.helpers import raw_request, unique

pytestmark = needs_emulator

FRAGILE = {"big": 2**64 + 1, "neg": -(2**63) - 5, "long": 2100.607537417505, "neg_zero": -0.0,
           "text": "धर्म 😀 naïve"}


@pytest.fixture
async def sdk(cosmos: Cosmos) -> AsyncIterator[CosmosClient]:
    """Throttle retries off, as asyncmig runs the SDK: every 429 surfaces."""
    endpoint = CosmosEndpoint(cosmos.endpoint, cosmos.key)
    async with CosmosClient(cosmos.endpoint, credential=cosmos.key, **cosmos_client_kwargs(endpoint)) as c:
        yield c


async def _container(database: DatabaseProxy, sdk: CosmosClient, path: str, **kwargs: Any) -> ContainerProxy:
    created = await database.create_container(unique("bulk"), partition_key=PartitionKey(path), **kwargs)
    return sdk.get_database_client(database.id).get_container_client(created.id)


async def _write_all(sink: CosmosSink, docs: list[dict[str, Any]]) -> tuple[WriteOutcome, list[WriteUnit]]:
    units, rejected = sink.plan("t", docs)
    assert rejected == []
    total = WriteOutcome()
    for unit in units:
        outcome = await sink.write(unit)
        total.written += outcome.written
        total.rejected += outcome.rejected
    return total, units


async def _stored(database: DatabaseProxy, container: ContainerProxy) -> dict[str, bytes]:
    """What the container holds, read through a client that retries its own 429s."""
    reader = database.get_container_client(container.id)
    return {d["id"]: jsoncodec.canonical(strip_system(d)) async for d in reader.read_all_items()}


@pytest.mark.parametrize(("write_path", "most_requests"), [("lean", 4 * 5), ("sdk", 500)])
async def test_unique_keys_take_a_request_per_range_per_hundred_documents(
    cosmos: Cosmos, database: DatabaseProxy, sdk: CosmosClient, write_path: str, most_requests: int
) -> None:
    container = await _container(database, sdk, "/id")
    docs = [{"id": f"ü-{i}", "n": i, **FRAGILE} for i in range(500)]
    async with CosmosSink({"t": container}, Governor(), endpoint=CosmosEndpoint(cosmos.endpoint, cosmos.key),
                          write_path=write_path) as sink:
        await sink.open({})
        outcome, units = await _write_all(sink, docs)
    assert outcome.written == 500 and outcome.rejected == []
    # 4 physical ranges: at most ceil(125/100) requests each on the lean path; one per document on the SDK's.
    assert sink.stats.requests <= most_requests
    if write_path == "lean":
        assert len(units) <= 8 and sink.stats.requests * 100 / len(docs) <= 5
    assert await _stored(database, container) == {d["id"]: jsoncodec.canonical(d) for d in docs}


async def test_throttled_operations_wait_behind_their_ranges_gate(
    cosmos: Cosmos, database: DatabaseProxy, sdk: CosmosClient
) -> None:
    """No RU budget given: the copy learns the limit from per-operation 429s alone."""
    container = await _container(database, sdk, "/pk", offer_throughput=400)
    docs = [{"id": f"d{i}", "pk": f"k{i % 13}", "fill": "x" * 8_000} for i in range(120)]
    governor = Governor()
    async with CosmosSink({"t": container}, governor, endpoint=CosmosEndpoint(cosmos.endpoint, cosmos.key),
                          write_path="lean") as sink:
        await sink.open({})
        outcome, units = await _write_all(sink, docs)
    lanes = {unit.lane for unit in units}
    assert outcome.written == 120 and outcome.rejected == []
    assert sink.stats.throttled > 0 and sink.stats.retries > 0
    assert sum(governor.gate(lane).statistics().throttles for lane in lanes) == sink.stats.throttled
    assert set(await _stored(database, container)) == {d["id"] for d in docs}


async def test_operations_of_a_split_range_are_rerouted(
    cosmos: Cosmos, database: DatabaseProxy, sdk: CosmosClient
) -> None:
    assert cosmos.emulator is not None
    container = await _container(database, sdk, "/pk")
    docs = [{"id": f"d{i}", "pk": f"k{i}", **FRAGILE} for i in range(300)]
    async with CosmosSink({"t": container}, Governor(), endpoint=CosmosEndpoint(cosmos.endpoint, cosmos.key),
                          write_path="lean") as sink:
        await sink.open({})
        units, _ = sink.plan("t", docs)
        old_lanes = {u.lane for u in units}
        cosmos.emulator.admin("split", {"database": database.id, "container": container.id})
        written = 0
        for unit in units:  # addressed to ranges that are gone now
            outcome = await sink.write(unit)
            written += outcome.written
            assert outcome.rejected == []
        new_units, _ = sink.plan("t", docs[:50])
    assert written == 300
    assert len({u.lane for u in new_units}) == 8  # every range split in two, and the sink knows it
    assert {u.lane for u in new_units}.isdisjoint(old_lanes)  # planning follows the refreshed ranges
    assert await _stored(database, container) == {d["id"]: jsoncodec.canonical(d) for d in docs}


async def test_a_refused_operation_is_dead_lettered_and_the_others_land(
    cosmos: Cosmos, database: DatabaseProxy, sdk: CosmosClient
) -> None:
    container = await _container(database, sdk, "/pk")
    docs = [{"id": f"d{i}", "pk": "same", "n": i} for i in range(5)]
    async with CosmosSink({"t": container}, Governor(), endpoint=CosmosEndpoint(cosmos.endpoint, cosmos.key),
                          write_path="lean") as sink:
        await sink.open({})
        (unit,), _ = sink.plan("t", docs)
        # One operation names a key its document does not carry (what a broken transform would
        # send): the service refuses that one with 400/1001, the others commit on their own.
        bad = dict(docs[3], pk="other")
        unit.operations[3] = bulk_operations(["same"], [jsoncodec.dumps(bad)])[0]
        unit.documents[3] = bad
        outcome = await sink.write(unit)
    assert outcome.written == 4
    assert [(r.document["id"], r.status) for r in outcome.rejected] == [("d3", 400)]
    assert "1001" in outcome.rejected[0].reason
    assert set(await _stored(database, container)) == {"d0", "d1", "d2", "d4"}


async def test_the_sdk_path_still_writes_transactional_batches(
    cosmos: Cosmos, database: DatabaseProxy, sdk: CosmosClient
) -> None:
    container = await _container(database, sdk, "/pk")
    docs = [{"id": f"d{i}", "pk": f"k{i % 3}", **FRAGILE} for i in range(60)]
    async with CosmosSink({"t": container}, Governor(), endpoint=CosmosEndpoint(cosmos.endpoint, cosmos.key),
                          write_path="sdk") as sink:
        await sink.open({})
        outcome, units = await _write_all(sink, docs)
    assert outcome.written == 60 and all(u.batch for u in units) and len(units) == 3
    assert await _stored(database, container) == {d["id"]: jsoncodec.canonical(d) for d in docs}


async def _one_range(database: DatabaseProxy, sdk: CosmosClient, throughput: int) -> ContainerProxy:
    created = await database.create_container(unique("polite"), PartitionKey("/pk"), offer_throughput=throughput,
                                              headers={"x-asyncmig-partition-count": "1"})
    return sdk.get_database_client(database.id).get_container_client(created.id)


async def _throttles_writing(cosmos: Cosmos, container: ContainerProxy, write_path: str, politeness: Politeness,
                             docs: list[dict[str, Any]], before: Any = None) -> int:
    """Write the documents (unique keys: one bulk batch, or one upsert each on the SDK path); the 429s met."""
    async with CosmosSink({"t": container}, Governor(), endpoint=CosmosEndpoint(cosmos.endpoint, cosmos.key),
                          write_path=write_path, politeness=politeness) as sink:
        await sink.open({})
        if before is not None:
            await before()
        outcome, _ = await _write_all(sink, docs)
    assert outcome.written == len(docs)
    return sink.stats.throttled


@pytest.mark.parametrize("write_path", ["lean", "sdk"])
async def test_a_throughput_bucket_caps_the_copy(
    cosmos: Cosmos, database: DatabaseProxy, sdk: CosmosClient, write_path: str
) -> None:
    """~500 RU of writes: within a 1,000 RU/s range's second, beyond its 20 % bucket (429/3212)."""
    docs = [{"id": f"d{i}", "pk": f"k{i}"} for i in range(100)]
    free = await _one_range(database, sdk, 1000)
    assert await _throttles_writing(cosmos, free, write_path, Politeness(throughput_bucket=1), docs) == 0
    capped = await _one_range(database, sdk, 1000)
    offer = (await capped.get_throughput()).properties
    assert offer is not None
    body = {**offer, "content": {**offer["content"], "throughputBuckets": [{"id": 1, "maxThroughputPercentage": 20}]}}
    status, _, _ = await raw_request(cosmos.endpoint, cosmos.key, "PUT", f"/offers/{offer['_rid']}",
                                     headers={"Content-Type": "application/json"}, body=jsoncodec.dumps(body))
    assert status == 200
    assert await _throttles_writing(cosmos, capped, write_path, Politeness(throughput_bucket=1), docs) > 0
    assert await _throttles_writing(cosmos, capped, write_path, Politeness(), docs) == 0


@pytest.mark.parametrize("write_path", ["lean", "sdk"])
@pytest.mark.parametrize(("priority", "throttled"), [("Low", True), ("High", False), (None, False)])
async def test_low_priority_writes_yield_to_the_application(
    cosmos: Cosmos, database: DatabaseProxy, sdk: CosmosClient, write_path: str, priority: Any, throttled: bool
) -> None:
    """~300 RU of writes on a 400 RU/s range right after the application wrote: low priority may not
    spend the half of the range's second kept for high-priority requests."""
    container = await _one_range(database, sdk, 400)
    docs = [{"id": f"d{i}", "pk": f"k{i}"} for i in range(60)]

    async def application_writes() -> None:
        await container.upsert_item({"id": "user", "pk": "app"})  # high priority, as every client is by default

    met = await _throttles_writing(cosmos, container, write_path, Politeness(priority=priority), docs,
                                   application_writes)
    assert (met > 0) is throttled


@pytest.mark.parametrize(("priority", "follow", "expected"), [
    (None, False, None), (None, True, "Low"), ("high", True, "High"), ("low", False, "Low"),
])
def test_copy_writes_at_low_priority_when_following_unless_told(priority: Any, follow: bool, expected: Any) -> None:
    args = argparse.Namespace(priority=priority, throughput_bucket=None, follow=follow)
    assert _politeness(args) == Politeness(priority=expected)


@pytest.mark.parametrize("bucket", [0, 6])
def test_a_throughput_bucket_is_one_to_five(bucket: int) -> None:
    with pytest.raises(UsageError, match="1-5"):
        _politeness(argparse.Namespace(priority=None, throughput_bucket=bucket, follow=False))
