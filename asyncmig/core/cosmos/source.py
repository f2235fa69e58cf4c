"""The Cosmos DB source: a container read by feed range, page by page, each page resumable."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any, cast

import anyio
from azure.cosmos.aio import ContainerProxy

from asyncmig.core.cosmos.lean_reader import LeanChangeFeed, ReadPath, chosen_read_path, sdk_client_authorizer
from asyncmig.core.cosmos.partition_keys import partition_key_values
from asyncmig.core.cosmos.retry import HEADER_CHARGE, Backoff, classify, retrying
from asyncmig.core.engine.source import DEFAULT_PAGE_SIZE, SourcePage
from asyncmig.core.engine.transform import Document
from asyncmig.errors import raise_first


def range_key(feed_range: dict[str, Any]) -> str:
    bounds = feed_range["Range"]
    return f"[{bounds['min']},{bounds['max']})"


class CosmosSource:
    """A container read through its change feed, one iterator per feed range.

    The change feed from the beginning returns the latest version of every document, and its
    per-range continuation is exactly what a checkpoint needs (and what a later live catch-up
    would continue from). One iterator per ``read_feed_ranges()`` entry avoids the SDK's
    composite tokens that cannot be resumed when read partially (a token
    that spans several ranges records a position for each, and the SDK cannot restart from a
    half-consumed one).
    Throttling and transient faults are retried here, from the last position, with the SDK's own
    throttle retries off.

    ``snapshot=True`` reads by per-range query instead: a container that is being rewritten in
    place (the Vimarsh ``users``) must not feed its own writes back through its change feed.

    ``read_path`` (default :data:`~asyncmig.core.cosmos.lean_reader.ENV_READ_PATH`, else lean) picks
    who sends the change-feed requests: :class:`~asyncmig.core.cosmos.lean_reader.LeanChangeFeed`
    (same requests, same continuation tokens, a fraction of the CPU) or the SDK's iterator.
    """

    def __init__(
        self, container: ContainerProxy, *, page_size: int = DEFAULT_PAGE_SIZE, what: str = "", snapshot: bool = False,
        read_path: ReadPath | None = None,
    ) -> None:
        self.container = container
        self.page_size = page_size
        self.snapshot = snapshot
        self.description = what or container.id
        self.read_ru = 0.0
        self._definition: dict[str, Any] = {"paths": ["/id"], "kind": "Hash", "version": 2}
        self.read_path = chosen_read_path(read_path)
        self._lean: LeanChangeFeed | None = None

    def _charged(self, headers: Mapping[str, Any], _result: Any) -> None:
        """The SDK's per-response hook: adds each page's (or count's) charge to :attr:`read_ru`."""
        charge = headers.get(HEADER_CHARGE)
        if charge is not None:
            self.read_ru += float(charge)

    async def open(self) -> None:
        try:
            properties = await self.container.read()
        except Exception as exc:  # noqa: BLE001 - classified into an asyncmig error
            raise classify(exc).as_error(f"opening source container {self.description!r}") from exc
        self._definition = properties["partitionKey"]
        account = sdk_client_authorizer(self.container.client_connection) if self.read_path == "lean" else None
        if account is None:
            self.read_path = "sdk"  # a resource-token client: only the SDK can sign its requests
        elif not self.snapshot:
            endpoint, authorizer, insecure = account
            self._lean = LeanChangeFeed(endpoint, self.container.container_link, properties["_rid"],
                                        page_size=self.page_size, on_charge=self._add_charge, insecure=insecure,
                                        authorizer=authorizer)

    def _add_charge(self, charge: float) -> None:
        self.read_ru += charge

    def partition_key(self, document: Document) -> Any:
        return partition_key_values(self._definition, document) if isinstance(document, dict) else None

    async def partitions(self) -> dict[str, Any]:
        ranges = [fr async for fr in self.container.read_feed_ranges(force_refresh=True)]
        return {range_key(fr): fr for fr in ranges}

    def _pager(self, feed_range: Any, position: str | None) -> Any:
        if self.snapshot:
            query = self.container.query_items("SELECT * FROM c", feed_range=feed_range, max_item_count=self.page_size,
                                               response_hook=self._charged)
            return query.by_page(position)
        if position:
            iterable = self.container.query_items_change_feed(continuation=position, max_item_count=self.page_size,
                                                              response_hook=self._charged)
        else:
            iterable = self.container.query_items_change_feed(
                feed_range=feed_range, start_time="Beginning", max_item_count=self.page_size,
                response_hook=self._charged,
            )
        return iterable.by_page()

    async def pages(self, partition: Any, position: str | None) -> AsyncGenerator[SourcePage, None]:
        if self._lean is not None:
            async with aclosing(self._lean.pages(partition, position,
                                                 what=f"{self.description} {range_key(partition)}")) as lean_pages:
                async for lean_page in lean_pages:
                    yield lean_page
            return
        backoff = Backoff()  # one budget of retries for the whole range
        pager = self._pager(partition, position)
        pages = pager.__aiter__()

        async def next_page() -> list[Document] | None:
            try:
                page = await pages.__anext__()
            except StopAsyncIteration:
                return None
            return [doc async for doc in page]

        def reopen() -> None:  # resume after the last page handed out
            nonlocal pager, pages
            pager = self._pager(partition, position)
            pages = pager.__aiter__()

        what = f"reading {self.description} {range_key(partition)}"
        while (documents := await retrying(next_page, what=what, backoff=backoff, before_retry=reopen)) is not None:
            position = pager.continuation_token
            yield SourcePage(documents, position)
        final = pager.continuation_token
        if final and final != position:  # the range answered "no more": keep the freshest position
            yield SourcePage([], final)

    async def count(self) -> int | None:
        try:
            result = [n async for n in self.container.query_items("SELECT VALUE COUNT(1) FROM c",
                                                                   response_hook=self._charged)]
        except Exception as exc:  # noqa: BLE001 - progress only; a failure here must not stop a copy
            failure = classify(exc)
            if failure.kind == "fatal":
                raise failure.as_error(f"counting {self.description}") from exc
            return None
        return sum(int(cast(int, n)) for n in result)


PageHandler = Callable[[list[Document]], Awaitable[None] | None]


async def scan_container(
    container: ContainerProxy, handle: PageHandler, *, what: str, page_size: int = DEFAULT_PAGE_SIZE,
    concurrency: int = 8, ranges: int | None = None, pages_per_range: int | None = None,
) -> float:
    """Hand every document of ``container`` to ``handle``, a page at a time, ``concurrency`` feed
    ranges at once; reads through :class:`CosmosSource` (the change feed, with its retries).
    Returns the RU the reads cost.

    ``handle`` may be a coroutine function; a plain function runs between awaits, so pages of
    concurrent ranges never interleave inside it. ``ranges`` and ``pages_per_range`` limit the scan
    to a sample. Memory: one page per range being read.
    """
    source = CosmosSource(container, page_size=page_size, what=what)
    await source.open()
    limiter = anyio.CapacityLimiter(concurrency)

    async def read_range(feed_range: Any) -> None:
        async with limiter, aclosing(source.pages(feed_range, None)) as pages:
            read = 0
            async for page in pages:
                handled = handle(page.documents)
                if handled is not None:
                    await handled
                read += 1
                if pages_per_range is not None and read >= pages_per_range:
                    return

    feed_ranges = list((await source.partitions()).values())[:ranges]
    try:
        async with anyio.create_task_group() as group:
            for feed_range in feed_ranges:
                group.start_soon(read_range, feed_range)
    except BaseExceptionGroup as errors:
        raise_first(errors)
    return source.read_ru
