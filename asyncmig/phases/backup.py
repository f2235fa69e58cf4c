"""The backup phase: each legacy container copied into files, then the manifest, written last.

A backup is a copy into files: :class:`~asyncmig.core.cosmos.source.CosmosSource` to
:class:`~asyncmig.core.files.sink.FileSink` through :func:`~asyncmig.core.engine.transfer.run_transfer`,
one resumable transfer per container, so it streams with bounded memory and resumes after a kill.
The original backup held whole containers in memory, swallowed failures and listed
containers whose export had failed; here any failure raises, and only a finished backup
gets a manifest: every figure in it is computed from the finished files.

On a live container (the application keeps writing while it is backed up) the change feed hands
out a document again when it is updated after the reader passed it; each finished file is therefore
rewritten to hold every document once, as its newest version (:mod:`asyncmig.core.files.dedupe`),
before any figure of the manifest is computed. The backup is then a picture of each document as of
the moment it was last read, not of one instant: documents inserted while it ran are in it,
documents deleted while it ran may still be in it, and the phase reports how far the container's
count had moved by the end.

The backup directory is chosen once and recorded in the state file before any data moves, so a
resumed backup continues into the same directory. Each container's checkpoint is named after that
directory, so a later backup (after a rollback, say) starts afresh instead of resuming positions
that belong to another directory's files.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from azure.cosmos.aio import ContainerProxy, DatabaseProxy

from asyncmig.core.cosmos.connect import existing_container, read_offer
from asyncmig.core.cosmos.retry import classify
from asyncmig.core.cosmos.source import CosmosSource
from asyncmig.core.engine.checkpoint import run_identity
from asyncmig.core.engine.transform import Document, Routed, Transform
from asyncmig.core.files.dedupe import keep_newest
from asyncmig.core.files.fsutil import atomic_write
from asyncmig.core.files.jsonl import JsonlGzReader
from asyncmig.core.files.manifest import (
    ContainerEntry,
    Throughput,
    VerifyReport,
    build_container_entry,
    container_file_name,
    new_backup_dir,
    read_manifest,
    verify_backup,
    write_manifest,
)
from asyncmig.core.files.sink import FileSink
from asyncmig.errors import UsageError
from asyncmig.phases.context import PhaseContext, PhaseResult
from asyncmig.phases.state import save_state
from asyncmig.vimarsh.dimensions import DimensionTally
from asyncmig.vimarsh.plan import EMBEDDING_PATH, SOURCE_CONTAINERS, SOURCE_VECTORS

__all__ = [
    "backup",
    "backup_checkpoint",
    "container_properties_of",
    "detect_vector_dimensions",
    "read_throughput",
    "verify",
]

PHASE = "backup"


def _verbatim(target: str) -> Transform:
    """Routes each document unchanged (system properties included) to ``target``'s file."""

    def apply(document: Document) -> Routed:
        return [(target, document)]

    return Transform(name="backup-verbatim", version="1", apply=apply, targets=(target,))


def backup_checkpoint(ctx: PhaseContext, container: str, backup_dir: Path) -> Path:
    """The checkpoint of one container's backup into ``backup_dir`` (one per directory)."""
    return ctx.workdir.checkpoint(PHASE, _run_key(container, backup_dir))


def _run_key(container: str, backup_dir: Path) -> str:
    return f"{container}@{backup_dir.name}"


