"""Hash V1 partition keys: EPKs as Cosmos DB and the other SDKs compute them, ranges that spread
V1 keys, and the Python SDK's feed ranges on a V1 container."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import DatabaseProxy
from azure.cosmos.partition_key import NonePartitionKeyValue

from asyncmig.core.cosmos.partition_keys import (
    effective_partition_key,
    hash_v1,
    parse_path,
    partition_key_values,
)
from asyncmig.core.cosmos.sink import CosmosSink, lane_name
from asyncmig.core.engine.governor import Governor
from asyncmig.emulator.partitioning import initial_boundaries, split_point
from tests.conftest import Cosmos, needs_emulator
from tests.helpers import raw_request, unique

# From the JavaScript SDK's hashing tests (test/internal/unit/hashing/v1.spec.ts) and the Java
# SDK's PartitionKeyHashingTests.effectivePartitionKeyHashV1.
V1_VECTORS = [
    ("partitionKey", "05C1E1B3D9CD2608716273756A756A706F4C667A00"),
    ("redmond", "05C1EFE313830C087366656E706F6500"),
    ("a" * 110, "05C1EB5921F70608" + "62" * 100 + "00"),
    ("a" * 1024, "05C1EB5921F70608" + "62" * 100 + "00"),
    ("", "05C1CF33970FF80800"),
    ("aa", "05C1C7B7270FE008626200"),
    (None, "05C1ED45D7475601"),
    (True, "05C1D7C5A903D803"),
    (False, "05C1DB857D857C02"),
    ({}, "05C1D529E345DC00"),
    (5, "05C1D9C1C5517C05C014"),
    (5.5, "05C1D7A771716C05C016"),
    (12313.1221, "05C1ED154D592E05C0C90723F50FC925D8"),
    (123456789, "05C1D9E1A5311C05C19DB7CD8B40"),
    (-128, "05C1D73349F54C053FA0"),
    (127, "05C1DD539DDFCC05C05FE0"),
    (-(2**63), "05C1DB35F33D1C053C20"),
    (2**63 - 1, "05C1B799AB2DD005C3E0"),
    (-(2**31), "05C1DFBF252BCC053E20"),
    (2**31 - 1, "05C1E1F503DFB205C1DFFFFFFFFC"),
]


@pytest.mark.parametrize(("value", "expected"), V1_VECTORS, ids=[repr(v)[:12] for v, _ in V1_VECTORS])
def test_v1_effective_partition_keys_match_the_other_sdks(value: object, expected: str) -> None:
    assert hash_v1(value) == expected
    assert effective_partition_key({"paths": ["/pk"]}, [value]) == expected
    assert effective_partition_key({"paths": ["/pk"], "kind": "Hash", "version": 1}, [value]) == expected


def test_v1_keys_that_compare_equal_in_python_keep_their_own_hashes() -> None:
    assert hash_v1(0.0) != hash_v1(-0.0)  # different doubles, as in the JavaScript SDK
    assert hash_v1(-0.0) == hash_v1(-0.0) and hash_v1(0) == hash_v1(0.0)
    assert hash_v1(True) != hash_v1(1) and hash_v1(False) != hash_v1(0)


def test_v1_ranges_spread_keys_and_split_inside_the_v1_key_space() -> None:
    bounds = initial_boundaries(4, hash_v1=True)
    counts = Counter(next(i for i, (lo, hi) in enumerate(bounds) if lo <= hash_v1(f"k{n}") < hi)
                     for n in range(2000))
    assert sorted(counts) == [0, 1, 2, 3] and min(counts.values()) > 350, counts
    low, high = bounds[0]
    middle = split_point(low, high, hash_v1=True)
    assert low < middle < high and middle.startswith("05")
    left = sum(1 for n in range(2000) if low <= hash_v1(f"k{n}") < middle)
    right = sum(1 for n in range(2000) if middle <= hash_v1(f"k{n}") < high)
    assert left > 150 and right > 150, (left, right)


def test_partition_key_paths_and_non_scalar_values() -> None:
    assert parse_path('/"a\'b"/"c/d"') == ("a'b", "c/d")
    assert parse_path("/'x y'/z") == ("x y", "z")
    definition = {"paths": ['/"a\'b"/"c/d"'], "kind": "Hash", "version": 2}
    assert partition_key_values(definition, {"a'b": {"c/d": "v"}}) == ["v"]
    flat = {"paths": ["/pk"], "kind": "Hash", "version": 2}
    assert partition_key_values(flat, {"pk": {"nested": 1}}) == [{}]
    assert partition_key_values(flat, {"pk": [1, 2]}) == [{}]
    assert partition_key_values(flat, {"pk": None}) == [None]


async def test_v1_container_spreads_documents_and_serves_feed_ranges(database: DatabaseProxy) -> None:
    container = await database.create_container(unique("v1"), PartitionKey("/pk", version=1))
    assert (await container.read())["partitionKey"]["kind"] == "Hash"
    keys = [f"tenant-{n}" for n in range(40)]
    await asyncio.gather(*(container.create_item({"id": f"d{n}", "pk": key}) for n, key in enumerate(keys)))
    feed_ranges = [r async for r in container.read_feed_ranges()]
    per_range = [len([d async for d in container.query_items("SELECT * FROM c", feed_range=fr)])
                 for fr in feed_ranges]
    assert sum(per_range) == len(keys)
    if len(feed_ranges) > 1:
        assert all(n > 0 for n in per_range), f"V1 keys must spread over every range: {per_range}"
    for n in (0, 7, 23):
        fr = await container.feed_range_from_partition_key(keys[n])
        assert [d["id"] async for d in container.query_items("SELECT * FROM c", feed_range=fr)] == [f"d{n}"]
        changes = [d["id"] async for d in container.query_items_change_feed(feed_range=fr, start_time="Beginning")]
        assert changes == [f"d{n}"]
        by_key = [d["id"] async for d in container.query_items_change_feed(partition_key=keys[n],
                                                                             start_time="Beginning")]
        assert by_key == [f"d{n}"]
        read = await container.read_item(f"d{n}", partition_key=keys[n])
        assert read["pk"] == keys[n]


async def test_the_copier_sink_routes_v1_documents_to_the_ranges_that_hold_them(database: DatabaseProxy) -> None:
    container = await database.create_container(unique("v1sink"), PartitionKey("/pk", version=1))
    docs = [{"id": f"s{n}", "pk": f"tenant-{n}"} for n in range(30)]
    async with CosmosSink({"t": container}, Governor(), write_path="sdk") as sink:
        await sink.open({})
        units, rejected = sink.plan("t", docs)
        assert not rejected
        for unit in units:
            assert (await sink.write(unit)).written == len(unit.documents)
    planned = {doc["id"]: unit.lane for unit in units for doc in unit.documents}
    placed = {}
    async for fr in container.read_feed_ranges():
        lane = lane_name("t", fr["Range"]["min"], fr["Range"]["max"])
        async for doc in container.query_items("SELECT c.id FROM c", feed_range=fr):
            placed[doc["id"]] = lane
    assert planned == placed
    assert len(set(planned.values())) > 1, "V1 keys should spread over the target's ranges"


@needs_emulator
async def test_object_and_array_key_values(database: DatabaseProxy, cosmos: Cosmos) -> None:
    container = await database.create_container(unique("objpk"), PartitionKey("/pk", version=1))
    created = await container.create_item({"id": "o", "pk": {"a": 1}})  # an object key is undefined
    read = await container.read_item("o", partition_key=NonePartitionKeyValue)
    assert read["_rid"] == created["_rid"]
    path = f"dbs/{database.id}/colls/{container.id}/docs/o"
    for header in ('[{"a":1}]', "[[1,2]]"):
        status, _, _ = await raw_request(cosmos.endpoint, cosmos.key, "GET", path,
                                         headers={"x-ms-documentdb-partitionkey": header})
        assert status == 400, header
