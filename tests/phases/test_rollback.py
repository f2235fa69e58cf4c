"""Rollback end to end: after a simulated migration, back to the legacy layout, proven by digests.

The original rollback deleted the live ``users`` and ``user_activity``, recreated containers with
wrong partition keys and stopped half-way. These tests pin down the opposite: only what the
state says the migration created is deleted, and only after the legacy layout has been restored
and verified; every refusal happens before anything changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, DatabaseProxy

from asyncmig.core.engine.transform import strip_system
from asyncmig.core.files.manifest import MANIFEST_NAME
from asyncmig.errors import BackupCorrupt, Interrupted, StateError
from asyncmig.phases.backup import backup
from asyncmig.phases.context import PhaseContext
from asyncmig.phases.marks import record_marks
from asyncmig.phases.restore import existing_properties
from asyncmig.phases.rollback import WrittenAfterMigration, rollback
from asyncmig.phases.state import load_state, save_state
from asyncmig.vimarsh.plan import (
    PERSONALITIES,
    PERSONALITY_VECTORS,
    SOURCE_ACTIVITY,
    SOURCE_USERS,
    SOURCE_VECTORS,
    USER_SESSIONS,
    VALIDATED_CONTAINERS,
    ContainerSpec,
    container_properties,
)
from tests.conftest import Cosmos, needs_emulator
from tests.core.support import contents
from tests.phases.test_backup_restore import phase_context, seed_legacy

CREATED = [USER_SESSIONS, PERSONALITIES, PERSONALITY_VECTORS]
Snapshot = dict[str, dict[tuple[str, bytes], bytes]]


PLANNED = {spec.name: spec for spec in VALIDATED_CONTAINERS}


def target_spec(name: str) -> ContainerSpec:
    return PLANNED[name]


async def snapshot(containers: dict[str, ContainerProxy]) -> Snapshot:
    return {name: await contents(container) for name, container in containers.items()}


async def migrate_partly(ctx: PhaseContext, database: DatabaseProxy) -> None:
    """What a migration leaves behind: new containers (recorded as created), users enriched in
    place, and the old user_activity deleted (as the original safe_cleanup.py did)."""
    assert ctx.state.vector_dimensions
    for name in CREATED:
        await ctx.database.create_container(
            **container_properties(target_spec(name), vector_dimensions=ctx.state.vector_dimensions)
        )
        ctx.state.created.append(name)
        save_state(ctx.workdir.state, ctx.state)
    sessions = database.get_container_client(USER_SESSIONS)
    await sessions.upsert_item({"id": "s1", "user_id": "u1", "document_type": "user_session"})
    users = database.get_container_client(SOURCE_USERS)
    async for user in users.read_all_items():
        user = {k: v for k, v in user.items() if not k.startswith("_")}
        await users.upsert_item({**user, "user_id": user["id"], "subscription_tier": "free", "profile_version": "1.0"})
    await database.delete_container(SOURCE_ACTIVITY)


async def container_names(database: DatabaseProxy) -> set[str]:
    return {c["id"] async for c in database.list_containers()}


async def prepared(
    cosmos: Cosmos, database: DatabaseProxy, root: Path
) -> tuple[dict[str, ContainerProxy], Snapshot, dict[str, Any]]:
    """Seed, back up and partly migrate; returns the legacy containers, their contents before the
    migration, and user_activity's properties."""
    legacy = await seed_legacy(database)
    before = await snapshot(legacy)
    activity = await legacy[SOURCE_ACTIVITY].read()
    keep = await database.create_container("keep_me", partition_key=PartitionKey("/pk"))
    await keep.upsert_item({"id": "k", "pk": "k"})
    async with phase_context(cosmos, database.id, root) as ctx:
        await backup(ctx)
        await migrate_partly(ctx, database)
    return legacy, before, activity


