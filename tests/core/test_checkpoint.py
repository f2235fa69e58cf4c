from __future__ import annotations

import base64
import hashlib
import os
import random
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from asyncmig.connection import CosmosEndpoint
from asyncmig.core import jsoncodec
from asyncmig.core.engine.checkpoint import (
    FORMAT,
    VERSION,
    Checkpoint,
    CommitTracker,
    RangeState,
    Totals,
    load_checkpoint,
    run_identity,
    save_checkpoint,
)
from asyncmig.core.engine.transform import IDENTITY
from asyncmig.errors import CorruptState, ForeignState, StateError

KEY = base64.b64encode(os.urandom(64)).decode()
SOURCE = CosmosEndpoint("https://src.documents.azure.com:443/", KEY)
TARGET = CosmosEndpoint("https://localhost:8081/", KEY)


def identity(**changes: Any) -> dict[str, Any]:
    base = run_identity(
        source=SOURCE,
        source_database="db",
        source_container="vectors",
        target=TARGET,
        target_database="db2",
        target_containers=("personality-vectors",),
        transform=IDENTITY,
    )
    return {**base, **changes}


def populated() -> Checkpoint:
    checkpoint = Checkpoint(identity=identity())
    checkpoint.ranges["0"] = RangeState(feed_range={"Range": {"min": "", "max": "7F"}}, position="tok-1", read=10,
                                        written=10)
    checkpoint.ranges["1"] = RangeState(feed_range={"Range": {"min": "7F", "max": "FF"}}, done=True)
    checkpoint.sink_state = {"created": ["personality-vectors"], "big": 2**70}
    checkpoint.totals = Totals(read=10, written=9, dead_lettered=1, ru=2100.607537417505, throttled=3, retries=4)
    return checkpoint


# -------------------------------------------------------------------------------- identity


def test_run_identity_uses_hosts_never_keys() -> None:
    ident = identity()
    assert ident["source_host"] == "src.documents.azure.com"
    assert ident["target_host"] == "localhost:8081"
    assert ident["transform"] == "identity" and ident["transform_version"] == "1"
    assert KEY not in orjson.dumps(ident).decode()
    assert run_identity(
        source=SOURCE, source_database="d", source_container="c", target=None, target_database=None,
        target_containers=[], transform=IDENTITY, filter_hash="abc",
    )["filter_hash"] == "abc"


# -------------------------------------------------------------------------------- save / load


def test_missing_file_gives_fresh_checkpoint(tmp_path: Path) -> None:
    checkpoint = load_checkpoint(tmp_path / "cp.json", identity(), restart=False)
    assert checkpoint.ranges == {} and checkpoint.totals == Totals()
    assert checkpoint.identity == identity() | {"target_containers": ["personality-vectors"]}


def test_round_trip_is_exact_and_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "cp.json"
    original = populated()
    stamped_before = original.updated_at
    save_checkpoint(path, original)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = jsoncodec.loads(path.read_bytes())
    assert raw["format"] == FORMAT and raw["version"] == VERSION and len(raw["checksum"]) == 64
    assert original.updated_at >= stamped_before
    loaded = load_checkpoint(path, identity(), restart=False)
    assert loaded == original
    assert loaded.totals.ru == 2100.607537417505
    assert loaded.sink_state["big"] == 2**70  # wider than 64 bits: still exact


def test_restart_keeps_old_file_aside(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    save_checkpoint(path, populated())
    content = path.read_bytes()
    fresh = load_checkpoint(path, identity(source_container="other"), restart=True)
    assert fresh.ranges == {}
    assert not path.exists()
    assert (tmp_path / "cp.json.old").read_bytes() == content


def test_restart_without_file_is_fresh(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "cp.json", identity(), restart=True).ranges == {}
    assert os.listdir(tmp_path) == []


def _assert_corrupt(path: Path, fragment: str) -> None:
    with pytest.raises(CorruptState) as info:
        load_checkpoint(path, identity(), restart=False)
    message = str(info.value)
    assert str(path) in message
    assert "--restart" in message
    assert fragment in message
    assert info.value.exit_code == 5


def test_truncated_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    save_checkpoint(path, populated())
    path.write_bytes(path.read_bytes()[:-40])
    _assert_corrupt(path, "not valid JSON")


def test_edited_file_fails_the_checksum(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    save_checkpoint(path, populated())
    path.write_bytes(path.read_bytes().replace(b'"tok-1"', b'"tok-9"'))
    _assert_corrupt(path, "checksum mismatch")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"[1,2]", "not an asyncmig-checkpoint"),
        (b'{"format":"something-else","version":1}', "not an asyncmig-checkpoint"),
        (b'{"format":"asyncmig-checkpoint","version":2}', "format version 2"),
    ],
)
def test_wrong_format_or_version_is_corrupt(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "cp.json"
    path.write_bytes(content)
    _assert_corrupt(path, fragment)


def _seal(body: dict[str, Any]) -> bytes:
    return jsoncodec.dumps({**body, "checksum": hashlib.sha256(jsoncodec.canonical(body)).hexdigest()})


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda b: b["ranges"]["0"].update(read=True), "range '0' read has the wrong type"),
        (lambda b: b["ranges"]["0"].update(written=-1), "range '0' written is negative"),
        (lambda b: b["ranges"]["0"].update(position=5), "range '0' position"),
        (lambda b: b["ranges"]["0"].pop("feed_range"), "has no feed_range"),
        (lambda b: b["totals"].update(ru="many"), "totals.ru"),
        (lambda b: b.update(sink_state=[]), "sink_state"),
    ],
)
def test_sealed_but_malformed_structure_is_corrupt(tmp_path: Path, mutate: Any, fragment: str) -> None:
    path = tmp_path / "cp.json"
    save_checkpoint(path, populated())
    body = jsoncodec.loads(path.read_bytes())
    del body["checksum"]
    mutate(body)
    path.write_bytes(_seal(body))
    _assert_corrupt(path, fragment)


