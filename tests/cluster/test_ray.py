"""The same shared copy on a real local Ray cluster: actors with their own event loops, a shared
budget actor, a worker killed mid-copy and replaced."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import DatabaseProxy

from asyncmig.cluster.driver import run_cluster
from asyncmig.cluster.worker import LeaseOptions
from asyncmig.connection import parse_connection_string
from asyncmig.copy import ContainerRef, CopySpec
from tests.conftest import Cosmos
from tests.core.support import contents, mixed_documents, seed, writes_to
from tests.helpers import unique

ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install 'asyncmig[ray]')")


@pytest.fixture(scope="module")
def ray_engine() -> Iterator[object]:
    from asyncmig.cluster.ray_engine import RayEngine

    engine = RayEngine(num_cpus=2)
    try:
        yield engine
    finally:
        engine.shutdown()
        ray.shutdown()


async def test_two_ray_workers_copy_everything_once_under_one_budget(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path, ray_engine: object
) -> None:
    source = await database.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    target = await database.create_container(unique("dst"), partition_key=PartitionKey("/pk"))
    await seed(source, mixed_documents(1500))
    endpoint = parse_connection_string(cosmos.connection_string)
    spec = CopySpec(source=ContainerRef(endpoint, database.id, source.id),
                    target=ContainerRef(endpoint, database.id, target.id),
                    checkpoint=tmp_path / "ck.json", dead_letter=tmp_path / "dead.jsonl", progress=False,
                    ru_budget=20000.0)
    result = await run_cluster(spec, ray_engine, 2, LeaseOptions(container=unique("leases")))  # type: ignore[arg-type]
    assert await contents(target) == await contents(source)
    assert await writes_to(target) == 1500
    assert result.documents == 1500
    # Both workers ran; whether the second got ranges depends on how fast Ray started it, so the
    # fair share itself is asserted with the in-process engine (tests/cluster/test_local_cluster.py).
    assert len(result.workers) == 2 and sum(w.written for w in result.workers.values()) == 1500


async def test_a_killed_ray_worker_is_taken_over_with_at_most_one_percent_rewritten(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path, ray_engine: object
) -> None:
    import anyio

    from asyncmig.cluster.engine import WorkerDied
    from asyncmig.core.engine.pipeline import PipelineOptions

    n = 6514  # the demo data set's size
    source = await database.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    target = await database.create_container(unique("dst"), partition_key=PartitionKey("/pk"))
    await seed(source, mixed_documents(n))
    endpoint = parse_connection_string(cosmos.connection_string)
    spec = CopySpec(source=ContainerRef(endpoint, database.id, source.id),
                    target=ContainerRef(endpoint, database.id, target.id),
                    checkpoint=tmp_path / "ck.json", dead_letter=tmp_path / "dead.jsonl", progress=False,
                    ru_budget=3000.0, options=PipelineOptions(checkpoint_interval=0.05, max_in_flight=15, page_size=5))
    options = LeaseOptions(container=unique("leases"), ttl_seconds=1.0, poll_seconds=0.2)
    victim = await ray_engine.start_worker(spec, "victim", options, None)  # type: ignore[attr-defined]
    seen = None
    with anyio.move_on_after(150):
        # The worker runs in another process: its progress can only be polled (with a deadline).
        while (seen := await victim.progress()).written < n // 4:  # noqa: ASYNC110
            await anyio.sleep(0.05)
    assert seen is not None and seen.written >= n // 4, f"the victim made too little progress: {seen}"
    await victim.kill()
    with pytest.raises(WorkerDied):  # dead for sure before anyone takes over (as the driver waits)
        await victim.wait()
    result = await run_cluster(spec, ray_engine, 1, options)  # type: ignore[arg-type]
    (survivor,) = result.workers.values()
    assert survivor.leases_taken_over == 4
    assert await contents(target) == await contents(source)
    # Written twice is what the victim wrote after its last commit: the writes it had on the wire
    # (which may still land after it died) and those since its last commit, 0.05 s apart.
    rewritten = await writes_to(target) - n
    assert rewritten <= n * 0.01, rewritten
