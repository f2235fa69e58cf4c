"""``asyncmig status``: what a migration or a copy has done so far, read from its local files only.

It reads the migration state (which phases finished, the backup, the containers created) and every
checkpoint: per feed range, the saved position, the documents it covers and whether the range is
drained. It never connects to Cosmos DB, so it works while a run is going on (the files are written
atomically) and cannot know how far the source has moved on: the lag it can show is the time since
each checkpoint was last saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from asyncmig.core.engine.checkpoint import Checkpoint, read_checkpoint
from asyncmig.errors import StateError
from asyncmig.phases.state import PHASES, MigrationState, read_state
from asyncmig.report import duration, table

POSITION_SHOWN = 24  # characters of a continuation token: enough to see it move


@dataclass
class CheckpointStatus:
    path: Path
    checkpoint: Checkpoint | None
    problem: str | None = None  # why the file could not be read

    def saved_ago(self, now: datetime) -> float | None:
        """Seconds since the checkpoint was last saved: how far it may lag behind a running copy."""
        if self.checkpoint is None:
            return None
        try:
            saved = datetime.fromisoformat(self.checkpoint.updated_at)
        except ValueError:
            return None
        return max(0.0, (now - saved).total_seconds())


@dataclass
class WorkStatus:
    """One work directory: a migration's state (if any) and its checkpoints."""

    root: Path
    state: MigrationState | None = None
    state_problem: str | None = None
    checkpoints: list[CheckpointStatus] = field(default_factory=list)


def collect(base: Path) -> list[WorkStatus]:
    """Every work directory under ``base`` (each migration's ``vimarsh-*`` folder, and ``base``
    itself for ``asyncmig copy`` checkpoints), with what its files say."""
    found: list[WorkStatus] = []
    copies = sorted(base.glob("*.checkpoint.json"))
    if copies:
        found.append(WorkStatus(base, checkpoints=[_checkpoint(p) for p in copies]))
    for root in sorted(p for p in base.glob("vimarsh-*") if p.is_dir()):
        work = WorkStatus(root, checkpoints=[_checkpoint(p) for p in sorted((root / "checkpoints").glob("*.json"))])
        if (root / "state.json").exists():
            try:
                work.state = read_state(root / "state.json")
            except (StateError, OSError) as exc:
                work.state_problem = str(exc)
        found.append(work)
    return found


def _checkpoint(path: Path) -> CheckpointStatus:
    try:
        return CheckpointStatus(path, read_checkpoint(path))
    except (StateError, OSError) as exc:
        return CheckpointStatus(path, None, str(exc))


def render(works: list[WorkStatus], now: datetime | None = None) -> str:
    """The status as text tables, one block per work directory."""
    now = now or datetime.now(UTC)
    blocks: list[str] = []
    for work in works:
        lines = [f"== {work.root}"]
        if work.state_problem:
            lines.append(f"state: {work.state_problem}")
        elif work.state is not None:
            state = work.state
            lines.append(f"migration of {state.database} on {state.host}")
            lines.append(table(["phase", "finished at"], [[p, state.finished.get(p, "not yet")] for p in PHASES]))
            if state.backup_dir:
                lines.append(f"backup: {state.backup_dir}")
            if state.created:
                lines.append(f"containers this migration created: {', '.join(state.created)}")
            if state.rolled_back_at:
                lines.append(f"rolled back at {state.rolled_back_at}")
        for status in work.checkpoints:
            lines.append(_render_checkpoint(status, now))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "nothing to show: no migration state and no checkpoint found"


def _render_checkpoint(status: CheckpointStatus, now: datetime) -> str:
    name = status.path.name.removesuffix(".json")
    checkpoint = status.checkpoint
    if checkpoint is None:
        return f"checkpoint {name}: {status.problem}"
    totals = checkpoint.totals
    ranges = checkpoint.ranges
    done = sum(1 for r in ranges.values() if r.done)
    ago = status.saved_ago(now)
    head = (f"checkpoint {name}: {done}/{len(ranges)} ranges done; read {totals.read}, written {totals.written}, "
            f"dead-lettered {totals.dead_lettered}; saved {duration(ago) + ' ago' if ago is not None else '?'}")
    rows = [[key, _short(state.position), state.read, "done" if state.done else "in progress"]
            for key, state in sorted(ranges.items())]
    return head + ("\n" + table(["range", "position", "documents covered", "state"], rows) if rows else "")


def _short(position: str | None) -> str:
    if position is None:
        return "(start)"
    return position if len(position) <= POSITION_SHOWN else position[:POSITION_SHOWN] + "..."
