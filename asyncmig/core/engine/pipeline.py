"""The streaming engine: feed-range producers, transform, per-partition writer lanes, checkpoints.

    producers (one per source partition, ``read_concurrency`` at once)
        read page -> transform -> sink.plan() -> register page with the CommitTracker
        -> send units into the lane of their target physical range      (bounded streams)
    lanes (one per target physical range, ``lane_workers`` writers each; the governor's AIMD
        gate decides how many actually run) -> sink.write(unit) -> tracker.complete()
    monitor: progress every half second, an atomic checkpoint every ``checkpoint_interval``

Memory: at most ``max_in_flight`` source documents are held at once (a reservation is taken
before each page is read and returned when the page is fully written), whatever the source size.

Commit rule: a range's position is saved only once every document read before it is durably
written or dead-lettered (:class:`~asyncmig.core.engine.checkpoint.CommitTracker`). Saving takes the
positions first, then makes the sink and the dead-letter file durable, then writes the file, so
a checkpoint never covers a document that is not on disk.

Replays: documents written from pages past the committed position are listed in the checkpoint
(``written_ahead``) and, between saves, in the completion journal; a resume skips them. A
document's key (:func:`~asyncmig.core.engine.checkpoint.resume_key`) names the source document
(``_rid``) and its version (``_etag``), so a document changed at the source since is copied again. What a killed run writes twice is therefore only what was in flight,
and upserts of the same bodies make even that harmless.

Live sources: versions of one document are written in version order
(:mod:`~asyncmig.core.engine.ordering`); deletes a source reports go out as delete units. With
``follow`` a range that is caught up is polled again (at most every ``poll_interval`` seconds) until
the stop request, which then ends the run normally once the writes in flight are done. The end of a
range's first pass (the bulk pass) is recorded, with an independent count of the range's documents
when the source can give one (:attr:`RangeState.bulk_read`, :attr:`RangeState.bulk_count`).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from asyncmig.core import jsoncodec
from asyncmig.core.engine.checkpoint import Checkpoint, CommitTracker, RangeState, resume_key, save_checkpoint
from asyncmig.core.engine.deadletter import DeadLetterFile
from asyncmig.core.engine.journal import Journal, discard_all, replay
from asyncmig.core.engine.ordering import VersionGate, document_version
from asyncmig.core.engine.sink import CheckingSink, DeletingSink, Rejection, Sink, WriteOutcome, WriteUnit
from asyncmig.core.engine.source import CountsPartitions, Source, SourcePage
from asyncmig.core.engine.transform import IDENTITY, Document, Rejected, Routed, Transform
from asyncmig.core.jsoncodec import NonFiniteNumber
from asyncmig.errors import AsyncmigError, Interrupted, UsageError, raise_first
from asyncmig.redaction import redact

log = logging.getLogger(__name__)

_Work = tuple[str, int, WriteUnit]  # (source range key, page id, unit)
_Gated = tuple[tuple[str, Any, str, Any], int]  # (target, target id, source pk, source id), version


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    read_concurrency: int = 8
    page_size: int = 100  # the SDK decodes a page on the event loop: small pages, short stalls
    max_in_flight: int = 2500
    lane_workers: int = 32
    lane_buffer: int = 16
    checkpoint_interval: float = 2.0
    grace_period: float = 10.0
    catch_up: bool = False  # continue finished ranges from their saved change-feed positions
    follow: bool = False  # keep applying the source's changes until the stop request
    poll_interval: float = 2.0  # follow: most seconds between polls of a caught-up range


@dataclass(slots=True)
class RunStatistics:
    """What a run did, including what the earlier runs of the same checkpoint did.

    ``written`` counts documents the sink acknowledged (a killed run's writes are recovered from
    its journal), ``dead_lettered`` those rejected into the dead-letter file; ``processed`` (their
    sum) is what the progress bar shows. ``skipped`` counts, for this run only, the documents an
    earlier run had already written and this one did not write again (they are in ``written``).
    """

    read: int = 0
    written: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    processed: int = 0
    ru: float = 0.0
    requests: int = 0
    throttled: int = 0
    retries: int = 0
    elapsed: float = 0.0
    ranges: int = 0
    ranges_done: int = 0
    peak_in_flight: int = 0
    interrupted: bool = False
    deleted: int = 0  # deletes applied (a document already gone counts)
    superseded: int = 0  # versions dropped because a newer version of the document was in flight
    # range -> how far reading is behind the source: {"documents": changes left or None, "seconds": ...}
    lag: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    # range -> {"read": documents its bulk pass read, "count": independent count at its end}
    bulk: dict[str, dict[str, int | None]] = field(default_factory=dict)


class InFlight:
    """A counting bound on source documents held in memory, with the peak for the record."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0
        self._changed = anyio.Event()

    async def acquire(self, n: int) -> None:
        n = min(n, self.limit)
        while self.held + n > self.limit:
            await self._changed.wait()
        self.held += n
        self.peak = max(self.peak, self.held)

    def release(self, n: int) -> None:
        self.held -= n
        self._changed.set()
        self._changed = anyio.Event()

    async def drained(self) -> None:
        """Return once nothing is held (every page read has been written)."""
        while self.held:
            await self._changed.wait()


