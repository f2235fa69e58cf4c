"""asyncmig status: phases, checkpoints and positions per range, from the local files only."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import anyio
import pytest

from asyncmig.cli import main
from asyncmig.core.engine.checkpoint import read_checkpoint
from asyncmig.core.engine.pipeline import PipelineOptions
from asyncmig.core.engine.transfer import Transfer, run_transfer
from asyncmig.phases.state import MigrationState, save_state
from asyncmig.phases.workdir import WorkDir
from asyncmig.status import collect, render
from tests.core.memory import MemorySink, MemorySource


async def _migration_with_one_checkpoint(base: Path) -> WorkDir:
    workdir = WorkDir.for_database("db", base=base, backups=base / "backups").ensure()
    state = MigrationState(host="localhost:8081", database="db", backup_dir="backups/backup_1", created=["users"])
    state.finish("backup")
    save_state(workdir.state, state)
    source = MemorySource({"r0": [{"id": f"a{i}", "pk": "a"} for i in range(5)], "r1": []})
    await run_transfer(Transfer(source=source, sink=MemorySink(), identity={"run": 1},
                                checkpoint=workdir.checkpoint("migrate", "users"),
                                dead_letter=workdir.dead_letter("migrate", "users"), progress=False,
                                options=PipelineOptions(page_size=2)))
    return workdir


async def test_status_shows_phases_checkpoints_and_positions_per_range(tmp_path: Path) -> None:
    workdir = await _migration_with_one_checkpoint(tmp_path)
    (tmp_path / "copy-a--b.checkpoint.json").write_text("{damaged")
    works = collect(tmp_path)
    saved = datetime.fromisoformat(read_checkpoint(workdir.checkpoint("migrate", "users")).updated_at)
    text = render(works, now=saved + timedelta(seconds=90))
    assert "migration of db on localhost:8081" in text
    phases = {line.split()[0]: line.split(None, 1)[1].strip() for line in text.splitlines()
              if line.split()[:1] and line.split()[0] in ("backup", "create", "migrate", "validate")}
    assert phases["backup"] != "not yet" and phases["migrate"] == "not yet"
    assert "containers this migration created: users" in text
    assert "checkpoint migrate-users: 2/2 ranges done; read 5, written 5, dead-lettered 0; saved 1m30s ago" in text
    ranges = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.startswith(("r0 ", "r1 "))}
    assert ranges["r0"][-2:] == ["5", "done"] and ranges["r1"] == ["(start)", "0", "done"]
    assert "copy-a--b.checkpoint" in text and "damaged" in text


def test_status_command_reads_the_workdir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    anyio.run(_migration_with_one_checkpoint, tmp_path)
    assert main(["status", "--workdir", str(tmp_path)]) == 0
    assert "migrate-users" in capsys.readouterr().out
    assert main(["status", "--workdir", str(tmp_path / "empty")]) == 0
    assert "nothing to show" in capsys.readouterr().out

