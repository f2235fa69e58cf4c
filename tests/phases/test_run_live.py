"""``asyncmig run --live`` while an application process keeps writing, then ``asyncmig cutover``.

The writer (:mod:`tests.live_writer`) updates (some documents many times), inserts and deletes documents in
users, user_activity and personality-vectors from before the backup until after the follower
started; then it stops, as the application is stopped before a cutover, and ``asyncmig cutover``
from a second process makes the run catch up and validate. The run must end with validation
passed and say that the application can be pointed at the new containers; the hot documents'
last writes must be in the new layout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.cosmos.aio import CosmosClient

from asyncmig.connection import parse_connection_string
from asyncmig.phases.state import load_state
from asyncmig.vimarsh.plan import (
    DEFAULT_DATABASE,
    PERSONALITY_VECTORS,
    SOURCE_USERS,
    SOURCE_VECTORS,
    USER_SESSIONS,
)
from tests.helpers import EmulatorProcess, run_asyncmig
from tests.live_writer import start_writer, stop_writer

pytestmark = pytest.mark.timeout(600)
TIMEOUT_S = 300


def _env(emulator: EmulatorProcess) -> dict[str, str]:
    return {**os.environ, "AZURE_COSMOS_CONNECTION_STRING": emulator.connection_string}


def _cli(emulator: EmulatorProcess, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_asyncmig(emulator.connection_string, cwd, *args, timeout=TIMEOUT_S)


def _requests(emulator: EmulatorProcess) -> int:
    return int(emulator.admin("stats")["requests"])


def _wait(condition: Callable[[], bool], process: subprocess.Popen[str], what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # polls files and counters: no event to wait for across processes
        assert process.poll() is None, f"the run ended before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def live_run(emulator: EmulatorProcess, cwd: Path, *, seed: int, deletes: bool = False, ctrl_c: bool = False,
             writes_while_following: int = 300) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, int]]]:
    """Seeded legacy layout in ``emulator``; run --live with the writer going, cut over (``asyncmig
    cutover``, or Ctrl-C in the run's terminal); returns the run's result and the writer's counts."""
    writer = start_writer(emulator.connection_string, DEFAULT_DATABASE, seed, deletes=deletes)
    run = subprocess.Popen([sys.executable, "-m", "asyncmig", "run", "--live", "--yes", "--no-progress"], cwd=cwd,
                           env=_env(emulator), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           stdin=subprocess.DEVNULL)
    try:
        state_file = cwd / ".asyncmig" / f"vimarsh-{DEFAULT_DATABASE}" / "state.json"
        host = parse_connection_string(emulator.connection_string).host

        def migrated() -> bool:
            if not state_file.exists():
                return False
            return load_state(state_file, host=host, database=DEFAULT_DATABASE).is_finished("migrate")

        _wait(migrated, run, "the migrate phase")
        following_from = _requests(emulator)
        _wait(lambda: _requests(emulator) >= following_from + writes_while_following, run, "writes while following")
    finally:
        counts = stop_writer(writer)
    if ctrl_c:
        run.send_signal(signal.SIGINT)
    else:
        cut = _cli(emulator, cwd, "cutover")
        assert cut.returncode == 0, cut.stderr
    out, err = run.communicate(timeout=TIMEOUT_S)
    return subprocess.CompletedProcess(run.args, run.returncode, out, err), counts


async def test_run_live_follows_a_writing_application_until_cutover(emulator: EmulatorProcess, tmp_path: Path) -> None:
    seeded = _cli(emulator, tmp_path, "seed-demo", "--vectors", "200", "--dimensions", "16", "--no-progress")
    assert seeded.returncode == 0, seeded.stderr
    result, counts = live_run(emulator, tmp_path, seed=11, deletes=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "PHASE 4/5: follow" in result.stdout and "Validation of" in result.stdout
    assert "safe to point the application at them now" in result.stdout
    for kind in ("update", "insert", "delete"):
        assert sum(c[kind] for c in counts.values()) > 0, counts  # validation passed: deletes followed too

    async with CosmosClient(emulator.endpoint, credential=emulator.key) as client:
        db = client.get_database_client(DEFAULT_DATABASE)
        hot = [d async for d in db.get_container_client(SOURCE_VECTORS).query_items(
            "SELECT * FROM c WHERE c.live_writes > 1")]
        assert hot, "no vector was updated more than once"
        for source in hot:
            [target] = [d async for d in db.get_container_client(PERSONALITY_VECTORS).query_items(
                "SELECT * FROM c WHERE c.id = @id", parameters=[{"name": "@id", "value": source["id"]}])]
            assert target["migrated_from"]["_ts"] == source["_ts"]  # the newest version
            assert target.get("legacy", {}).get("live_writes", target.get("live_writes")) == source["live_writes"]
        users = db.get_container_client(SOURCE_USERS)
        inserted_users = [u async for u in users.query_items("SELECT * FROM c WHERE STARTSWITH(c.id, 'live-')")]
        assert inserted_users and all(u.get("profile_version") == "1.0" for u in inserted_users)

        # After the cutover the application writes to the new layout; a rollback must not destroy that.
        await db.get_container_client(USER_SESSIONS).upsert_item(
            {"id": "after-cutover", "user_id": "u1", "partition_key": "u1", "document_type": "user_session"})
        original = [u async for u in users.query_items("SELECT * FROM c WHERE NOT STARTSWITH(c.id, 'live-')")][0]
        edited = {k: v for k, v in original.items() if not k.startswith("_")} | {"display_name": "after cutover"}
        await users.upsert_item(edited)
        refused = _cli(emulator, tmp_path, "rollback", "--yes", "--no-progress")
        assert refused.returncode == 2 and f"{USER_SESSIONS} (1 document)" in refused.stderr, refused.stderr
        forced = _cli(emulator, tmp_path, "rollback", "--yes", "--force", "--no-progress")
        assert forced.returncode == 0, forced.stderr
        kept = await users.read_item(edited["id"], edited["partition_key"])
        assert {k: v for k, v in kept.items() if not k.startswith("_")} == edited  # not reverted
        names = {c["id"] async for c in db.list_containers()}
        assert names == {SOURCE_USERS, SOURCE_VECTORS, "user_activity"}


async def test_ctrl_c_in_the_runs_terminal_cuts_over(emulator: EmulatorProcess, tmp_path: Path) -> None:
    seeded = _cli(emulator, tmp_path, "seed-demo", "--vectors", "100", "--dimensions", "8", "--no-progress")
    assert seeded.returncode == 0, seeded.stderr
    result, _ = live_run(emulator, tmp_path, seed=12, ctrl_c=True, writes_while_following=100)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "safe to point the application at them now" in result.stdout


def test_cutover_without_a_running_live_run_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_COSMOS")}
    result = subprocess.run([sys.executable, "-m", "asyncmig", "cutover"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "no `asyncmig run --live` is running" in result.stderr
    assert not list(tmp_path.rglob("cutover.request"))
