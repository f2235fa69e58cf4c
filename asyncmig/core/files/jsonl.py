"""Backup data files: gzip-compressed JSON lines, crash-safe, resumable and strictly checked.

One file per container, ``<name>.jsonl.gz``: one exact JSON document per line (written with
:func:`asyncmig.core.jsoncodec.dumps`, so every number keeps its bits), compressed with gzip. The
original backup wrote one pretty-printed JSON array per container from memory and swallowed
failures; this format streams with bounded memory and fails loudly.

Crash safety comes from gzip's concatenated members. :meth:`JsonlGzWriter.commit` finishes the
current member, fsyncs, and returns the file's byte offset; the pipeline stores that offset in its
checkpoint together with the source position it corresponds to. After a crash (even ``kill -9``)
:meth:`JsonlGzWriter.open` with ``resume_offset`` truncates the file back to that offset, which is
always the end of a complete member, and appends: nothing is lost and nothing is written twice.

:class:`JsonlGzReader` reads every member in turn and turns every kind of damage (a truncated last
member, a CRC or length mismatch, a flipped bit, invalid JSON, NaN/Infinity, a line that is not an
object) into :class:`~asyncmig.errors.BackupCorrupt` naming the file and line. Damage inside a
member is only certain to be noticed when the member's CRC is checked at its end (or, for a cut
file, when the data runs out), so documents of a damaged member may already have been yielded:
restore runs :func:`asyncmig.core.files.manifest.verify_backup` (whole-file SHA-256) before writing
anything.

The classes are synchronous (compression is CPU work); :class:`AsyncJsonlGzWriter` and
:class:`AsyncJsonlGzReader` run them in worker threads so the event loop keeps serving I/O, and
since zlib releases the GIL, several containers really do compress in parallel.
"""

from __future__ import annotations

import functools
import os
import zlib
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

import anyio
import anyio.to_thread

from asyncmig.core import jsoncodec
from asyncmig.core.engine.transform import Document
from asyncmig.core.files.fsutil import ensure_dir, fsync_dir
from asyncmig.errors import BackupCorrupt

FILE_SUFFIX = ".jsonl.gz"

# Level 1: measured on 16 KB documents of 768 floats it compresses ~6x faster than level 6
# (~70 vs ~12 MB/s of JSON) for a file only ~7% larger; the backup must keep up with the source.
DEFAULT_LEVEL = 1

_GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer (CRC-32 and length) on every member
_WRITE_BUFFER = 1 << 20
_READ_SIZE = 1 << 18
_INFLATE_LIMIT = 1 << 18  # bounds the output of one inflate call, whatever the compression ratio
# Cosmos DB items are at most 2 MB; a longer "line" is damage, and must not fill the memory.
MAX_LINE_BYTES = 16 << 20

FILE_MODE = 0o600


def encode_document(document: Document) -> bytes:
    """One document as an exact JSON line body (no newline).

    :raises TypeError: when ``document`` is not a dict (the reader accepts only objects, so the
        writer refuses to write anything else).
    :raises jsoncodec.NonFiniteNumber: for NaN/Infinity, naming the field.
    """
    if not isinstance(document, dict):
        raise TypeError(f"a backup document must be a JSON object, got {type(document).__name__}")
    return jsoncodec.dumps(document)