class Pipeline:
    def __init__(
        self,
        source: Source,
        sink: Sink,
        checkpoint: Checkpoint,
        checkpoint_path: Path,
        dead_letters: DeadLetterFile,
        *,
        transform: Transform = IDENTITY,
        options: PipelineOptions = PipelineOptions(),
        on_progress: Callable[[RunStatistics], None] | None = None,
        on_commit: Callable[[Checkpoint], Awaitable[None]] | None = None,
    ) -> None:
        """``on_commit`` runs after every checkpoint save, e.g. to store range progress in leases
        (an error it raises, such as a lost lease, ends the run)."""
        self.source = source
        self.on_commit = on_commit
        self.sink = sink
        self.checkpoint = checkpoint
        self.checkpoint_path = checkpoint_path
        self.dead_letters = dead_letters
        self.transform = transform
        self.options = options
        self.on_progress = on_progress
        self.in_flight = InFlight(options.max_in_flight)
        self.trackers: dict[str, CommitTracker] = {}
        self._pages: dict[tuple[str, int], list[int]] = {}  # [units left, source documents held]
        self._registered: dict[str, int] = {}  # range -> pages registered so far
        self._ahead: dict[str, dict[int, list[str]]] = {}  # range -> page -> keys written, uncommitted
        self._skip: dict[str, set[str]] = {}  # range -> keys a previous run already wrote
        self._unsure: dict[str, set[str]] = {}  # range -> keys a killed run sent but never saw written
        self._sending: dict[int, tuple[str, list[str]]] = {}  # id(unit in flight) -> (range, its keys)
        self._written = 0  # documents the sink acknowledged in this run
        self._skipped = 0  # documents an earlier run wrote that this run did not write again
        self._recovered = 0  # writes of a killed run that only its journal recorded
        self._gate = VersionGate()
        self._gated: dict[int, _Gated] = {}  # id(document in flight) -> what it holds in the gate
        self._journal: Journal | None = None
        self._lanes: dict[str, MemoryObjectSendStream[_Work]] = {}
        self._writers: TaskGroup | None = None
        self._producers: anyio.CancelScope | None = None
        self._base = replace(checkpoint.totals)  # a copy: _save writes into checkpoint.totals
        self._started = time.monotonic()
        self.stats = RunStatistics()

    # -- run ---------------------------------------------------------------------------------
    async def run(self, stop: anyio.Event | None = None) -> RunStatistics:
        """Copy everything not yet committed; raises :class:`Interrupted` after a stop request.

        :raises AsyncmigError: the first error that ended the run (the checkpoint is saved first).
        """
        await self.source.open()
        if not self.checkpoint.ranges:
            discard_all(self.checkpoint_path)
            partitions = await self.source.partitions()
            self.checkpoint.ranges = {key: RangeState(feed_range=fr) for key, fr in partitions.items()}
            save_checkpoint(self.checkpoint_path, self.checkpoint)
        await self.sink.open(self.checkpoint.sink_state)
        if self.options.catch_up or self.options.follow:  # a finished range's position is its latest point
            for state in self.checkpoint.ranges.values():
                state.bulk_done = state.bulk_done or state.done  # finished before bulk passes were recorded
                state.done = False
        pending = [k for k, s in self.checkpoint.ranges.items() if not s.done]
        durable = self.sink.durable_writes
        replayed = replay(self.checkpoint_path, self.checkpoint.journal) if durable else None
        for key in pending:
            state = self.checkpoint.ranges[key]
            self.trackers[key] = CommitTracker(state.position, committed=state.read)
            written = replayed.written.get(key, set()) if replayed else set()
            journaled = written - set(state.written_ahead)
            self._recovered += len(journaled)
            self._skip[key] = set(state.written_ahead) | journaled
            self._unsure[key] = (replayed.sent.get(key, set()) if replayed else set()) - self._skip[key]
            self._ahead[key] = {}
            self._registered[key] = 0
        self._journal = Journal(self.checkpoint_path, self.checkpoint.journal, enabled=durable)
        try:
            try:
                await self._run(pending, stop)
            except BaseExceptionGroup as group:
                raise_first(group)
        finally:
            with anyio.CancelScope(shield=True):
                await self._save()
            self._journal.close()
        if self.stats.interrupted:
            raise Interrupted("interrupted; the checkpoint holds every document written so far")
        return self.stats

    async def _run(self, pending: list[str], stop: anyio.Event | None) -> None:
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._monitor)
            if stop is not None:
                outer.start_soon(self._watch, stop)
            async with anyio.create_task_group() as writers:
                self._writers = writers
                async with anyio.create_task_group() as producers:
                    self._producers = producers.cancel_scope
                    limiter = anyio.CapacityLimiter(self.options.read_concurrency)
                    for key in pending:
                        producers.start_soon(self._produce, key, limiter)
                for send in self._lanes.values():
                    send.close()
            outer.cancel_scope.cancel()

    async def _watch(self, stop: anyio.Event) -> None:
        """On a stop request: stop reading, give in-flight writes a grace period, then cancel."""
        await stop.wait()
        self.stats.interrupted = True
        if self._producers is not None:
            self._producers.cancel()
        drained = False
        with anyio.move_on_after(self.options.grace_period):
            await self.in_flight.drained()
            drained = True
        # Following, a stop request is the normal end once every change read is written.
        self.stats.interrupted = not (self.options.follow and drained)
        if self._writers is not None:
            self._writers.cancel_scope.cancel()

    async def _monitor(self) -> None:
        last_save = time.monotonic()
        while True:
            await anyio.sleep(min(0.5, self.options.checkpoint_interval))
            self._refresh()
            if self.on_progress:
                self.on_progress(self.stats)
            if time.monotonic() - last_save >= self.options.checkpoint_interval:
                await self._save()
                last_save = time.monotonic()

    # -- producing ---------------------------------------------------------------------------
    async def _produce(self, key: str, limiter: anyio.CapacityLimiter) -> None:
        state = self.checkpoint.ranges[key]
        tracker = self.trackers[key]
        position = state.position
        idle_polls = 0
        while True:
            async with limiter:  # per pass: a following range must not keep others from their bulk pass
                position, changed = await self._read_pass(key, tracker, position)
            if not self.options.follow:
                break
            idle_polls = 0 if changed else idle_polls + 1
            await anyio.sleep(min(self.options.poll_interval, 0.05 * 2 ** min(idle_polls, 10)))
        tracker.finish()

    async def _read_pass(self, key: str, tracker: CommitTracker, position: str | None) -> tuple[str | None, bool]:
        """Read the range from ``position`` until it is caught up; returns the last position and
        whether any change was read."""
        state = self.checkpoint.ranges[key]
        pages = self.source.pages(state.feed_range, position).__aiter__()
        reserve = self.options.page_size
        changed = False
        while True:
            await self.in_flight.acquire(reserve)
            try:
                page = await pages.__anext__()
            except BaseException as exc:
                self.in_flight.release(reserve)
                if isinstance(exc, StopAsyncIteration):
                    return position, changed
                raise
            held = min(len(page.documents) + len(page.deleted), reserve)
            self.in_flight.release(reserve - held)
            changed = changed or bool(page.documents or page.deleted)
            position = page.position
            self._note_lag(key, page)
            await self._dispatch(key, tracker, page, held)
            if page.caught_up and not state.bulk_done:
                await self._bulk_pass_done(key, tracker)

    def _note_lag(self, key: str, page: SourcePage) -> None:
        if page.caught_up:
            self.stats.lag[key] = {"documents": 0, "seconds": 0.0}
            return
        stamps = [d["_ts"] for d in page.documents if isinstance(d, dict) and isinstance(d.get("_ts"), int)]
        seconds = round(max(0.0, time.time() - max(stamps)), 1) if stamps else None
        self.stats.lag[key] = {"documents": page.behind, "seconds": seconds}

    async def _bulk_pass_done(self, key: str, tracker: CommitTracker) -> None:
        """The range's first pass is complete: note what it read and count the range independently."""
        state = self.checkpoint.ranges[key]
        state.bulk_done = True
        state.bulk_read = tracker.read
        if isinstance(self.source, CountsPartitions):
            state.bulk_count = await self.source.count_partition(state.feed_range)

    async def _dispatch(self, key: str, tracker: CommitTracker, page: SourcePage, held: int) -> None:
        rejected: list[tuple[Document, Rejection]] = []
        routed: dict[str, list[tuple[Document, str]]] = defaultdict(list)
        removed: dict[str, list[tuple[Document, str]]] = defaultdict(list)
        skipped: list[str] = []
        superseded = 0
        changes = [(doc, False) for doc in page.documents] + [(doc, True) for doc in page.deleted]
        try:
            admitted = await self._admitted(key, changes, rejected, page.numbers_checked)
        except BaseException:
            self.in_flight.release(held)  # a stop before the page was registered: it is read again later
            raise
        for source_doc, out, target, deleting, gated in admitted:
            if out is None:
                superseded += 1
                continue
            partition_key = None if source_doc.get("_rid") else self.source.partition_key(source_doc)
            doc_key = resume_key(target, source_doc, out, partition_key)
            if deleting:  # the deleted version's _etag also names its last upsert: keep the two apart
                doc_key += "\x1fdeleted"
            if doc_key in self._skip[key]:
                skipped.append(doc_key)  # written by a run that was killed before its checkpoint
                if gated is not None:
                    self._gate.release(*gated)
                continue
            if gated is not None:
                self._gated[id(out)] = gated
            (removed if deleting else routed)[target].append((out, doc_key))
        units: list[WriteUnit] = []
        for deleting, by_target in ((False, routed), (True, removed)):
            for target, pairs in by_target.items():
                outs = [out for out, _ in pairs]
                if not deleting:
                    planned, refused = self.sink.plan(target, outs)
                elif isinstance(self.sink, DeletingSink):
                    planned, refused = self.sink.plan_deletes(target, outs)
                else:
                    raise TypeError(f"{self.sink.description} cannot delete; the source reported deletes")
                # Per target, so one dict routed to two targets keeps a key for each.
                keys = {id(out): doc_key for out, doc_key in pairs}
                for unit in planned:
                    unit.keys = [keys[id(d)] for d in unit.documents]
                units.extend(planned)
                rejected.extend((r.document, r) for r in refused)
        for source_doc, rejection in rejected:
            self._dead_letter(key, source_doc, rejection)
            self._ungate(source_doc)
        self._skipped += len(skipped)
        self.stats.superseded += superseded
        count = sum(len(u.documents) for u in units) + len(rejected) + len(skipped) + superseded
        page_id = tracker.register(page.position, count)
        self._registered[key] = page_id + 1
        if skipped:
            self._ahead[key][page_id] = skipped
        tracker.complete(page_id, len(rejected) + len(skipped) + superseded)
        if not units:
            self.in_flight.release(held)
            return
        self._pages[(key, page_id)] = [len(units), held]
        sent = 0
        try:
            for unit in units:
                await self._lane(unit.lane).send((key, page_id, unit))
                sent += 1
        finally:
            if sent < len(units):  # a stop: the page stays uncommitted and is read again later
                for unit in units[sent:]:
                    for doc in unit.documents:
                        self._ungate(doc)
                self._units_done(key, page_id, len(units) - sent)

    async def _admitted(
        self, key: str, changes: list[tuple[Document, bool]], rejected: list[tuple[Document, Rejection]],
        numbers_checked: bool,
    ) -> list[tuple[Document, Document | None, str, bool, _Gated | None]]:
        """Transform a page's changes and pass them through the version gate, in version order.

        Returns (source document, output or None when superseded, target, is a delete, gate hold).
        Only the newest version of a document within the page is kept (an older one in the same
        page would wait for itself); rejected transforms go to ``rejected``.
        """
        newest: dict[tuple[str, Any, str, Any], tuple[int, int]] = {}
        transformed: list[tuple[Document, Document, str, bool, tuple[str, Any, str, Any], int | None]] = []
        for source_doc, deleting in changes:
            try:
                outputs = self._apply(source_doc, numbers_checked)
            except Rejected as exc:  # this document's fault: dead-letter it
                what = "a deleted document's last version" if deleting else self.transform.name
                rejected.append((source_doc, Rejection(source_doc, f"transform {what}: {exc.reason}")))
                continue
            except NonFiniteNumber as exc:  # made by the transform, or given by an unchecked source
                rejected.append((source_doc, Rejection(source_doc, str(exc), 400)))
                continue
            version = document_version(source_doc)
            source_id = source_doc.get("id") if isinstance(source_doc, dict) else None
            # Which source document: by partition key and id (a delete carries no _rid on Cosmos DB),
            # or by _rid where the source knows no partition key.
            partition_key = self.source.partition_key(source_doc)
            source_pk = jsoncodec.dumps(partition_key).decode() if partition_key is not None else \
                str(source_doc.get("_rid"))
            for target, out in outputs:
                doc = (target, out.get("id"), source_pk, source_id)
                index = len(transformed)
                transformed.append((source_doc, out, target, deleting, doc, version))
                if version is not None and (doc not in newest or newest[doc][0] < version):
                    newest[doc] = (version, index)
        admitted: list[tuple[Document, Document | None, str, bool, _Gated | None]] = []
        try:
            for index, (source_doc, out, target, deleting, doc, version) in enumerate(transformed):
                if version is None:
                    admitted.append((source_doc, out, target, deleting, None))
                elif newest[doc][1] != index or not await self._gate.admit(doc, version):
                    admitted.append((source_doc, None, target, deleting, None))
                else:
                    admitted.append((source_doc, out, target, deleting, (doc, version)))
        except BaseException:  # a stop while waiting for an older version: hold nothing
            for *_, gated in admitted:
                if gated is not None:
                    self._gate.release(*gated)
            raise
        return admitted

    def _ungate(self, document: Document) -> None:
        gated = self._gated.pop(id(document), None)
        if gated is not None:
            self._gate.release(*gated)

    def _apply(self, doc: Document, numbers_checked: bool) -> Routed:
        """The transform's output for ``doc``, checked: declared targets, finite numbers (unless
        ``numbers_checked`` and the transform is the identity: nothing can have made NaN since).

        Every document the sink is given has passed here: sinks do not look for NaN/Infinity again.

        :raises Rejected, NonFiniteNumber: the document cannot be copied (it is dead-lettered).
        :raises UsageError: the transform routed to a target it did not declare.
        :raises AsyncmigError: the transform failed in any other way: a bug, which must not be
            mistaken for a bad document and dead-letter the whole source.
        """
        transform = self.transform
        try:
            outputs = transform.apply(doc)
        except (Rejected, NonFiniteNumber):
            raise
        except Exception as exc:
            doc_id = doc.get("id") if isinstance(doc, dict) else None
            raise AsyncmigError(
                f"transform {transform.name} failed on document {doc_id!r}: {type(exc).__name__}: {exc}; "
                "fix the transform and re-run (the checkpoint is kept)"
            ) from exc
        for target, out in outputs:
            if target not in transform.targets:
                declared = ", ".join(repr(t) for t in transform.targets)
                raise UsageError(
                    f"transform {transform.name} routed document {out.get('id')!r} to target {target!r}, but "
                    f"declares only {declared}; add it to the transform's targets"
                )
            if transform is not IDENTITY or not numbers_checked:
                jsoncodec.ensure_finite(out)
        return outputs

    def _dead_letter(self, key: str, document: Document, rejection: Rejection, target: str | None = None) -> None:
        self.dead_letters.add(
            document, container=self.source.description, range_key=key,
            partition_key=self.source.partition_key(document),
            reason=rejection.reason, status=rejection.status, target=target,
        )

    # -- writing -----------------------------------------------------------------------------
    def _lane(self, name: str) -> MemoryObjectSendStream[_Work]:
        send = self._lanes.get(name)
        if send is None:
            assert self._writers is not None
            send, receive = anyio.create_memory_object_stream[_Work](self.options.lane_buffer)
            self._lanes[name] = send
            with receive:
                for _ in range(self.options.lane_workers):
                    self._writers.start_soon(self._write_lane, receive.clone())
        return send

    async def _write_lane(self, receive: MemoryObjectReceiveStream[_Work]) -> None:
        async with receive:
            async for work in receive:
                await self._write(*work)
                del work  # an idle writer must not keep its last unit (documents and bytes) alive

    async def _write(self, key: str, page_id: int, unit: WriteUnit) -> None:
        assert self._journal is not None
        try:
            if await self._already_stored(key, unit):
                outcome, recovered = WriteOutcome(written=len(unit.documents)), True
            else:
                self._journal.record_sent(key, unit.keys)
                self._sending[id(unit)] = (key, unit.keys)
                outcome, recovered = await self.sink.write(unit), False
        finally:
            for doc in unit.documents:
                self._ungate(doc)
        if unit.delete:
            self.stats.deleted += len(unit.documents) - len(outcome.rejected)
        refused = {id(r.document) for r in outcome.rejected}
        for rejection in outcome.rejected:
            self._dead_letter(key, rejection.document, rejection, unit.target)
        written = [k for d, k in zip(unit.documents, unit.keys, strict=True) if id(d) not in refused]
        if recovered:  # the killed run's write, which the server finished after it died
            self._recovered += len(written)
            self._skipped += len(written)
        else:
            self._written += len(written)
        self._journal.record(key, written)
        self._sending.pop(id(unit), None)
        self._ahead[key].setdefault(page_id, []).extend(written)
        self.trackers[key].complete(page_id, len(unit.documents))
        self._units_done(key, page_id, 1)

    async def _already_stored(self, key: str, unit: WriteUnit) -> bool:
        """Whether a unit a killed run had in flight (sent, never seen written) is already in the
        target as this write would leave it: then it is not written again. Only whole units are
        checked (a resumed run cuts the same pages into the same units); a check that fails only
        means writing them again, which is always safe."""
        unsure = self._unsure.get(key)
        if not unsure or unit.delete or not isinstance(self.sink, CheckingSink):
            return False
        sent = [k for k in unit.keys if k in unsure]
        unsure.difference_update(unit.keys)
        if len(sent) < len(unit.keys):
            return False
        try:
            stored = await self.sink.stored(unit.target, unit.documents)
        except Exception as exc:  # noqa: BLE001 - a check only: the documents are written again instead
            log.warning("could not check %d documents a killed run had in flight (%s): writing them again",
                        len(unit.documents), redact(str(exc)))
            return False
        return all(stored)

    def _units_done(self, key: str, page_id: int, n: int) -> None:
        """``n`` units of a page are written (or will never be sent); the last one frees its documents."""
        entry = self._pages[(key, page_id)]
        entry[0] -= n
        if entry[0] == 0:
            del self._pages[(key, page_id)]
            self.in_flight.release(entry[1])

    # -- checkpoints -------------------------------------------------------------------------
    def _refresh(self) -> None:
        stats = self.stats
        sink = self.sink.stats
        stats.read = sum(t.read for t in self.trackers.values()) + self._done_counts()
        stats.processed = sum(t.written for t in self.trackers.values()) + self._done_counts()
        stats.written = self._base.written + self._recovered + self._written
        stats.skipped = self._skipped
        stats.dead_lettered = self.dead_letters.count
        stats.ru = self._base.ru + sink.ru + self.source.read_ru
        stats.requests = sink.requests
        stats.throttled = self._base.throttled + sink.throttled
        stats.retries = self._base.retries + sink.retries
        stats.elapsed = time.monotonic() - self._started
        stats.ranges = len(self.checkpoint.ranges)
        stats.ranges_done = sum(
            1 for k, s in self.checkpoint.ranges.items() if s.done or (k in self.trackers and self.trackers[k].done)
        )
        stats.peak_in_flight = self.in_flight.peak
        stats.bulk = {k: {"read": s.bulk_read, "count": s.bulk_count}
                      for k, s in self.checkpoint.ranges.items() if s.bulk_done}

    def _done_counts(self) -> int:
        return sum(s.read for k, s in self.checkpoint.ranges.items() if k not in self.trackers)

    def _first_pending(self, key: str) -> int:
        """Id of the range's first page not yet committed (pages before it are covered by the position)."""
        open_pages = [page for (k, page) in self._pages if k == key]
        return min(open_pages) if open_pages else self._registered[key]

    async def _save(self) -> None:
        """Positions first, then durability, then the file: a checkpoint never runs ahead of the data."""
        positions = {k: (t.committed_position, t.committed, t.done) for k, t in self.trackers.items()}
        ahead: dict[str, list[str]] = {}
        for key in self.trackers:
            first = self._first_pending(key)
            pages = self._ahead[key]
            for page in [p for p in pages if p < first]:
                del pages[page]  # committed: the position covers these now
            ahead[key] = [k for keys in pages.values() for k in keys]
        assert self._journal is not None
        generation = self._journal.rotate()
        for key, keys in self._sending.values():  # still in flight: the new generation must know
            self._journal.record_sent(key, keys)
        self.checkpoint.journal = generation
        self.checkpoint.sink_state = await self.sink.flush()
        self.dead_letters.sync()
        for key, (position, committed, done) in positions.items():
            state = self.checkpoint.ranges[key]
            state.position, state.read, state.written, state.done = position, committed, committed, done
            state.written_ahead = [] if done else ahead[key]
        self._refresh()
        totals = self.checkpoint.totals
        totals.read = sum(s.read for s in self.checkpoint.ranges.values())
        totals.written = self.stats.written
        totals.dead_lettered = self.stats.dead_lettered
        totals.ru, totals.throttled, totals.retries = self.stats.ru, self.stats.throttled, self.stats.retries
        save_checkpoint(self.checkpoint_path, self.checkpoint)
        self._journal.discard_previous()
        if self.on_commit is not None:
            await self.on_commit(self.checkpoint)