def test_foreign_identity_names_each_difference(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    save_checkpoint(path, populated())
    with pytest.raises(ForeignState) as info:
        load_checkpoint(path, identity(source_container="users", extra_field="x"), restart=False)
    message = str(info.value)
    assert "source_container is 'users' now but 'vectors' in the file" in message
    assert "extra_field is 'x' now but (absent) in the file" in message
    assert "--restart" in message and "--checkpoint" in message
    assert str(path) in message
    assert KEY not in message


def test_unreadable_path_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    path.mkdir()
    with pytest.raises(StateError, match="cannot read checkpoint"):
        load_checkpoint(path, identity(), restart=False)


def test_non_finite_sink_state_is_refused_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    save_checkpoint(path, populated())
    before = path.read_bytes()
    checkpoint = populated()
    checkpoint.sink_state["x"] = float("nan")
    with pytest.raises(ValueError, match="nan"):
        save_checkpoint(path, checkpoint)
    assert path.read_bytes() == before


# -------------------------------------------------------------------------------- CommitTracker


def test_in_order_completion_commits_each_page() -> None:
    tracker = CommitTracker()
    first = tracker.register("p1", 2)
    second = tracker.register("p2", 1)
    assert tracker.committed_position is None
    tracker.complete(first, 2)
    assert tracker.committed_position == "p1" and tracker.committed == 2
    tracker.complete(second)
    assert tracker.committed_position == "p2" and tracker.committed == 3
    assert tracker.in_flight == 0


def test_out_of_order_completions_are_held_back() -> None:
    tracker = CommitTracker()
    pages = [tracker.register(f"p{i}", 2) for i in range(3)]
    tracker.complete(pages[2], 2)
    tracker.complete(pages[1], 2)
    assert tracker.committed_position is None  # page 0 still has two documents in flight
    assert (tracker.read, tracker.written, tracker.in_flight) == (6, 4, 2)
    tracker.complete(pages[0], 1)
    assert tracker.committed_position is None
    tracker.complete(pages[0], 1)
    assert tracker.committed_position == "p2" and tracker.committed == 6


def test_empty_pages_commit_when_their_turn_comes() -> None:
    tracker = CommitTracker()
    full = tracker.register("p1", 1)
    empty = tracker.register("p2", 0)
    assert tracker.committed_position is None
    tracker.complete(empty, 0)  # completing nothing is a no-op
    tracker.complete(full)
    assert tracker.committed_position == "p2"
    lone_empty = tracker.register("p3", 0)
    assert lone_empty == 2 and tracker.committed_position == "p3"


def test_resume_starts_from_checkpoint_counts() -> None:
    tracker = CommitTracker("tok-7", committed=70)
    assert tracker.committed_position == "tok-7"
    page = tracker.register("tok-8", 5)
    assert (tracker.read, tracker.written, tracker.committed) == (75, 70, 70)
    tracker.complete(page, 5)
    assert tracker.committed_position == "tok-8" and tracker.committed == 75 and tracker.in_flight == 0


def test_misuse_is_refused() -> None:
    tracker = CommitTracker()
    page = tracker.register("p1", 2)
    with pytest.raises(ValueError, match="never written"):
        tracker.complete(page, 3)
    with pytest.raises(ValueError, match="not pending"):
        tracker.complete(page + 5, 1)
    with pytest.raises(ValueError, match="negative"):
        tracker.complete(page, -1)
    with pytest.raises(ValueError, match="cannot hold"):
        tracker.register("p2", -1)
    tracker.complete(page, 2)
    with pytest.raises(ValueError, match="not pending"):
        tracker.complete(page, 1)  # already committed: a double completion is a bug
    assert tracker.committed == 2


def test_done_needs_finish_and_every_page_committed() -> None:
    tracker = CommitTracker()
    page = tracker.register("last", 1)
    tracker.finish()
    assert not tracker.done
    tracker.complete(page)
    assert tracker.done
    with pytest.raises(RuntimeError, match="finish"):
        tracker.register("more", 1)


@pytest.mark.parametrize("seed", range(20))
def test_committed_position_never_passes_an_unwritten_document(seed: int) -> None:
    rng = random.Random(seed)
    tracker = CommitTracker()
    sizes = [rng.randint(0, 4) for _ in range(30)]
    ids = [tracker.register(f"p{i}", n) for i, n in enumerate(sizes)]
    outstanding = [(page, 1) for page, n in zip(ids, sizes, strict=True) for _ in range(n)]
    rng.shuffle(outstanding)
    remaining = dict(zip(ids, sizes, strict=True))
    for page, n in outstanding:
        tracker.complete(page, n)
        remaining[page] -= n
        # the expected position: after the longest prefix of fully written pages
        prefix = 0
        while prefix < len(ids) and remaining[ids[prefix]] == 0:
            prefix += 1
        expected = f"p{prefix - 1}" if prefix else None
        assert tracker.committed_position == expected
        assert tracker.committed == sum(sizes[:prefix])
    assert tracker.committed_position == "p29" and tracker.in_flight == 0
