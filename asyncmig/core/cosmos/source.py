"""The Cosmos DB source: a container read by feed range, page by page, each page resumable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
from azure.cosmos.aio import ContainerProxy

from asyncmig.core.cosmos.partition_keys import partition_key_values
from asyncmig.core.cosmos.retry import Backoff, classify
from asyncmig.core.engine.source import DEFAULT_PAGE_SIZE, SourcePage
from asyncmig.core.engine.transform import Document


def range_key(feed_range: dict[str, Any]) -> str:
    bounds = feed_range["Range"]
    return f"[{bounds['min']},{bounds['max']})"


class CosmosSource:
    """A container read through its change feed, one iterator per feed range.

    The change feed from the beginning returns the latest version of every document, and its
    per-range continuation is exactly what a checkpoint needs (and what a later live catch-up
    would continue from). One iterator per ``read_feed_ranges()`` entry avoids the SDK's
    composite tokens that cannot be resumed when read partially (wire-protocol doc, section 9.4).
    Throttling and transient faults are retried here, from the last position, with the SDK's own
    throttle retries off.

    ``snapshot=True`` reads by per-range query instead: a container that is being rewritten in
    place (the Vimarsh ``users``) must not feed its own writes back through its change feed.
    """

    def __init__(
        self, container: ContainerProxy, *, page_size: int = DEFAULT_PAGE_SIZE, what: str = "", snapshot: bool = False
    ) -> None:
        self.container = container
        self.page_size = page_size
        self.snapshot = snapshot
        self.description = what or container.id
        self._definition: dict[str, Any] = {"paths": ["/id"], "kind": "Hash", "version": 2}

    async def open(self) -> None:
        try:
            self._definition = (await self.container.read())["partitionKey"]
        except Exception as exc:  # noqa: BLE001 - classified into an asyncmig error
            raise classify(exc).as_error(f"opening source container {self.description!r}") from exc

    @property
    def partition_key_definition(self) -> dict[str, Any]:
        """The container's partition key definition (as read by :meth:`open`)."""
        return dict(self._definition)

    def partition_key(self, document: Document) -> Any:
        return partition_key_values(self._definition, document) if isinstance(document, dict) else None

    async def partitions(self) -> dict[str, Any]:
        ranges = [fr async for fr in self.container.read_feed_ranges(force_refresh=True)]
        return {range_key(fr): fr for fr in ranges}

    def _pager(self, feed_range: Any, position: str | None) -> Any:
        if self.snapshot:
            query = self.container.query_items("SELECT * FROM c", feed_range=feed_range, max_item_count=self.page_size)
            return query.by_page(position)
        if position:
            iterable = self.container.query_items_change_feed(continuation=position, max_item_count=self.page_size)
        else:
            iterable = self.container.query_items_change_feed(
                feed_range=feed_range, start_time="Beginning", max_item_count=self.page_size
            )
        return iterable.by_page()

    async def pages(self, partition: Any, position: str | None) -> AsyncIterator[SourcePage]:
        backoff = Backoff()
        pager = self._pager(partition, position)
        pages = pager.__aiter__()
        while True:
            try:
                page = await pages.__anext__()
                documents = [doc async for doc in page]
            except StopAsyncIteration:
                break
            except Exception as exc:  # noqa: BLE001 - classified: retried or turned into an asyncmig error
                failure = classify(exc)
                if not failure.retryable:
                    raise failure.as_error(f"reading {self.description} {range_key(partition)}") from exc
                delay = backoff.next_delay(failure)
                if delay is None:
                    raise failure.as_error(f"reading {self.description} {range_key(partition)}") from exc
                await anyio.sleep(delay)
                pager = self._pager(partition, position)  # resume after the last page handed out
                pages = pager.__aiter__()
                continue
            position = pager.continuation_token
            yield SourcePage(documents, position)
        final = pager.continuation_token
        if final and final != position:  # the range answered "no more": keep the freshest position
            yield SourcePage([], final)

    async def count(self) -> int | None:
        try:
            result = [n async for n in self.container.query_items("SELECT VALUE COUNT(1) FROM c")]
        except Exception as exc:  # noqa: BLE001 - progress only; a failure here must not stop a copy
            failure = classify(exc)
            if failure.kind == "fatal":
                raise failure.as_error(f"counting {self.description}") from exc
            return None
        return sum(int(cast(int, n)) for n in result)
