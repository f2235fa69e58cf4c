"""The Cosmos source against the emulator: every document once, resumable positions, whole-container scans."""

from __future__ import annotations

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, DatabaseProxy

from asyncmig.core.cosmos.source import CosmosSource, scan_container
from asyncmig.core.engine.transform import Document
from asyncmig.errors import ResourceMissing
from tests.conftest import needs_emulator
from tests.core.support import seed
from tests.helpers import unique

pytestmark = needs_emulator
DOCUMENTS = [{"id": f"d{i}", "pk": f"p{i % 13}", "n": i} for i in range(120)]


async def filled(database: DatabaseProxy) -> ContainerProxy:
    container = await database.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    await seed(container, DOCUMENTS)
    return container


async def test_every_document_is_read_once_over_all_feed_ranges(database: DatabaseProxy) -> None:
    source = CosmosSource(await filled(database), page_size=10, what="src")
    await source.open()
    partitions = await source.partitions()
    assert len(partitions) > 1  # the emulator runs with several physical partitions
    seen = [doc["id"] for feed_range in partitions.values() for doc in await _all(source, feed_range)]
    assert sorted(seen) == sorted(d["id"] for d in DOCUMENTS)
    assert await source.count() == len(DOCUMENTS)
    assert source.partition_key(DOCUMENTS[5]) == ["p5"]


async def _all(source: CosmosSource, feed_range: object) -> list[Document]:
    return [doc async for page in source.pages(feed_range, None) for doc in page.documents]


async def test_reading_from_a_pages_position_resumes_right_after_it(database: DatabaseProxy) -> None:
    source = CosmosSource(await filled(database), page_size=7, what="src")
    await source.open()
    feed_range = next(iter((await source.partitions()).values()))
    pages = [page async for page in source.pages(feed_range, None)]
    everything = [doc["id"] for page in pages for doc in page.documents]
    assert len(pages) > 2
    resumed = [doc["id"] async for page in source.pages(feed_range, pages[1].position) for doc in page.documents]
    assert resumed == everything[len(pages[0].documents) + len(pages[1].documents):]


async def test_scan_container_hands_over_every_document_once_or_a_sample(database: DatabaseProxy) -> None:
    container = await filled(database)
    seen: list[str] = []
    await scan_container(container, lambda page: seen.extend(d["id"] for d in page), what="src", page_size=9,
                         concurrency=2)
    assert sorted(seen) == sorted(d["id"] for d in DOCUMENTS)

    sample: list[int] = []

    async def count(page: list[Document]) -> None:
        sample.append(len(page))

    await scan_container(container, count, what="src", page_size=5, ranges=2, pages_per_range=1)
    assert sample == [5, 5]


async def test_a_missing_container_is_a_clear_error(database: DatabaseProxy) -> None:
    with pytest.raises(ResourceMissing):
        await scan_container(database.get_container_client("absent"), lambda page: None, what="absent")
