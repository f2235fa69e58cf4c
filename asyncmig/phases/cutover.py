"""``run --live``: after the bulk migration, follow the legacy containers until the operator cuts over.

The application keeps writing to ``users``, ``user_activity`` and ``personality-vectors`` while
the migration runs. After backup, create and migrate, the *follow* phase keeps applying their
changes to the new layout (each mapping continues from its migrate checkpoint through the change
feed; in a live run the migrate phase and the follower read the all-versions-and-deletes feed, so
deletes are followed too), until a cutover is requested: ``asyncmig cutover`` from another terminal
(it writes :data:`REQUEST_NAME` in the work directory, which the follower watches) or Ctrl-C in the
run's terminal. The operator stops the application's writes to the legacy containers first; then
the follower

1. stops following, finishing the writes in flight;
2. runs a final catch-up pass over every mapping (everything written up to now);
3. regenerates the personalities from the caught-up vectors (deleting those left without vectors);
4. records where each container's change feed ends (what a rollback must not undo afterwards);

and the run goes on to validation, which now requires the targets to be caught up. When it passes,
the summary says the application can be pointed at the new containers.

``users`` is enriched in place: following it means transforming the users documents that changed
and are not migrated yet. Documents already migrated are skipped, which also keeps the follower
from chasing its own writes through the change feed forever.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from asyncmig.core.cosmos.connect import existing_container
from asyncmig.core.cosmos.source import CosmosSource
from asyncmig.core.digest import document_digest
from asyncmig.core.engine.pipeline import PipelineOptions, RunStatistics
from asyncmig.core.engine.transform import Document, Routed, Transform
from asyncmig.core.files.fsutil import atomic_write
from asyncmig.phases.context import PhaseContext, PhaseResult
from asyncmig.phases.marks import record_marks
from asyncmig.phases.migrate import personalities, transfer
from asyncmig.phases.state import save_state
from asyncmig.phases.workdir import WorkDir
from asyncmig.vimarsh import plan
from asyncmig.vimarsh.transforms import transform_user

__all__ = ["PHASE", "REQUEST_NAME", "follow_until_cutover", "request_cutover"]

PHASE = "follow"
REQUEST_NAME = "cutover.request"
# How often the follower looks for the cutover request file (seconds).
WATCH_INTERVAL = 0.2


def request_path(workdir: WorkDir) -> Path:
    return workdir.root / REQUEST_NAME


def request_cutover(workdir: WorkDir) -> Path:
    """Ask the running ``run --live`` of this work directory to cut over (``asyncmig cutover``)."""
    path = request_path(workdir)
    atomic_write(path, datetime.now(UTC).isoformat(timespec="seconds").encode())
    return path


def _unmigrated_user(document: Document) -> Routed:
    """The users transform, routing nothing for a document that is already migrated."""
    routed = transform_user(document)
    [(_, migrated)] = routed
    return [] if document_digest(migrated) == document_digest(document) else routed


USERS_FOLLOW = Transform("vimarsh.users.follow", "1", _unmigrated_user, (plan.USERS,))


async def _watch(ctx: PhaseContext, requested: anyio.Event) -> None:
    """Set ``requested`` when the request file appears or the run is asked to stop (Ctrl-C)."""
    path = anyio.Path(request_path(ctx.workdir))
    while not requested.is_set():
        if await path.exists() or (ctx.stop is not None and ctx.stop.is_set()):
            requested.set()
            return
        await anyio.sleep(WATCH_INTERVAL)  # a file has no event to wait for


async def _mapping_pass(ctx: PhaseContext, mapping: plan.Mapping) -> RunStatistics:
    """One mapping with the options and stop of ``ctx`` (a context derived for following or catching up)."""
    options = ctx.options.pipeline
    source_container = await existing_container(ctx.client, ctx.database_name, mapping.source, role="source")
    targets = {t: await existing_container(ctx.client, ctx.database_name, t, role="target") for t in mapping.targets}
    if mapping.in_place:  # users: its change feed, transforming what is not migrated yet (a delete is done)
        source = CosmosSource(source_container, page_size=options.page_size, what=mapping.source, deletes=True)
        return await transfer(ctx, mapping.source, source, targets, USERS_FOLLOW, checkpoint=f"{mapping.source}-follow")
    source = CosmosSource(source_container, page_size=options.page_size, what=mapping.source, deletes=False)
    return await transfer(ctx, mapping.source, source, targets, plan.transform_of(mapping))


async def _all_mappings(ctx: PhaseContext, options: PipelineOptions, stop: anyio.Event | None) -> dict[str, RunStatistics]:
    """Every mapping at once, with ``options`` and ``stop`` (a derived context)."""
    ctx = replace(ctx, options=replace(ctx.options, pipeline=options), stop=stop)
    results: dict[str, RunStatistics] = {}

    async def one(mapping: plan.Mapping) -> None:
        results[mapping.source] = await _mapping_pass(ctx, mapping)

    group: TaskGroup
    async with anyio.create_task_group() as group:
        for mapping in plan.MAPPINGS:
            group.start_soon(one, mapping)
    return results


async def follow_until_cutover(ctx: PhaseContext) -> PhaseResult:
    """Follow every mapping until a cutover is requested, then catch up, regenerate the
    personalities and record the change-feed marks (module docstring).

    :raises DeadLettered, AsyncmigError: as the migrate phase.
    """
    started = time.monotonic()
    requested = anyio.Event()
    following = replace(ctx.options.pipeline, follow=True, catch_up=False)
    async with anyio.create_task_group() as group:
        group.start_soon(_watch, ctx, requested)
        followed = await _all_mappings(ctx, following, requested)
        group.cancel_scope.cancel()
    requested_at = datetime.now(UTC).isoformat(timespec="seconds")
    # From here on the cutover runs to its end: a Ctrl-C that requested it must not interrupt it
    # (a second Ctrl-C still stops the process at once).
    cutting_over = replace(ctx, stop=None)
    final = await _all_mappings(cutting_over, replace(ctx.options.pipeline, follow=False, catch_up=True), None)
    generated = await personalities(cutting_over, regenerate=True)
    await record_marks(cutting_over)
    ctx.state.cutover_at = datetime.now(UTC).isoformat(timespec="seconds")
    save_state(ctx.workdir.state, ctx.state)
    request = anyio.Path(request_path(ctx.workdir))
    if await request.exists():
        await request.unlink()
    written = sum(s.written + s.deleted for s in (*followed.values(), *final.values()))
    written += generated.written + generated.deleted
    return PhaseResult(PHASE, "done", written, sum(s.ru for s in (*followed.values(), *final.values())),
                       time.monotonic() - started, {
                           "cutover_requested_at": requested_at, "caught_up_at": ctx.state.cutover_at,
                           "followed": {k: _figures(v) for k, v in followed.items()},
                           "final_catch_up": {k: _figures(v) for k, v in final.items()},
                           "personalities": {"written": generated.written, "deleted": generated.deleted},
                       })


def _figures(stats: RunStatistics) -> dict[str, float | int]:
    return {"read": stats.read, "written": stats.written, "deleted": stats.deleted,
            "dead_lettered": stats.dead_lettered, "ru": round(stats.ru, 2)}
