"""The completion journal: what a killed run wrote after its last checkpoint, and nothing else."""

from __future__ import annotations

import stat
from pathlib import Path

from asyncmig.core.engine.journal import Journal, discard_all, journal_path, replay


def test_recorded_keys_are_replayed_per_range(tmp_path: Path) -> None:
    checkpoint = tmp_path / "cp.json"
    journal = Journal(checkpoint, 0)
    journal.record("r0", ["users\x1fa\x1f12", "users\x1fb\x1f13"])
    journal.record("r1", ["users\x1fc\x1f"])
    journal.record("r1", [])  # nothing written: nothing recorded
    # No close: the lines must already be on disk, as after a SIGKILL.
    assert replay(checkpoint, 0).written == {"r0": {"users\x1fa\x1f12", "users\x1fb\x1f13"}, "r1": {"users\x1fc\x1f"}}
    assert stat.S_IMODE(journal_path(checkpoint, 0).stat().st_mode) == 0o600
    journal.close()


def test_sent_documents_are_replayed_apart_from_written_ones(tmp_path: Path) -> None:
    checkpoint = tmp_path / "cp.json"
    journal = Journal(checkpoint, 0)
    journal.record_sent("r0", ["a", "b"])
    journal.record("r0", ["a"])  # b was in flight at the kill
    assert replay(checkpoint, 0) == ({"r0": {"a"}}, {"r0": {"a", "b"}})
    journal.close()


def test_a_line_torn_by_the_kill_is_ignored(tmp_path: Path) -> None:
    checkpoint = tmp_path / "cp.json"
    journal = Journal(checkpoint, 3)
    journal.record("r0", ["a", "b"])
    journal.close()
    path = journal_path(checkpoint, 3)
    path.write_bytes(path.read_bytes() + b'["r0", "c')
    assert replay(checkpoint, 3).written == {"r0": {"a", "b"}}


def test_rotation_starts_a_new_generation_and_drops_the_old_one_once_saved(tmp_path: Path) -> None:
    checkpoint = tmp_path / "cp.json"
    journal = Journal(checkpoint, 0)
    journal.record("r0", ["before"])
    assert journal.rotate() == 1
    journal.record("r0", ["after"])
    assert replay(checkpoint, 0).written == {"r0": {"before"}}  # still there until the checkpoint is saved
    journal.discard_previous()
    assert not journal_path(checkpoint, 0).exists()
    assert replay(checkpoint, 1).written == {"r0": {"after"}}
    journal.close()


def test_a_missing_generation_replays_nothing(tmp_path: Path) -> None:
    assert replay(tmp_path / "cp.json", 7) == ({}, {})


def test_a_disabled_journal_records_nothing(tmp_path: Path) -> None:
    checkpoint = tmp_path / "cp.json"
    journal = Journal(checkpoint, 0, enabled=False)
    journal.record("r0", ["a"])
    assert journal.rotate() == 1
    journal.close()
    assert list(tmp_path.iterdir()) == []


def test_discard_all_removes_every_generation_of_this_checkpoint_only(tmp_path: Path) -> None:
    ours, other = tmp_path / "cp.json", tmp_path / "other.json"
    for generation in (0, 4):
        Journal(ours, generation).close()
    Journal(other, 0).close()
    discard_all(ours)
    assert [p.name for p in tmp_path.iterdir()] == [journal_path(other, 0).name]
