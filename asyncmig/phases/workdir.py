"""Every path a migration writes, declared in one place (as pgcopydb's copydb_paths.h does).

    .asyncmig/vimarsh-<database>/            0700, the run's state (never holds a key)
        asyncmig.lock                        held while a run works
        state.json                           finished phases, created containers, current backup
        checkpoints/<phase>-<container>.json resumable positions of each transfer
        deadletters/<phase>-<container>.jsonl documents that could not be written, with reasons
        reports/<phase>.json                 per-phase reports; summary.json for the whole run
    data/migration_backups/backup_YYYYMMDD_HHMMSS/   the backups
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asyncmig.core.files.fsutil import private_dir


@dataclass(frozen=True)
class WorkDir:
    root: Path
    backups: Path

    @classmethod
    def for_database(cls, database: str, *, base: Path = Path(".asyncmig"),
                     backups: Path = Path("data/migration_backups")) -> WorkDir:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in database)
        return cls(base / f"vimarsh-{safe}", backups)

    def ensure(self) -> WorkDir:
        for folder in (self.root, self.root / "checkpoints", self.root / "deadletters", self.root / "reports"):
            private_dir(folder)
        private_dir(self.backups)
        return self

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    def checkpoint(self, phase: str, container: str) -> Path:
        return self.root / "checkpoints" / f"{phase}-{container}.json"

    def dead_letter(self, phase: str, container: str) -> Path:
        return self.root / "deadletters" / f"{phase}-{container}.jsonl"

    def report(self, name: str) -> Path:
        return self.root / "reports" / f"{name}.json"
