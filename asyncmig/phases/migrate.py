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

import anyio
from azure.cosmos.aio import ContainerProxy
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from asyncmig.core.cosmos.connect import existing_container, provisioned_throughput
from asyncmig.core.cosmos.retry import Backoff, classify
from asyncmig.core.cosmos.sink import CosmosSink
from asyncmig.core.cosmos.source import CosmosSource
from asyncmig.core.engine.checkpoint import run_identity
from asyncmig.core.engine.governor import Governor, budget_from
from asyncmig.core.engine.iterable_source import IterableSource
from asyncmig.core.engine.pipeline import PipelineOptions, RunStatistics
from asyncmig.core.engine.transfer import Transfer, run_transfer
from asyncmig.core.engine.transform import Document, Routed, Transform
from asyncmig.phases.context import PhaseContext, PhaseResult
from asyncmig.phases.marks import record_marks
from asyncmig.phases.state import save_state
from asyncmig.vimarsh import plan
from asyncmig.vimarsh.personalities import PersonalityAccumulator


async def _budget(ctx: PhaseContext, container: ContainerProxy) -> float | None:
    provisioned = await provisioned_throughput(container, ctx.database)
    return budget_from(provisioned, ctx.options.ru_budget, ctx.options.ru_fraction)


async def transfer(
    ctx: PhaseContext, name: str, source: CosmosSource | IterableSource, targets: dict[str, ContainerProxy],
    transform: Transform, *, options: PipelineOptions | None = None, checkpoint: str | None = None,
    restart: bool = False, stop: anyio.Event | None = None,
) -> RunStatistics:
    """One mapping's transfer into the new layout; ``options``, ``checkpoint`` (its name) and
    ``stop`` let the live follower reuse it with follow or catch-up passes."""
    budget = await _budget(ctx, next(iter(targets.values())))
    identity = run_identity(
        source=ctx.endpoint, source_database=ctx.database_name, source_container=name, target=ctx.endpoint,
        target_database=ctx.database_name, target_containers=list(targets), transform=transform, phase="migrate",
    )
    async with CosmosSink(targets, Governor(budget), endpoint=ctx.endpoint, insecure=ctx.options.insecure) as sink:
        job = Transfer(
            source=source, sink=sink, identity=identity,
            checkpoint=ctx.workdir.checkpoint("migrate", checkpoint or name),
            dead_letter=ctx.workdir.dead_letter("migrate", name), transform=transform, restart=restart,
            allow_dead_letters=ctx.options.allow_dead_letters, label=f"migrate {checkpoint or name}",
            total=await source.count(), progress=ctx.options.progress, options=options or ctx.options.pipeline,
        )
        return await run_transfer(job, stop or ctx.stop)


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
                              what=mapping.source, snapshot=mapping.in_place, deletes=ctx.state.live)
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
    reader = CosmosSource(vectors, what=plan.PERSONALITY_VECTORS)
    await reader.open()
    for feed_range in (await reader.partitions()).values():
        async for page in reader.pages(feed_range, None):
            for doc in page.documents:
                accumulator.add(doc)
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
    reader = CosmosSource(personalities, what=plan.PERSONALITIES, snapshot=True)
    await reader.open()
    orphans = [doc for feed_range in (await reader.partitions()).values()
               async for page in reader.pages(feed_range, None) for doc in page.documents if doc["id"] not in keep]
    for orphan in orphans:
        values = reader.partition_key(orphan)
        key = values[0] if len(values) == 1 else values
        backoff = Backoff()
        while True:
            try:
                await personalities.delete_item(orphan["id"], partition_key=key)
                break
            except CosmosResourceNotFoundError:
                break
            except Exception as exc:  # noqa: BLE001 - classified: retried or turned into an asyncmig error
                failure = classify(exc)
                delay = backoff.next_delay(failure) if failure.retryable else None
                if delay is None:
                    raise failure.as_error(f"deleting personality {orphan['id']!r}") from exc
                await anyio.sleep(delay)
    return len(orphans)


def _to_personalities(document: Document) -> Routed:
    return [(plan.PERSONALITIES, document)]


PERSONALITIES = Transform("vimarsh.personalities", "1", _to_personalities, (plan.PERSONALITIES,))
