from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import asyncmig
from asyncmig.core.files import fsutil
from asyncmig.core.files.fsutil import LOCK_NAME, PidLock, atomic_write, ensure_dir, private_dir
from asyncmig.errors import LockHeld, UsageError

REPO_ROOT = Path(asyncmig.__file__).resolve().parent.parent


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -------------------------------------------------------------------------------- atomic_write


def test_atomic_write_creates_owner_only_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b'{"a":1}')
    assert target.read_bytes() == b'{"a":1}'
    assert mode_of(target) == 0o600
    assert os.listdir(tmp_path) == ["state.json"]


def test_atomic_write_replaces_and_honours_mode(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old content that is longer")
    target.chmod(0o644)
    atomic_write(target, b"new", mode=0o640)
    assert target.read_bytes() == b"new"
    assert mode_of(target) == 0o640


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsutil.os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_atomic_write_into_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "state.json", b"x")
    assert os.listdir(tmp_path) == []


# -------------------------------------------------------------------------------- private_dir


def test_private_dir_creates_nested_owner_only(tmp_path: Path) -> None:
    created = private_dir(tmp_path / "a" / "b")
    assert created == tmp_path / "a" / "b"
    assert created.is_dir()
    assert mode_of(created) == 0o700


def test_private_dir_tightens_existing_directory(tmp_path: Path) -> None:
    existing = tmp_path / "state"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    private_dir(existing)
    assert mode_of(existing) == 0o700


def test_private_dir_refuses_shared_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(UsageError, match="shared directory"):
        private_dir(shared)
    assert mode_of(shared) == 0o1777  # untouched


def test_private_dir_on_a_file_fails(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(NotADirectoryError):
        private_dir(afile)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a directory away")
def test_private_dir_refuses_another_users_directory(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o755)
    os.chown(foreign, 65534, 65534)
    with pytest.raises(UsageError, match="another user"):
        private_dir(foreign)
    assert mode_of(foreign) == 0o755


# -------------------------------------------------------------------------------- ensure_dir


def test_ensure_dir_creates_every_missing_component_owner_only(tmp_path: Path) -> None:
    created = ensure_dir(tmp_path / "a" / "b" / "c")
    assert created.is_dir()
    for part in (tmp_path / "a", tmp_path / "a" / "b", created):
        assert mode_of(part) == 0o700


def test_ensure_dir_leaves_existing_directories_alone(tmp_path: Path) -> None:
    chosen = tmp_path / "project"
    chosen.mkdir()
    chosen.chmod(0o755)
    ensure_dir(chosen / "state")
    assert mode_of(chosen) == 0o755  # the user's directory keeps its permissions
    assert mode_of(chosen / "state") == 0o700
    assert ensure_dir(chosen) == chosen


def test_ensure_dir_through_a_file_fails(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        ensure_dir(tmp_path / "file")
    with pytest.raises(NotADirectoryError):
        ensure_dir(tmp_path / "file" / "sub")


# -------------------------------------------------------------------------------- PidLock


def test_lock_writes_pid_and_blocks_a_second_holder(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    with PidLock(directory) as lock:
        assert lock.held
        assert (directory / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        assert mode_of(directory / LOCK_NAME) == 0o600
        assert mode_of(directory) == 0o700
        with pytest.raises(LockHeld) as info:
            PidLock(directory).acquire()
        assert str(info.value) == (
            f"another asyncmig run (pid {os.getpid()}) is using {directory}; wait for it or stop it"
        )
        assert info.value.exit_code == 5
    assert not lock.held
    with PidLock(directory):  # released: a new holder gets it
        pass


def test_lock_cannot_be_taken_twice_by_the_same_object(tmp_path: Path) -> None:
    lock = PidLock(tmp_path)
    lock.acquire()
    try:
        with pytest.raises(RuntimeError, match="already held"):
            lock.acquire()
    finally:
        lock.release()
    lock.release()  # releasing twice is harmless


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A separate process holding the lock on tmp_path until killed."""
    script = (
        "import sys, time\n"
        "from asyncmig.core.files.fsutil import PidLock\n"
        "PidLock(sys.argv[1]).acquire()\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "locked"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_lock_held_by_another_process_names_its_pid(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    with pytest.raises(LockHeld, match=rf"\(pid {holder.pid}\)"):
        PidLock(tmp_path).acquire()


def test_lock_of_a_killed_process_does_not_block(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert (tmp_path / LOCK_NAME).read_text() == f"{holder.pid}\n"  # stale file left behind
    with PidLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"

