"""The dead-letter file: documents that cannot be copied, kept whole with the reason.

A dead-lettered document counts as handled for the commit rule, so it must be on disk before the
checkpoint that moves past it: the pipeline calls :meth:`DeadLetterFile.sync` before saving a
checkpoint. After a resume the pages since the last checkpoint are read again, so the same
document may be rejected twice; the file remembers what it holds (rebuilt from the file on open)
and records each source document once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from asyncmig.core import jsoncodec
from asyncmig.core.files.fsutil import ensure_dir, fsync_dir
from asyncmig.errors import CorruptState
from asyncmig.redaction import redact

__all__ = ["DeadLetterFile"]

log = logging.getLogger(__name__)

_Key = tuple[str, bytes, bytes]


def _key(container: str, doc_id: Any, partition_key: Any) -> _Key:
    return container, jsoncodec.canonical(doc_id), jsoncodec.canonical(partition_key)


def _record_key(record: Any) -> _Key:
    """The identity of a record read back from the file.

    :raises ValueError: when the line is JSON but not a dead-letter record.
    """
    source = record.get("source") if isinstance(record, dict) else None
    if not isinstance(source, dict) or not isinstance(source.get("container"), str):
        raise ValueError("not a dead-letter record")
    return _key(source["container"], source.get("id"), source.get("partition_key"))


class DeadLetterFile:
    """Append-only JSON lines, one rejected source document per line, created 0600 (a missing
    directory is created 0700; an existing one, which the user chose, is left as it is).

    Each line is ``{"at", "source": {"container", "range", "id", "partition_key"}, "target",
    "reason", "status", "document"}`` with the original document exactly as read. The file is
    created only when the first record arrives, so a clean run leaves none behind.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open (lazily) ``path``, reading any existing records to know which documents it holds.

        A torn last line (a crash mid-append; never covered by a checkpoint) is cut off.

        :raises CorruptState: when a complete line in the middle is not a dead-letter record.
        :raises OSError: when the existing file cannot be read.
        """
        self.path = Path(path)
        self._fd: int | None = None
        self._seen: set[_Key] = set()
        self._size = 0
        self._needs_newline = False
        self._scan()

    def _scan(self) -> None:
        try:
            stream = self.path.open("rb")
        except FileNotFoundError:
            return
        torn_at: int | None = None
        with stream:
            for number, line in enumerate(stream, start=1):
                complete = line.endswith(b"\n")
                if line.strip():
                    try:
                        self._seen.add(_record_key(jsoncodec.loads(line)))
                    except ValueError:
                        if complete:
                            raise CorruptState(
                                f"dead-letter file {self.path} line {number} is not a dead-letter record; "
                                "repair the line or move the file aside, then re-run"
                            ) from None
                        torn_at = self._size
                        break
                self._size += len(line)
                self._needs_newline = not complete
        if torn_at is not None:
            log.warning("cutting a torn last line off %s (a run was interrupted mid-write)", self.path)
            os.truncate(self.path, torn_at)

    @property
    def count(self) -> int:
        """Distinct source documents recorded, including those from earlier runs."""
        return len(self._seen)

    def _open(self) -> int:
        if self._fd is None:
            directory = ensure_dir(self.path.parent)
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.fchmod(fd, 0o600)
            if created:
                fsync_dir(directory)
            self._fd = fd
        return self._fd

    def add(
        self,
        document: Mapping[str, Any],
        *,
        container: str,
        range_key: str | None,
        partition_key: Any,
        reason: str,
        status: int | None = None,
        target: str | None = None,
    ) -> bool:
        """Append ``document`` with why it was rejected; ``False`` if this source document
        (container, id, partition key) is already in the file.

        ``partition_key`` is the source document's partition key value as JSON (the caller's
        representation of an absent key, e.g. ``{}``, is kept as given). Not durable until
        :meth:`sync`.

        :raises OSError: when the directory or file cannot be created, or the append fails (the
            file is then cut back to its last whole record).
        """
        key = _key(container, document.get("id"), partition_key)
        if key in self._seen:
            return False
        record = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "source": {
                "container": container,
                "range": range_key,
                "id": document.get("id"),
                "partition_key": partition_key,
            },
            "target": target,
            "reason": redact(reason),
            "status": status,
            "document": document,
        }
        try:
            line = jsoncodec.dumps(record) + b"\n"
        except jsoncodec.NonFiniteNumber:  # the very reason it is here: keep it, spelled as text
            record["document"] = _non_finite_as_text(document)
            record["non_finite_numbers_as_text"] = True
            line = jsoncodec.dumps(record) + b"\n"
        if self._needs_newline:
            line = b"\n" + line
        fd = self._open()
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._size)
            raise
        self._size += len(line)
        self._needs_newline = False
        self._seen.add(key)
        return True

    def sync(self) -> None:
        """Make every record added so far durable (call before saving a checkpoint).

        :raises OSError: when the disk refuses the flush.
        """
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        """Sync and close; a later :meth:`add` reopens the file."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> DeadLetterFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _non_finite_as_text(value: Any) -> Any:
    """A copy of ``value`` with each NaN/Infinity written as the string ``"NaN"``, ``"Infinity"``
    or ``"-Infinity"`` (JSON has no such numbers; the record says they were rewritten)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _non_finite_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_non_finite_as_text(v) for v in value]
    return value
