"""Backup, verify and restore end to end: the real SDK against the emulator, the real files.

A backup is a copy into files and a restore a copy out of them; these tests prove the round trip is
exact (canonical JSON, fragile numbers included), that damage is caught before anything is
written, and that a backup interrupted gracefully or killed with SIGKILL resumes into the same
directory with every document exactly once.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from azure.cosmos import PartitionKey, ThroughputProperties
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy

from asyncmig.connection import parse_connection_string
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.connect import cosmos_client
from asyncmig.core.engine.pipeline import PipelineOptions
from asyncmig.core.engine.sink import WriteUnit
from asyncmig.core.files.jsonl import JsonlGzReader
from asyncmig.core.files.manifest import MANIFEST_NAME, read_manifest, verify_backup
from asyncmig.core.files.sink import FileSink
from asyncmig.core.files.source import FileSource
from asyncmig.errors import BackupCorrupt, Interrupted, ResourceMissing, UsageError
from asyncmig.phases.backup import _entry as backup_entry
from asyncmig.phases.backup import backup, backup_checkpoint, verify
from asyncmig.phases.context import PhaseContext, PhaseOptions
from asyncmig.phases.restore import container_digest, restore
from asyncmig.phases.state import load_state
from asyncmig.phases.workdir import WorkDir
from asyncmig.vimarsh.demo_data import BIG_INT, LONG_FLOAT, DemoDataSet
from asyncmig.vimarsh.plan import SOURCE_ACTIVITY, SOURCE_CONTAINERS, SOURCE_USERS, SOURCE_VECTORS
from tests.conftest import Cosmos, needs_emulator
from tests.core.support import contents, seed
from tests.helpers import unique

DATA = DemoDataSet(vectors=300, dimensions=16, users=18, sessions=18, interactions=103)
FRAGILE = {
    "id": "fragile-user", "partition_key": "fragile-user", "big": 2**53 + 1, "long": 2100.607537417505,
    "neg_zero": -0.0, "text": "धर्म 🕉️ naïve — ünïcode", "nested": {"values": [2**53 + 1, -0.0, 1e-7]},
}
COUNTS = {SOURCE_VECTORS: 300, SOURCE_USERS: 19, SOURCE_ACTIVITY: 121}  # users: 18 + FRAGILE
VECTORS_AUTOSCALE = 4000


async def seed_legacy(database: DatabaseProxy, *, vectors_autoscale: int | None = None) -> dict[str, ContainerProxy]:
    """The legacy layout with the plan's partition keys, filled with the demo data (plus FRAGILE)."""
    containers: dict[str, ContainerProxy] = {}
    for spec in SOURCE_CONTAINERS:
        throughput = (ThroughputProperties(auto_scale_max_throughput=vectors_autoscale)
                      if vectors_autoscale and spec.name == SOURCE_VECTORS else None)
        container = await database.create_container(
            spec.name, partition_key=PartitionKey(spec.partition_key_path), offer_throughput=throughput
        )
        await seed(container, list(DATA.documents(spec.name)))
        containers[spec.name] = container
    await containers[SOURCE_USERS].upsert_item(FRAGILE)
    return containers


@asynccontextmanager
async def phase_context(
    cosmos: Cosmos, database: str, root: Path, *, page_size: int = 100, stop: anyio.Event | None = None
) -> AsyncIterator[PhaseContext]:
    """A context as the orchestrator builds it; the state is loaded from ``root``, so a second
    context over the same root continues where the first left off."""
    endpoint = parse_connection_string(cosmos.connection_string)
    workdir = WorkDir(root=root / "work", backups=root / "backups").ensure()
    options = PhaseOptions(progress=False, pipeline=PipelineOptions(page_size=page_size, checkpoint_interval=0.2))
    async with cosmos_client(endpoint) as client:
        state = load_state(workdir.state, host=endpoint.host, database=database)
        yield PhaseContext(endpoint, client, database, workdir, state, options=options, stop=stop)


