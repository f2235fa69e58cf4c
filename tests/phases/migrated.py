"""A correctly migrated Vimarsh layout in a fresh database, built without the migrate phase.

Validation must be tested against a layout whose correctness does not depend on the code that
produces it in production, so this builds one in-process from the plan and the transforms: the
legacy containers are seeded with demo data, read back (the transforms record the source ``_ts``, so
they must see documents as Cosmos DB returns them), transformed and upserted; the personalities are
generated with a fixed timestamp; users is backed up, then enriched in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy

from asyncmig.connection import parse_connection_string
from asyncmig.core.engine.transform import Document
from asyncmig.core.files.jsonl import JsonlGzWriter
from asyncmig.core.files.manifest import container_file_name
from asyncmig.phases.context import PhaseContext, PhaseOptions
from asyncmig.phases.state import MigrationState
from asyncmig.phases.workdir import WorkDir
from asyncmig.vimarsh import plan, transforms
from asyncmig.vimarsh.demo_data import DemoDataSet
from asyncmig.vimarsh.personalities import generate_personalities

GENERATED_AT = "2025-08-05T12:00:00+00:00"
DIMENSIONS = 16
VECTORS = 300
USERS = 18
SESSIONS = 18
INTERACTIONS = 103
CONCURRENCY = 32


@dataclass
class MigratedLayout:
    """What was built, so tests can damage one specific document and name it."""

    database: DatabaseProxy
    data: DemoDataSet
    backup_dir: Path
    targets: dict[str, list[Document]] = field(default_factory=dict)  # container -> documents written

    def state(self, host: str) -> MigrationState:
        """The state a finished migration of this layout would have recorded."""
        return MigrationState(
            host=host,
            database=self.database.id,
            finished={"backup": GENERATED_AT, "create": GENERATED_AT, "migrate": GENERATED_AT},
            created=[spec.name for spec in plan.NEW_CONTAINERS],
            backup_dir=str(self.backup_dir),
            vector_dimensions=DIMENSIONS,
            personalities_generated_at=GENERATED_AT,
        )


async def upsert_all(container: ContainerProxy, documents: list[Document]) -> None:
    limiter = anyio.CapacityLimiter(CONCURRENCY)

    async def one(document: Document) -> None:
        async with limiter:
            await container.upsert_item(document)

    async with anyio.create_task_group() as group:
        for document in documents:
            group.start_soon(one, document)


async def read_all(container: ContainerProxy) -> list[Document]:
    """Every document as Cosmos DB returns it (system properties included)."""
    return [doc async for doc in container.read_all_items(max_item_count=1000)]


async def build(database: DatabaseProxy, backup_dir: Path) -> MigratedLayout:
    """Seed the legacy layout, then migrate it in-process into the 11 new containers and users."""
    data = DemoDataSet(vectors=VECTORS, dimensions=DIMENSIONS, users=USERS, sessions=SESSIONS,
                       interactions=INTERACTIONS)
    layout = MigratedLayout(database, data, backup_dir)
    sources: dict[str, ContainerProxy] = {}
    for spec in plan.SOURCE_CONTAINERS:
        sources[spec.name] = await database.create_container(spec.name, PartitionKey(spec.partition_key_path))
        await upsert_all(sources[spec.name], list(data.documents(spec.name)))
    for spec in plan.NEW_CONTAINERS:
        await database.create_container(**plan.container_properties(spec, vector_dimensions=DIMENSIONS))

    originals = await read_all(sources[plan.SOURCE_USERS])
    with JsonlGzWriter.open(backup_dir / container_file_name(plan.SOURCE_USERS)) as writer:
        writer.write(originals)

    routed: dict[str, list[Document]] = {}
    for source, transform in ((plan.SOURCE_VECTORS, transforms.VECTORS),
                              (plan.SOURCE_ACTIVITY, transforms.ACTIVITY),
                              (plan.SOURCE_USERS, transforms.USERS)):
        for document in await read_all(sources[source]):
            for target, target_document in transform.apply(document):
                routed.setdefault(target, []).append(target_document)
    routed[plan.PERSONALITIES] = generate_personalities(routed[plan.PERSONALITY_VECTORS], GENERATED_AT)
    for target, documents in routed.items():
        await upsert_all(database.get_container_client(target), documents)
    layout.targets = routed
    return layout


def context(client: CosmosClient, connection_string: str, layout: MigratedLayout, work: Path,
            *, state: MigrationState | None = None, options: PhaseOptions | None = None) -> PhaseContext:
    endpoint = parse_connection_string(connection_string)
    return PhaseContext(
        endpoint=endpoint,
        client=client,
        database_name=layout.database.id,
        workdir=WorkDir(work / "state", work / "backups").ensure(),
        state=state or layout.state(endpoint.host),
        options=options or PhaseOptions(),
    )


def first_with(documents: list[Document], field_name: str) -> dict[str, Any]:
    """The document with the smallest id among those that have ``field_name`` (deterministic pick)."""
    return min((d for d in documents if d.get(field_name) is not None), key=lambda d: d["id"])
