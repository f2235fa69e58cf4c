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
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from asyncmig.core import jsoncodec
from asyncmig.core.engine.checkpoint import Checkpoint, CommitTracker, RangeState, resume_key, save_checkpoint
from asyncmig.core.engine.deadletter import DeadLetterFile
from asyncmig.core.engine.journal import Journal, discard_all, replay
from asyncmig.core.engine.sink import Rejection, Sink, WriteUnit
from asyncmig.core.engine.source import Source
from asyncmig.core.engine.transform import IDENTITY, Document, Rejected, Routed, Transform
from asyncmig.core.jsoncodec import NonFiniteNumber
from asyncmig.errors import AsyncmigError, Interrupted, UsageError, raise_first

_Work = tuple[str, int, WriteUnit]  # (source range key, page id, unit)


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
        self._written = 0  # documents the sink acknowledged in this run
        self._skipped = 0  # documents an earlier run wrote that this run did not write again
        self._recovered = 0  # writes of a killed run that only its journal recorded
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
        if self.options.catch_up:  # a finished range's position is its change feed's latest point
            for state in self.checkpoint.ranges.values():
                state.done = False
        pending = [k for k, s in self.checkpoint.ranges.items() if not s.done]
        durable = self.sink.durable_writes
        replayed = replay(self.checkpoint_path, self.checkpoint.journal) if durable else {}
        for key in pending:
            state = self.checkpoint.ranges[key]
            self.trackers[key] = CommitTracker(state.position, committed=state.read)
            journaled = replayed.get(key, set()) - set(state.written_ahead)
            self._recovered += len(journaled)
            self._skip[key] = set(state.written_ahead) | journaled
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
        with anyio.move_on_after(self.options.grace_period):
            await self.in_flight.drained()
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
        async with limiter:
            state = self.checkpoint.ranges[key]
            tracker = self.trackers[key]
            pages = self.source.pages(state.feed_range, state.position).__aiter__()
            reserve = self.options.page_size
            while True:
                await self.in_flight.acquire(reserve)
                try:
                    page = await pages.__anext__()
                except BaseException as exc:
                    self.in_flight.release(reserve)
                    if isinstance(exc, StopAsyncIteration):
                        break
                    raise
                held = min(len(page.documents), reserve)
                self.in_flight.release(reserve - held)
                await self._dispatch(key, tracker, page.documents, page.position, held)
        tracker.finish()

    async def _dispatch(
        self, key: str, tracker: CommitTracker, documents: list[Document], position: str | None, held: int
    ) -> None:
        rejected: list[tuple[Document, Rejection]] = []
        routed: dict[str, list[tuple[Document, str]]] = defaultdict(list)
        skipped: list[str] = []
        skip = self._skip[key]
        for doc in documents:
            try:
                outputs = self._apply(doc)
            except (Rejected, NonFiniteNumber) as exc:  # this document's fault: dead-letter it
                reason = exc.reason if isinstance(exc, Rejected) else str(exc)
                rejected.append((doc, Rejection(doc, f"transform {self.transform.name}: {reason}")))
                continue
            partition_key = None if doc.get("_rid") else self.source.partition_key(doc)
            for target, out in outputs:
                doc_key = resume_key(target, doc, out, partition_key)
                if doc_key in skip:
                    skipped.append(doc_key)  # written by a run that was killed before its checkpoint
                    continue
                routed[target].append((out, doc_key))
        units: list[WriteUnit] = []
        for target, pairs in routed.items():
            planned, refused = self.sink.plan(target, [out for out, _ in pairs])
            # Per target, so one dict routed to two targets keeps a key for each.
            keys = {id(out): doc_key for out, doc_key in pairs}
            for unit in planned:
                unit.keys = [keys[id(d)] for d in unit.documents]
            units.extend(planned)
            rejected.extend((r.document, r) for r in refused)
        for source_doc, rejection in rejected:
            self._dead_letter(key, source_doc, rejection)
        self._skipped += len(skipped)
        count = sum(len(u.documents) for u in units) + len(rejected) + len(skipped)
        page_id = tracker.register(position, count)
        self._registered[key] = page_id + 1
        if skipped:
            self._ahead[key][page_id] = skipped
        tracker.complete(page_id, len(rejected) + len(skipped))
        if not units:
            self.in_flight.release(held)
            return
        self._pages[(key, page_id)] = [len(units), held]
        for unit in units:
            await self._lane(unit.lane).send((key, page_id, unit))

    def _apply(self, doc: Document) -> Routed:
        """The transform's output for ``doc``, checked: declared targets, finite numbers.

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
            if transform is not IDENTITY:
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
        outcome = await self.sink.write(unit)
        refused = {id(r.document) for r in outcome.rejected}
        for rejection in outcome.rejected:
            self._dead_letter(key, rejection.document, rejection, unit.target)
        written = [k for d, k in zip(unit.documents, unit.keys, strict=True) if id(d) not in refused]
        self._written += len(written)
        assert self._journal is not None
        self._journal.record(key, written)
        self._ahead[key].setdefault(page_id, []).extend(written)
        self.trackers[key].complete(page_id, len(unit.documents))
        entry = self._pages[(key, page_id)]
        entry[0] -= 1
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

