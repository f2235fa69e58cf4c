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
from asyncmig.config import parse_connection_string
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
    result = await run_cluster(spec, ray_engine, 2, LeaseOptions(container=unique("leases"), max_leases=2))  # type: ignore[arg-type]
    assert await contents(target) == await contents(source)
    assert await writes_to(target) == 1500
    assert result.documents == 1500
    assert len(result.workers) == 2 and all(w.written > 0 for w in result.workers.values())
