"""In-memory implementations of the Source and Sink interfaces, for testing the engine on its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from asyncmig.core.engine.sink import Rejection, SinkStatistics, WriteOutcome, WriteUnit
from asyncmig.core.engine.source import SourcePage
from asyncmig.core.engine.transform import Document


class MemorySource:
    """Documents held in lists, one list per partition; a position is how many were handed out."""

    read_ru = 0.0
    def __init__(self, partitions: dict[str, list[Document]], *, page_size: int = 2) -> None:
        self.documents = partitions
        self.page_size = page_size
        self.description = "memory"

    async def open(self) -> None:
        return None

    def partition_key(self, document: Document) -> Any:
        return document.get("pk") if isinstance(document, dict) else None

    async def partitions(self) -> dict[str, Any]:
        return {key: key for key in self.documents}

    async def pages(self, partition: Any, position: str | None) -> AsyncIterator[SourcePage]:
        documents = self.documents[partition]
        start = int(position or 0)
        for low in range(start, len(documents), self.page_size):
            page = documents[low:low + self.page_size]
            yield SourcePage([dict(d) for d in page], str(low + len(page)))

    async def count(self) -> int | None:
        return sum(len(documents) for documents in self.documents.values())


class MemorySink:
    """Writes land in :attr:`written` as ``(target, id)``; one write unit per document, one lane per
    target. ``before_write`` runs before each write (to order, pause or fail writes); documents
    with ``"refuse": true`` are rejected when planned."""

    durable_writes = True

    def __init__(self, before_write: Callable[[WriteUnit], Awaitable[None]] | None = None) -> None:
        self.description = "memory sink"
        self.stats = SinkStatistics()
        self.written: list[tuple[str, str]] = []
        self.before_write = before_write

    async def open(self, state: dict[str, Any]) -> None:
        return None

    def plan(self, target: str, documents: list[Document]) -> tuple[list[WriteUnit], list[Rejection]]:
        units = [WriteUnit(target, target, [d]) for d in documents if not d.get("refuse")]
        return units, [Rejection(d, "refused by the memory sink") for d in documents if d.get("refuse")]

    async def write(self, unit: WriteUnit) -> WriteOutcome:
        if self.before_write is not None:
            await self.before_write(unit)
        self.written.extend((unit.target, d["id"]) for d in unit.documents)
        self.stats.requests += 1
        self.stats.written += len(unit.documents)
        return WriteOutcome(written=len(unit.documents))

    async def flush(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        return None
