"""The Cosmos DB source: a container read by feed range, page by page, each page resumable."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Literal

import anyio

from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.container import Container
from asyncmig.core.cosmos.lean_reader import LeanChangeFeed, ReadPath, chosen_read_path
from asyncmig.core.cosmos.partition_keys import partition_key_values
from asyncmig.core.cosmos.retry import HEADER_CHARGE, Backoff, classify, wait_to_retry
from asyncmig.core.engine.source import DEFAULT_PAGE_SIZE, SourcePage
from asyncmig.core.engine.transform import Document
from asyncmig.errors import raise_first

if TYPE_CHECKING:
    from azure.cosmos.aio import ContainerProxy

log = logging.getLogger(__name__)


def range_key(feed_range: dict[str, Any]) -> str:
    bounds = feed_range["Range"]
    return f"[{bounds['min']},{bounds['max']})"


_CHANGES = "changes"  # position field: the all-versions-and-deletes continuation to read from
_LATEST = "latest"  # position field: the latest-version continuation of the bulk pass
_EMPTY_MOVES = 3  # empty reads that moved the position, in a row, before a pass counts as caught up


class CosmosSource:
    """A container read through its change feed, one iterator per feed range.

    The change feed from the beginning returns the latest version of every document, and its
    per-range continuation is exactly what a checkpoint needs (and what a later live catch-up
    would continue from). One iterator per ``read_feed_ranges()`` entry avoids the SDK's
    composite tokens that cannot be resumed when read partially. Throttling and transient faults
    are retried here, from the last position, with the SDK's own throttle retries off; the retry
    allowance starts afresh after every page read, so only a fault that persists ends the run.

    Deletes: the latest-version feed never shows them. Where the account offers the
    all-versions-and-deletes mode (``deletes=True``), a range read from the beginning first takes
    that mode's "now" position, carries it in its positions through the bulk pass, and continues in
    that mode from there once the bulk pass is over: the changes made during the bulk pass, deletes
    included, are replayed (versions already copied are dropped or rewritten in version order).
    Positions are then small JSON objects (``{"latest": ..., "changes": ...}``); a plain token is a
    latest-version position (checkpoints written before deletes were followed). Where the mode is
    refused (HTTP 400), :attr:`deletes_available` turns False and reading stays latest-version.

    Every pass ends with an empty page marked ``caught_up``. The SDK ends a pass on an empty 200
    page exactly as on a 304, so a pass ends only when reading again from the final position gives
    nothing *and* does not move it; an empty page that moved the position is read past.

    ``snapshot=True`` reads by per-range query instead: a container that is being rewritten in
    place (the Vimarsh ``users``) must not feed its own writes back through its change feed.

    ``read_path`` (default :data:`~asyncmig.core.cosmos.lean_reader.ENV_READ_PATH`, else lean) picks
    who sends the change-feed requests: :class:`~asyncmig.core.cosmos.lean_reader.LeanChangeFeed`
    (same requests, same continuation tokens, a fraction of the CPU) or the SDK's iterator.

    ``priority`` goes on every read (change feed and count queries): ``Low`` lets the application's
    own requests to a live source win when its ranges run short of RU.

    ``container`` is a :class:`~asyncmig.core.cosmos.container.Container` from an account (a copy:
    everything on the lean path, the SDK loaded only if a request only it sends is needed) or an SDK
    proxy (the other phases).
    """

    def __init__(
        self, container: Container | ContainerProxy, *, page_size: int = DEFAULT_PAGE_SIZE, what: str = "", snapshot: bool = False,
        deletes: bool = False, read_path: ReadPath | None = None, priority: Literal["High", "Low"] | None = None,
    ) -> None:
        self.container = Container.of(container)
        self.page_size = page_size
        self.snapshot = snapshot
        self.deletes = deletes and not snapshot
        self.deletes_available: bool | None = None  # None: not asked yet
        self.description = what or self.container.id
        self.read_ru = 0.0
        self._definition: dict[str, Any] = {"paths": ["/id"], "kind": "Hash", "version": 2}
        self._rid: str | None = None
        self.read_path = chosen_read_path(read_path)
        self.priority = priority
        self._options: dict[str, Any] = {"priority": priority} if priority else {}  # every SDK read's
        self._lean: LeanChangeFeed | None = None
        self._lean_changes: LeanChangeFeed | None = None  # for the all-versions "now" positions

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
        self._rid = str(properties["_rid"])
        access = self.container.access() if self.read_path == "lean" else None
        if access is None:
            self.read_path = "sdk"  # a resource-token client: only the SDK can sign its requests
        elif not self.snapshot:
            endpoint, authorizer, insecure = access
            self._lean = LeanChangeFeed(endpoint, self.container.link, self._rid,
                                        page_size=self.page_size, on_charge=self._add_charge, insecure=insecure,
                                        authorizer=authorizer, priority=self.priority)
            self._lean_changes = LeanChangeFeed(endpoint, self.container.link, self._rid, page_size=1,
                                                on_charge=self._add_charge, mode="AllVersionsAndDeletes",
                                                start="Now", insecure=insecure, authorizer=authorizer,
                                                priority=self.priority)

    def _add_charge(self, charge: float) -> None:
        self.read_ru += charge

    @property
    def partition_key_definition(self) -> dict[str, Any]:
        """The container's partition key definition (as read by :meth:`open`)."""
        return dict(self._definition)

    def partition_key(self, document: Document) -> Any:
        return partition_key_values(self._definition, document) if isinstance(document, dict) else None

    async def partitions(self) -> dict[str, Any]:
        return {range_key(fr): fr for fr in await self.container.feed_ranges()}

    async def count_partition(self, partition: Any) -> int | None:
        """The range's documents by an independent ``COUNT`` query (None when it failed)."""
        return await self._count(partition)

    async def pages(self, partition: Any, position: str | None) -> AsyncGenerator[SourcePage, None]:
        latest, changes = _parse_position(position)
        if position is None and self.deletes and not self.snapshot:
            changes = await self._changes_from_now(partition)
        if changes is not None and latest is None and position is not None:
            async for page in self._pass(partition, changes, all_versions=True):
                yield page
            return
        async for page in self._pass(partition, latest, all_versions=False, then=changes):
            yield page

    async def _pass(
        self, partition: Any, token: str | None, *, all_versions: bool, then: str | None = None
    ) -> AsyncGenerator[SourcePage, None]:
        """One pass over the range from ``token``. While reading the latest versions, positions also
        carry ``then`` (where the all-versions reading starts), and the final page points there."""

        def where(continuation: str | None) -> str | None:
            if all_versions:
                return _format_position(None, continuation)
            return _format_position(continuation, then) if then is not None else continuation

        if self._lean is not None and not all_versions:
            async for page in self._lean_pass(partition, token, where, then):
                yield page
            return
        backoff = Backoff()
        responses = _Responses(self._charged)
        empty_moves = 0
        proxy = await self.container.sdk()
        while True:
            started, read_any = token, False
            pager = self._pager(proxy, partition, token, responses)
            pages = pager.__aiter__()
            while True:
                try:
                    page = await pages.__anext__()
                    items = [doc async for doc in page]
                except StopAsyncIteration:
                    break
                except Exception as exc:  # noqa: BLE001 - classified: retried or turned into an asyncmig error
                    await wait_to_retry(backoff, classify(exc), what=f"reading {self.description} {range_key(partition)}",
                                        cause=exc)
                    pager = self._pager(proxy, partition, token, responses)  # resume after the last page handed out
                    pages = pager.__aiter__()
                    continue
                backoff = Backoff()  # a page read: the allowance is for faults in a row, not per run
                token, read_any = pager.continuation_token, True
                documents, deleted = self._changes(items) if all_versions else (items, [])
                yield SourcePage(documents, where(token), deleted, behind=_behind(responses.lsn, items))
            final = responses.continuation() or token
            if self.snapshot:
                yield SourcePage([], where(token), caught_up=True)
                return
            if read_any or (final != started and empty_moves < _EMPTY_MOVES):
                # Confirm from the final position: the SDK also stops at an empty 200 page that
                # moved the position, which is not the end of the range.
                empty_moves = 0 if read_any else empty_moves + 1
                token = final
                continue
            if then is not None and not all_versions:
                final = None  # the bulk pass is over: go on from the all-versions start
            yield SourcePage([], where(final), caught_up=True)
            return

    async def _lean_pass(self, partition: Any, token: str | None, where: Callable[[str | None], str | None],
                         then: str | None) -> AsyncGenerator[SourcePage, None]:
        """A latest-version pass over hand-sent requests (same requests and continuation tokens as the
        SDK's): the bulk pass and latest-version catch-ups. It does not report how far behind the
        source a page is; the all-versions passes that follow a live source read through the SDK."""
        assert self._lean is not None
        final = token
        async with aclosing(self._lean.pages(partition, token,
                                             what=f"{self.description} {range_key(partition)}")) as pages:
            async for page in pages:
                final = page.position
                if page.documents:
                    yield SourcePage(page.documents, where(final), numbers_checked=page.numbers_checked)
        if then is not None:
            final = None  # the bulk pass is over: go on from the all-versions start
        yield SourcePage([], where(final), caught_up=True)

    def _pager(self, proxy: ContainerProxy, feed_range: Any, position: str | None, responses: _Responses) -> Any:
        if self.snapshot:
            query = proxy.query_items("SELECT * FROM c", feed_range=feed_range, max_item_count=self.page_size,
                                               response_hook=self._charged, **self._options)
            return query.by_page(position)
        if position:
            iterable = proxy.query_items_change_feed(
                continuation=position, max_item_count=self.page_size, response_hook=responses.hook, **self._options)
        else:
            iterable = proxy.query_items_change_feed(
                feed_range=feed_range, start_time="Beginning", max_item_count=self.page_size,
                response_hook=responses.hook, **self._options)
        return iterable.by_page()

    async def _changes_from_now(self, partition: Any) -> str | None:
        """The all-versions-and-deletes position of "now" for the range, or None where the mode is refused."""
        if self.deletes_available is False:
            return None
        backoff = Backoff()
        while True:
            try:
                if self._lean_changes is not None:
                    position: str | None = await self._lean_changes.now(partition)
                else:
                    responses = _Responses(self._charged)
                    async for _ in self._now_pager(await self.container.sdk(), partition, responses):
                        break  # "now" answers 304 (no page): the position is all we need
                    position = responses.continuation()
                self.deletes_available = True
                return position
            except Exception as exc:  # noqa: BLE001 - classified: a refusal of the mode, retried, or fatal
                failure = classify(exc)
                if failure.status == 400:
                    if self.deletes_available is None:
                        log.warning("%s does not offer the all-versions-and-deletes change feed (%s): deletes at the "
                                    "source are not followed; run `asyncmig reconcile` after the copy to remove them",
                                    self.description, failure.reason)
                    self.deletes_available = False
                    return None
                await wait_to_retry(backoff, failure, what=f"reading {self.description} {range_key(partition)}",
                                    cause=exc)

    def _now_pager(self, proxy: ContainerProxy, feed_range: Any, responses: _Responses) -> Any:
        return proxy.query_items_change_feed(
            feed_range=feed_range, start_time="Now", mode="AllVersionsAndDeletes", max_item_count=1,
            response_hook=responses.hook, **self._options,
        ).by_page()

    def _changes(self, items: list[Any]) -> tuple[list[Document], list[Document]]:
        """Split all-versions items into current versions and deleted documents, each with its ``_lsn``."""
        documents: list[Document] = []
        deleted: list[Document] = []
        for item in items:
            metadata = item.get("metadata") if isinstance(item, dict) else None
            if not isinstance(metadata, dict):  # not the all-versions shape: a plain latest version
                documents.append(item)
                continue
            if metadata.get("operationType") == "delete":
                deleted.append({**self._tombstone(metadata, item.get("previous")), "_lsn": metadata.get("lsn")})
            elif isinstance(item.get("current"), dict):
                documents.append({**item["current"], "_lsn": metadata.get("lsn", item["current"].get("_lsn"))})
        return documents, deleted

    def _tombstone(self, metadata: dict[str, Any], previous: Any) -> Document:
        """The deleted document: its last version when the feed has it, else its id and partition key."""
        if isinstance(previous, dict) and "id" in previous:
            return dict(previous)
        document: Document = {"id": metadata.get("id")}
        values = metadata.get("partitionKey") or {}
        for path in self._definition["paths"]:
            segments = path.strip("/").split("/")
            value = next((values[k] for k in ("/".join(segments), path, segments[-1]) if k in values), None)
            if value is None and not any(k in values for k in ("/".join(segments), path, segments[-1])):
                continue
            node = document
            for segment in segments[:-1]:
                node = node.setdefault(segment, {})
            node[segments[-1]] = value
        return document

    async def _count(self, feed_range: Any = None) -> int | None:
        try:
            return await self.container.count(feed_range, rid=self._rid, priority=self.priority,
                                              on_charge=self._add_charge)
        except Exception as exc:  # noqa: BLE001 - a check only; a failure here must not stop a copy
            failure = classify(exc)
            if failure.kind == "fatal":
                raise failure.as_error(f"counting {self.description}") from exc
            return None

    async def count(self) -> int | None:
        return await self._count()


