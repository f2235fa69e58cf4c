"""The file source: a restore is a copy out of a backup file, through the same pipeline as a copy.

A ``.jsonl.gz`` backup file is one partition whose position is the number of documents consumed;
a resume skips that many lines without parsing them. Reading, inflating and parsing run in a
worker thread, so the event loop keeps the writers busy meanwhile.

The file is trusted only as far as :class:`~asyncmig.core.files.jsonl.JsonlGzReader` checks it while
reading; damage inside a gzip member is certain to be seen only at the member's end, after some of
its documents may have been handed out. Callers verify the whole backup
(:func:`asyncmig.core.files.manifest.verify_backup`) before writing anything from it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from asyncmig.core.cosmos.partition_keys import partition_key_values
from asyncmig.core.engine.source import DEFAULT_PAGE_SIZE, SourcePage
from asyncmig.core.engine.transform import Document
from asyncmig.core.files.jsonl import JsonlGzReader
from asyncmig.errors import BackupCorrupt, CorruptState

__all__ = ["FileSource"]


class FileSource:
    """Documents of one backup file, page by page; ``partition_key`` follows the container's
    recorded definition (the manifest's ``properties.partitionKey``)."""

    read_ru = 0.0  # a local file: reading costs nothing

    def __init__(
        self,
        path: Path,
        partition_key: Mapping[str, Any],
        *,
        count: int | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        what: str = "",
    ) -> None:
        """:param count: the documents the file holds (the manifest's count), for progress."""
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self.path = Path(path)
        self.page_size = page_size
        self.description = what or self.path.name
        self._definition = dict(partition_key)
        self._count = count

    async def open(self) -> None:
        """:raises BackupCorrupt: when the file is missing."""
        if not await anyio.to_thread.run_sync(self.path.is_file):
            raise BackupCorrupt(f"{self.path} is missing: the backup is incomplete")

    def partition_key(self, document: Document) -> Any:
        return partition_key_values(self._definition, document) if isinstance(document, dict) else None

    async def partitions(self) -> dict[str, Any]:
        """A single partition: the file, read from its first line to its last."""
        return {self.path.name: {"file": self.path.name}}

    async def pages(self, partition: Any, position: str | None) -> AsyncIterator[SourcePage]:
        """Pages after the first ``position`` documents; each page's position is the count so far.

        :raises BackupCorrupt: when the file is missing, damaged, or shorter than ``position``.
        :raises CorruptState: when ``position`` is not a document count (not this source's checkpoint).
        """
        consumed = _document_count(position)
        reader = await anyio.to_thread.run_sync(JsonlGzReader, self.path)
        try:
            await anyio.to_thread.run_sync(reader.skip, consumed)
            pages = reader.pages(self.page_size)
            while (page := await anyio.to_thread.run_sync(next, pages, None)) is not None:
                consumed += len(page)
                yield SourcePage(page, str(consumed), numbers_checked=True)
        finally:
            reader.close()

    async def count(self) -> int | None:
        return self._count


def _document_count(position: str | None) -> int:
    if position is None:
        return 0
    if not (position.isascii() and position.isdigit()):
        raise CorruptState(f"position {position!r} is not a document count: the checkpoint is not a file restore's")
    return int(position)
