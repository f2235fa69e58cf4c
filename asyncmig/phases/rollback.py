"""The rollback phase: back to the legacy 3-container layout, without destroying newer data.

The original rollback could not read the backup, recreated containers with wrong partition keys
and fixed RU/s, deleted the live ``users`` and ``user_activity`` through ``replace('-', '_')``,
and stopped half-way with containers already deleted. A later version upserted every backed-up
``users`` body before checking anything, which reverted edits made since the backup and brought
deleted users back. This one:

1. refuses, before changing anything, without a complete, verified backup of this database, when
   the state names a container the migration does not create as created, when an existing legacy
   container's partition key differs from the backup's, or (without ``force``) when a created
   container received writes after the migration's last write (its change feed moved past the
   mark the migration recorded: the application has started to use it; the refusal names the
   containers and how many documents were written);
2. rolls ``users`` back by removing only the fields the migration added
   (:mod:`asyncmig.phases.users_revert`); a document written after the migration is reported and
   left as it is, and a user deleted since is not brought back;
3. recreates a missing legacy container from the manifest's properties and refills it from the
   backup, then proves it against the manifest (count and content digest); legacy containers the
   migration never writes are left as they are, with whatever the application wrote since;
4. only then deletes the containers listed in the state's ``created``, which is the only list it
   trusts: a source container, ``users`` or any container the migration did not create is never
   deleted. A failed rollback leaves them in place and can simply be run again.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.cosmos.exceptions import CosmosResourceNotFoundError

from asyncmig.core.cosmos.retry import classify
from asyncmig.core.files.manifest import Manifest
from asyncmig.errors import BackupCorrupt, PlanMismatch, StateError, UsageError, ValidationFailed
from asyncmig.phases.context import PhaseContext, PhaseResult
from asyncmig.phases.marks import changed_after_migration
from asyncmig.phases.restore import (
    container_digest,
    digest_problem,
    existing_properties,
    partition_key_problem,
    restore_checkpoint,
    restore_container,
    verified_manifest,
)
from asyncmig.phases.state import save_state
from asyncmig.phases.users_revert import UsersRevert, revert_users
from asyncmig.vimarsh.plan import NEW_CONTAINERS, SOURCE_CONTAINERS, USERS

__all__ = ["rollback"]

PHASE = "rollback"


class WrittenAfterMigration(UsageError):
    """Created containers hold documents written after the migration; deleting them needs ``force``."""


async def rollback(ctx: PhaseContext, *, force: bool = False) -> PhaseResult:
    """Restore the legacy layout from this migration's backup and delete what the migration created.

    :param force: delete created containers even when the application wrote to them after the
        migration (those writes are lost; the report names the containers and counts).

    :raises BackupCorrupt: when the state records no backup, or it is incomplete or damaged.
    :raises UsageError: when the backup is of another database.
    :raises StateError: when ``created`` names a container the migration never creates.
    :raises PlanMismatch: when a legacy container exists with another partition key.
    :raises WrittenAfterMigration: (a UsageError, exit 2) without ``force``, when a created container
        received writes after the migration; nothing was changed.
    :raises ValidationFailed: when a legacy container still differs from the backup after the
        restore (nothing has been deleted then).
    :raises Interrupted: after ``ctx.stop`` was set; re-run to resume.
    """
    started = time.monotonic()
    backup_dir = _recorded_backup(ctx)
    manifest = await verified_manifest(backup_dir)
    _check_backup(ctx, manifest, backup_dir)
    doomed = _deletable(ctx.state.created)
    legacy = await _legacy_properties(ctx, manifest)

    written_after = await _written_after(ctx, doomed)
    if written_after and not force:
        raise WrittenAfterMigration(
            "the application wrote to containers the migration created, after the migration finished: "
            f"{_describe(written_after)}; deleting them would lose those documents. Move them elsewhere, or "
            "re-run with --force to delete them anyway; nothing was changed"
        )

    restored: dict[str, dict[str, Any]] = {}
    written = 0
    ru = 0.0
    for spec in SOURCE_CONTAINERS:
        name = spec.name
        resuming = restore_checkpoint(ctx, PHASE, name, backup_dir).exists()  # an interrupted rollback
        if legacy[name] is not None and not resuming:
            continue  # existing: users is rolled back field by field below; the others were never written
        result = await restore_container(
            ctx, backup_dir, name, manifest["containers"][name], target=name, phase=PHASE
        )
        written += result.written
        ru += result.ru
        restored[name] = {"recreated": result.created, "documents": result.written}

    users: UsersRevert | None = None
    if USERS not in restored:
        users = await revert_users(
            ctx.database.get_container_client(USERS), backup_dir / manifest["containers"][USERS]["file"],
            manifest["containers"][USERS]["properties"]["partitionKey"], await changed_after_migration(ctx, USERS),
        )
        written += users.reverted

    verified: dict[str, str] = {}
    problems: list[str] = []
    for name in restored:
        container = ctx.database.get_container_client(name)
        digest = await container_digest(container, ctx)
        problem = digest_problem(f"{ctx.database_name}/{name}", digest, manifest["containers"][name])
        if problem:
            problems.append(problem)
        verified[name] = digest.to_json()
    if problems:
        raise ValidationFailed(
            f"rollback from {backup_dir}: the restored containers do not match the backup: "
            f"{'; '.join(problems)}; no container was deleted"
        )

    deleted = []
    for name in doomed:
        await _delete(ctx, name)
        ctx.state.created = [other for other in ctx.state.created if other != name]
        save_state(ctx.workdir.state, ctx.state)  # so a re-run after a crash knows what is gone
        deleted.append(name)
    ctx.state.rolled_back_at = datetime.now(UTC).isoformat(timespec="seconds")
    ctx.state.finished.clear()  # everything the migration did is undone; a new run starts over
    ctx.state.backup_dir = None  # ... with a backup of the data as it is then
    save_state(ctx.workdir.state, ctx.state)
    return PhaseResult(
        phase=PHASE, status="done", documents=written, ru=ru, seconds=time.monotonic() - started,
        details={"backup_dir": str(backup_dir), "deleted": deleted, "restored": restored, "verified": verified,
                 "users": users.to_json() if users is not None else None,
                 "written_after_migration": written_after, "forced": bool(force and written_after)},
    )


def _recorded_backup(ctx: PhaseContext) -> Path:
    if ctx.state.backup_dir is None:
        after = f" (it was rolled back at {ctx.state.rolled_back_at})" if ctx.state.rolled_back_at else ""
        raise StateError(
            f"the migration state {ctx.workdir.state} records no backup{after}: a rollback needs the "
            "complete backup taken before the migration; nothing was changed"
        )
    return Path(ctx.state.backup_dir)


def _check_backup(ctx: PhaseContext, manifest: Manifest, backup_dir: Path) -> None:
    if manifest["database"] != ctx.database_name:
        raise UsageError(f"backup {backup_dir} is of database {manifest['database']!r}, not "
                         f"{ctx.database_name!r}; nothing was changed")
    missing = [spec.name for spec in SOURCE_CONTAINERS if spec.name not in manifest["containers"]]
    if missing:
        raise BackupCorrupt(f"backup {backup_dir} does not hold {', '.join(missing)}; nothing was changed")


def _deletable(created: list[str]) -> list[str]:
    """The containers to delete: ``created``, once each, provided every one is a container the
    migration creates (anything else means the state is wrong, and nothing is deleted)."""
    managed = {spec.name for spec in NEW_CONTAINERS if spec.managed}
    legacy = {spec.name for spec in SOURCE_CONTAINERS} | {USERS}
    refused = [name for name in created if name in legacy or name not in managed]
    if refused:
        raise StateError(
            f"the migration state lists {', '.join(map(repr, refused))} as created by the migration, but "
            "the migration never creates them; refusing to delete anything (nothing was changed)"
        )
    return list(dict.fromkeys(created))


async def _legacy_properties(ctx: PhaseContext, manifest: Manifest) -> dict[str, dict[str, Any] | None]:
    """Each legacy container's properties (None: missing), refusing a partition key the backup's
    documents cannot go into before anything is changed."""
    found: dict[str, dict[str, Any] | None] = {}
    for spec in SOURCE_CONTAINERS:
        properties = await existing_properties(ctx, spec.name)
        if properties is not None:
            recorded = manifest["containers"][spec.name]["properties"]["partitionKey"]
            problem = partition_key_problem(spec.name, properties["partitionKey"], recorded)
            if problem:
                raise PlanMismatch(f"{problem}; nothing was changed")
        found[spec.name] = properties
    return found


async def _written_after(ctx: PhaseContext, doomed: list[str]) -> dict[str, int]:
    """Documents written to each created container after the migration's mark (containers with none
    are left out; so is a container without a mark, which only a migration that never finished has)."""
    counts: dict[str, int] = {}
    for name in doomed:
        if await existing_properties(ctx, name) is None:
            continue  # already deleted by an earlier, interrupted rollback
        changed = await changed_after_migration(ctx, name)
        if changed:
            counts[name] = len(changed)
    return counts


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} ({count} document{'s' if count != 1 else ''})" for name, count in counts.items())


async def _delete(ctx: PhaseContext, name: str) -> None:
    try:
        await ctx.database.delete_container(name)
    except CosmosResourceNotFoundError:
        return  # already gone (an earlier, interrupted rollback deleted it)
    except Exception as exc:  # noqa: BLE001 - classified into an asyncmig error
        raise classify(exc).as_error(f"deleting container {ctx.database_name}/{name}") from exc
