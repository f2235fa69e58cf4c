"""The file sink: a backup is a copy into files, one ``<target>.jsonl.gz`` per target name.

Resume rule, and why every write is committed before it is acknowledged. The pipeline saves a
checkpoint by snapshotting its positions and the documents it has been told are written, *then*
calling :meth:`FileSink.flush`; a resume truncates each file back to the offset that flush
returned. For that truncation to lose nothing and duplicate nothing, the offset must be exactly
the end of the documents the snapshot knows about:

* each :meth:`FileSink.write` appends its unit as one complete gzip member and commits it
  (fsync) before returning, and records the new end as *acknowledged* with no await between that
  and the return, so the pipeline's record of a write and the acknowledged offset move together;
* :meth:`FileSink.flush` returns the acknowledged offsets without awaiting anything, i.e. as of
  the snapshot. A write that finished after the snapshot, or that was cancelled after reaching
  the disk, lies beyond the offset: a resume cuts it off and reads its documents again.

That last point is why the sink declares ``durable_writes = False``: the pipeline then keeps no
completion journal for it. A journal lists documents acknowledged after the checkpoint so that a
resume can skip them; with a database those writes are durable, but here they are exactly what
the truncation removes, and skipping them would silently drop them from the backup.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from asyncmig.core.engine.sink import Rejection, SinkStatistics, WriteOutcome, WriteUnit
from asyncmig.core.engine.transform import Document
from asyncmig.core.files.jsonl import DEFAULT_LEVEL, JsonlGzWriter
from asyncmig.core.files.manifest import container_file_name
from asyncmig.errors import AsyncmigError

__all__ = ["FileSink"]


@dataclass(slots=True)
class _File:
    """One target's writer, the lock that serialises its writes, and its acknowledged end."""

    path: Path
    writer: JsonlGzWriter | None = None
    acknowledged: int = 0
    broken: bool = False
    lock: anyio.Lock = field(default_factory=anyio.Lock)


def _append(writer: JsonlGzWriter, documents: list[Document]) -> int:
    """Write one member and make it durable; runs in a worker thread (compression is CPU work)."""
    writer.write(documents)
    return writer.commit()


class FileSink:
    """Writes each target's documents, exactly as given, to ``<directory>/<target>.jsonl.gz``.

    The checkpoint state is ``{"offsets": {target: bytes}}``. Memory is bounded by the units in
    flight (the pipeline's bound): a unit is compressed and written before the next one starts.
    """

    durable_writes = False  # durable only up to the offsets a checkpoint stored (module docstring)

    def __init__(self, directory: Path, targets: Iterable[str], *, level: int = DEFAULT_LEVEL) -> None:
        """:raises UsageError: for a target name that cannot be a file name."""
        self.directory = Path(directory)
        self.level = level
        self._files = {name: _File(self.directory / container_file_name(name)) for name in targets}
        self.description = str(self.directory)
        self.stats = SinkStatistics()

    def path(self, target: str) -> Path:
        """The file that holds ``target``'s documents."""
        return self._files[target].path

    async def open(self, state: dict[str, Any]) -> None:
        """Create the files, or cut each back to the offset a checkpoint stored and append from there.

        :raises BackupCorrupt: when a file is missing or shorter than its stored offset.
        """
        offsets = state.get("offsets", {})
        for name, file in self._files.items():
            offset = offsets.get(name)
            opener = functools.partial(JsonlGzWriter.open, file.path, resume_offset=offset, level=self.level)
            file.writer = await anyio.to_thread.run_sync(opener)
            file.acknowledged = file.writer.committed_offset
            file.broken = False

    def plan(self, target: str, documents: list[Document]) -> tuple[list[WriteUnit], list[Rejection]]:
        """One unit per page: the whole page becomes one gzip member."""
        if target not in self._files:
            raise KeyError(f"{target!r} is not a target of this file sink ({', '.join(self._files)})")
        if not documents:
            return [], []
        return [WriteUnit(target, f"file:{target}", list(documents))], []

    async def write(self, unit: WriteUnit) -> WriteOutcome:
        """Append and commit one unit; concurrent calls for the same file run one after another.

        :raises AsyncmigError: when an earlier write to the same file failed or was cancelled (its
            member may be on disk without having been acknowledged, so nothing may follow it).
        :raises jsoncodec.NonFiniteNumber, TypeError: for a document that is not finite JSON.
        """
        file = self._files[unit.target]
        async with file.lock:
            if file.broken or file.writer is None:
                raise AsyncmigError(f"{file.path}: an earlier write failed; re-run to resume from the checkpoint")
            try:
                offset = await anyio.to_thread.run_sync(_append, file.writer, unit.documents)
            except BaseException:
                file.broken = True
                raise
            # No await from here to the caller recording the write: the acknowledged offset and the
            # pipeline's record of written documents must change together (module docstring).
            file.acknowledged = offset
        self.stats.requests += 1
        self.stats.written += len(unit.documents)
        return WriteOutcome(written=len(unit.documents))

    async def flush(self) -> dict[str, Any]:
        """The acknowledged offsets, as of the pipeline's snapshot; everything before them is on disk.

        Writes are committed before they are acknowledged, so there is nothing left to commit. The
        offsets are taken without awaiting anything, so they are those of the moment the pipeline
        took its snapshot: a write acknowledged later (which the snapshot does not know) is not covered.
        """
        return {"offsets": {name: file.acknowledged for name, file in self._files.items()}}

    async def close(self) -> None:
        """Close every file; one whose last write failed is closed without writing anything more."""
        for file in self._files.values():
            writer, file.writer = file.writer, None
            if writer is None:
                continue
            if file.broken:
                await anyio.to_thread.run_sync(writer.abort)
            else:
                await anyio.to_thread.run_sync(writer.close)

