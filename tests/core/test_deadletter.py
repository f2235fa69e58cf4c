from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from asyncmig.core import jsoncodec
from asyncmig.core.engine.deadletter import DeadLetterFile
from asyncmig.errors import CorruptState
from asyncmig.redaction import register_secret

DOC_BYTES = b'{"id":"v1","user_id":null,"embedding":[2100.607537417505,-0.0,1e-320,0.1],"n":1180591620717411303424}'


def doc(doc_id: str = "v1", **fields: Any) -> dict[str, Any]:
    return {"id": doc_id, **fields}


def lines(path: Path) -> list[dict[str, Any]]:
    return [jsoncodec.loads(line) for line in path.read_bytes().splitlines()]


def test_no_file_until_the_first_record(tmp_path: Path) -> None:
    path = tmp_path / "dl" / "dead-letters.jsonl"
    with DeadLetterFile(path) as dead:
        dead.sync()
        assert dead.count == 0
    assert not (tmp_path / "dl").exists()


def test_record_layout_and_permissions(tmp_path: Path) -> None:
    path = tmp_path / "dl" / "dead-letters.jsonl"
    original = jsoncodec.loads(DOC_BYTES)
    with DeadLetterFile(path) as dead:
        assert dead.add(original, container="personality-vectors", range_key="0", partition_key="krishna",
                        reason="document has no user_id", status=None, target="user_sessions")
        dead.sync()
        assert dead.count == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    (record,) = lines(path)
    assert set(record) == {"at", "source", "target", "reason", "status", "document"}
    assert record["source"] == {"container": "personality-vectors", "range": "0", "id": "v1",
                                "partition_key": "krishna"}
    assert record["target"] == "user_sessions" and record["status"] is None
    assert record["reason"] == "document has no user_id"
    assert record["at"].endswith("+00:00")
    # the document is kept exactly: the same bytes come back
    assert jsoncodec.dumps(record["document"]) == DOC_BYTES


def test_reason_is_redacted(tmp_path: Path) -> None:
    key = base64.b64encode(os.urandom(64)).decode()
    register_secret(key)
    path = tmp_path / "dl.jsonl"
    with DeadLetterFile(path) as dead:
        dead.add(doc(), container="c", range_key=None, partition_key=None,
                 reason=f"HTTP 400 while using {key}", status=400)
    assert key not in path.read_text()
    assert lines(path)[0]["reason"] == "HTTP 400 while using ***"


def test_the_same_source_document_is_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "dl.jsonl"
    with DeadLetterFile(path) as dead:
        assert dead.add(doc("a"), container="c", range_key="0", partition_key="p", reason="r1")
        assert not dead.add(doc("a"), container="c", range_key="0", partition_key="p", reason="r2")
        # same id in another partition or container is another document
        assert dead.add(doc("a"), container="c", range_key="0", partition_key="q", reason="r3")
        assert dead.add(doc("a"), container="d", range_key="0", partition_key="p", reason="r4")
        assert dead.add(doc("a"), container="c", range_key="0", partition_key=["p"], reason="r5")
        assert dead.count == 4
    assert [r["reason"] for r in lines(path)] == ["r1", "r3", "r4", "r5"]


def test_resume_rebuilds_the_set_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dl.jsonl"
    with DeadLetterFile(path) as dead:
        for n in range(50):
            dead.add(doc(f"d{n}"), container="c", range_key="0", partition_key={"k": n}, reason="bad")
    with DeadLetterFile(path) as resumed:
        assert resumed.count == 50
        # a replayed page re-rejects documents already recorded: nothing is written twice
        assert not resumed.add(doc("d7"), container="c", range_key="0", partition_key={"k": 7}, reason="bad")
        assert resumed.add(doc("new"), container="c", range_key="0", partition_key=None, reason="bad")
        assert resumed.count == 51
    assert len(lines(path)) == 51


def test_torn_last_line_is_cut_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "dl.jsonl"
    with DeadLetterFile(path) as dead:
        dead.add(doc("a"), container="c", range_key="0", partition_key="p", reason="r")
        dead.add(doc("b"), container="c", range_key="0", partition_key="p", reason="r")
    data = path.read_bytes()
    path.write_bytes(data[:-15])  # crash mid-append of "b"
    with DeadLetterFile(path) as resumed:
        assert resumed.count == 1
        assert resumed.add(doc("b"), container="c", range_key="0", partition_key="p", reason="r")
    assert [r["source"]["id"] for r in lines(path)] == ["a", "b"]
    assert "torn last line" in caplog.text


def test_complete_last_record_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "dl.jsonl"
    with DeadLetterFile(path) as dead:
        dead.add(doc("a"), container="c", range_key="0", partition_key="p", reason="r")
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    with DeadLetterFile(path) as resumed:
        assert resumed.count == 1
        resumed.add(doc("b"), container="c", range_key="0", partition_key="p", reason="r")
    assert [r["source"]["id"] for r in lines(path)] == ["a", "b"]


def test_damaged_line_in_the_middle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dl.jsonl"
    path.write_bytes(b'{"source":{"container":"c","id":"a","partition_key":null}}\nnot json\n{"x":1}\n')
    with pytest.raises(CorruptState, match=r"line 2 .*move the file aside"):
        DeadLetterFile(path)
    path.write_bytes(b'{"x":1}\n')
    with pytest.raises(CorruptState, match="line 1"):
        DeadLetterFile(path)


def test_failed_append_leaves_no_partial_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "dl.jsonl"
    dead = DeadLetterFile(path)
    dead.add(doc("a"), container="c", range_key="0", partition_key="p", reason="r")
    real_write = os.write

    def half_then_fail(fd: int, data: Any) -> int:
        if len(data) > 20:
            return real_write(fd, bytes(data[:20]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("asyncmig.core.engine.deadletter.os.write", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        dead.add(doc("b"), container="c", range_key="0", partition_key="p", reason="r")
    monkeypatch.undo()
    assert dead.count == 1
    assert dead.add(doc("b"), container="c", range_key="0", partition_key="p", reason="r")
    dead.close()
    assert [r["source"]["id"] for r in lines(path)] == ["a", "b"]


def test_close_then_add_reopens(tmp_path: Path) -> None:
    path = tmp_path / "dl.jsonl"
    dead = DeadLetterFile(path)
    dead.add(doc("a"), container="c", range_key="0", partition_key="p", reason="r")
    dead.close()
    dead.close()  # idempotent
    dead.add(doc("b"), container="c", range_key="0", partition_key="p", reason="r")
    dead.close()
    assert len(lines(path)) == 2


def test_existing_directory_chosen_by_the_user_is_left_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    with DeadLetterFile(tmp_path / "dl.jsonl") as dead:
        dead.add(doc(), container="c", range_key="0", partition_key="p", reason="r")
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "dl.jsonl").stat().st_mode) == 0o600
