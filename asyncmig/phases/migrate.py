"""Phase 3, migrate: every data mapping of the plan through the streaming core, then personalities.

    personality-vectors -> personality_vectors      (change feed per feed range)
    user_activity       -> user_sessions / user_interactions / user_analytics
    users               -> users, in place         (snapshot read: see CosmosSource(snapshot=True))
    personality_vectors -> personalities            (generated, one per distinct personality_id)

Each mapping has its own checkpoint, so an interrupted phase resumes inside the mapping it was in.
Documents a transform rejects (an activity without ``user_id``) go to that mapping's dead-letter
file and fail the phase unless ``--allow-dead-letters`` accepts them knowingly.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from azure.cosmos.aio import ContainerProxy
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from asyncmig.core.cosmos.connect import existing_container
from asyncmig.core.cosmos.retry import retrying
from asyncmig.core.cosmos.source import CosmosSource, scan_container
from asyncmig.core.engine.checkpoint import run_identity
from asyncmig.core.engine.iterable_source import IterableSource
from asyncmig.core.engine.pipeline import RunStatistics
from asyncmig.core.engine.transform import Document, Routed, Transform
from asyncmig.phases.context import PhaseContext, PhaseResult
from asyncmig.phases.marks import record_marks
from asyncmig.phases.state import save_state
from asyncmig.vimarsh import plan
from asyncmig.vimarsh.personalities import PersonalityAccumulator


async def transfer(
    ctx: PhaseContext, name: str, source: CosmosSource | IterableSource, targets: dict[str, ContainerProxy],
    transform: Transform, *, checkpoint: str | None = None, restart: bool = False,
) -> RunStatistics:
    """One mapping's transfer into the new layout; ``checkpoint`` (its name, default ``name``) lets
    the live follower keep one of its own (it runs with its own options and stop: a derived context)."""
    identity = run_identity(
        source=ctx.endpoint, source_database=ctx.database_name, source_container=name, target=ctx.endpoint,
        target_database=ctx.database_name, target_containers=list(targets), transform=transform, phase="migrate",
    )
    return await ctx.transfer("migrate", checkpoint or name, source, await ctx.cosmos_sink(targets), identity,
                              transform=transform, restart=restart)


async def migrate(ctx: PhaseContext) -> PhaseResult:
    """Run every mapping, then generate personalities.

    :raises DeadLettered: documents were rejected (see the dead-letter files) and not accepted.
    :raises Interrupted: after a stop request; re-running resumes from the checkpoints.
    """
    started = time.monotonic()
    if ctx.state.copy_started_at is None:  # a source document written after this may not be copied yet
        ctx.state.copy_started_at = int(time.time())
        save_state(ctx.workdir.state, ctx.state)
    details: dict[str, dict[str, float | int]] = {}
    documents = 0
    ru = 0.0
    for mapping in plan.MAPPINGS:
        source_container = await existing_container(ctx.client, ctx.database_name, mapping.source, role="source")
        targets = {t: await existing_container(ctx.client, ctx.database_name, t, role="target")
                   for t in mapping.targets}
        source = CosmosSource(source_container, page_size=ctx.options.pipeline.page_size,
                              what=mapping.source, snapshot=mapping.in_place,
                              deletes=ctx.state.live)  # live: replay the changes made during the bulk pass
        stats = await transfer(ctx, mapping.source, source, targets, plan.transform_of(mapping))
        details[mapping.source] = {"read": stats.read, "written": stats.written,
                                   "dead_lettered": stats.dead_lettered, "ru": round(stats.ru, 2)}
        documents += stats.written
        ru += stats.ru
    stats = await personalities(ctx)
    details[plan.PERSONALITIES] = {"written": stats.written, "ru": round(stats.ru, 2)}
    await record_marks(ctx)  # what the application writes from now on, a rollback must not undo
    return PhaseResult("migrate", "done", documents + stats.written, ru + stats.ru,
                       time.monotonic() - started, details)


async def personalities(ctx: PhaseContext, *, regenerate: bool = False) -> RunStatistics:
    """One personality document per distinct personality_id of the migrated vectors.

    :param regenerate: write them again (after a live run's final catch-up changed the vectors).
    """
    vectors = ctx.database.get_container_client(plan.PERSONALITY_VECTORS)
    if ctx.state.personalities_generated_at is None:
        ctx.state.personalities_generated_at = datetime.now(UTC).isoformat(timespec="seconds")
        save_state(ctx.workdir.state, ctx.state)
    accumulator = PersonalityAccumulator()

    def add_all(documents: list[Document]) -> None:
        for doc in documents:
            accumulator.add(doc)

    await scan_container(vectors, add_all, what=plan.PERSONALITY_VECTORS)
    generated = accumulator.documents(ctx.state.personalities_generated_at)
    target = await existing_container(ctx.client, ctx.database_name, plan.PERSONALITIES, role="target")
    source = IterableSource(lambda: generated, description="generated personalities", count=len(generated))
    stats = await transfer(ctx, plan.PERSONALITIES, source, {plan.PERSONALITIES: target}, PERSONALITIES,
                           restart=regenerate)
    if regenerate:
        stats.deleted += await _delete_orphans(target, {doc["id"] for doc in generated})
    return stats


async def _delete_orphans(personalities: ContainerProxy, keep: set[str]) -> int:
    """Delete the personalities no vector refers to any more (all theirs were deleted meanwhile)."""
    orphans: list[Document] = []

    def collect(documents: list[Document]) -> None:
        orphans.extend(doc for doc in documents if doc["id"] not in keep)

    await scan_container(personalities, collect, what=plan.PERSONALITIES, snapshot=True)
    for orphan in orphans:
        await _delete(personalities, orphan["id"], orphan["personality_id"])
    return len(orphans)


async def _delete(container: ContainerProxy, doc_id: str, partition_key: Any) -> None:
    async def delete() -> None:
        try:
            await container.delete_item(doc_id, partition_key=partition_key)
        except CosmosResourceNotFoundError:
            return  # gone already

    await retrying(delete, what=f"deleting {container.id} document {doc_id!r}")


def _to_personalities(document: Document) -> Routed:
    return [(plan.PERSONALITIES, document)]


PERSONALITIES = Transform("vimarsh.personalities", "1", _to_personalities, (plan.PERSONALITIES,))
