"""Sources: where documents come from, page by page, each page with a resumable position.

A source splits itself into partitions (for Cosmos: the feed ranges) that are read independently;
``pages(partition, position)`` resumes exactly after the page whose position was committed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from asyncmig.core.engine.transform import Document

DEFAULT_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class SourcePage:
    documents: list[Document]
    position: str | None  # where to resume after this page; None: from the beginning
    # Documents deleted at the source (from a change feed that reports deletes): each holds the
    # deleted document's id and partition key (its last version when the source has it) and the
    # delete's own ``_lsn``, so it is ordered with the document's other versions.
    deleted: list[Document] = field(default_factory=list)
    # The partition had nothing more to give when this page was read: the end of one pass.
    caught_up: bool = False
    # Changes still to read in this partition after this page, when the source knows.
    behind: int | None = None
    # Every document was decoded by :func:`asyncmig.core.jsoncodec.loads`, which refuses NaN and
    # Infinity: the pipeline need not look for them again before an identity copy writes them.
    numbers_checked: bool = False


class Source(Protocol):
    description: str
    page_size: int
    read_ru: float  # RU the reads have cost so far (0 for sources that do not pay per read)

    async def open(self) -> None:
        """Connect and read what is needed (e.g. the partition key definition)."""
        ...

    def partition_key(self, document: Document) -> Any:
        """A document's partition key as JSON, to identify it in the dead-letter file."""
        ...

    async def partitions(self) -> dict[str, Any]:
        """Stable key -> opaque, JSON-serialisable partition description (stored in checkpoints)."""
        ...

    def pages(self, partition: Any, position: str | None) -> AsyncIterator[SourcePage]:
        """Pages of one partition, starting after ``position``."""
        ...

    async def count(self) -> int | None:
        """Documents in the source, for progress and ETA (None when unknown or too costly)."""
        ...


@runtime_checkable
class CountsPartitions(Protocol):
    """A source that can count one partition's documents independently of reading them."""

    async def count_partition(self, partition: Any) -> int | None:
        """Documents in ``partition`` now (None when the count failed)."""
        ...
