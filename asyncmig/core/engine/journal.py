"""The completion journal: which documents were written since the last checkpoint was saved.

A checkpoint is rewritten (with fsync) only every so often; between saves, every write the sink
acknowledges is appended here as one JSON line. ``os.write`` reaches the kernel at once, so the
lines survive a killed process (a power loss could drop the tail, which only means more replays,
never a lost document). On resume the journal of the checkpoint's generation is replayed into the
set of documents to skip, so a resumed run rewrites only what was truly in flight at the kill.
Each checkpoint save starts a new generation and deletes the previous file.

What was in flight is journaled too: before a unit is sent, its documents are recorded as *sent*
(one line per unit, ``["sent", range, [key, ...]]``; an older asyncmig skips such lines). A document sent but never recorded
as written may still have been written: Cosmos DB executes a request it received even when the
client dies before the answer. A resumed run asks the sink about those few instead of writing
them again blindly.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import NamedTuple

from asyncmig.core import jsoncodec

_SENT = "sent"


def journal_path(checkpoint: Path, generation: int) -> Path:
    return checkpoint.with_name(f"{checkpoint.name}.journal.{generation}")


class Replayed(NamedTuple):
    """What one generation of the journal recorded, by range key."""

    written: dict[str, set[str]]  # acknowledged writes
    sent: dict[str, set[str]]  # documents of units sent (written or not)


def replay(checkpoint: Path, generation: int) -> Replayed:
    """What that generation's journal recorded (a line torn by the kill is ignored)."""
    found = Replayed({}, {})
    path = journal_path(checkpoint, generation)
    if not path.exists():
        return found
    for line in path.read_bytes().splitlines():
        try:
            entry = jsoncodec.loads(line)
            if len(entry) == 3 and entry[0] == _SENT:
                into, (_, range_key, document_keys) = found.sent, entry
            else:
                into, (range_key, document_key) = found.written, entry
                document_keys = [document_key]
        except (ValueError, TypeError):
            continue  # the process died mid-line
        into.setdefault(str(range_key), set()).update(map(str, document_keys))
    return found


def discard_all(checkpoint: Path) -> None:
    """Delete every generation of ``checkpoint``'s journal: a fresh run must never replay an old
    run's completions (``--restart`` moves the old checkpoint aside, not its journals)."""
    if checkpoint.parent.is_dir():
        prefix = journal_path(checkpoint, 0).name.removesuffix("0")
        for path in checkpoint.parent.iterdir():
            if path.name.startswith(prefix):
                path.unlink()


class Journal:
    """Append-only, one generation at a time. A disabled journal records nothing: used for sinks
    whose acknowledged writes are durable only up to what a checkpoint records (files)."""

    def __init__(self, checkpoint: Path, generation: int, *, enabled: bool = True) -> None:
        self.checkpoint = checkpoint
        self.generation = generation
        self.enabled = enabled
        self._fd = self._open(generation) if enabled else -1

    def _open(self, generation: int) -> int:
        path = journal_path(self.checkpoint, generation)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(self, range_key: str, document_keys: list[str]) -> None:
        """These documents were written (acknowledged)."""
        if document_keys and self.enabled:
            os.write(self._fd, b"".join(jsoncodec.dumps([range_key, k]) + b"\n" for k in document_keys))

    def record_sent(self, range_key: str, document_keys: list[str]) -> None:
        """These documents are about to be sent; :meth:`record` follows once they are written."""
        if document_keys and self.enabled:
            os.write(self._fd, jsoncodec.dumps([_SENT, range_key, document_keys]) + b"\n")

    def rotate(self) -> int:
        """Start the next generation; returns it (the caller saves it in the checkpoint, then calls
        :meth:`discard_previous`)."""
        self.generation += 1
        if self.enabled:
            os.close(self._fd)
            self._fd = self._open(self.generation)
        return self.generation

    def discard_previous(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            journal_path(self.checkpoint, self.generation - 1).unlink()

    def close(self) -> None:
        if self.enabled:
            os.close(self._fd)
