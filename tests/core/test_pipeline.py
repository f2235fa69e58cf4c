"""The pipeline on in-memory sources and sinks: commit order, replay after a crash, fan-out."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from asyncmig.core.engine.checkpoint import load_checkpoint
from asyncmig.core.engine.pipeline import PipelineOptions
from asyncmig.core.engine.sink import WriteUnit
from asyncmig.core.engine.transfer import Transfer, run_transfer
from asyncmig.core.engine.transform import Document, Rejected, Routed, Transform
from asyncmig.errors import AsyncmigError, DeadLettered, UsageError
from tests.core.memory import MemorySink, MemorySource

IDENTITY_OF_RUN = {"test": "pipeline"}


def documents(n: int, prefix: str = "d") -> list[Document]:
    return [{"id": f"{prefix}{i}", "pk": f"{prefix}{i}", "n": i} for i in range(n)]


def job(tmp_path: Path, source: MemorySource, sink: MemorySink, **options: object) -> Transfer:
    return Transfer(
        source=source, sink=sink, identity=IDENTITY_OF_RUN, checkpoint=tmp_path / "cp.json",
        dead_letter=tmp_path / "dead.jsonl", progress=False,
        options=PipelineOptions(**{"page_size": 2, "checkpoint_interval": 3600.0, **options}),  # type: ignore[arg-type]
    )


def copy_files(directory: Path, into: Path) -> None:
    into.mkdir()
    for path in directory.iterdir():
        if path.is_file():
            shutil.copy2(path, into / path.name)


async def test_every_document_is_written_once_and_the_run_reports_what_happened(tmp_path: Path) -> None:
    source = MemorySource({"r0": documents(7, "a"), "r1": documents(4, "b")})
    sink = MemorySink()
    stats = await run_transfer(job(tmp_path, source, sink))
    assert sorted(sink.written) == sorted(("", d["id"]) for part in source.documents.values() for d in part)
    assert (stats.read, stats.written, stats.dead_lettered, stats.skipped) == (11, 11, 0, 0)
    checkpoint = load_checkpoint(tmp_path / "cp.json", IDENTITY_OF_RUN, restart=False)
    assert all(state.done for state in checkpoint.ranges.values())


async def test_a_page_is_committed_only_after_every_page_before_it(tmp_path: Path) -> None:
    """Page 2 is written while page 1 still waits; the run then fails on page 1: the checkpoint
    must not move past page 1, and the resumed run writes page 1 and not page 2 again."""
    source = MemorySource({"r0": documents(4)})  # pages: d0 d1 | d2 d3
    page_two_written = anyio.Event()

    async def hold_page_one(unit: WriteUnit) -> None:
        doc_id = unit.documents[0]["id"]
        if doc_id == "d0":
            await page_two_written.wait()
            raise AsyncmigError("the target went away")
        if doc_id in ("d2", "d3") and sum(1 for _, i in sink.written if i in ("d2", "d3")) == 1:
            page_two_written.set()

    sink = MemorySink(hold_page_one)
    with pytest.raises(AsyncmigError, match="went away"):
        await run_transfer(job(tmp_path, source, sink, lane_workers=4))
    checkpoint = load_checkpoint(tmp_path / "cp.json", IDENTITY_OF_RUN, restart=False)
    assert checkpoint.ranges["r0"].position is None  # page 1 never completed
    assert {("", "d2"), ("", "d3")} <= set(sink.written)

    again = MemorySink()
    stats = await run_transfer(job(tmp_path, source, again))
    assert ("", "d0") in again.written and ("", "d2") not in again.written and ("", "d3") not in again.written
    assert (stats.written, stats.skipped, stats.processed) == (4, 3, 4)  # d1 d2 d3 by the first run


async def test_a_killed_run_replays_its_journal_and_rewrites_only_what_was_in_flight(tmp_path: Path) -> None:
    """The files as a SIGKILL would leave them are copied aside after three writes; resuming from
    that copy writes exactly the documents the journal had not recorded."""
    source = MemorySource({"r0": documents(8)})
    crash = tmp_path / "crash"

    async def snapshot_after_three(unit: WriteUnit) -> None:
        if len(sink.written) == 3 and not crash.exists():
            copy_files(tmp_path, crash)  # synchronous: no other task runs while the files are copied

    sink = MemorySink(snapshot_after_three)
    await run_transfer(job(tmp_path, source, sink, lane_workers=1, read_concurrency=1))
    before_kill = sink.written[:3]

    restored = tmp_path / "restored"
    shutil.copytree(crash, restored)
    again = MemorySink()
    stats = await run_transfer(job(restored, source, again, lane_workers=1))
    assert not set(again.written) & set(before_kill)  # the journal kept them from being rewritten
    assert sorted(before_kill + again.written) == sorted(("", f"d{i}") for i in range(8))
    assert (stats.written, stats.skipped) == (8, 3)  # the killed run's three are recovered, not lost


class StoringSink(MemorySink):
    """A memory sink that keeps what it holds and can say whether a document is already stored."""

    def __init__(self, held: dict[str, Document]) -> None:
        super().__init__()
        self.held = dict(held)
        self.checked: list[str] = []

    async def stored(self, target: str, docs: list[Document]) -> list[bool]:
        self.checked += [d["id"] for d in docs]
        return [self.held.get(d["id"]) == d for d in docs]


@pytest.mark.parametrize("server_finished_it", [True, False])
async def test_a_resumed_run_checks_what_the_killed_run_had_in_flight(tmp_path: Path, server_finished_it: bool) -> None:
    """Cosmos DB executes a request it received even when the client dies before the answer, so the
    unit in flight at a kill may be in the target though the journal never saw it acknowledged. The
    resumed run asks the sink about exactly those documents and writes them only if they are not
    stored as they would be written (before: always written again, 1.5 % of a benchmark copy)."""
    source = MemorySource({"r0": documents(8)})
    crash = tmp_path / "crash"

    async def kill_while_the_fourth_is_sent(unit: WriteUnit) -> None:
        if len(sink.written) == 3 and not crash.exists():
            copy_files(tmp_path, crash)  # the fourth unit is journaled as sent, not as written

    sink = MemorySink(kill_while_the_fourth_is_sent)
    await run_transfer(job(tmp_path, source, sink, lane_workers=1, read_concurrency=1))
    before_kill = [i for _, i in sink.written[:3]]
    in_flight = sink.written[3][1]

    restored = tmp_path / "restored"
    shutil.copytree(crash, restored)
    held = {d["id"]: dict(d) for d in source.documents["r0"] if d["id"] in [*before_kill, in_flight]}
    if not server_finished_it:
        held[in_flight]["n"] = -1  # an older version: the write must still happen
    again = StoringSink(held)
    stats = await run_transfer(job(restored, source, again, lane_workers=1))
    assert again.checked == [in_flight]  # only the unit that was in flight, once
    rewritten = [i for _, i in again.written]
    assert (in_flight in rewritten) is not server_finished_it
    assert sorted(before_kill + rewritten + ([in_flight] if server_finished_it else [])) == [f"d{i}" for i in range(8)]
    assert (stats.written, stats.skipped) == (8, 4 if server_finished_it else 3)


async def test_one_source_document_fans_out_to_several_targets(tmp_path: Path) -> None:
    def twice(document: Document) -> Routed:
        return [("left", document), ("right", document)]  # the same dict for both targets

    source = MemorySource({"r0": documents(5)})
    sink = MemorySink()
    transfer = job(tmp_path, source, sink)
    stats = await run_transfer(Transfer(**{**transfer.__dict__, "transform": Transform("twice", "1", twice,
                                                                                       ("left", "right"))}))
    assert sorted(sink.written) == sorted((t, f"d{i}") for t in ("left", "right") for i in range(5))
    assert stats.written == 10


async def test_rejected_documents_are_dead_lettered_and_counted_apart(tmp_path: Path) -> None:
    source = MemorySource({"r0": [*documents(3), {"id": "bad", "pk": "bad", "refuse": True}]})
    sink = MemorySink()
    with pytest.raises(DeadLettered):
        await run_transfer(job(tmp_path, source, sink))
    assert len(sink.written) == 3
    allowed = Transfer(**{**job(tmp_path, source, MemorySink()).__dict__, "allow_dead_letters": True})
    stats = await run_transfer(allowed)  # the finished run again: nothing left to do
    assert (stats.written, stats.dead_lettered, stats.processed) == (3, 1, 4)
    assert (tmp_path / "dead.jsonl").read_text().count("\n") == 1


def with_transform(transfer: Transfer, apply: Callable[[Document], Routed], targets: tuple[str, ...] = ("",)) -> Transfer:
    return Transfer(**{**transfer.__dict__, "transform": Transform("test", "1", apply, targets)})


async def test_a_bug_in_a_transform_ends_the_run_instead_of_dead_lettering_every_document(tmp_path: Path) -> None:
    def buggy(document: Document) -> Routed:
        return [("", {**document, "ratio": 1 / 0 if document["n"] == 2 else 1})]

    def broken(document: Document) -> Routed:
        raise ValueError("a bug, not a bad document")

    sink = MemorySink()
    with pytest.raises(AsyncmigError, match="transform test failed on document 'd2'") as caught:
        await run_transfer(with_transform(job(tmp_path / "a", MemorySource({"r0": documents(4)}), sink), buggy))
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
    with pytest.raises(AsyncmigError, match="a bug, not a bad document"):
        await run_transfer(with_transform(job(tmp_path / "b", MemorySource({"r0": documents(4)}), sink), broken))
    assert not (tmp_path / "b" / "dead.jsonl").exists() or not (tmp_path / "b" / "dead.jsonl").read_text()


async def test_documents_a_transform_rejects_or_that_hold_nan_are_dead_lettered(tmp_path: Path) -> None:
    def picky(document: Document) -> Routed:
        if document["n"] == 1:
            raise Rejected("no ones")
        return [("", {**document, "score": float("nan") if document["n"] == 2 else 0.5})]

    sink = MemorySink()
    allowed = Transfer(**{**with_transform(job(tmp_path, MemorySource({"r0": documents(4)}), sink), picky).__dict__,
                          "allow_dead_letters": True})
    stats = await run_transfer(allowed)
    assert sorted(i for _, i in sink.written) == ["d0", "d3"]
    assert stats.dead_lettered == 2


async def test_an_identity_copy_of_an_unchecked_source_dead_letters_nan(tmp_path: Path) -> None:
    """Sinks no longer look for NaN/Infinity: the pipeline checks every document a source did not
    decode from JSON itself (here an in-memory source), even when nothing transforms it."""
    docs = documents(3)
    docs[1]["meta"] = {"score": [0.5, float("inf")]}
    sink = MemorySink()
    allowed = Transfer(**{**job(tmp_path, MemorySource({"r0": docs}), sink).__dict__, "allow_dead_letters": True})
    stats = await run_transfer(allowed)
    assert sorted(i for _, i in sink.written) == ["d0", "d2"]
    assert stats.dead_lettered == 1
    (record,) = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert "inf at /meta/score/1 is NaN or Infinity" in record["reason"]
    # JSON has no Infinity: the dead-letter file keeps the document with it spelled as text.
    assert record["document"]["meta"] == {"score": [0.5, "Infinity"]} and record["non_finite_numbers_as_text"]


async def test_a_transform_routing_to_a_target_it_did_not_declare_is_a_clear_error(tmp_path: Path) -> None:
    def stray(document: Document) -> Routed:
        return [("users", document), ("userz", document)]

    sink = MemorySink()
    with pytest.raises(UsageError, match="'userz'.*declares only 'users'"):
        await run_transfer(with_transform(job(tmp_path, MemorySource({"r0": documents(2)}), sink), stray, ("users",)))
    assert sink.written == []
