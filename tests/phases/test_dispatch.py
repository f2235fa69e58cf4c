"""A phase run as its own command gets what `asyncmig run` gives it: the lock, the report, the state,
the confirmation and error hints that fit the command (no emulator: in-memory source and sink)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from asyncmig.connection import CosmosEndpoint
from asyncmig.core.files.fsutil import PidLock
from asyncmig.errors import CorruptState, LockHeld
from asyncmig.phases.context import PhaseContext, PhaseOptions, PhaseResult
from asyncmig.phases.run import Declined, run_single
from asyncmig.phases.state import MigrationState, load_state
from asyncmig.phases.workdir import WorkDir
from tests.core.memory import MemorySink, MemorySource

KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="


def context(tmp_path: Path) -> PhaseContext:
    endpoint = CosmosEndpoint("https://localhost:8081/", KEY)
    workdir = WorkDir(root=tmp_path / "work", backups=tmp_path / "backups").ensure()
    state = MigrationState(host=endpoint.host, database="db")
    client: Any = None  # nothing here talks to Cosmos DB
    return PhaseContext(endpoint, client, "db", workdir, state, PhaseOptions(progress=False))


async def done(name: str) -> PhaseResult:
    return PhaseResult(name, "done", documents=3)


async def test_a_single_phase_takes_the_lock(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    with PidLock(ctx.workdir.root), pytest.raises(LockHeld):
        await run_single("migrate", ctx, confirm=lambda _q: True, action=lambda: done("migrate"), say=lambda _s: None)


async def test_a_single_phase_writes_its_report_and_records_itself_finished(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    said: list[str] = []
    await run_single("backup", ctx, confirm=lambda _q: False, action=lambda: done("backup"), say=said.append)
    report = json.loads(ctx.workdir.report("backup").read_text())
    assert report["status"] == "done" and report["documents"] == 3
    assert load_state(ctx.workdir.state, host=ctx.endpoint.host, database="db").is_finished("backup")
    assert "backup" in said[-1]  # the summary line


async def test_phases_that_change_containers_ask_first(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    questions: list[str] = []
    ran: list[str] = []

    async def never() -> PhaseResult:
        ran.append("rollback")
        return PhaseResult("rollback", "done")

    with pytest.raises(Declined):
        await run_single("rollback", ctx, confirm=lambda q: questions.append(q) or False, action=never)
    assert ran == [] and "rollback" in questions[0] and "localhost:8081" in questions[0]


async def test_a_damaged_phase_checkpoint_does_not_suggest_an_option_the_phase_lacks(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    checkpoint = ctx.workdir.checkpoint("migrate", "users")
    checkpoint.write_text("{not json")
    source = MemorySource({"r0": [{"id": "a", "pk": "a"}]})
    with pytest.raises(CorruptState) as caught:
        await ctx.transfer("migrate", "users", source, MemorySink(), {"run": "test"})
    assert "--restart" not in str(caught.value) and "move it aside" in str(caught.value)
