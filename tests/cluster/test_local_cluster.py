"""A copy shared by several workers (the in-process engine) through leases in the emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, DatabaseProxy

from asyncmig.cluster.driver import ClusterResult, run_cluster
from asyncmig.cluster.engine import LocalEngine, WorkerHandle
from asyncmig.cluster.worker import LeasedWorker, LeaseOptions, WorkerProgress
from asyncmig.connection import parse_connection_string
from asyncmig.copy import ContainerRef, CopySpec
from asyncmig.core.engine.pipeline import PipelineOptions
from asyncmig.core.engine.shared_budget import Bank
from tests.conftest import Cosmos
from tests.core.support import contents, mixed_documents, seed, writes_to
from tests.helpers import unique


async def _pair(database: DatabaseProxy, n: int) -> tuple[ContainerProxy, ContainerProxy]:
    source = await database.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    target = await database.create_container(unique("dst"), partition_key=PartitionKey("/pk"))
    await seed(source, mixed_documents(n))
    return source, target


def _spec(cosmos: Cosmos, database: DatabaseProxy, source: ContainerProxy, target: ContainerProxy,
          tmp_path: Path, **kw: object) -> CopySpec:
    endpoint = parse_connection_string(cosmos.connection_string)
    return CopySpec(source=ContainerRef(endpoint, database.id, source.id),
                    target=ContainerRef(endpoint, database.id, target.id),
                    checkpoint=tmp_path / "ck.json", dead_letter=tmp_path / "dead.jsonl", progress=False,
                    **kw)  # type: ignore[arg-type]


async def test_two_workers_share_the_ranges_and_copy_everything_once(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    source, target = await _pair(database, 1200)
    spec = _spec(cosmos, database, source, target, tmp_path)
    options = LeaseOptions(container=unique("leases"))
    async with LocalEngine() as engine:
        result = await run_cluster(spec, engine, 2, options)
    assert await contents(target) == await contents(source)
    assert await writes_to(target) == 1200  # every document written exactly once
    assert result.documents == 1200 and result.ranges == 4
    assert len(result.workers) == 2
    assert all(w.written > 0 for w in result.workers.values())  # both took part
    assert sum(w.written for w in result.workers.values()) == 1200


async def test_a_killed_workers_ranges_are_taken_over_from_its_last_commit(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    n = 3000
    source, target = await _pair(database, n)
    # Slow enough (an RU budget) to kill the first worker mid-copy. What a takeover rewrites is at
    # most what was in flight (15 documents) plus what was written since the last commit (0.1 s).
    spec = _spec(cosmos, database, source, target, tmp_path, ru_budget=4000.0,
                 options=PipelineOptions(checkpoint_interval=0.1, max_in_flight=15, page_size=5))
    options = LeaseOptions(container=unique("leases"), ttl_seconds=1.0, poll_seconds=0.2)
    a_third = anyio.Event()
    first = LeasedWorker(spec, "first", options,
                         on_commit=lambda progress: a_third.set() if progress.written >= n // 3 else None)
    async with anyio.create_task_group() as group:
        scope = anyio.CancelScope()

        async def run_first() -> None:
            with scope:
                await first.run()

        group.start_soon(run_first)
        with anyio.fail_after(60):
            await a_third.wait()
        scope.cancel()  # a crash: no release, no final commit
    killed_at = first.snapshot().written
    assert killed_at < n, "the first worker finished before it could be killed"
    second = LeasedWorker(spec, "second", options)
    with anyio.fail_after(120):
        done = await second.run()
    assert await contents(target) == await contents(source)
    assert done.leases_taken_over == 4  # every range the first worker held was taken over
    rewritten = await writes_to(target) - n
    assert rewritten <= n * 0.01, f"{rewritten} documents written twice"


class _RecordingEngine(LocalEngine):
    """The in-process engine, keeping the handles so a test can kill a worker the driver started."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handles: list[WorkerHandle] = []

    async def start_worker(self, spec: CopySpec, owner: str, options: LeaseOptions, bank: Bank | None) -> WorkerHandle:
        handle = await super().start_worker(spec, owner, options, bank)
        self.handles.append(handle)
        return handle


async def test_the_driver_replaces_a_dead_worker_and_the_copy_completes(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    n = 2000
    source, target = await _pair(database, n)
    spec = _spec(cosmos, database, source, target, tmp_path, ru_budget=6000.0,
                 options=PipelineOptions(checkpoint_interval=0.1, max_in_flight=30, page_size=10))
    options = LeaseOptions(container=unique("leases"), ttl_seconds=1.0, poll_seconds=0.2)
    a_fifth = anyio.Event()

    def watch(progress: WorkerProgress) -> None:
        if progress.written >= n // 5:
            a_fifth.set()

    async with _RecordingEngine(on_commit=watch) as engine:
        async with anyio.create_task_group() as group:
            results: list[ClusterResult] = []

            async def drive() -> None:
                results.append(await run_cluster(spec, engine, 2, options))

            group.start_soon(drive)
            with anyio.fail_after(60):
                await a_fifth.wait()
            await engine.handles[0].kill()  # the first worker started: both are busy by now
    (result,) = results
    assert result.progress.workers_replaced == 1 and len(engine.handles) == 3
    assert await contents(target) == await contents(source)
    assert result.documents == n
    assert await writes_to(target) - n <= n * 0.02  # at most what the dead worker had in flight
