"""Sinks: where documents go. The pipeline asks a sink to *plan* write units, then to write them.

A write unit is what one request carries: a bulk batch of documents of one target physical range,
a transactional batch of documents that share a logical partition key, or a single document. Its
``lane`` names the target physical range, so the pipeline runs one pool of writers per range and
each range is paced on its own (as the .NET and Java bulk executors do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from asyncmig.core.engine.transform import Document


@dataclass(slots=True)
class WriteUnit:
    target: str
    lane: str
    documents: list[Document]
    partition_key: Any = None  # the shared key of a transactional batch
    batch: bool = False
    # Each document's compact JSON, in order, when the sink already encoded it while planning (to
    # measure it): a sink that sends bytes reuses them instead of encoding a second time.
    encoded: list[bytes] | None = None
    # Each document's resume key, in order (set by the pipeline after planning): what the journal
    # records once the unit is written, so a resumed run knows what not to write again.
    keys: list[str] = field(default_factory=list)
    # Delete the documents (each holds at least the id and partition key) instead of upserting them;
    # a document already gone counts as deleted.
    delete: bool = False


@dataclass(frozen=True, slots=True)
class Rejection:
    """A document that can never be written, with the reason (it goes to the dead-letter file)."""

    document: Document
    reason: str
    status: int | None = None


@dataclass(slots=True)
class WriteOutcome:
    written: int = 0
    rejected: list[Rejection] = field(default_factory=list)


@dataclass(slots=True)
class SinkStatistics:
    requests: int = 0
    written: int = 0
    ru: float = 0.0
    throttled: int = 0
    retries: int = 0


@runtime_checkable
class DeletingSink(Protocol):
    """A sink that can also delete documents (what a live source's deletes need)."""

    def plan_deletes(self, target: str, documents: list[Document]) -> tuple[list[WriteUnit], list[Rejection]]:
        """Delete units (``WriteUnit.delete``) for documents given by id and partition key."""
        ...


@runtime_checkable
class CheckingSink(Protocol):
    """A sink that can tell whether documents are already stored as they would be written."""

    async def stored(self, target: str, documents: list[Document]) -> list[bool]:
        """For each document, whether ``target`` holds it exactly as a write would leave it (asked
        of the few documents a killed run had sent without seeing them acknowledged)."""
        ...


class Sink(Protocol):
    description: str
    stats: SinkStatistics
    # True when every acknowledged write is durable by itself (a database); False when writes are
    # durable only up to the state :meth:`flush` returned for a checkpoint (files are cut back to it
    # on resume), so documents acknowledged after a checkpoint must be written again, not skipped.
    durable_writes: bool

    async def open(self, state: dict[str, Any]) -> None:
        """Prepare to write, resuming from the state a checkpoint stored (empty: fresh)."""
        ...

    def plan(self, target: str, documents: list[Document]) -> tuple[list[WriteUnit], list[Rejection]]:
        """Group documents into write units; documents that can never be written are rejected.

        The documents hold no NaN or Infinity: the pipeline checked them (a sink need not look again).
        """
        ...

    async def write(self, unit: WriteUnit) -> WriteOutcome:
        """Write one unit durably, retrying what can be retried."""
        ...

    async def flush(self) -> dict[str, Any]:
        """Make everything written so far durable; returns the state a checkpoint must keep."""
        ...

    async def close(self) -> None: ...