class _Responses:
    """What the change feed's responses say beyond their documents: the range's current LSN and the
    continuation after the last response, a 304 included (``by_page().continuation_token`` is only
    updated by pages with documents, so it would lag behind on a caught-up range).

    The SDK hands the response hook the very header mapping whose ``etag`` it then replaces with its
    encoded continuation; reading it after the response was processed gives that continuation.
    """

    def __init__(self, charged: Callable[[Mapping[str, Any], Any], None]) -> None:
        self.lsn: int | None = None
        self._headers: Any = None
        self._charged = charged

    def hook(self, headers: Any, result: Any) -> None:
        self._charged(headers, result)
        self._headers = headers
        value = headers.get("lsn") if hasattr(headers, "get") else None
        if value is not None and str(value).isdigit():
            self.lsn = int(value)

    def continuation(self) -> str | None:
        value = self._headers.get("etag") if self._headers is not None else None
        # A raw etag (quoted LSN) means the SDK did not encode it: no usable continuation.
        return value if isinstance(value, str) and value and not value.startswith('"') and not value.isdigit() else None


def _parse_position(position: str | None) -> tuple[str | None, str | None]:
    """(latest-version continuation, all-versions continuation) of a stored position."""
    if position is None or not position.startswith("{"):
        return position, None
    fields = jsoncodec.loads(position)
    if not isinstance(fields, dict):
        raise ValueError("a change-feed position must be an object")
    return fields.get(_LATEST), fields.get(_CHANGES)