async def test_rollback_restores_the_legacy_layout_and_deletes_only_what_the_migration_created(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    legacy, before, activity = await prepared(cosmos, database, tmp_path)
    assert await contents(legacy[SOURCE_USERS]) != before[SOURCE_USERS]  # the migration did change users

    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        backup_dir = ctx.state.backup_dir
        result = await rollback(ctx)

    assert result.status == "done"
    assert sorted(result.details["deleted"]) == sorted(CREATED)
    assert await container_names(database) == {SOURCE_VECTORS, SOURCE_USERS, SOURCE_ACTIVITY, "keep_me"}
    assert [d async for d in database.get_container_client("keep_me").read_all_items()][0]["id"] == "k"
    assert await snapshot(legacy) == before  # users' bodies, the recreated activity, untouched vectors
    recreated = await database.get_container_client(SOURCE_ACTIVITY).read()
    assert recreated["partitionKey"] == activity["partitionKey"] == {
        "paths": ["/partition_key"], "kind": "Hash", "version": 2
    }
    assert result.details["restored"] == {SOURCE_ACTIVITY: {"recreated": True, "documents": 121}}
    assert result.details["users"]["reverted"] == 19  # the additions removed, nothing else written
    assert set(result.details["verified"]) == {SOURCE_ACTIVITY}

    state = load_state(ctx.workdir.state, host=ctx.endpoint.host, database=database.id)
    assert state.created == [] and state.finished == {} and state.rolled_back_at
    assert state.backup_dir is None  # a new migration takes a new backup of the data as it is then
    with pytest.raises(StateError, match="rolled back at"):  # a second rollback has nothing to use
        async with phase_context(cosmos, database.id, tmp_path) as again:
            await rollback(again)
    assert await anyio.Path(backup_dir or "").is_dir()  # the backup itself is kept


def _without_backup(ctx: PhaseContext) -> None:
    ctx.state.backup_dir = None


def _without_manifest(ctx: PhaseContext) -> None:
    (Path(ctx.state.backup_dir or "") / MANIFEST_NAME).unlink()


def _damaged_file(ctx: PhaseContext) -> None:
    path = Path(ctx.state.backup_dir or "") / "user_activity.jsonl.gz"
    path.write_bytes(path.read_bytes()[:-40])


@pytest.mark.parametrize(("spoil", "error", "exit_code"), [
    (_without_backup, StateError, 5),  # the state records no backup: nothing is corrupt
    (_without_manifest, BackupCorrupt, 6),
    (_damaged_file, BackupCorrupt, 6),
], ids=["no-backup", "no-manifest", "damaged-file"])
async def test_rollback_without_a_complete_backup_refuses_and_changes_nothing(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path, spoil: Any, error: type[Exception], exit_code: int
) -> None:
    legacy, _, _ = await prepared(cosmos, database, tmp_path)
    migrated = await contents(legacy[SOURCE_USERS])
    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        spoil(ctx)
        with pytest.raises(error) as refused:
            await rollback(ctx)
        assert getattr(refused.value, "exit_code", None) == exit_code
    assert await container_names(database) == {SOURCE_VECTORS, SOURCE_USERS, "keep_me", *CREATED}
    assert await contents(legacy[SOURCE_USERS]) == migrated


@pytest.mark.parametrize("intruder", [SOURCE_USERS, SOURCE_VECTORS, "keep_me"])
async def test_rollback_refuses_to_delete_a_container_the_migration_does_not_create(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path, intruder: str
) -> None:
    legacy, _, _ = await prepared(cosmos, database, tmp_path)
    migrated = await contents(legacy[SOURCE_USERS])
    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        ctx.state.created.append(intruder)
        with pytest.raises(StateError, match=repr(intruder)):
            await rollback(ctx)
    assert await container_names(database) == {SOURCE_VECTORS, SOURCE_USERS, "keep_me", *CREATED}
    assert await contents(legacy[SOURCE_USERS]) == migrated


async def test_a_legacy_container_changed_since_the_backup_keeps_its_newer_data(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    """The migration never writes personality-vectors: what the application wrote there since the
    backup is its data, and a rollback leaves it alone (it used to refuse, or overwrite it)."""
    legacy, before, _ = await prepared(cosmos, database, tmp_path)
    vectors = legacy[SOURCE_VECTORS]
    original = [d async for d in vectors.query_items("SELECT * FROM c WHERE IS_DEFINED(c.catalog_number)")][0]
    newer = {k: v for k, v in original.items() if not k.startswith("_")} | {"catalog_number": 9007199254740992}
    await vectors.upsert_item(newer)

    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        result = await rollback(ctx)
    assert sorted(result.details["deleted"]) == sorted(CREATED)
    kept = await vectors.read_item(original["id"], original["personality"])
    assert kept["catalog_number"] == 9007199254740992
    after = await snapshot(legacy)
    assert after[SOURCE_USERS] == before[SOURCE_USERS] and after[SOURCE_ACTIVITY] == before[SOURCE_ACTIVITY]


@needs_emulator
async def test_an_interrupted_rollback_resumes_the_container_it_was_recreating(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    legacy, before, _ = await prepared(cosmos, database, tmp_path)
    assert cosmos.emulator is not None
    stop = anyio.Event()
    cosmos.emulator.admin("faults", {"latency_ms": 20})
    try:
        async with phase_context(cosmos, database.id, tmp_path, page_size=5, stop=stop) as ctx:

            async def stop_once_recreated() -> None:
                with anyio.fail_after(30):
                    while True:  # polls the account: no event to wait for
                        if await existing_properties(ctx, SOURCE_ACTIVITY) is not None:
                            break
                        await anyio.sleep(0.01)
                stop.set()

            async with anyio.create_task_group() as group:
                group.start_soon(stop_once_recreated)
                with pytest.raises(Interrupted):
                    await rollback(ctx)
            assert sorted(ctx.state.created) == sorted(CREATED)  # nothing deleted yet
    finally:
        cosmos.emulator.admin("faults", {"latency_ms": 0})

    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        result = await rollback(ctx)
    assert result.details["restored"][SOURCE_ACTIVITY]["recreated"] is False  # resumed, not recreated
    assert sorted(result.details["deleted"]) == sorted(CREATED)
    assert await snapshot(legacy) == before


async def test_rollback_after_cutover_keeps_what_the_application_wrote_since_the_migration(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    """Newer data survives a rollback: a user edited after the migration keeps the edit, a user
    deleted since stays deleted, and a created container the application wrote to is not deleted
    without --force (the refusal names it and the count, and changes nothing)."""
    legacy, before, _ = await prepared(cosmos, database, tmp_path)
    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        await record_marks(ctx)  # what the migrate phase does when it finishes
    users = legacy[SOURCE_USERS]
    migrated = [u async for u in users.query_items("SELECT * FROM c")]
    edited, deleted = sorted((u for u in migrated if u["id"] != "fragile-user"), key=lambda u: u["id"])[:2]
    edit = {k: v for k, v in edited.items() if not k.startswith("_")} | {"display_name": "edited after cutover"}
    await users.upsert_item(edit)
    await users.delete_item(deleted["id"], deleted["partition_key"])
    sessions = database.get_container_client(USER_SESSIONS)
    await sessions.upsert_item({"id": "after-cutover", "user_id": "u9", "document_type": "user_session"})

    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        with pytest.raises(WrittenAfterMigration, match=rf"{USER_SESSIONS} \(1 document\).*--force") as refused:
            await rollback(ctx)
        assert refused.value.exit_code == 2
    assert await container_names(database) == {SOURCE_VECTORS, SOURCE_USERS, "keep_me", *CREATED}
    assert (await users.read_item(edited["id"], edited["partition_key"]))["subscription_tier"] == "free"

    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        result = await rollback(ctx, force=True)
    assert result.details["forced"] is True and result.details["written_after_migration"] == {USER_SESSIONS: 1}
    assert sorted(result.details["deleted"]) == sorted(CREATED)
    report = result.details["users"]
    assert report["kept_changed_after_migration"] == {"count": 1, "first": [edited["id"]]}
    assert report["deleted_since_backup"] == {"count": 1, "first": [deleted["id"]]}
    assert report["reverted"] == 17 and report["mark_recorded"] is True

    kept = strip_system(await users.read_item(edited["id"], edited["partition_key"]))
    assert kept == edit  # the application's edit, migration fields included, not reverted
    now = await contents(users)
    expected = {key: body for key, body in before[SOURCE_USERS].items() if key[0] not in (edited["id"], deleted["id"])}
    assert {key: body for key, body in now.items() if key[0] != edited["id"]} == expected
