"""Seeding the deterministic demo data set into the legacy 3-container layout, through the same engine.

Seeding is a transfer from generated documents into Cosmos DB, so it is paced, resumable and
checked like any copy. A marker records a finished seed: seeding twice would overwrite the users
that the migration enriches in place.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from pathlib import Path

import anyio
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient
from azure.cosmos.exceptions import CosmosHttpResponseError

from asyncmig.connection import CosmosEndpoint
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.retry import classify
from asyncmig.core.cosmos.sink import CosmosSink
from asyncmig.core.engine.checkpoint import run_identity
from asyncmig.core.engine.governor import Governor
from asyncmig.core.engine.iterable_source import IterableSource
from asyncmig.core.engine.transfer import Transfer, run_transfer
from asyncmig.core.engine.transform import IDENTITY
from asyncmig.core.files.fsutil import atomic_write, private_dir
from asyncmig.vimarsh import plan
from asyncmig.vimarsh.demo_data import DemoDataSet


async def seed_demo(client: CosmosClient, endpoint: CosmosEndpoint, database: str, dataset: DemoDataSet,
                    state_dir: Path, *, progress: bool | None = None, stop: anyio.Event | None = None) -> bool:
    """Create the legacy containers and fill them; returns False when a finished seed was found."""
    private_dir(state_dir)
    marker = state_dir / f"seeded-{database}.json"
    if marker.exists():
        return False
    try:
        db = await client.create_database_if_not_exists(database)
        containers = [await db.create_container_if_not_exists(spec.name, partition_key=PartitionKey(spec.partition_key_path))
                      for spec in plan.SOURCE_CONTAINERS]
    except CosmosHttpResponseError as exc:  # e.g. signed in with Entra ID, which cannot create them
        raise classify(exc).as_error(f"creating the demo database {database!r} and its containers") from exc
    for spec, container in zip(plan.SOURCE_CONTAINERS, containers, strict=True):
        source = IterableSource(partial(dataset.documents, spec.name), description=f"demo {spec.name}")
        job = Transfer(
            source=source, sink=CosmosSink({"": container}, Governor(), endpoint=endpoint),
            identity=run_identity(source=endpoint, source_database="demo-generator", source_container=spec.name,
                                  target=endpoint, target_database=database, target_containers=[spec.name],
                                  transform=IDENTITY, seed=dataset.seed),
            checkpoint=state_dir / f"seed-{database}-{spec.name}.checkpoint.json",
            dead_letter=state_dir / f"seed-{database}-{spec.name}.deadletter.jsonl",
            label=f"seed {spec.name}", progress=progress,
        )
        await run_transfer(job, stop)
    figures = dataset.figures
    atomic_write(marker, jsoncodec.dumps({"database": database, "seed": dataset.seed,
                                          "figures": {k: v for k, v in asdict(figures).items() if isinstance(v, int)}}))
    return True
