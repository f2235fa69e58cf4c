"""The change feed (latest version) through the SDK: per feed range, from the beginning, from now,
from a time and from a persisted continuation; LSNs and the etag / 304 protocol."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, DatabaseProxy

from tests.conftest import Cosmos, needs_emulator
from tests.helpers import raw_request, unique


@pytest.fixture
async def container(database: DatabaseProxy) -> AsyncIterator[ContainerProxy]:
    yield await database.create_container(unique("cf"), PartitionKey("/pk"))


async def drain(container: ContainerProxy, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
    """Every change the feed has now, and the continuation to resume from (one token per feed range: a token spanning ranges cannot resume a half-read range)."""
    pager = container.query_items_change_feed(**kwargs).by_page()
    items: list[dict[str, Any]] = []
    async for page in pager:
        items.extend([i async for i in page])
    token = pager.continuation_token or container.client_connection.last_response_headers["etag"]
    json.loads(__import__("base64").b64decode(token))  # a persistable, JSON-shaped token
    return items, token


async def write(container: ContainerProxy, prefix: str, count: int, **extra: Any) -> list[dict[str, Any]]:
    return [await container.upsert_item({"id": f"{prefix}{i}", "pk": f"k{i % 7}", **extra}) for i in range(count)]


async def test_from_the_beginning_per_feed_range(container: ContainerProxy) -> None:
    await write(container, "d", 40, v=1)
    for i in range(0, 40, 4):  # updated twice: the feed shows only the latest version, once
        await container.upsert_item({"id": f"d{i}", "pk": f"k{i % 7}", "v": 2})
        await container.upsert_item({"id": f"d{i}", "pk": f"k{i % 7}", "v": 3})
    await container.delete_item("d1", partition_key="k1")  # deletes are not in the latest-version feed
    seen: Counter[str] = Counter()
    for fr in [r async for r in container.read_feed_ranges()]:
        items, _ = await drain(container, feed_range=fr, start_time="Beginning")
        lsns = [i["_lsn"] for i in items]
        assert lsns == sorted(lsns) and len(set(lsns)) == len(lsns)
        for item in items:
            seen[item["id"]] += 1
            assert item["v"] == (3 if int(item["id"][1:]) % 4 == 0 else 1)
    assert seen == Counter(f"d{i}" for i in range(40) if i != 1)
    everything, _ = await drain(container, start_time="Beginning", max_item_count=5)
    assert Counter(i["id"] for i in everything) == seen


async def test_resume_from_a_persisted_continuation_per_feed_range(container: ContainerProxy) -> None:
    await write(container, "early", 30)
    ranges = [r async for r in container.read_feed_ranges()]
    tokens = {}
    for index, fr in enumerate(ranges):
        _, tokens[index] = await drain(container, feed_range=fr, start_time="Beginning")
    persisted = json.dumps(tokens)  # what a checkpoint file would hold

    later = await write(container, "late", 20)
    await container.upsert_item({"id": "early3", "pk": "k3", "touched": True})
    expected = Counter([d["id"] for d in later] + ["early3"])
    seen: Counter[str] = Counter()
    for token in json.loads(persisted).values():
        items, token_after = await drain(container, continuation=token)
        seen.update(i["id"] for i in items)
        again, _ = await drain(container, continuation=token_after)
        assert again == [], "a drained continuation sees nothing more"
    assert seen == expected


async def test_from_now(container: ContainerProxy) -> None:
    await write(container, "before", 10)
    ranges = [r async for r in container.read_feed_ranges()]
    tokens = []
    for fr in ranges:
        items, token = await drain(container, feed_range=fr)  # start_time defaults to "Now"
        assert items == []
        tokens.append(token)
    after = await write(container, "after", 15)
    seen: Counter[str] = Counter()
    for token in tokens:
        items, _ = await drain(container, continuation=token)
        seen.update(i["id"] for i in items)
    assert seen == Counter(d["id"] for d in after)
    items, _ = await drain(container, start_time="Now")
    assert items == []


async def test_from_a_point_in_time(container: ContainerProxy) -> None:
    written = await write(container, "t", 20)
    stamps = sorted({d["_ts"] for d in written})
    for stamp in (stamps[0], stamps[-1], stamps[-1] + 1):
        start = datetime.fromtimestamp(stamp, tz=UTC)
        items, _ = await drain(container, start_time=start)
        assert sorted(i["id"] for i in items) == sorted(d["id"] for d in written if d["_ts"] >= stamp), stamp
    items, _ = await drain(container, start_time=datetime(2000, 1, 1, tzinfo=UTC))
    assert len(items) == 20


async def test_partition_key_change_feed(container: ContainerProxy) -> None:
    await write(container, "d", 28)
    items, token = await drain(container, partition_key="k2", start_time="Beginning")
    assert sorted(i["id"] for i in items) == sorted(f"d{i}" for i in range(28) if i % 7 == 2)
    await container.upsert_item({"id": "new", "pk": "k2"})
    await container.upsert_item({"id": "other", "pk": "k3"})
    items, _ = await drain(container, continuation=token)
    assert [i["id"] for i in items] == ["new"]


@needs_emulator  # real LSNs are per physical partition
async def test_lsns_are_container_wide(container: ContainerProxy) -> None:
    await write(container, "d", 24)
    items, _ = await drain(container, start_time="Beginning")
    lsns = sorted(i["_lsn"] for i in items)
    assert lsns == list(range(1, 25)), "one counter for the whole container, one step per write"


@needs_emulator
async def test_etag_and_304_protocol(cosmos: Cosmos, database: DatabaseProxy, container: ContainerProxy) -> None:
    path = f"/dbs/{database.id}/colls/{container.id}/docs/"

    async def feed(range_id: str, if_none_match: str | None, **extra: str) -> tuple[int, dict[str, str], Any]:
        headers = {"A-IM": "Incremental Feed", "x-ms-documentdb-partitionkeyrangeid": range_id, **extra}
        if if_none_match is not None:
            headers["If-None-Match"] = if_none_match
        status, got, body = await raw_request(cosmos.endpoint, cosmos.key, "GET", path, headers=headers)
        assert "etag" in got and "x-ms-request-charge" in got, "every change-feed answer carries both"
        return status, got, json.loads(body) if body else None

    written = await write(container, "d", 14)
    status, headers, _ = await feed("0", "*")
    assert status == 304 and headers["etag"] == '"14"', "'*' (now) answers the current container LSN"
    assert (await feed("0", '"14"'))[0] == 304
    status, headers, body = await feed("0", None)
    assert status == 200
    lsns = [d["_lsn"] for d in body["Documents"]]
    assert lsns == sorted(lsns) and headers["etag"] == '"14"'
    status, headers, body = await feed("0", None, **{"x-ms-max-item-count": "1"})
    assert status == 200 and len(body["Documents"]) == 1
    assert headers["etag"] == f'"{body["Documents"][0]["_lsn"]}"', "a partial page resumes after its last item"
    # If-None-Match wins over If-Modified-Since.
    status, _, _ = await feed("0", '"14"', **{"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"})
    assert status == 304
    # A write in another range moves the LSN: range 0 then answers 304 with the new position.
    in_range_0 = {x["id"] for x in (await feed("0", None))[2]["Documents"]}
    target = next(d for d in written if d["id"] not in in_range_0)
    await container.upsert_item({"id": target["id"], "pk": target["pk"], "again": True})
    status, headers, _ = await feed("0", '"14"')
    assert status == 304 and headers["etag"] == '"15"'