def file_documents(path: Path) -> list[dict[str, Any]]:
    with JsonlGzReader(path) as reader:
        return list(reader)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes(directory: Path) -> dict[str, int]:
    """Permission bits of a directory (as ".") and of each file in it."""
    return {".": mode(directory), **{p.name: mode(p) for p in directory.iterdir()}}


# -- the round trip -------------------------------------------------------------------------


async def test_backup_verify_restore_round_trip_is_exact(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    sources = await seed_legacy(database, vectors_autoscale=VECTORS_AUTOSCALE)
    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        result = await backup(ctx)
        backup_dir = Path(ctx.state.backup_dir or "")
        assert result.status == "done" and result.documents == sum(COUNTS.values())
        assert result.ru > 0  # the change feed reads are paid for, and reported
        assert backup_dir.parent == tmp_path / "backups" and backup_dir.name.startswith("backup_")
        saved = load_state(ctx.workdir.state, host=ctx.endpoint.host, database=database.id)
        assert saved.backup_dir == str(backup_dir) and saved.is_finished("backup")
        assert saved.vector_dimensions == 16  # the most common embedding length

        manifest = read_manifest(backup_dir)
        assert manifest["database"] == database.id and manifest["source_host"] == ctx.endpoint.host
        assert cosmos.key not in (backup_dir / MANIFEST_NAME).read_text()
        assert modes(backup_dir) == {
            ".": 0o700, MANIFEST_NAME: 0o600, **{f"{name}.jsonl.gz": 0o600 for name in COUNTS}
        }
        for name, source in sources.items():
            entry = manifest["containers"][name]
            assert entry["count"] == COUNTS[name]
            assert entry["content_digest"] == (await container_digest(source, ctx)).to_json()
            assert entry["properties"]["partitionKey"] == (await source.read())["partitionKey"]
            assert "_rid" not in entry["properties"]
        assert manifest["containers"][SOURCE_VECTORS]["throughput"] == {"kind": "autoscale", "value": 4000}
        assert manifest["containers"][SOURCE_USERS]["throughput"] == {"kind": "serverless", "value": None}
        users = file_documents(backup_dir / "users.jsonl.gz")
        assert all("_etag" in d and "_rid" in d and "_ts" in d for d in users)  # documents as read

        report = await verify(backup_dir)
        assert report.ok and [c.actual_count for c in report.containers] == list(COUNTS.values())
        sealed = (backup_dir / MANIFEST_NAME).read_bytes()
        again = await backup(ctx)  # a finished backup is what rollback restores: never rewritten
        assert again.status == "skipped" and (backup_dir / MANIFEST_NAME).read_bytes() == sealed

        into = {name: f"{name}-restored" for name in COUNTS}
        restored = await restore(ctx, backup_dir, into=into)
        assert restored.status == "done"
        for name, source in sources.items():
            target = database.get_container_client(into[name])
            assert restored.details["containers"][name]["created"] is True
            assert await contents(target) == await contents(source)  # exact canonical JSON
            digest = await container_digest(target, ctx)
            assert digest.count == COUNTS[name]
            assert digest.to_json() == manifest["containers"][name]["content_digest"]
            assert (await target.read())["partitionKey"] == (await source.read())["partitionKey"]
        offer = await database.get_container_client(into[SOURCE_VECTORS]).get_throughput()
        assert offer.auto_scale_max_throughput == VECTORS_AUTOSCALE

    fragile = await database.get_container_client(into[SOURCE_USERS]).read_item("fragile-user", "fragile-user")
    assert fragile["big"] == 2**53 + 1 and isinstance(fragile["big"], int)
    assert fragile["long"] == 2100.607537417505
    assert fragile["neg_zero"] == 0 and math.copysign(1.0, fragile["neg_zero"]) == -1.0
    assert fragile["text"] == FRAGILE["text"] and fragile["nested"] == FRAGILE["nested"]
    query = "SELECT * FROM c WHERE IS_DEFINED(c.catalog_number)"
    vectors = [d async for d in database.get_container_client(into[SOURCE_VECTORS]).query_items(query)]
    assert vectors and all(d["catalog_number"] == BIG_INT and d["relevance_score"] == LONG_FLOAT for d in vectors)


async def test_restore_into_existing_container_upserts_and_is_repeatable(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    """Restoring twice rewrites every document (a finished restore is not "resumed" into a no-op),
    so a container altered between the two restores comes back exactly."""
    sources = await seed_legacy(database)
    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        await backup(ctx)
        backup_dir = Path(ctx.state.backup_dir or "")
        into = {SOURCE_USERS: "users-copy"}
        await restore(ctx, backup_dir, [SOURCE_USERS], into=into)
        copy = database.get_container_client("users-copy")
        await copy.upsert_item({**FRAGILE, "big": 1, "added": True})
        again = await restore(ctx, backup_dir, [SOURCE_USERS], into=into)
        assert again.details["containers"][SOURCE_USERS]["created"] is False
        assert again.documents == COUNTS[SOURCE_USERS]
    assert await contents(copy) == await contents(sources[SOURCE_USERS])


async def test_a_missing_source_container_is_a_clear_error_before_anything_is_written(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    for spec in SOURCE_CONTAINERS:
        if spec.name != SOURCE_ACTIVITY:
            await database.create_container(spec.name, partition_key=PartitionKey(spec.partition_key_path))
    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        with pytest.raises(ResourceMissing, match=f"{database.id}/user_activity does not exist") as missing:
            await backup(ctx)
        assert missing.value.exit_code == 4
        assert ctx.state.backup_dir is None and not ctx.workdir.state.exists()
    assert list((tmp_path / "backups").iterdir()) == []


async def test_restart_is_refused_once_the_migration_created_containers(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        ctx.state.created.append("user_sessions")
        with pytest.raises(UsageError, match="roll back first"):
            await backup(ctx, restart=True)


# -- damage is caught before anything is written ----------------------------------------------


@dataclass(frozen=True)
class Pristine:
    database: str
    backup_dir: Path


@pytest.fixture(scope="module")
async def pristine(cosmos: Cosmos, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pristine]:
    """One finished backup, copied and damaged by the tests below."""
    root = tmp_path_factory.mktemp("pristine")
    async with CosmosClient(cosmos.endpoint, credential=cosmos.key) as client:
        database = await client.create_database(unique("db"))
        try:
            await seed_legacy(database)
            async with phase_context(cosmos, database.id, root) as ctx:
                await backup(ctx)
            yield Pristine(database.id, Path(ctx.state.backup_dir or ""))
        finally:
            await client.delete_database(database.id)


def _truncate(directory: Path) -> str:
    path = directory / "user_activity.jsonl.gz"
    os.truncate(path, path.stat().st_size // 2)
    return "truncated"


def _edit_line(directory: Path) -> str:
    path = directory / "users.jsonl.gz"
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    document = jsoncodec.loads(lines[3])
    document["email"] = "someone.else@example.com"
    lines[3] = jsoncodec.dumps(document)
    path.write_bytes(gzip.compress(b"\n".join(lines)))  # a valid file, just not the one backed up
    return "SHA-256 differs"


def _flip_byte(directory: Path) -> str:
    path = directory / "personality-vectors.jsonl.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return "personality-vectors"


@pytest.mark.parametrize("damage", [_truncate, _edit_line, _flip_byte], ids=["truncated", "edited", "flipped"])
async def test_verify_catches_damage_and_restore_refuses_it(
    cosmos: Cosmos, pristine: Pristine, tmp_path: Path, damage: Callable[[Path], str]
) -> None:
    damaged = tmp_path / "backups" / pristine.backup_dir.name
    shutil.copytree(pristine.backup_dir, damaged)
    expected = damage(damaged)

    with pytest.raises(BackupCorrupt, match="failed verification") as caught:
        await verify(damaged)
    assert caught.value.exit_code == 6
    problems = verify_backup(damaged).problems  # every problem, where verify names the first
    assert expected in " ".join(problems)
    assert (await verify(pristine.backup_dir)).ok  # the copy was damaged, not the original

    async with phase_context(cosmos, pristine.database, tmp_path) as ctx:
        with pytest.raises(BackupCorrupt) as refused:
            await restore(ctx, damaged, into={name: f"{name}-never" for name in COUNTS})
        assert refused.value.exit_code == 6
        names = [c["id"] async for c in ctx.database.list_containers()]
    assert not any(name.endswith("-never") for name in names)  # refused before writing anything


async def test_restore_refuses_a_backup_without_manifest(cosmos: Cosmos, pristine: Pristine, tmp_path: Path) -> None:
    unfinished = tmp_path / "backups" / pristine.backup_dir.name
    shutil.copytree(pristine.backup_dir, unfinished)
    (unfinished / MANIFEST_NAME).unlink()
    with pytest.raises(BackupCorrupt, match="no manifest.json"):
        await verify(unfinished)
    assert (await verify(pristine.backup_dir)).ok
    async with phase_context(cosmos, pristine.database, tmp_path) as ctx:
        with pytest.raises(BackupCorrupt, match="no manifest.json"):
            await restore(ctx, unfinished, into={name: f"{name}-never" for name in COUNTS})


# -- interrupted backups resume into the same directory -------------------------------------


async def _wait_for_data(path_of: Callable[[], Path | None], seconds: float = 30.0) -> None:
    with anyio.fail_after(seconds):
        while True:
            path = path_of()
            if path is not None and path.exists() and path.stat().st_size > 0:
                return
            await anyio.sleep(0.005)


async def backup_stopped_part_way(cosmos: Cosmos, database: str, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """Start the backup phase and stop it once the vectors file has data (reads slowed so the stop
    lands part-way); returns the backup folder and the vectors checkpoint as saved."""
    assert cosmos.emulator is not None
    stop = anyio.Event()
    cosmos.emulator.admin("faults", {"latency_ms": 30})
    try:
        async with phase_context(cosmos, database, tmp_path, page_size=10, stop=stop) as ctx:

            def vectors_file() -> Path | None:
                return Path(ctx.state.backup_dir) / f"{SOURCE_VECTORS}.jsonl.gz" if ctx.state.backup_dir else None

            async def stop_when_writing() -> None:
                await _wait_for_data(vectors_file)
                stop.set()

            async with anyio.create_task_group() as group:
                group.start_soon(stop_when_writing)
                with pytest.raises(Interrupted):
                    await backup(ctx)
            backup_dir = Path(ctx.state.backup_dir or "")
            return backup_dir, _checkpoint_json(backup_checkpoint(ctx, SOURCE_VECTORS, backup_dir))
    finally:
        cosmos.emulator.admin("faults", {"latency_ms": 0})


def _assert_resumed_backup_is_exact(backup_dir: Path, first: dict[str, int]) -> None:
    manifest = read_manifest(backup_dir)
    for name, count in COUNTS.items():
        documents = file_documents(backup_dir / f"{name}.jsonl.gz")
        ids = [(d["id"], jsoncodec.canonical(d.get("partition_key", d.get("personality")))) for d in documents]
        assert len(ids) == len(set(ids)) == count == manifest["containers"][name]["count"], name
    assert first[SOURCE_VECTORS] < COUNTS[SOURCE_VECTORS]  # the first run really stopped part-way


@needs_emulator
async def test_backup_stopped_part_way_resumes_into_the_same_directory(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    sources = await seed_legacy(database)
    backup_dir, checkpoint = await backup_stopped_part_way(cosmos, database.id, tmp_path)
    assert not (backup_dir / MANIFEST_NAME).exists()
    first = {SOURCE_VECTORS: checkpoint["totals"]["read"]}

    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        assert ctx.state.backup_dir == str(backup_dir) and not ctx.state.is_finished("backup")
        await backup(ctx)
        assert ctx.state.backup_dir == str(backup_dir)  # resumed, not started over elsewhere
        assert [p.name for p in (tmp_path / "backups").iterdir()] == [backup_dir.name]
        _assert_resumed_backup_is_exact(backup_dir, first)
        manifest = read_manifest(backup_dir)
        for name, source in sources.items():
            assert manifest["containers"][name]["content_digest"] == (await container_digest(source, ctx)).to_json()
        assert (await verify(backup_dir)).ok


KILLED_BACKUP = """
import sys
from pathlib import Path

import anyio

from asyncmig.connection import parse_connection_string
from asyncmig.core.cosmos.connect import cosmos_client
from asyncmig.core.engine.pipeline import PipelineOptions
from asyncmig.phases.backup import backup
from asyncmig.phases.context import PhaseContext, PhaseOptions
from asyncmig.phases.state import load_state
from asyncmig.phases.workdir import WorkDir


async def main(connection_string: str, database: str, root: str) -> None:
    endpoint = parse_connection_string(connection_string)
    workdir = WorkDir(root=Path(root) / "work", backups=Path(root) / "backups").ensure()
    options = PhaseOptions(progress=False, pipeline=PipelineOptions(page_size=2, checkpoint_interval=1.0))
    async with cosmos_client(endpoint) as client:
        state = load_state(workdir.state, host=endpoint.host, database=database)
        await backup(PhaseContext(endpoint, client, database, workdir, state, options=options))


anyio.run(main, *sys.argv[1:])
"""


def _checkpoint_json(path: Path) -> dict[str, Any]:
    """A checkpoint file as stored (read without an identity, as a bystander would)."""
    document = jsoncodec.loads(path.read_bytes())
    assert isinstance(document, dict)
    return document


def _bytes_past_checkpoint(checkpoint: Path, backup_file: Path) -> int:
    """Bytes of writes acknowledged after ``checkpoint`` was saved: the file beyond its stored offset."""
    offset = _checkpoint_json(checkpoint)["sink_state"].get("offsets", {}).get(SOURCE_VECTORS, 0)
    return backup_file.stat().st_size - offset if offset and backup_file.exists() else 0


def _kill_backup_part_way(cosmos: Cosmos, database: str, root: Path) -> Path:
    """Run the backup phase in a child process and SIGKILL it once the vectors' checkpoint covers
    committed data and writes acknowledged since are in the file past its offset; returns that
    checkpoint's path. Checkpoints are saved once a second, so the kill cannot race a save."""
    script = root / "killed_backup.py"
    script.write_text(KILLED_BACKUP)
    workdir = WorkDir(root=root / "work", backups=root / "backups")
    host = parse_connection_string(cosmos.connection_string).host
    process = subprocess.Popen([sys.executable, str(script), cosmos.connection_string, database, str(root)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        checkpoint: Path | None = None
        backup_file: Path | None = None
        while True:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the backup never reached the state to kill it in"
            if checkpoint is None and workdir.state.exists():
                state = load_state(workdir.state, host=host, database=database)
                if state.backup_dir:
                    checkpoint = workdir.checkpoint("backup", f"{SOURCE_VECTORS}@{Path(state.backup_dir).name}")
                    backup_file = Path(state.backup_dir) / f"{SOURCE_VECTORS}.jsonl.gz"
            if checkpoint is not None and backup_file is not None and checkpoint.exists():
                if _bytes_past_checkpoint(checkpoint, backup_file) > 0:
                    break
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)
    return checkpoint


@needs_emulator
async def test_backup_killed_with_sigkill_resumes_with_every_document_exactly_once(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    """The kill lands after a checkpoint with committed data, while writes acknowledged since are in
    the file past the checkpoint's offset: the files are cut back to the checkpoint, and those documents must be
    written again rather than skipped (or the backup would silently lack them)."""
    sources = await seed_legacy(database)
    assert cosmos.emulator is not None
    cosmos.emulator.admin("faults", {"latency_ms": 50})
    try:
        checkpoint = await anyio.to_thread.run_sync(_kill_backup_part_way, cosmos, database.id, tmp_path)
    finally:
        cosmos.emulator.admin("faults", {"latency_ms": 0})
    first = {SOURCE_VECTORS: _checkpoint_json(checkpoint)["totals"]["read"]}
    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        vectors_file = Path(ctx.state.backup_dir or "") / f"{SOURCE_VECTORS}.jsonl.gz"
    assert _bytes_past_checkpoint(checkpoint, vectors_file) > 0  # the case that matters: writes past the checkpoint

    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        backup_dir = Path(ctx.state.backup_dir or "")
        assert not (backup_dir / MANIFEST_NAME).exists()  # killed part-way
        await backup(ctx)
        assert ctx.state.backup_dir == str(backup_dir)
        _assert_resumed_backup_is_exact(backup_dir, first)
        manifest = read_manifest(backup_dir)
        for name, source in sources.items():
            assert manifest["containers"][name]["content_digest"] == (await container_digest(source, ctx)).to_json()
        assert (await verify(backup_dir)).ok


# -- the sink and the source on their own ---------------------------------------------------


async def test_file_sink_serialises_concurrent_writes_and_resumes_at_the_acknowledged_offset(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, ["a"])
    await sink.open({})
    pages = [[{"id": f"{p}-{i}", "pk": p, "v": [p / 7, -0.0, 2**53 + 1]} for i in range(50)] for p in range(40)]
    async with anyio.create_task_group() as group:
        for page in pages:
            units, rejected = sink.plan("a", page)
            assert rejected == [] and [u.lane for u in units] == ["file:a"]
            for unit in units:
                group.start_soon(sink.write, unit)
    state = await sink.flush()
    offset = state["offsets"]["a"]
    assert offset == sink.path("a").stat().st_size
    await sink.write(WriteUnit("a", "file:a", [{"id": "after-the-checkpoint"}]))
    await sink.close()
    assert len(file_documents(sink.path("a"))) == 40 * 50 + 1

    resumed = FileSink(tmp_path, ["a"])
    await resumed.open(state)  # what a resume from that checkpoint does: cut back to the offset
    await resumed.close()
    written = file_documents(resumed.path("a"))
    assert sorted(d["id"] for d in written) == sorted(d["id"] for page in pages for d in page)
    assert written[0]["v"][2] == 2**53 + 1 and math.copysign(1.0, written[0]["v"][1]) == -1.0
    assert mode(resumed.path("a")) == 0o600


async def test_file_source_pages_resume_after_the_documents_consumed(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, ["c"])
    await sink.open({})
    documents = [{"id": str(i), "pk": i % 3} for i in range(23)]
    await sink.write(WriteUnit("c", "file:c", documents))
    await sink.close()
    source = FileSource(sink.path("c"), {"paths": ["/pk"], "kind": "Hash", "version": 2}, count=23, page_size=5)
    await source.open()
    (key, partition), = (await source.partitions()).items()
    pages = [page async for page in source.pages(partition, None)]
    assert [page.position for page in pages] == ["5", "10", "15", "20", "23"]
    assert [d for page in pages for d in page.documents] == documents
    rest = [d for page in [p async for p in source.pages(partition, "15")] for d in page.documents]
    assert rest == documents[15:]
    assert source.partition_key(documents[4]) == [1] and await source.count() == 23
    with pytest.raises(BackupCorrupt, match="holds only 23 documents"):
        _ = [p async for p in source.pages(partition, "24")]


async def test_a_container_that_changed_during_its_backup_reports_its_count_at_the_end(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    """A live container's backup is not refused: the entry is the file's, the count now is reported
    beside it (docs/live-migration.md, "Backups of a live container")."""
    sources = await seed_legacy(database)
    async with phase_context(cosmos, database.id, tmp_path) as ctx:
        await backup(ctx)
        backup_dir = Path(ctx.state.backup_dir or "")
        entry = read_manifest(backup_dir)["containers"][SOURCE_USERS]
        await sources[SOURCE_USERS].upsert_item({"id": "late", "partition_key": "late"})
        again, count_now = await backup_entry(ctx, sources[SOURCE_USERS], backup_dir / entry["file"])
        assert again["count"] == entry["count"] == COUNTS[SOURCE_USERS] and count_now == COUNTS[SOURCE_USERS] + 1
