"""The restore phase: a restore is a copy out of a backup's files, through the same pipeline.

:class:`~asyncmig.core.files.source.FileSource` to :class:`~asyncmig.core.cosmos.sink.CosmosSink`
with the identity transform (which strips the system properties the backup kept), one resumable
transfer per container. Nothing is written before the whole backup has been verified against its
manifest, a container that is missing is created from the manifest's recorded properties (the
original rollback recreated containers with wrong partition keys and fixed RU/s), and every
restored container is then streamed back and its content digest compared with the manifest's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from azure.cosmos import ThroughputProperties
from azure.cosmos.aio import ContainerProxy
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from asyncmig.core.cosmos.connect import read_offer
from asyncmig.core.cosmos.partition_keys import partition_key_object
from asyncmig.core.cosmos.retry import classify
from asyncmig.core.cosmos.source import scan_container
from asyncmig.core.digest import ContainerDigest
from asyncmig.core.engine.checkpoint import load_checkpoint, run_identity
from asyncmig.core.engine.transform import DEFAULT_TARGET, IDENTITY, Document
from asyncmig.core.files.manifest import ContainerEntry, Manifest, Throughput, read_manifest
from asyncmig.core.files.source import FileSource
from asyncmig.errors import PlanMismatch, UsageError, ValidationFailed
from asyncmig.phases.backup import verify
from asyncmig.phases.context import PhaseContext, PhaseResult

__all__ = [
    "ContainerRestore",
    "container_digest",
    "digest_problem",
    "existing_properties",
    "partition_key_problem",
    "restore",
    "restore_checkpoint",
    "restore_container",
    "verified_manifest",
]

PHASE = "restore"

# container.read() property -> DatabaseProxy.create_container keyword. Anything else the manifest
# recorded (id, geospatialConfig, ...) is either the name or cannot be set at creation.
_CREATION_ARGUMENTS = {
    "indexingPolicy": "indexing_policy",
    "defaultTtl": "default_ttl",
    "uniqueKeyPolicy": "unique_key_policy",
    "conflictResolutionPolicy": "conflict_resolution_policy",
    "computedProperties": "computed_properties",
    "analyticalStorageTtl": "analytical_storage_ttl",
    "vectorEmbeddingPolicy": "vector_embedding_policy",
    "changeFeedPolicy": "change_feed_policy",
    "fullTextPolicy": "full_text_policy",
}


@dataclass(frozen=True, slots=True)
class ContainerRestore:
    """What restoring one container did."""

    name: str
    target: str
    container: ContainerProxy
    created: bool
    written: int
    ru: float


async def restore(
    ctx: PhaseContext,
    backup_dir: Path,
    containers: Iterable[str] | None = None,
    *,
    into: Mapping[str, str] | None = None,
) -> PhaseResult:
    """Restore ``containers`` (default: all in the manifest) from ``backup_dir``, then verify them.

    :param into: restore some containers under other names (backup name -> target name).
    :raises BackupCorrupt: when the backup is incomplete or fails verification (nothing is written).
    :raises UsageError: for a container the backup does not hold, or two restored into one.
    :raises PlanMismatch: when an existing target container has another partition key.
    :raises ValidationFailed: when a restored container's content differs from the backup's.
    :raises Interrupted: after ``ctx.stop`` was set; re-run to resume.
    """
    started = time.monotonic()
    backup_dir = Path(backup_dir)
    manifest = await verified_manifest(backup_dir)
    targets = _targets(manifest, containers, into or {})
    details: dict[str, Any] = {}
    written = 0
    ru = 0.0
    for name, target in targets.items():
        entry = manifest["containers"][name]
        restored = await restore_container(ctx, backup_dir, name, entry, target=target, phase=PHASE)
        digest = await container_digest(restored.container, ctx)
        problem = digest_problem(f"{ctx.database_name}/{target}", digest, entry)
        if problem:
            raise ValidationFailed(f"restoring {name} from {backup_dir}: {problem}")
        written += restored.written
        ru += restored.ru
        details[name] = {"target": target, "created": restored.created, "documents": digest.count,
                         "content_digest": digest.to_json()}
    return PhaseResult(
        phase=PHASE, status="done", documents=written, ru=ru, seconds=time.monotonic() - started,
        details={"backup_dir": str(backup_dir), "containers": details},
    )


async def verified_manifest(backup_dir: Path) -> Manifest:
    """The manifest of a backup whose files all match it.

    :raises BackupCorrupt: when the manifest is missing or invalid, or any file fails verification.
    """
    await verify(backup_dir)
    return await anyio.to_thread.run_sync(read_manifest, backup_dir)


def _targets(manifest: Manifest, containers: Iterable[str] | None, into: Mapping[str, str]) -> dict[str, str]:
    available = manifest["containers"]
    names = list(dict.fromkeys(containers)) if containers is not None else list(available)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise UsageError(f"the backup holds no container {', '.join(map(repr, unknown))}; "
                         f"it holds {', '.join(map(repr, available))}")
    stray = [name for name in into if name not in names]
    if stray:
        raise UsageError(f"'into' renames {', '.join(map(repr, stray))}, which are not being restored")
    targets = {name: into.get(name, name) for name in names}
    if len(set(targets.values())) != len(targets):
        raise UsageError(f"two containers would be restored into the same target: {targets}")
    return targets


async def restore_container(
    ctx: PhaseContext, backup_dir: Path, name: str, entry: ContainerEntry, *, target: str, phase: str
) -> ContainerRestore:
    """Create ``target`` if missing, then upsert the backup's documents of ``name`` into it.

    The checkpoint is named after the backup directory, so restoring another backup never meets
    this one's positions; a finished checkpoint is started over, since a new restore must write
    every document again (the container may have changed since).
    """
    container, created = await ensure_container(ctx, target, entry)
    source = FileSource(backup_dir / entry["file"], entry["properties"]["partitionKey"], count=entry["count"],
                        page_size=ctx.options.pipeline.page_size, what=f"{backup_dir.name}/{entry['file']}")
    identity = run_identity(
        source=ctx.endpoint, source_database=ctx.database_name, source_container=name,
        target=ctx.endpoint, target_database=ctx.database_name, target_containers=[target],
        transform=IDENTITY, backup=str(backup_dir), backup_sha256=entry["sha256"],
    )
    restart = _finished(restore_checkpoint(ctx, phase, target, backup_dir), identity)
    sink = await ctx.cosmos_sink({DEFAULT_TARGET: container})
    stats = await ctx.transfer(phase, _run_key(target, backup_dir), source, sink, identity, restart=restart)
    return ContainerRestore(name, target, container, created, stats.written, stats.ru)


def restore_checkpoint(ctx: PhaseContext, phase: str, target: str, backup_dir: Path) -> Path:
    """The checkpoint of restoring ``target`` from ``backup_dir`` in ``phase`` (one per backup)."""
    return ctx.workdir.checkpoint(phase, _run_key(target, backup_dir))


def _run_key(target: str, backup_dir: Path) -> str:
    return f"{target}@{backup_dir.name}"


def _finished(checkpoint: Path, identity: dict[str, Any]) -> bool:
    if not checkpoint.exists():
        return False
    ranges = load_checkpoint(checkpoint, identity, restart=False).ranges
    return bool(ranges) and all(state.done for state in ranges.values())


async def existing_properties(ctx: PhaseContext, name: str) -> dict[str, Any] | None:
    """``container.read()`` of ``name`` in the context's database, or None when it does not exist.

    :raises AsyncmigError: for any other failure (never taken for "missing").
    """
    try:
        return dict(await ctx.database.get_container_client(name).read())
    except CosmosResourceNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - classified into an asyncmig error
        raise classify(exc).as_error(f"reading container {ctx.database_name}/{name}") from exc


def partition_key_problem(target: str, actual: Mapping[str, Any], recorded: Mapping[str, Any]) -> str | None:
    """Why documents of a container with partition key ``recorded`` cannot go into ``target``."""

    def shape(definition: Mapping[str, Any]) -> tuple[Any, Any, Any]:
        return definition.get("paths"), definition.get("kind", "Hash"), definition.get("version") or 1

    if shape(actual) == shape(recorded):
        return None
    return (f"container {target!r} exists with partition key {dict(actual)}, but the backup's is "
            f"{dict(recorded)}; restore into another container or delete this one first")


async def ensure_container(ctx: PhaseContext, target: str, entry: ContainerEntry) -> tuple[ContainerProxy, bool]:
    """The target container, created from the manifest's properties when missing; True if created.

    :raises PlanMismatch: when it exists with another partition key.
    """
    recorded = entry["properties"]
    actual = await existing_properties(ctx, target)
    if actual is not None:
        problem = partition_key_problem(target, actual["partitionKey"], recorded["partitionKey"])
        if problem:
            raise PlanMismatch(problem)
        return ctx.database.get_container_client(target), False
    arguments: dict[str, Any] = {
        key: recorded[prop] for prop, key in _CREATION_ARGUMENTS.items() if recorded.get(prop) is not None
    }
    throughput = await _offer(ctx, entry["throughput"])
    if throughput is not None:
        arguments["offer_throughput"] = throughput
    try:
        container = await ctx.database.create_container(
            target, partition_key_object(recorded["partitionKey"]), **arguments
        )
    except Exception as exc:  # noqa: BLE001 - classified into an asyncmig error
        raise classify(exc).as_error(f"creating container {ctx.database_name}/{target}") from exc
    return container, True


async def _offer(ctx: PhaseContext, throughput: Throughput) -> int | ThroughputProperties | None:
    """The recorded throughput to create with, or None on a serverless account (which has none)."""
    if throughput["kind"] not in ("manual", "autoscale") or throughput["value"] is None:
        return None
    serverless = ctx.options.serverless
    if serverless is None:
        supported, _ = await read_offer(ctx.database)
        serverless = not supported
    if serverless:
        return None
    if throughput["kind"] == "autoscale":
        return ThroughputProperties(auto_scale_max_throughput=throughput["value"])
    return throughput["value"]


def _add_all(digest: ContainerDigest, documents: list[Document]) -> None:
    for document in documents:
        digest.add(document)


async def container_digest(container: ContainerProxy, ctx: PhaseContext) -> ContainerDigest:
    """The content digest of everything ``container`` holds, streamed range by range.

    Reads through :class:`CosmosSource` (the change feed, with its retries), several ranges at once
    as the pipeline would; hashing runs in worker threads. Memory: one page per range being read.
    """
    total = ContainerDigest()

    async def digest_page(documents: list[Document]) -> None:
        part = ContainerDigest()
        await anyio.to_thread.run_sync(_add_all, part, documents)
        total.merge(part)

    await scan_container(container, digest_page, what=f"{ctx.database_name}/{container.id}",
                         page_size=ctx.options.pipeline.page_size, concurrency=ctx.options.pipeline.read_concurrency)
    return total


def digest_problem(label: str, digest: ContainerDigest, entry: ContainerEntry) -> str | None:
    """How a container's digest differs from the manifest entry's, or None when they are equal."""
    if digest.count != entry["count"]:
        return f"{label} holds {digest.count} documents but the backup holds {entry['count']}"
    if digest.to_json() != entry["content_digest"]:
        return f"{label} holds {digest.count} documents, as the backup does, but their content differs"
    return None