async def backup(ctx: PhaseContext, *, restart: bool = False) -> PhaseResult:
    """Back up every legacy source container, resuming an unfinished backup of this migration.

    A finished backup is never rewritten: called again, the phase only checks that its manifest is
    still there and reports it as skipped. It is what a rollback restores, so it must stay the
    picture of the data before the migration.

    :param restart: start a new backup directory even when the state names an unfinished one;
        refused once the migration has created containers (a new backup would then capture
        migrated data, and a rollback would restore that).
    :raises ResourceMissing: when a source container (or the database) does not exist.
    :raises BackupCorrupt: when the finished backup the state names has lost its manifest.
    :raises UsageError: for ``restart`` after the migration created containers.
    :raises Interrupted: after ``ctx.stop`` was set; re-run to resume.
    :raises AsyncmigError: connection, checkpoint and persistent-fault problems.
    """
    started = time.monotonic()
    if restart and ctx.state.created:
        raise UsageError(
            f"the migration already created {', '.join(ctx.state.created)}: a new backup now could capture "
            "migrated data, and a rollback would restore that; roll back first (it uses the existing backup)"
        )
    if ctx.state.backup_dir is not None and ctx.state.is_finished(PHASE) and not restart:
        finished = Path(ctx.state.backup_dir)
        await anyio.to_thread.run_sync(read_manifest, finished)
        return PhaseResult(phase=PHASE, status="skipped", seconds=time.monotonic() - started,
                           details={"backup_dir": str(finished)})
    containers = {
        spec.name: await existing_container(ctx.client, ctx.database_name, spec.name, role="source")
        for spec in SOURCE_CONTAINERS
    }
    backup_dir = _choose_backup_dir(ctx, restart=restart)
    read_ru = 0.0
    for container in containers.values():
        read_ru += await _back_up_container(ctx, container, backup_dir)

    entries: dict[str, ContainerEntry] = {}
    counts_now: dict[str, int] = {}
    for name, container in containers.items():
        entries[name], counts_now[name] = await _entry(ctx, container, backup_dir / container_file_name(name))
    dimensions = await anyio.to_thread.run_sync(
        detect_vector_dimensions, backup_dir / container_file_name(SOURCE_VECTORS)
    )
    manifest = functools.partial(write_manifest, backup_dir, ctx.database_name, ctx.endpoint.host, entries)
    await anyio.to_thread.run_sync(manifest)

    ctx.state.vector_dimensions = dimensions
    ctx.state.finish(PHASE)
    save_state(ctx.workdir.state, ctx.state)
    return PhaseResult(
        phase=PHASE,
        status="done",
        documents=sum(e["count"] for e in entries.values()),
        ru=read_ru,
        seconds=time.monotonic() - started,
        details={
            "backup_dir": str(backup_dir),
            "vector_dimensions": dimensions,
            "containers": {
                name: {"count": e["count"], "bytes": e["size"], "sha256": e["sha256"],
                       "content_digest": e["content_digest"], "throughput": dict(e["throughput"]),
                       "container_count_at_end": counts_now[name]}
                for name, e in entries.items()
            },
        },
    )


async def verify(backup_dir: Path) -> VerifyReport:
    """Recompute every figure of the manifest from the files (off the event loop).

    :returns: the report of a backup that passed: every file matches the manifest.
    :raises BackupCorrupt: when the manifest is missing or invalid, or any file fails verification
        (naming the first problem and how many more there are; ``verify_backup`` lists them all).
    """
    report = await anyio.to_thread.run_sync(verify_backup, Path(backup_dir))
    report.raise_if_failed()
    return report


def _choose_backup_dir(ctx: PhaseContext, *, restart: bool) -> Path:
    """The unfinished backup named in the state, or a new directory recorded there before use."""
    if ctx.state.backup_dir is not None and not restart:
        return Path(ctx.state.backup_dir)
    backup_dir = new_backup_dir(ctx.workdir.backups, datetime.now(UTC))
    ctx.state.backup_dir = str(backup_dir)
    ctx.state.finished.pop(PHASE, None)
    save_state(ctx.workdir.state, ctx.state)
    return backup_dir


def _copied_marker(ctx: PhaseContext, container: str, backup_dir: Path) -> Path:
    """Written once a container's transfer finished: from then on its file only gets deduplicated
    (a deduplicated file is shorter than the checkpoint's offset, so the transfer must not reopen it)."""
    return backup_checkpoint(ctx, container, backup_dir).with_suffix(".copied")