def _format_position(latest: str | None, changes: str | None) -> str:
    return jsoncodec.dumps({_LATEST: latest, _CHANGES: changes}).decode()


def _behind(current: int | None, items: list[Any]) -> int | None:
    """Changes left in the range after ``items``: the range's current LSN minus the last item's."""
    if current is None or not items:
        return None
    last = items[-1]
    metadata = last.get("metadata") if isinstance(last, dict) else None
    value = metadata.get("lsn") if isinstance(metadata, dict) else last.get("_lsn") if isinstance(last, dict) else None
    return max(0, current - int(value)) if isinstance(value, int) else None

PageHandler = Callable[[list[Document]], Awaitable[None] | None]


async def scan_container(
    container: Container | ContainerProxy, handle: PageHandler, *, what: str, page_size: int = DEFAULT_PAGE_SIZE,
    concurrency: int = 8, ranges: int | None = None, pages_per_range: int | None = None, snapshot: bool = False,
) -> float:
    """Hand every document of ``container`` to ``handle``, a page at a time, ``concurrency`` feed
    ranges at once; reads through :class:`CosmosSource` (with its retries).
    Returns the RU the reads cost.

    ``handle`` may be a coroutine function; a plain function runs between awaits, so pages of
    concurrent ranges never interleave inside it. ``ranges`` and ``pages_per_range`` limit the scan
    to a sample. Memory: one page per range being read. ``snapshot`` reads by query instead of the
    change feed (validation's reads, independent of the copier's).
    """
    source = CosmosSource(container, page_size=page_size, what=what, snapshot=snapshot)
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
