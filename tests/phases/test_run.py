"""asyncmig run end to end: the real CLI in a subprocess against an emulator process, demo data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.cosmos.aio import CosmosClient

from tests.core.support import writes_to
from tests.helpers import EmulatorProcess, run_asyncmig

pytestmark = pytest.mark.timeout(600)
VECTORS = 400
DIMENSIONS = 32
TIMEOUT_S = 300


def _cli(emulator: EmulatorProcess, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_asyncmig(emulator.connection_string, cwd, *args, timeout=TIMEOUT_S)


def _seed(emulator: EmulatorProcess, cwd: Path) -> None:
    seeded = _cli(emulator, cwd, "seed-demo", "--vectors", str(VECTORS), "--dimensions", str(DIMENSIONS),
                  "--no-progress")
    assert seeded.returncode == 0, seeded.stderr


async def test_full_run_validates_with_the_planned_layout(emulator: EmulatorProcess, tmp_path: Path) -> None:
    _seed(emulator, tmp_path)
    result = _cli(emulator, tmp_path, "run", "--yes", "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    for number, phase in enumerate(("backup", "create", "migrate", "validate"), 1):
        assert f"PHASE {number}/4: {phase}" in result.stdout
    work = tmp_path / ".asyncmig" / "vimarsh-vimarsh-multi-personality"
    summary = json.loads((work / "reports" / "summary.json").read_text())
    assert [p["status"] for p in summary["phases"]] == ["done", "done", "done", "done"]
    assert emulator.key not in (work / "reports" / "summary.json").read_text()
    async with CosmosClient(emulator.endpoint, credential=emulator.key) as client:
        db = client.get_database_client("vimarsh-multi-personality")
        vectors = db.get_container_client("personality_vectors")
        props = await vectors.read()
        assert props["partitionKey"]["paths"] == ["/partition_key"]
        assert props["vectorEmbeddingPolicy"]["vectorEmbeddings"][0]["dimensions"] == DIMENSIONS
        assert {"path": "/embedding/*"} in props["indexingPolicy"]["excludedPaths"]
        sessions = await db.get_container_client("user_sessions").read()
        assert sessions["defaultTtl"] == 7_776_000
        personalities = [p async for p in db.get_container_client("personalities").read_all_items()]
        assert len(personalities) == 13
        assert sum(p["vector_count"] for p in personalities) == VECTORS
        assert await writes_to(vectors) == VECTORS  # nothing written twice
    again = _cli(emulator, tmp_path, "run", "--yes", "--no-progress")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(" - finished at ") == 4  # a finished run has nothing left to do


async def test_run_killed_mid_migration_then_rerun_completes_without_duplicates(tmp_path: Path) -> None:
    emulator = EmulatorProcess("--latency-ms", "4", data_dir=tmp_path / "emulator").start()
    try:
        _seed(emulator, tmp_path)
        checkpoint = (tmp_path / ".asyncmig" / "vimarsh-vimarsh-multi-personality" / "checkpoints"
                      / "migrate-personality-vectors.json")
        _kill_run_once(emulator, tmp_path, lambda: checkpoint.exists()
                       and json.loads(checkpoint.read_text())["totals"]["written"] > 50)
        checkpointed = json.loads(checkpoint.read_text())["totals"]["written"]
        async with CosmosClient(emulator.endpoint, credential=emulator.key) as client:
            vectors = client.get_database_client("vimarsh-multi-personality").get_container_client(
                "personality_vectors")
            written_before_kill = await writes_to(vectors)
            result = _cli(emulator, tmp_path, "run", "--yes", "--no-progress")
            assert result.returncode == 0, result.stdout + result.stderr
            assert "backup - finished" in result.stdout and "create - finished" in result.stdout
            assert len([d async for d in vectors.read_all_items()]) == VECTORS
            duplicates = await writes_to(vectors) - VECTORS
            # The re-run writes again only what the last checkpoint did not cover: the writes that
            # landed after it, before the kill.
            assert 0 <= duplicates <= written_before_kill - checkpointed
    finally:
        emulator.stop()


def _kill_run_once(emulator: EmulatorProcess, cwd: Path, ready: Callable[[], bool]) -> None:
    """Start ``asyncmig run --yes`` and SIGKILL it as soon as ``ready()`` holds."""
    env = {**os.environ, "AZURE_COSMOS_CONNECTION_STRING": emulator.connection_string}
    process = subprocess.Popen([sys.executable, "-m", "asyncmig", "run", "--yes", "--no-progress"], cwd=cwd,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ready():
            assert process.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)


def test_a_declined_confirmation_changes_nothing(emulator: EmulatorProcess, tmp_path: Path) -> None:
    _seed(emulator, tmp_path)
    result = _cli(emulator, tmp_path, "run", "--no-progress")  # no --yes, no terminal to ask
    assert result.returncode == 1
    assert "pass --yes" in result.stderr
    assert not list((tmp_path / "data" / "migration_backups").glob("backup_*"))


def test_a_second_run_on_the_same_state_is_refused(emulator: EmulatorProcess, tmp_path: Path) -> None:
    from asyncmig.core.files.fsutil import PidLock

    _seed(emulator, tmp_path)
    work = tmp_path / ".asyncmig" / "vimarsh-vimarsh-multi-personality"
    work.mkdir(parents=True, exist_ok=True)
    with PidLock(work):
        result = _cli(emulator, tmp_path, "run", "--yes", "--no-progress")
    assert result.returncode == 5
    assert "another asyncmig run" in result.stderr