class JsonlGzWriter:
    """Appends pages of documents to a ``.jsonl.gz`` file; durable only at :meth:`commit`.

    Memory is bounded by one page: a page is encoded, compressed and handed to a 1 MiB file
    buffer before :meth:`write` returns. Use :meth:`open` to create one.
    """

    def __init__(self, path: Path, file: BinaryIO, offset: int, level: int) -> None:
        self._path = path
        self._file = file
        self._level = level
        self._committed = offset
        self._compressor: zlib._Compress | None = None
        self._closed = False

    @classmethod
    def open(cls, path: Path, *, resume_offset: int | None = None, level: int = DEFAULT_LEVEL) -> Self:
        """Start ``path`` afresh (``resume_offset=None``) or continue it after a crash.

        A fresh file is created (or emptied) with mode 0600, and a missing parent directory with
        mode 0700. ``resume_offset`` must be an offset :meth:`commit` returned: the file is cut
        back to it, dropping whatever a crashed run wrote after its last commit.

        :raises BackupCorrupt: when the file to resume is missing or shorter than ``resume_offset``
            (it was truncated or replaced since the checkpoint was taken).
        """
        if resume_offset is not None and resume_offset < 0:
            raise ValueError(f"resume_offset must be >= 0, got {resume_offset}")
        if not 0 <= level <= 9:
            raise ValueError(f"compression level must be 0-9, got {level}")
        path = Path(path)
        if not resume_offset:  # None or 0: nothing committed yet, so start the file over
            ensure_dir(path.parent)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            os.fchmod(fd, FILE_MODE)  # an existing file keeps its old mode otherwise
            fsync_dir(path.parent)
            offset = 0
        else:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise BackupCorrupt(
                    f"{path} is missing, but the checkpoint says {resume_offset} bytes of it were "
                    "committed; start this backup again"
                ) from None
            size = os.fstat(fd).st_size
            if size < resume_offset:
                os.close(fd)
                raise BackupCorrupt(
                    f"{path} is {size} bytes, shorter than the {resume_offset} bytes the checkpoint "
                    "says were committed: the file was truncated or replaced; start this backup again"
                )
            os.fchmod(fd, FILE_MODE)
            os.ftruncate(fd, resume_offset)
            os.lseek(fd, resume_offset, os.SEEK_SET)
            offset = resume_offset
        return cls(path, open(fd, "wb", buffering=_WRITE_BUFFER), offset, level)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def committed_offset(self) -> int:
        """Bytes of the file that are durable and complete (what :meth:`commit` last returned)."""
        return self._committed

    def write(self, documents: Iterable[Document]) -> None:
        """Append documents to the current gzip member (not durable until :meth:`commit`).

        :raises jsoncodec.NonFiniteNumber: for a document holding NaN/Infinity, naming its id
            and the field; nothing of this call is written then.
        :raises TypeError: for a document that is not a dict.
        """
        self._check_open()
        # Appended line by line rather than joined from a list: orjson's result for a 16 KB
        # document keeps a ~128 KB allocation alive, so a list of them would cost 8x the page.
        payload = bytearray()
        for document in documents:
            try:
                payload += encode_document(document)
            except jsoncodec.NonFiniteNumber as exc:
                raise jsoncodec.NonFiniteNumber(
                    f"document id={document.get('id')!r} cannot be backed up: {exc}"
                ) from exc
            payload += b"\n"
        if not payload:
            return
        if self._compressor is None:
            self._compressor = zlib.compressobj(self._level, zlib.DEFLATED, _GZIP_WBITS)
        self._file.write(self._compressor.compress(payload))

    def commit(self) -> int:
        """Finish the current gzip member, flush and fsync; return the durable byte offset.

        Store the offset in the checkpoint with the source position reached: it is the
        ``resume_offset`` to reopen with after a crash.
        """
        self._check_open()
        if self._compressor is not None:
            self._file.write(self._compressor.flush())
            self._compressor = None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._committed = self._file.tell()
        return self._committed

    def close(self) -> int:
        """Commit and close; return the final file size.

        A file that received no documents gets one empty gzip member, so that it is still a valid
        gzip file for standard tools (``zcat``, ``gzip -t``).
        """
        if self._closed:
            return self._committed
        if self._compressor is None and self._committed == 0:
            self._file.write(zlib.compressobj(self._level, zlib.DEFLATED, _GZIP_WBITS).flush())
        offset = self.commit()
        self._file.close()
        self._closed = True
        return offset

    def abort(self) -> None:
        """Close without committing: the file keeps an unfinished member that a resume cuts off
        and that a reader reports as truncation (what a crash would leave)."""
        if not self._closed:
            self._closed = True
            self._file.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self._path}: the writer is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class JsonlGzReader:
    """Reads a ``.jsonl.gz`` file document by document, across all gzip members, strictly.

    ``position`` counts the documents consumed, which is what a checkpoint records and
    :meth:`skip` takes to resume. ``on_raw`` sees every compressed byte in file order, so a caller
    can hash the file in the same pass (the manifest's SHA-256).
    """

    def __init__(self, path: Path, *, on_raw: Callable[[bytes], None] | None = None) -> None:
        self._path = Path(path)
        try:
            self._file = open(self._path, "rb", buffering=0)  # closed by close()
        except FileNotFoundError:
            raise BackupCorrupt(f"{self._path} is missing: the backup is incomplete") from None
        self._on_raw = on_raw
        self._position = 0
        self._member_first_line = 1
        self._lines = self._iter_lines()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def position(self) -> int:
        """Documents consumed so far (read or skipped)."""
        return self._position

    def skip(self, count: int) -> None:
        """Pass over ``count`` documents without parsing them (they were processed before a crash).

        :raises BackupCorrupt: when the file holds fewer documents than that.
        """
        if count < 0:
            raise ValueError(f"cannot skip {count} documents")
        target = self._position + count
        while self._position < target:
            if next(self._lines, None) is None:
                raise BackupCorrupt(
                    f"{self._path} holds only {self._position} documents, but resuming needs to skip "
                    f"{target}: the file is shorter than the checkpoint says"
                )

    def __iter__(self) -> Iterator[Document]:
        for line in self._lines:
            yield self._parse(line)

    def pages(self, page_size: int) -> Iterator[list[Document]]:
        """Lists of up to ``page_size`` documents, the last one possibly shorter."""
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        page: list[Document] = []
        for document in self:
            page.append(document)
            if len(page) == page_size:
                yield page
                page = []
        if page:
            yield page

    def close(self) -> None:
        self._lines.close()
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _parse(self, line: bytes) -> Document:
        where = f"{self._path} line {self._position}"
        try:
            document = jsoncodec.loads(line)
        except jsoncodec.NonFiniteNumber as exc:
            raise BackupCorrupt(
                f"{where}: NaN/Infinity is not valid JSON and Cosmos DB cannot store it ({exc})"
            ) from None
        except ValueError as exc:  # also UnicodeDecodeError
            raise BackupCorrupt(f"{where} is not valid JSON: {exc}") from None
        except RecursionError:
            raise BackupCorrupt(f"{where} is nested too deeply to be a document") from None
        if not isinstance(document, dict):
            raise BackupCorrupt(
                f"{where} is a JSON {type(document).__name__}, not an object: each line must be one document"
            )
        return document

    def _iter_lines(self) -> Generator[bytes, None, None]:
        """Complete lines without their newline; ``_position`` is the number of the last one."""
        pending: list[bytes] = []  # the start of a line split across inflated chunks
        pending_size = 0
        for chunk in self._inflate():
            parts = chunk.split(b"\n")
            if len(parts) == 1:
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size > MAX_LINE_BYTES:
                    raise BackupCorrupt(
                        f"{self._path} line {self._position + 1} is longer than {MAX_LINE_BYTES} bytes: "
                        "not a document (Cosmos DB items are at most 2 MB); the file is damaged"
                    )
                continue
            if pending:
                pending.append(parts[0])
                parts[0] = b"".join(pending)
            tail = parts.pop()
            pending, pending_size = ([tail], len(tail)) if tail else ([], 0)
            for line in parts:
                self._position += 1
                yield line
        if pending:
            raise BackupCorrupt(
                f"{self._path} line {self._position + 1} has no terminating newline: the file was "
                "not written by asyncmig or was edited"
            )

    def _inflate(self) -> Iterator[bytes]:
        """The decompressed bytes of every gzip member in turn, in pieces of at most 256 KiB."""
        decompressor = zlib.decompressobj(_GZIP_WBITS)
        in_member = False  # bytes of an unfinished member have been consumed
        size = 0
        while raw := self._file.read(_READ_SIZE):
            size += len(raw)
            if self._on_raw is not None:
                self._on_raw(raw)
            data = raw
            while True:
                if data:
                    in_member = True
                try:
                    out = decompressor.decompress(data, _INFLATE_LIMIT)
                except zlib.error as exc:
                    raise self._gzip_error(exc) from None
                if out:
                    yield out
                if decompressor.eof:  # a member ended (its CRC and length matched); more may follow
                    data = decompressor.unused_data
                    decompressor = zlib.decompressobj(_GZIP_WBITS)
                    in_member = False
                    self._member_first_line = self._position + 1
                    if not data:
                        break
                    continue
                data = decompressor.unconsumed_tail
                if not data and len(out) < _INFLATE_LIMIT:  # input used up, no output held back
                    break
        if in_member:
            raise BackupCorrupt(
                f"{self._path} is truncated: its last gzip member ends early after line {self._position} "
                f"(file size {size} bytes); the write was interrupted or the file was cut short"
            )

    def _gzip_error(self, exc: zlib.error) -> BackupCorrupt:
        message = str(exc)
        if "incorrect data check" in message or "incorrect length check" in message:
            return BackupCorrupt(
                f"{self._path}: the gzip checksum of the member starting at line {self._member_first_line} "
                f"does not match ({message}): the file was altered after it was written"
            )
        return BackupCorrupt(
            f"{self._path}: the gzip data is corrupt at line {self._position + 1} ({message}): "
            "the file was damaged or is not an asyncmig backup file"
        )


