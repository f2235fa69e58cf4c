"""Validation on a live source: a copy that is merely behind its source is named, not confused with
a real difference, and validation reads its sources by query rather than the copier's change feed."""

from __future__ import annotations

import dataclasses

import pytest

from asyncmig.errors import ValidationFailed
from asyncmig.phases.context import PhaseContext
from asyncmig.phases.validate import LiveSource, validate
from asyncmig.vimarsh import plan
from tests.phases.migrated import MigratedLayout


async def test_a_copy_older_than_its_source_is_named_apart_from_a_real_difference(
    ctx: PhaseContext, layout: MigratedLayout
) -> None:
    behind, damaged = sorted(layout.targets[plan.PERSONALITY_VECTORS], key=lambda d: d["id"])[:2]
    vectors = layout.database.get_container_client(plan.PERSONALITY_VECTORS)
    # copied from an older version of its source document than the one the source holds now
    await vectors.upsert_item({**behind, "migrated_from": {**behind["migrated_from"],
                                                           "_ts": behind["migrated_from"]["_ts"] - 5}})
    await vectors.upsert_item({**damaged, "content": "damaged"})  # a real difference

    with pytest.raises(ValidationFailed) as caught:
        await validate(ctx, LiveSource(require_caught_up=False))
    row = next(c for c in caught.value.report.containers if c.container == plan.PERSONALITY_VECTORS)  # type: ignore[attr-defined]
    assert row.changed_at_source.first == [behind["id"]] and row.differing.first == [damaged["id"]]

    await vectors.upsert_item(damaged)  # put the real difference right: only the one behind remains
    report = await validate(ctx, LiveSource(require_caught_up=False))
    assert report.ok
    row = next(c for c in report.containers if c.container == plan.PERSONALITY_VECTORS)
    assert row.changed_at_source.first == [behind["id"]] and "changed at source" in report.table()

    with pytest.raises(ValidationFailed, match="changed at the source after they were copied 1"):
        await validate(ctx)  # once caught up is required (after a cutover), being behind fails


async def test_on_a_live_source_a_user_changed_since_the_backup_is_named_when_migrated(
    ctx: PhaseContext, layout: MigratedLayout
) -> None:
    edited, unmigrated, deleted = sorted(layout.targets[plan.USERS], key=lambda d: d["id"])[:3]
    users = layout.database.get_container_client(plan.USERS)
    await users.upsert_item({**edited, "email": "changed@example.com"})  # migrated: a fixed point
    await users.delete_item(deleted["id"], deleted["partition_key"])
    await users.upsert_item({**unmigrated, "id": "new-user", "partition_key": "new-user", "user_id": "new-user"})
    ctx.state = dataclasses.replace(ctx.state, live=True)

    report = await validate(ctx)
    row = next(c for c in report.containers if c.container == plan.USERS)
    assert sorted(row.changed_since_backup.first) == sorted([edited["id"], deleted["id"], "new-user"])

    without_additions = {k: v for k, v in unmigrated.items() if k != "profile_version"}
    await users.replace_item(unmigrated["id"], without_additions)  # changed and not migrated
    with pytest.raises(ValidationFailed, match=f"differing 1 \\({unmigrated['id']}\\)"):
        await validate(ctx)
