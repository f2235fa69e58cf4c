"""A source over documents made in this process (generated demo data, computed personalities).

Position is the number of documents already handed out; resuming regenerates the sequence and
skips that many, so the factory must yield the same documents in the same order every time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from itertools import islice
from typing import Any

from asyncmig.core.engine.source import DEFAULT_PAGE_SIZE, SourcePage
from asyncmig.core.engine.transform import Document


class IterableSource:
    read_ru = 0.0  # made in this process: reading costs nothing

    def __init__(self, factory: Callable[[], Iterable[Document]], *, description: str,
                 count: int | None = None, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self.factory = factory
        self.description = description
        self.page_size = page_size
        self._count = count

    async def open(self) -> None:
        return None

    def partition_key(self, document: Document) -> Any:
        return None

    async def partitions(self) -> dict[str, Any]:
        return {"all": {"source": self.description}}

    async def pages(self, partition: Any, position: str | None) -> AsyncIterator[SourcePage]:
        consumed = int(position or 0)
        documents = iter(self.factory())
        for _ in islice(documents, consumed):
            pass
        while page := list(islice(documents, self.page_size)):
            consumed += len(page)
            yield SourcePage(page, str(consumed))

    async def count(self) -> int | None:
        return self._count