class AsyncJsonlGzWriter:
    """:class:`JsonlGzWriter` for async code: the blocking work runs in a worker thread.

    Calls are serialised by a lock. Do not mutate a page while :meth:`write` is running.
    """

    def __init__(self, writer: JsonlGzWriter) -> None:
        self.sync = writer
        self._lock = anyio.Lock()

    @classmethod
    async def open(cls, path: Path, *, resume_offset: int | None = None, level: int = DEFAULT_LEVEL) -> Self:
        """See :meth:`JsonlGzWriter.open`."""
        opener = functools.partial(JsonlGzWriter.open, path, resume_offset=resume_offset, level=level)
        return cls(await anyio.to_thread.run_sync(opener))

    @property
    def path(self) -> Path:
        return self.sync.path

    @property
    def committed_offset(self) -> int:
        return self.sync.committed_offset

    async def write(self, documents: Iterable[Document]) -> None:
        async with self._lock:
            await anyio.to_thread.run_sync(self.sync.write, documents)

    async def commit(self) -> int:
        async with self._lock:
            return await anyio.to_thread.run_sync(self.sync.commit)

    async def close(self) -> int:
        async with self._lock:
            return await anyio.to_thread.run_sync(self.sync.close)

    async def abort(self) -> None:
        async with self._lock:
            await anyio.to_thread.run_sync(self.sync.abort)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            await self.close()
        else:
            await self.abort()


class AsyncJsonlGzReader:
    """:class:`JsonlGzReader` for async code: reading, inflating and parsing run in a worker thread."""

    def __init__(self, reader: JsonlGzReader) -> None:
        self.sync = reader

    @classmethod
    async def open(cls, path: Path, *, on_raw: Callable[[bytes], None] | None = None) -> Self:
        return cls(await anyio.to_thread.run_sync(functools.partial(JsonlGzReader, path, on_raw=on_raw)))

    @property
    def path(self) -> Path:
        return self.sync.path

    @property
    def position(self) -> int:
        return self.sync.position

    async def skip(self, count: int) -> None:
        await anyio.to_thread.run_sync(self.sync.skip, count)

    async def pages(self, page_size: int) -> AsyncIterator[list[Document]]:
        """See :meth:`JsonlGzReader.pages`; each page is produced in a worker thread."""
        iterator = self.sync.pages(page_size)
        while (page := await anyio.to_thread.run_sync(next, iterator, None)) is not None:
            yield page

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self.sync.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
