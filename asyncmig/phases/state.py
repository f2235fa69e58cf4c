"""The orchestrator's state file: which phases finished, what this migration created, which backup.

Rollback trusts ``created`` and nothing else when it deletes containers: a container this migration
did not create is never deleted. The file is written atomically, 0600, sealed with a checksum like
checkpoints, so a damaged one is refused rather than believed.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncmig.core import jsoncodec
from asyncmig.core.files.fsutil import atomic_write
from asyncmig.errors import CorruptState, ForeignState

FORMAT = "asyncmig-vimarsh-state"
PHASES = ("backup", "create", "migrate", "validate")
LIVE_PHASES = ("backup", "create", "migrate", "follow", "validate")  # run --live (phases/cutover.py)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class MigrationState:
    host: str
    database: str
    finished: dict[str, str] = field(default_factory=dict)  # phase -> finished at
    created: list[str] = field(default_factory=list)  # containers this migration created
    backup_dir: str | None = None
    vector_dimensions: int | None = None
    personalities_generated_at: str | None = None  # fixed once, so a re-run writes identical documents
    rolled_back_at: str | None = None
    # container -> {feed range: change-feed position} where the migration's writes ended (phases/marks.py)
    feed_marks: dict[str, dict[str, str | None]] = field(default_factory=dict)
    marked_at: str | None = None
    live: bool = False  # run --live: the source keeps changing until the cutover
    copy_started_at: int | None = None  # epoch seconds when migrate first started reading
    cutover_at: str | None = None  # run --live: when the final catch-up finished

    def finish(self, phase: str) -> None:
        self.finished[phase] = _now()

    def is_finished(self, phase: str) -> bool:
        return phase in self.finished


def _seal(body: dict[str, Any]) -> str:
    return hashlib.sha256(jsoncodec.canonical(body)).hexdigest()


def read_state(path: Path) -> MigrationState:
    """The state stored at ``path``, whichever account it belongs to (``asyncmig status`` shows it).

    :raises CorruptState: unreadable or tampered file.
    :raises OSError: the file cannot be read.
    """
    data = path.read_bytes()
    try:
        body = jsoncodec.loads(data)
        checksum = body.pop("checksum")
        if body.pop("format") != FORMAT or _seal(body) != checksum:
            raise ValueError("checksum mismatch")
        return MigrationState(**body)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptState(f"the migration state file {path} is damaged ({exc}); move it away to start the "
                           "migration over (containers it created are listed in it)") from None


def load_state(path: Path, *, host: str, database: str) -> MigrationState:
    """The state for this account and database, fresh when none exists.

    :raises CorruptState: unreadable or tampered file.
    :raises ForeignState: the file belongs to another account or database.
    """
    if not path.exists():
        return MigrationState(host=host, database=database)
    state = read_state(path)
    if (state.host, state.database) != (host, database):
        raise ForeignState(f"{path} belongs to {state.host}/{state.database}, not {host}/{database}; "
                           "use the matching account or another --workdir")
    return state


def save_state(path: Path, state: MigrationState) -> None:
    body = asdict(state)
    sealed = {"format": FORMAT, **body}
    sealed["checksum"] = _seal(body)
    atomic_write(path, jsoncodec.dumps(sealed))
