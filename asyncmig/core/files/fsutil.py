"""Durable, private files: atomic replacement, owner-only directories and a run lock.

State files hold positions that decide what is skipped on resume, so a crash must leave either the
old or the new content, never a torn mix (:func:`atomic_write`), and nothing asyncmig writes should
be readable by other users (documents and positions are the user's data).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from pathlib import Path
from types import TracebackType

from asyncmig.errors import LockHeld, UsageError

__all__ = ["LOCK_NAME", "PidLock", "atomic_write", "ensure_dir", "fsync_dir", "private_dir"]

LOCK_NAME = "asyncmig.lock"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory's entries to disk, so a file just created or renamed in it survives a crash.

    :raises OSError: when the directory cannot be opened or synced.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file.

    Writes a temporary file in the same directory (same filesystem, so the rename is atomic),
    fsyncs it, renames it over ``path`` and fsyncs the directory so the rename itself is durable.
    The file is created with ``mode`` (owner-only by default); the temporary file never has wider
    permissions than that.

    :raises OSError: when the directory is missing or not writable, or the disk is full; ``path``
        is then unchanged and no temporary file is left behind.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(target.parent)


def ensure_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and any missing parents owner-only (0700); leave existing directories alone.

    For places the user chose (the directory of ``--checkpoint`` or ``--dead-letter``): their
    permissions are the user's to decide, and the files asyncmig writes there are 0600 anyway.

    :raises OSError: when a directory cannot be created, or a component exists and is not a
        directory.
    """
    directory = Path(path)
    missing = []
    component = directory
    while not component.exists():
        missing.append(component)
        component = component.parent
    for new in reversed(missing):
        try:
            new.mkdir(mode=0o700)
        except FileExistsError:  # created concurrently by someone else: not ours to change
            continue
        os.chmod(new, 0o700)  # mkdir's mode is filtered by the umask
    if not directory.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(directory))
    return directory


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and missing parents) and make it owner-only (0700).

    Meant for asyncmig's own directories (state, locks): an existing one is tightened to 0700
    too, since an earlier run under a lax umask may have created it. A shared directory (sticky
    bit, like ``/tmp``) or one owned by another user is refused rather than changed.

    :raises UsageError: for a shared directory or another user's directory.
    :raises OSError: when the directory cannot be created, or ``path`` exists and is not a
        directory.
    """
    directory = ensure_dir(path)
    info = directory.stat()
    if info.st_mode & stat.S_ISVTX:
        raise UsageError(
            f"{directory} is a shared directory; give asyncmig a directory of its own (e.g. {directory}/asyncmig)"
        )
    if info.st_uid != os.getuid():
        raise UsageError(f"{directory} belongs to another user; give asyncmig a directory of your own")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)
    return directory


class PidLock:
    """An exclusive lock on a state directory: ``<dir>/asyncmig.lock`` holding the owner's pid.

    It uses ``flock``, which the kernel releases when the holder dies, so a lock file left by a
    killed run never blocks the next one. The file is kept (truncated) on release: deleting it
    would let two runs lock two different inodes of the same name.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting.

        :raises LockHeld: naming the pid of the run that holds it.
        :raises RuntimeError: when this object already holds it.
        :raises UsageError: see :func:`private_dir`.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this PidLock")
        private_dir(self.directory)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise LockHeld(
                f"another asyncmig run (pid {holder}) is using {self.directory}; wait for it or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def __enter__(self) -> PidLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
