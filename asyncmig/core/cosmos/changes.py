"""Marks in a container's change feed, and what changed after one.

A rollback must not destroy data the application wrote after the migration: it needs to know which
documents changed after the migration's last write. The change feed answers that exactly, with no
clock involved: the migration records, per feed range, the position the feed had reached when it
finished writing (:func:`feed_end`); later, everything the feed returns from those positions
(:func:`changed_since`) was written after it. The feed shows each changed document once, as its
latest version; a deletion does not appear in it.

The SDK hands out no position for a feed read from "now" that found nothing, so the end is found
by reading the feed to its end from the beginning (one pass over the container, paged, throttling
retried as every read is).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from azure.cosmos.aio import ContainerProxy

from asyncmig.core.cosmos.source import CosmosSource
from asyncmig.core.engine.transform import Document
from asyncmig.errors import StateError

__all__ = ["FeedMark", "changed_since", "feed_end"]

# Per feed range (its "[min,max)" key): the change-feed position, None for a range that was empty.
FeedMark = dict[str, str | None]

_PAGE_SIZE = 1000


async def feed_end(container: ContainerProxy, *, what: str = "") -> FeedMark:
    """Where the change feed of every feed range ends now."""
    source = CosmosSource(container, page_size=_PAGE_SIZE, what=what or container.id)
    mark: FeedMark = {}
    for key, feed_range in (await source.partitions()).items():
        position: str | None = None
        async for page in source.pages(feed_range, None):
            position = page.position
        mark[key] = position
    return mark


async def changed_since(container: ContainerProxy, mark: FeedMark, *, what: str = "") -> AsyncIterator[Document]:
    """Every document written after ``mark`` (its latest version, once).

    :raises StateError: when the container's feed ranges are no longer those of the mark (a
        partition split since): the mark cannot be continued, and guessing would hide writes.
    """
    source = CosmosSource(container, page_size=_PAGE_SIZE, what=what or container.id)
    ranges = await source.partitions()
    if set(ranges) != set(mark):
        raise StateError(
            f"{what or container.id}: its feed ranges changed since the migration recorded where its change "
            "feed ended (a partition split); cannot tell which documents were written after the migration"
        )
    for key, feed_range in ranges.items():
        async for page in source.pages(feed_range, mark[key]):
            for document in page.documents:
                yield document
