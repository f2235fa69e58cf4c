"""One worker of a shared copy: take leases on source feed ranges, copy them, commit progress to the leases.

A worker runs the ordinary streaming pipeline; only where its progress lives changes. Instead of
a checkpoint file that one process owns, each range's progress is committed to the range's lease
(:mod:`asyncmig.core.cosmos.leases`) after every local checkpoint, fenced by the lease's etag. A
local file still holds the completion journal between commits; a worker that takes over a range
resumes from the lease alone, so it rewrites at most what the previous owner had in flight.

The loop: list the copy's leases; take those that are free, expired or already ours (at most
``max_leases`` at a time, so that workers starting together share the ranges); copy them to the
end; repeat until every range is done. While other workers hold every unfinished range, wait and
look again: a lease whose owner died expires and is taken over.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import anyio

from asyncmig.copy import CopySpec, copy_identity, open_containers
from asyncmig.core.cosmos.lease_defaults import DEFAULT_LEASE_CONTAINER, DEFAULT_TTL_SECONDS
from asyncmig.core.cosmos.leases import Lease, LeaseStore, copy_id
from asyncmig.core.cosmos.sink import CosmosSink
from asyncmig.core.cosmos.source import CosmosSource
from asyncmig.core.engine.checkpoint import Checkpoint, RangeState
from asyncmig.core.engine.deadletter import DeadLetterFile
from asyncmig.core.engine.governor import Governor
from asyncmig.core.engine.pipeline import Pipeline, RunStatistics
from asyncmig.core.engine.shared_budget import Bank, SharedBudget
from asyncmig.errors import Interrupted, LeaseLost, raise_first


@dataclass(frozen=True)
class LeaseOptions:
    """How a worker shares a copy: where the leases live, how long they last, how many to hold."""

    container: str = DEFAULT_LEASE_CONTAINER
    ttl_seconds: float = DEFAULT_TTL_SECONDS
    max_leases: int | None = None  # None: a fair share when ``workers`` is known, else as many as are free
    workers: int | None = None  # how many workers share the copy (the driver knows; plain processes may not)
    poll_seconds: float = 1.0


@dataclass
class WorkerProgress:
    """What one worker has done so far (documents it wrote, not the ranges' committed totals)."""

    owner: str
    read: int = 0
    written: int = 0
    dead_lettered: int = 0
    ru: float = 0.0
    requests: int = 0
    throttled: int = 0
    ranges_held: int = 0
    ranges_finished: int = 0
    leases_taken_over: int = 0
    leases_lost: int = 0
    cpu_s: float = 0.0  # CPU time of the worker's process while it ran (in-process engine: the whole process)
    done: bool = False

    def add(self, stats: RunStatistics, already_committed: int) -> None:
        """Add one batch's statistics; ``already_committed`` documents were covered before it began."""
        self.read += stats.read - already_committed
        self.written += stats.written  # acknowledged by the sink in this batch (its checkpoint starts at 0)
        self.dead_lettered += stats.dead_lettered
        self.ru += stats.ru
        self.requests += stats.requests
        self.throttled += stats.throttled


class LeasedWorker:
    """Copies the ranges it can lease until the whole copy is done (or it is stopped or fenced)."""

    def __init__(self, spec: CopySpec, owner: str, options: LeaseOptions | None = None, *,
                 bank: Bank | None = None, on_commit: Callable[[WorkerProgress], None] | None = None) -> None:
        """``on_commit`` is told the worker's progress after every commit to its leases."""
        self.spec = spec
        self.owner = owner
        self.options = options or LeaseOptions()
        self.bank = bank
        self.on_commit = on_commit
        self.progress = WorkerProgress(owner)
        self._current: tuple[Pipeline, int] | None = None
        self._cpu_started: float | None = None

    def snapshot(self) -> WorkerProgress:
        """Progress including the batch in flight (safe to call from the worker's event loop)."""
        out = replace(self.progress)
        if self._cpu_started is not None:
            out.cpu_s = time.process_time() - self._cpu_started
        if self._current is not None:
            pipeline, already = self._current
            out.add(pipeline.stats, already)
        return out

    async def run(self, stop: anyio.Event | None = None) -> WorkerProgress:
        """Work until every range of the copy is done.

        :raises Interrupted: after ``stop`` was set (progress committed, leases released).
        """
        spec = self.spec
        identity = copy_identity(spec)
        self._cpu_started = time.process_time()
        async with open_containers(spec) as opened:
            leases = LeaseStore(await LeaseStore.ensure_container(await opened.target_database(), self.options.container),
                                copy_id(identity), self.owner, ttl_seconds=self.options.ttl_seconds)
            source = CosmosSource(opened.source, page_size=spec.options.page_size,
                                  what=f"{spec.source.database}/{spec.source.container}",
                                  priority=spec.politeness.priority)
            await source.open()
            await leases.seed(await source.partitions())
            budget, targets = opened.budget, opened.targets
            governor = (Governor(None, shared=SharedBudget(self.bank, self.owner, budget,
                                                           container_ru=opened.container_ru))
                        if self.bank is not None and budget is not None
                        else Governor(budget, container_ru=opened.container_ru))
            local = spec.checkpoint.parent / f"{spec.checkpoint.name}.{self.owner}"
            dead_letter = spec.dead_letter.with_name(f"{spec.dead_letter.name}.{self.owner}")
            async with CosmosSink(targets, governor, endpoint=spec.target.endpoint, insecure=spec.insecure,
                                  politeness=spec.politeness) as sink:
                with DeadLetterFile(dead_letter) as dead_letters:
                    await self._loop(source, sink, leases, identity, local, dead_letters, stop)
            shutil.rmtree(local, ignore_errors=True)
        self.progress.cpu_s = time.process_time() - self._cpu_started
        self.progress.done = True
        return self.progress

    async def _loop(self, source: CosmosSource, sink: CosmosSink, leases: LeaseStore, identity: dict[str, object],
                    local: Path, dead_letters: DeadLetterFile, stop: anyio.Event | None) -> None:
        batch_number = 0
        while stop is None or not stop.is_set():
            now = time.time()
            all_leases = await leases.list()
            unfinished = [lease for lease in all_leases if not lease.state.done]
            if not unfinished:
                return
            free = [lease for lease in unfinished if lease.free_for(self.owner, now)]
            limit = self.options.max_leases or (
                math.ceil(len(unfinished) / self.options.workers) if self.options.workers else math.inf)
            held: dict[str, Lease] = {}
            for lease in free:
                if len(held) >= limit:
                    break
                won = await leases.acquire(lease, now)
                if won is not None:
                    held[won.range_key] = won
            self.progress.leases_taken_over = leases.stats.taken_over
            if not held:
                with anyio.move_on_after(self.options.poll_seconds):
                    if stop is not None:
                        await stop.wait()
                    else:
                        await anyio.sleep(self.options.poll_seconds)
                continue
            batch_number += 1
            await self._copy(source, sink, leases, held, identity,
                             local / f"batch-{batch_number}.checkpoint.json", dead_letters, stop)

    async def _copy(self, source: CosmosSource, sink: CosmosSink, leases: LeaseStore, held: dict[str, Lease],
                    identity: dict[str, object], path: Path, dead_letters: DeadLetterFile,
                    stop: anyio.Event | None) -> None:
        """Copy the ranges of ``held`` (updated in place with every commit) to their end."""
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint = Checkpoint(identity=dict(identity),
                                ranges={key: replace(lease.state, written_ahead=list(lease.state.written_ahead))
                                        for key, lease in held.items()})

        async def commit_one(key: str, state: RangeState) -> None:
            held[key] = await leases.commit(held[key], state)

        async def commit(saved: Checkpoint) -> None:
            # Concurrently, and only what changed: a commit's latency bounds what a takeover rewrites.
            # A lease with no news is still renewed once a third of its time-to-live has passed.
            # Shielded: a commit cancelled after the server applied it would leave a stale etag
            # behind, and this worker would fence itself on its next commit.
            now = time.time()
            with anyio.CancelScope(shield=True):
                try:
                    async with anyio.create_task_group() as group:
                        for key, state in saved.ranges.items():
                            lease = held[key]
                            fresh = replace(state, written_ahead=list(state.written_ahead))
                            if fresh != lease.state or lease.expires_at - now < self.options.ttl_seconds * 2 / 3:
                                group.start_soon(commit_one, key, fresh)
                except BaseExceptionGroup as group_error:
                    raise_first(group_error)
            if self.on_commit is not None:
                self.on_commit(self.snapshot())

        pipeline = Pipeline(source, sink, checkpoint, path, dead_letters, transform=self.spec.transform,
                            options=self.spec.options, on_commit=commit)
        already = sum(state.read for state in checkpoint.ranges.values())
        self._current = (pipeline, already)
        self.progress.ranges_held = len(held)
        try:
            await pipeline.run(stop)
        except LeaseLost:
            self.progress.leases_lost = leases.stats.lost  # fenced: list again and go on with what is ours
        except Interrupted:
            with anyio.CancelScope(shield=True):
                for lease in held.values():
                    await leases.release(lease)
            raise
        finally:
            self._current = None
            self.progress.add(pipeline.stats, already)
            self.progress.ranges_held = 0
        self.progress.ranges_finished += sum(1 for s in checkpoint.ranges.values() if s.done)
