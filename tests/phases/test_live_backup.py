"""A backup of a container the application keeps writing to.

The change feed hands out a document again when it is updated after the reader passed it; a backup
that wrote every entry held such a document twice, so its manifest count was one too high, and
restore and rollback verification could never pass. Here the backup is stopped part-way, documents
already in its file are updated (one of them several times) and one is inserted, then the backup
resumes: each document must be in the file once, as its newest version.
"""

from __future__ import annotations

from pathlib import Path

from azure.cosmos.aio import DatabaseProxy

from asyncmig.core import jsoncodec
from asyncmig.core.files.manifest import read_manifest
from asyncmig.phases.backup import backup, verify
from asyncmig.phases.restore import container_digest, restore
from asyncmig.vimarsh.plan import SOURCE_USERS, SOURCE_VECTORS
from tests.conftest import Cosmos, needs_emulator
from tests.core.support import contents
from tests.phases.test_backup_restore import (
    COUNTS,
    backup_stopped_part_way,
    file_documents,
    phase_context,
    seed_legacy,
)


@needs_emulator
async def test_a_backup_of_a_changing_container_holds_each_document_once_as_its_newest_version(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    sources = await seed_legacy(database)
    backup_dir, _ = await backup_stopped_part_way(cosmos, database.id, tmp_path)

    vectors = sources[SOURCE_VECTORS]
    backed_up = file_documents(backup_dir / f"{SOURCE_VECTORS}.jsonl.gz")
    assert 0 < len(backed_up) < COUNTS[SOURCE_VECTORS]
    changed = {k: v for k, v in backed_up[0].items() if not k.startswith("_")}
    for version in range(3):  # updated after the reader passed it, several times
        await vectors.upsert_item({**changed, "live_version": version})
    inserted = {**changed, "id": "inserted-while-backing-up"}
    await vectors.upsert_item(inserted)

    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        result = await backup(ctx)
        assert result.status == "done"
        documents = file_documents(backup_dir / f"{SOURCE_VECTORS}.jsonl.gz")
        keys = [(d["id"], jsoncodec.canonical(d["personality"])) for d in documents]
        assert len(keys) == len(set(keys)) == COUNTS[SOURCE_VECTORS] + 1
        newest = [d for d in documents if d["id"] == changed["id"]]
        assert len(newest) == 1 and newest[0]["live_version"] == 2
        manifest = read_manifest(backup_dir)
        assert manifest["containers"][SOURCE_VECTORS]["count"] == COUNTS[SOURCE_VECTORS] + 1
        assert manifest["containers"][SOURCE_VECTORS]["content_digest"] == (
            await container_digest(vectors, ctx)).to_json()
        assert (await verify(backup_dir)).ok
        into = {SOURCE_VECTORS: "vectors-restored", SOURCE_USERS: "users-restored"}
        restored = await restore(ctx, backup_dir, list(into), into=into)
        assert restored.status == "done"
    assert await contents(database.get_container_client("vectors-restored")) == await contents(vectors)
