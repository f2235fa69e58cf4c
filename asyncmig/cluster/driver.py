"""The driver of a shared copy: start N workers, replace the ones that die, aggregate one progress bar.

The driver holds no copy state of its own: the leases hold it. A killed driver therefore loses
nothing; running the same command again starts new workers that take the expired leases over and
resume each range from its last commit.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import anyio

from asyncmig.cluster.engine import Engine, WorkerDied, WorkerHandle
from asyncmig.cluster.worker import LeaseOptions, WorkerProgress
from asyncmig.copy import CopySpec, copy_identity, open_containers
from asyncmig.core.cosmos.connect import cosmos_client
from asyncmig.core.cosmos.leases import LeaseStore, copy_id
from asyncmig.errors import AsyncmigError, Interrupted

PROGRESS_INTERVAL = 0.5


@dataclass
class ClusterProgress:
    """The sum over workers, alive and dead, plus how many are alive now."""

    written: int = 0
    dead_lettered: int = 0
    ru: float = 0.0
    requests: int = 0
    throttled: int = 0
    workers_alive: int = 0
    workers_replaced: int = 0
    elapsed: float = 0.0


@dataclass
class ClusterResult:
    progress: ClusterProgress
    workers: dict[str, WorkerProgress] = field(default_factory=dict)
    budget: float | None = None
    ranges: int = 0
    documents: int = 0  # documents covered by the ranges' committed positions (from the leases)


async def shared_budget(spec: CopySpec) -> tuple[float | None, float | None]:
    """The copy's RU/s budget, computed once by the driver for the whole cluster, and the target's
    own RU/s (which sets each range's share of it)."""
    async with open_containers(spec) as opened:
        return opened.budget, opened.container_ru


async def lease_totals(spec: CopySpec, options: LeaseOptions) -> tuple[int, int, int]:
    """``(ranges, ranges done, documents committed)`` as the lease container holds them."""
    async with cosmos_client(spec.target.endpoint, insecure=spec.insecure) as client:
        database = client.get_database_client(spec.target.database)
        store = LeaseStore(database.get_container_client(options.container), copy_id(copy_identity(spec)), "driver")
        leases = await store.list()
    return len(leases), sum(1 for lease in leases if lease.state.done), sum(lease.state.read for lease in leases)


def _owner(index: int) -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}-w{index}"


async def run_cluster(
    spec: CopySpec,
    engine: Engine,
    workers: int,
    options: LeaseOptions | None = None,
    *,
    stop: anyio.Event | None = None,
    max_replacements: int | None = None,
    on_progress: Callable[[ClusterProgress], None] | None = None,
) -> ClusterResult:
    """Copy with ``workers`` workers sharing one lease container and one RU budget.

    A worker that dies is replaced (at most ``max_replacements`` times; default: ``workers``) and
    its replacement takes its leases over once they expire.

    :raises Interrupted: after ``stop`` was set (every worker committed and released its leases).
    :raises AsyncmigError: the first error a worker failed with (the others are stopped first).
    """
    if workers < 1:
        raise ValueError(f"a cluster copy needs at least one worker, got {workers}")
    options = options or LeaseOptions()
    options = replace(options, workers=options.workers or workers)  # each takes a fair share of the ranges
    budget, container_ru = await shared_budget(spec)
    bank = await engine.bank(budget, container_ru) if budget is not None else None
    result = ClusterResult(ClusterProgress(), budget=budget)
    last: dict[str, WorkerProgress] = result.workers
    handles: dict[str, WorkerHandle] = {}
    failures: list[BaseException] = []
    replacements_left = workers if max_replacements is None else max_replacements
    started = time.monotonic()
    interrupted = anyio.Event()

    async def stop_all() -> None:
        for handle in list(handles.values()):
            await handle.stop()

    async def watch(handle: WorkerHandle, group: anyio.abc.TaskGroup, index: int) -> None:
        nonlocal replacements_left
        try:
            last[handle.owner] = await handle.wait()
        except WorkerDied:
            handles.pop(handle.owner, None)
            if interrupted.is_set() or failures:
                return
            if replacements_left <= 0:
                failures.append(AsyncmigError(f"worker {handle.owner} died and no replacements are left; "
                                              "run the same command again to resume from the leases"))
                await stop_all()
                return
            replacements_left -= 1
            result.progress.workers_replaced += 1
            await launch(group, index)
            return
        except Interrupted:
            pass
        except AsyncmigError as exc:
            failures.append(exc)
            await stop_all()
        handles.pop(handle.owner, None)

    async def launch(group: anyio.abc.TaskGroup, index: int) -> None:
        handle = await engine.start_worker(spec, _owner(index), options, bank)
        handles[handle.owner] = handle
        group.start_soon(watch, handle, group, index)

    async def monitor() -> None:
        while True:
            await anyio.sleep(PROGRESS_INTERVAL)
            for owner, handle in list(handles.items()):
                last[owner] = await handle.progress()
            _aggregate(result.progress, last, len(handles), time.monotonic() - started)
            if on_progress is not None:
                on_progress(result.progress)

    async def on_stop() -> None:
        assert stop is not None
        await stop.wait()
        interrupted.set()
        await stop_all()

    async with anyio.create_task_group() as outer:
        outer.start_soon(monitor)
        if stop is not None:
            outer.start_soon(on_stop)
        async with anyio.create_task_group() as group:
            for index in range(workers):
                await launch(group, index)
        outer.cancel_scope.cancel()
    _aggregate(result.progress, last, 0, time.monotonic() - started)
    if failures:
        raise failures[0]
    if interrupted.is_set():
        raise Interrupted("interrupted; every worker committed its progress to the leases: run the same "
                          "command again to resume")
    result.ranges, _, result.documents = await lease_totals(spec, options)
    return result


def _aggregate(into: ClusterProgress, workers: dict[str, WorkerProgress], alive: int, elapsed: float) -> None:
    into.written = sum(w.written for w in workers.values())
    into.dead_lettered = sum(w.dead_lettered for w in workers.values())
    into.ru = sum(w.ru for w in workers.values())
    into.requests = sum(w.requests for w in workers.values())
    into.throttled = sum(w.throttled for w in workers.values())
    into.workers_alive = alive
    into.elapsed = elapsed
