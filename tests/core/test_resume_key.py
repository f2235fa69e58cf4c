"""The resume skip key: a document written ahead of the committed position is skipped on resume,
and no other document may be skipped with it.

After a partition split, two documents with the same id in different logical partitions can carry
the same ``_lsn`` (the children continue the parent's sequence independently). A key made of
target, id and ``_lsn`` confused them, and the resumed run skipped a document nobody had written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from asyncmig.core.engine.checkpoint import Checkpoint, load_checkpoint, resume_key
from asyncmig.core.engine.deadletter import DeadLetterFile
from asyncmig.core.engine.iterable_source import IterableSource
from asyncmig.core.engine.pipeline import Pipeline, PipelineOptions
from asyncmig.core.engine.sink import SinkStatistics, WriteOutcome, WriteUnit
from asyncmig.core.engine.transform import Document
from asyncmig.errors import Interrupted

# Same id, same _lsn, different logical partitions (and so different _rid and _etag).
IN_PARTITION_B = {"id": "same", "pk": "b", "_lsn": 7, "_rid": "AAAAAA==", "_etag": '"0000-b"'}
IN_PARTITION_A = {"id": "same", "pk": "a", "_lsn": 7, "_rid": "AAAAAB==", "_etag": '"0000-a"'}


class MemorySink:
    """A durable in-process sink, one lane per logical partition. Writes of documents whose key is
    in ``hold`` wait until cancelled; a write of a document whose key is in ``stop_after`` sets
    ``stop`` once it is acknowledged."""

    description = "memory"
    durable_writes = True

    def __init__(self, *, hold: frozenset[str] = frozenset(), stop_after: frozenset[str] = frozenset()) -> None:
        self.stats = SinkStatistics()
        self.written: list[Document] = []
        self.hold = hold
        self.stop_after = stop_after
        self.stop = anyio.Event()

    async def open(self, state: dict[str, Any]) -> None:
        return None

    def plan(self, target: str, documents: list[Document]) -> tuple[list[WriteUnit], list[Any]]:
        return [WriteUnit(target, f"lane-{d['pk']}", [d]) for d in documents], []

    async def write(self, unit: WriteUnit) -> WriteOutcome:
        [document] = unit.documents
        if document["pk"] in self.hold:
            await anyio.sleep_forever()
        self.written.append(document)
        if document["pk"] in self.stop_after:
            self.stop.set()
        return WriteOutcome(written=1)

    async def flush(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        return None


async def _run(tmp_path: Path, checkpoint: Checkpoint, sink: MemorySink, *, stop: anyio.Event | None) -> None:
    source = IterableSource(lambda: [dict(IN_PARTITION_B), dict(IN_PARTITION_A)], description="src", page_size=1)
    options = PipelineOptions(read_concurrency=1, page_size=1, lane_workers=1, grace_period=0.05,
                              checkpoint_interval=3600)
    with DeadLetterFile(tmp_path / "dead.jsonl") as dead_letters:
        await Pipeline(source, sink, checkpoint, tmp_path / "cp.json", dead_letters,
                       options=options).run(stop)


async def test_a_document_written_ahead_does_not_hide_its_namesake_from_another_partition(tmp_path: Path) -> None:
    identity = {"run": "resume-key"}
    # Run 1: partition b's write hangs, partition a's (a later page) is acknowledged, then Ctrl-C.
    first = MemorySink(hold=frozenset({"b"}), stop_after=frozenset({"a"}))
    try:
        await _run(tmp_path, load_checkpoint(tmp_path / "cp.json", identity, restart=False), first, stop=first.stop)
    except Interrupted:
        pass
    else:
        raise AssertionError("the first run was meant to be interrupted")
    assert [d["pk"] for d in first.written] == ["a"]
    saved = load_checkpoint(tmp_path / "cp.json", identity, restart=False)
    assert saved.ranges["all"].position is None and len(saved.ranges["all"].written_ahead) == 1

    # Run 2 resumes: partition a's document is skipped, partition b's must be written.
    second = MemorySink()
    await _run(tmp_path, saved, second, stop=None)
    assert [d["pk"] for d in second.written] == ["b"]


def test_without_rid_the_partition_key_tells_namesakes_apart() -> None:
    a = {"id": "same", "_lsn": 7}
    assert resume_key("t", a, a, ["a"]) != resume_key("t", a, a, ["b"])
    assert resume_key("t", a, a, ["a"]) == resume_key("t", dict(a), dict(a), ["a"])
    changed = {**a, "_lsn": 8}
    assert resume_key("t", a, a, ["a"]) != resume_key("t", changed, changed, ["a"])