async def _back_up_container(ctx: PhaseContext, container: ContainerProxy, backup_dir: Path) -> float:
    """Copy the container into its file (resuming), then keep one entry per document, the newest;
    returns the RU its reads cost (a resumed run's earlier ones included; 0 once copied before)."""
    name = container.id
    marker = _copied_marker(ctx, name, backup_dir)
    source = CosmosSource(container, page_size=ctx.options.pipeline.page_size, what=f"{ctx.database_name}/{name}")
    await source.open()
    ru = 0.0
    if not await anyio.Path(marker).exists():
        ru = await _copy_container(ctx, source, backup_dir)
        await anyio.to_thread.run_sync(atomic_write, marker, b"")
    path = backup_dir / container_file_name(name)
    await anyio.to_thread.run_sync(keep_newest, path, source.partition_key_definition)
    return ru


async def _copy_container(ctx: PhaseContext, source: CosmosSource, backup_dir: Path) -> float:
    name = source.container.id
    transform = _verbatim(name)
    sink = FileSink(backup_dir, [name])
    identity = run_identity(
        source=ctx.endpoint, source_database=ctx.database_name, source_container=name,
        target=None, target_database=None, target_containers=[sink.path(name).name], transform=transform,
        backup_dir=str(backup_dir),
    )
    stats = await ctx.transfer(PHASE, _run_key(name, backup_dir), source, sink, identity, transform=transform,
                               allow_dead_letters=False)  # a backup that lacks a document is not a backup
    return stats.ru


async def _entry(ctx: PhaseContext, container: ContainerProxy, path: Path) -> tuple[ContainerEntry, int]:
    """The manifest entry of a finished file, and the container's count as of now.

    The two differ when the application wrote while the backup ran (inserts and deletes after the
    reader passed); that is reported, not refused: the file holds every document the feed returned.
    """
    try:
        properties = container_properties_of(await container.read())
    except Exception as exc:  # noqa: BLE001 - classified into an asyncmig error
        raise classify(exc).as_error(f"reading the properties of {ctx.database_name}/{container.id}") from exc
    throughput = await read_throughput(container, ctx.database, serverless=ctx.options.serverless)
    entry = await anyio.to_thread.run_sync(build_container_entry, path, properties, throughput)
    try:
        counts: list[Any] = [n async for n in container.query_items("SELECT VALUE COUNT(1) FROM c")]
    except Exception as exc:  # noqa: BLE001 - classified; a re-run resumes with every file finished
        raise classify(exc).as_error(f"counting {ctx.database_name}/{container.id}") from exc
    return entry, sum(counts)


def container_properties_of(properties: dict[str, Any]) -> dict[str, Any]:
    """A container's settings as read, without the system properties the service assigns."""
    return {key: value for key, value in properties.items() if not key.startswith("_")}


async def read_throughput(
    container: ContainerProxy, database: DatabaseProxy, *, serverless: bool | None = None
) -> Throughput:
    """How the container's throughput is provisioned, as the manifest records it.

    ``serverless`` (from the options) skips the detection when True. A container with no offer of
    its own in a database without one (possible on the local emulator only) is recorded as
    ``serverless``: there is no throughput to recreate.
    """
    if serverless:
        return Throughput(kind="serverless", value=None)
    supported, own = await read_offer(container)
    if not supported:
        return Throughput(kind="serverless", value=None)
    if own is not None:
        if own.auto_scale_max_throughput:
            return Throughput(kind="autoscale", value=int(own.auto_scale_max_throughput))
        return Throughput(kind="manual", value=int(own.offer_throughput or 0))
    _, shared = await read_offer(database)
    return Throughput(kind="shared" if shared is not None else "serverless", value=None)


def detect_vector_dimensions(path: Path, field: str = EMBEDDING_PATH.lstrip("/")) -> int | None:
    """The embedding dimension of the ``field`` vectors in a backup file, by the rule of
    :mod:`asyncmig.vimarsh.dimensions` (None: no vectors).

    :raises BackupCorrupt: when the file is missing or damaged.
    """
    tally = DimensionTally()
    with JsonlGzReader(path) as reader:
        for document in reader:
            tally.add(document.get(field))
    return tally.most_common()
