"""Per-document ordering: an older version of a document never overwrites a newer one.

In-memory source and sink (implementations of the engine's interfaces, no Cosmos): the sink holds
the first attempt of one version until every other task is blocked, which is exactly the moment a
retry after a timeout would come back. Deterministic: no sleeps as synchronisation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from asyncmig.core.engine.checkpoint import Checkpoint
from asyncmig.core.engine.deadletter import DeadLetterFile
from asyncmig.core.engine.ordering import VersionGate, document_version
from asyncmig.core.engine.pipeline import Pipeline, PipelineOptions
from asyncmig.core.engine.sink import SinkStatistics, WriteOutcome, WriteUnit
from asyncmig.core.engine.source import SourcePage
from asyncmig.core.engine.transform import Document


class PagedSource:
    """One partition whose pages are given up front (as the change feed would hand them out)."""

    description = "memory"
    page_size = 100
    read_ru = 0.0

    def __init__(self, pages: list[list[Document]]) -> None:
        self._pages = pages

    async def open(self) -> None:
        return None

    def partition_key(self, document: Document) -> Any:
        return document.get("pk") if isinstance(document, dict) else None

    async def partitions(self) -> dict[str, Any]:
        return {"all": {"range": "all"}}

    async def pages(self, partition: Any, position: str | None) -> AsyncIterator[SourcePage]:
        for number, documents in enumerate(self._pages[int(position or 0):], start=int(position or 0) + 1):
            yield SourcePage(documents, str(number))

    async def count(self) -> int | None:
        return sum(len(p) for p in self._pages)


class SlowFirstAttemptSink:
    """Stores upserts by id; the first write of ``slow`` (a version) fails like a timeout would and is
    retried only once every other task is blocked: a newer version that was let through meanwhile lands
    first, and the retry then overwrites it."""

    description = "memory"
    durable_writes = True

    def __init__(self, slow: tuple[str, int]) -> None:
        self.stats = SinkStatistics()
        self.stored: dict[str, Document] = {}
        self.landed: list[tuple[str, int]] = []
        self._slow = slow

    async def open(self, state: dict[str, Any]) -> None:
        return None

    def plan(self, target: str, documents: list[Document]) -> tuple[list[WriteUnit], list[Any]]:
        return [WriteUnit(target, "lane", [doc]) for doc in documents], []

    async def write(self, unit: WriteUnit) -> WriteOutcome:
        for doc in unit.documents:
            version = (doc["id"], doc["v"])
            if version == self._slow:
                self.stats.retries += 1
                await anyio.wait_all_tasks_blocked()  # the jittered sleep before the retry
            self.stored[doc["id"]] = doc
            self.landed.append(version)
        return WriteOutcome(written=len(unit.documents))

    async def flush(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        return None


def _doc(doc_id: str, lsn: int, v: int = 0) -> Document:
    return {"id": doc_id, "pk": "p", "_lsn": lsn, "v": v}


async def _copy(tmp_path: Path, pages: list[list[Document]], sink: SlowFirstAttemptSink) -> None:
    with DeadLetterFile(tmp_path / "dead.jsonl") as dead:
        pipeline = Pipeline(PagedSource(pages), sink, Checkpoint(identity={}), tmp_path / "ck.json", dead,
                            options=PipelineOptions(lane_workers=4, page_size=10))
        with anyio.fail_after(10):
            await pipeline.run()


async def test_a_retried_older_version_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    pages = [[_doc("x", 1, v=1), _doc("a", 2)], [_doc("b", 3)], [_doc("x", 4, v=2)]]
    sink = SlowFirstAttemptSink(slow=("x", 1))
    await _copy(tmp_path, pages, sink)
    assert sink.stored["x"]["v"] == 2
    assert sink.landed.index(("x", 1)) < sink.landed.index(("x", 2))
    assert set(sink.stored) == {"x", "a", "b"}


async def test_versions_of_one_document_in_one_page_keep_only_the_newest(tmp_path: Path) -> None:
    pages = [[_doc("x", 1, v=1), _doc("x", 5, v=3), _doc("x", 4, v=2)]]
    sink = SlowFirstAttemptSink(slow=("none", -1))
    await _copy(tmp_path, pages, sink)
    assert sink.landed == [("x", 3)] and sink.stored["x"]["v"] == 3


async def test_the_gate_drops_a_superseded_version_and_makes_a_newer_one_wait() -> None:
    gate = VersionGate()
    assert await gate.admit("k", 2)
    assert not await gate.admit("k", 1)  # older than what is in flight: superseded, dropped
    admitted: list[int] = []

    async def newer() -> None:
        admitted.append(int(await gate.admit("k", 3)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(newer)
        await anyio.wait_all_tasks_blocked()
        assert admitted == []  # waits for version 2 to finish
        gate.release("k", 2)
    assert admitted == [1]
    gate.release("k", 3)
    assert await gate.admit("k", 3)  # nothing in flight any more: a replay is let through
    gate.release("k", 3)
    assert gate.in_flight == 0


def test_versions_come_from_the_lsn_or_the_timestamp() -> None:
    assert document_version({"_lsn": 12, "_ts": 99}) == 12
    assert document_version({"_ts": 99}) == 99
    assert document_version({"id": "x"}) is None
    assert document_version({"_lsn": "7"}) == 7


class HeldSink(SlowFirstAttemptSink):
    """Holds the write of ``held`` until :attr:`go` is set."""

    def __init__(self, held: tuple[str, int]) -> None:
        super().__init__(slow=("none", -1))
        self.held = held
        self.go = anyio.Event()

    async def write(self, unit: WriteUnit) -> WriteOutcome:
        if any((doc["id"], doc["v"]) == self.held for doc in unit.documents):
            await self.go.wait()
        return await super().write(unit)


async def test_a_stop_while_a_newer_version_waits_ends_cleanly_once_the_older_is_written(tmp_path: Path) -> None:
    """Following, a stop is the normal end: the page waiting for an older version is dropped (read again
    next time), the write in flight finishes, and the run ends without waiting out the grace period."""
    pages = [[_doc("x", 1, v=1)], [_doc("x", 2, v=2)]]
    sink = HeldSink(held=("x", 1))
    stop = anyio.Event()
    options = PipelineOptions(lane_workers=2, page_size=10, follow=True, grace_period=60)
    with DeadLetterFile(tmp_path / "dead.jsonl") as dead:
        pipeline = Pipeline(PagedSource(pages), sink, Checkpoint(identity={}), tmp_path / "ck.json", dead,
                            options=options)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pipeline.run, stop)
                await anyio.wait_all_tasks_blocked()  # version 2 waits for version 1, which the sink holds
                stop.set()
                await anyio.wait_all_tasks_blocked()
                sink.go.set()
    assert not pipeline.stats.interrupted
    assert sink.landed == [("x", 1)]
    assert pipeline.checkpoint.ranges["all"].position == "1"  # page 2 was not written: it is read again
