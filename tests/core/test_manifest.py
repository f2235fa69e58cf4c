"""The manifest makes a directory a backup; verify recomputes everything and misses no damage."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from asyncmig.core import jsoncodec
from asyncmig.core.digest import ContainerDigest
from asyncmig.core.engine.transform import strip_system
from asyncmig.core.files.jsonl import JsonlGzWriter
from asyncmig.core.files.manifest import (
    MANIFEST_NAME,
    ContainerEntry,
    Throughput,
    build_container_entry,
    container_file_name,
    latest_backup,
    new_backup_dir,
    read_manifest,
    verify_backup,
    write_manifest,
)
from asyncmig.errors import BackupCorrupt, UsageError

Document = dict[str, Any]
NOW = datetime(2025, 8, 5, 10, 11, 12, 345678, tzinfo=UTC)

VECTOR_PROPERTIES = {
    "id": "personality-vectors",
    "partitionKey": {"paths": ["/personality"], "kind": "Hash", "version": 2},
    "indexingPolicy": {"indexingMode": "consistent", "excludedPaths": [{"path": "/embedding/*"}]},
    "vectorEmbeddingPolicy": {
        "vectorEmbeddings": [
            {"path": "/embedding", "dataType": "float32", "dimensions": 768, "distanceFunction": "cosine"}
        ]
    },
    "_rid": "AbCd==",
}
USERS_PROPERTIES = {"id": "users", "partitionKey": {"paths": ["/partition_key"]}, "defaultTtl": -1}
SERVERLESS: Throughput = {"kind": "serverless", "value": None}


def _vectors() -> list[Document]:
    return [
        {
            "id": f"v{i}",
            "personality": "Krishna" if i % 2 else "krishna",
            "embedding": [i / 768 * j for j in range(8)] + [-0.0, 2100.607537417505],
            "_rid": f"rid{i}",
            "_etag": f'"{i}"',
            "_ts": 1722850000 + i,
        }
        for i in range(25)
    ]


def _users() -> list[Document]:
    return [{"id": f"u{i}", "partition_key": f"u{i}", "email": None, "big": 2**64 + i} for i in range(7)]


def _write_file(path: Path, pages: list[list[Document]]) -> None:
    with JsonlGzWriter.open(path) as writer:
        for page in pages:
            writer.write(page)
            writer.commit()


@pytest.fixture
def backup(tmp_path: Path) -> Path:
    """A finished two-container backup."""
    directory = new_backup_dir(tmp_path / "migration_backups", NOW)
    vectors, users = _vectors(), _users()
    _write_file(directory / container_file_name("personality-vectors"), [vectors[:10], vectors[10:]])
    _write_file(directory / container_file_name("users"), [users])
    entries = {
        "personality-vectors": build_container_entry(
            directory / "personality-vectors.jsonl.gz", VECTOR_PROPERTIES, SERVERLESS
        ),
        "users": build_container_entry(
            directory / "users.jsonl.gz", USERS_PROPERTIES, {"kind": "autoscale", "value": 4000}
        ),
    }
    write_manifest(directory, "vimarsh-multi-personality", "localhost:8081", entries, created_at=NOW)
    return directory


# --- building and reading ----------------------------------------------------------------------


def test_entry_is_computed_from_the_file(backup: Path) -> None:
    path = backup / "personality-vectors.jsonl.gz"
    entry = build_container_entry(path, VECTOR_PROPERTIES, SERVERLESS)
    expected = ContainerDigest()
    for document in _vectors():
        expected.add(strip_system(document))  # what a restored copy will hold
    assert entry == {
        "file": "personality-vectors.jsonl.gz",
        "count": 25,
        "size": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "content_digest": expected.to_json(),
        "properties": VECTOR_PROPERTIES,
        "throughput": SERVERLESS,
    }


def test_manifest_round_trip(backup: Path) -> None:
    manifest = read_manifest(backup)
    assert {k: v for k, v in manifest.items() if k != "containers"} == {
        "format": "asyncmig-backup",
        "version": 1,
        "created_at": "2025-08-05T10:11:12.345678+00:00",
        "database": "vimarsh-multi-personality",
        "source_host": "localhost:8081",
        "complete": True,
    }
    assert list(manifest["containers"]) == ["personality-vectors", "users"]
    users = manifest["containers"]["users"]
    assert users["count"] == 7
    assert users["properties"] == USERS_PROPERTIES
    assert users["throughput"] == {"kind": "autoscale", "value": 4000}
    assert ContainerDigest.from_json(users["content_digest"]).count == 7
    vectors = manifest["containers"]["personality-vectors"]["properties"]
    assert vectors["vectorEmbeddingPolicy"]["vectorEmbeddings"][0]["dimensions"] == 768
    # the manifest is exact JSON written last, alone, private
    assert jsoncodec.loads((backup / MANIFEST_NAME).read_bytes()) == manifest
    assert stat.S_IMODE((backup / MANIFEST_NAME).stat().st_mode) == 0o600
    assert sorted(p.name for p in backup.iterdir()) == [
        MANIFEST_NAME,
        "personality-vectors.jsonl.gz",
        "users.jsonl.gz",
    ]


def test_backup_directory_and_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        directory = new_backup_dir(tmp_path / "root", NOW)
        _write_file(directory / "users.jsonl.gz", [_users()])
        entry = build_container_entry(directory / "users.jsonl.gz", USERS_PROPERTIES, SERVERLESS)
        write_manifest(directory, "db", "localhost:8081", {"users": entry})
    finally:
        os.umask(old)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "root").stat().st_mode) == 0o700
    for file in directory.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_missing_manifest_means_no_backup(tmp_path: Path) -> None:
    directory = new_backup_dir(tmp_path, NOW)
    _write_file(directory / "users.jsonl.gz", [_users()])  # the data is there, the manifest is not
    with pytest.raises(BackupCorrupt) as excinfo:
        read_manifest(directory)
    assert str(excinfo.value) == (
        f"{directory} has no manifest.json: the backup did not finish; it cannot be used for restore or rollback"
    )
    with pytest.raises(BackupCorrupt, match="has no manifest.json"):
        verify_backup(directory)
    with pytest.raises(BackupCorrupt, match="does not exist"):
        read_manifest(tmp_path / "nowhere")


def _rewrite_manifest(backup: Path, change: Any) -> None:
    manifest = jsoncodec.loads((backup / MANIFEST_NAME).read_bytes())
    change(manifest)
    (backup / MANIFEST_NAME).write_bytes(jsoncodec.dumps(manifest))


def _users_entry(manifest: Any) -> Any:
    return manifest["containers"]["users"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(complete=False), "not marked complete"),
        (lambda m: m.pop("complete"), "not marked complete"),
        (lambda m: m.update(format="backup_manifest"), "not an asyncmig-backup manifest"),
        (lambda m: m.update(version=2), "version 2 is newer than this asyncmig reads"),
        (lambda m: m.update(version="1"), "version is missing"),
        (lambda m: m.update(created_at="2025-08-05 10:11:12"), "not a timezone-aware"),
        (lambda m: m.update(database=""), "database is missing"),
        (lambda m: m.pop("containers"), "container list is missing"),
        (lambda m: _users_entry(m).update(file="../../etc/passwd.jsonl.gz"), "not a plain"),
        (lambda m: _users_entry(m).update(file="users.json"), "not a plain"),
        (lambda m: _users_entry(m).update(count=True), "count True is not a count"),
        (lambda m: _users_entry(m).update(count=8), "content_digest counts 7 documents but count is 8"),
        (lambda m: _users_entry(m).update(sha256="ABC"), "sha256"),
        (lambda m: _users_entry(m).update(content_digest="7:zz"), "not a content digest"),
        (lambda m: _users_entry(m)["properties"].pop("partitionKey"), "partitionKey.paths is missing"),
        (lambda m: _users_entry(m).update(throughput={"kind": "manual", "value": None}), "positive RU/s"),
        (lambda m: _users_entry(m).update(throughput={"kind": "serverless", "value": 400}), "no RU/s value"),
        (
            lambda m: _users_entry(m).update(throughput={"kind": "provisioned", "value": 400}),
            "throughput must be",
        ),
    ],
)
def test_malformed_manifests_are_refused(backup: Path, change: Any, message: str) -> None:
    _rewrite_manifest(backup, change)
    with pytest.raises(BackupCorrupt, match=message):
        read_manifest(backup)


def test_a_damaged_manifest_is_refused(backup: Path) -> None:
    path = backup / MANIFEST_NAME
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(BackupCorrupt, match="manifest.json is not valid JSON"):
        read_manifest(backup)


def test_write_manifest_refuses_what_it_could_not_read_back(backup: Path) -> None:
    entry = read_manifest(backup)["containers"]["users"]
    with pytest.raises(ValueError, match="never a connection string"):
        write_manifest(backup, "db", "AccountEndpoint=https://x/;AccountKey=c2VjcmV0", {"users": entry})
    with pytest.raises(ValueError, match="timezone-aware"):
        write_manifest(backup, "db", "host", {"users": entry}, created_at=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="count"):
        write_manifest(backup, "db", "host", {"users": ContainerEntry(**{**entry, "count": -1})})
    with pytest.raises(BackupCorrupt, match="changed"):
        write_manifest(
            backup, "db", "host", {"users": ContainerEntry(**{**entry, "size": entry["size"] + 1})}
        )
    (backup / "users.jsonl.gz").unlink()
    with pytest.raises(BackupCorrupt, match="missing"):
        write_manifest(backup, "db", "host", {"users": entry})


def test_build_entry_refuses_properties_a_restore_could_not_use(backup: Path) -> None:
    path = backup / "users.jsonl.gz"
    with pytest.raises(ValueError, match="partitionKey"):
        build_container_entry(path, {"id": "users"}, SERVERLESS)
    with pytest.raises(ValueError, match="positive RU/s"):
        build_container_entry(path, USERS_PROPERTIES, {"kind": "manual", "value": 0})
    with pytest.raises(BackupCorrupt, match="missing"):
        build_container_entry(backup / "nope.jsonl.gz", USERS_PROPERTIES, SERVERLESS)


def test_build_entry_refuses_an_unreadable_file(backup: Path) -> None:
    path = backup / "users.jsonl.gz"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(BackupCorrupt, match="truncated"):
        build_container_entry(path, USERS_PROPERTIES, SERVERLESS)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "..\\x", "nul\0"])
def test_container_names_must_be_plain_file_names(name: str) -> None:
    with pytest.raises(UsageError):
        container_file_name(name)


# --- verify ------------------------------------------------------------------------------------


def test_verify_passes_a_good_backup(backup: Path) -> None:
    report = verify_backup(backup)
    assert report.ok
    assert report.problems == []
    report.raise_if_failed()
    assert report.to_json()["containers"]["personality-vectors"] == {
        "ok": True,
        "expected_count": 25,
        "actual_count": 25,
        "problems": [],
    }


def _assert_only_users_fail(backup: Path, *fragments: str) -> list[str]:
    report = verify_backup(backup)
    assert not report.ok
    by_name = {c.name: c for c in report.containers}
    assert by_name["personality-vectors"].ok
    problems = list(by_name["users"].problems)
    for fragment in fragments:
        assert any(fragment in p for p in problems), (fragment, problems)
    with pytest.raises(BackupCorrupt, match=f"backup {backup} failed verification: users: "):
        report.raise_if_failed()
    return problems


def _users_lines(backup: Path) -> list[bytes]:
    return gzip.decompress((backup / "users.jsonl.gz").read_bytes()).splitlines()


def _replace_users(backup: Path, lines: list[bytes]) -> None:
    (backup / "users.jsonl.gz").write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines)))


def test_verify_detects_a_missing_file(backup: Path) -> None:
    (backup / "users.jsonl.gz").unlink()
    assert _assert_only_users_fail(backup, "users.jsonl.gz is missing") == [
        f"{backup}/users.jsonl.gz is missing"
    ]
    assert verify_backup(backup).to_json()["containers"]["users"]["actual_count"] is None


def test_verify_detects_a_truncated_file(backup: Path) -> None:
    path = backup / "users.jsonl.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_only_users_fail(backup, "bytes but the manifest says", "is truncated")


def test_verify_detects_truncation_at_a_member_boundary(backup: Path) -> None:
    # Cut exactly after the first of two members: gzip itself sees a valid, shorter file.
    path = backup / "personality-vectors.jsonl.gz"
    with JsonlGzWriter.open(path) as writer:
        writer.write(_vectors()[:10])
        first_member = writer.commit()
    path.write_bytes(path.read_bytes()[:first_member])
    report = verify_backup(backup)
    vectors = next(c for c in report.containers if c.name == "personality-vectors")
    assert vectors.actual_count == 10
    assert any("holds 10 documents but the manifest says 25" in p for p in vectors.problems)
    assert any("SHA-256 differs" in p for p in vectors.problems)


@pytest.mark.parametrize("where", [4, 9, "middle", -8, -1])  # mtime, OS byte, data, CRC, length
def test_verify_detects_a_flipped_bit_anywhere(backup: Path, where: int | str) -> None:
    path = backup / "users.jsonl.gz"
    data = bytearray(path.read_bytes())
    index = len(data) // 2 if where == "middle" else int(where)
    data[index] ^= 0x10
    path.write_bytes(bytes(data))
    _assert_only_users_fail(backup, "users.jsonl.gz")


def test_verify_detects_an_edited_line(backup: Path) -> None:
    lines = _users_lines(backup)
    lines[3] = lines[3].replace(b'"email":null', b'"email":"x@example.com"')  # still valid JSON
    _replace_users(backup, lines)
    _assert_only_users_fail(backup, "SHA-256 differs", "content digest differs")


def test_verify_detects_a_changed_number_bit(backup: Path) -> None:
    lines = _users_lines(backup)
    lines[0] = lines[0].replace(b"18446744073709551616", b"18446744073709551616.0")  # int -> float
    _replace_users(backup, lines)
    _assert_only_users_fail(backup, "content digest differs")


def test_verify_detects_a_missing_document(backup: Path) -> None:
    _replace_users(backup, _users_lines(backup)[:-1])
    _assert_only_users_fail(backup, "holds 6 documents but the manifest says 7")


@pytest.mark.parametrize("extra", ["duplicate", "new"])
def test_verify_detects_an_extra_document(backup: Path, extra: str) -> None:
    line = _users_lines(backup)[0] if extra == "duplicate" else b'{"id":"intruder","partition_key":"x"}'
    with open(backup / "users.jsonl.gz", "ab") as file:  # an appended gzip member
        file.write(gzip.compress(line + b"\n"))
    _assert_only_users_fail(backup, "holds 8 documents but the manifest says 7")


def test_verify_detects_an_unreadable_line(backup: Path) -> None:
    lines = _users_lines(backup)
    lines[5] = b'{"id":"u5","score":NaN}'
    _replace_users(backup, lines)
    _assert_only_users_fail(backup, "users.jsonl.gz line 6: NaN/Infinity is not valid JSON")


def test_verify_reports_a_recompressed_file_whose_content_is_intact(backup: Path) -> None:
    _replace_users(backup, _users_lines(backup))  # same documents, different gzip bytes
    problems = _assert_only_users_fail(backup, "SHA-256 differs")
    assert not any("digest" in p or "documents but" in p for p in problems)


def test_raise_if_failed_counts_the_other_problems(backup: Path) -> None:
    (backup / "users.jsonl.gz").unlink()
    (backup / "personality-vectors.jsonl.gz").unlink()
    with pytest.raises(
        BackupCorrupt, match=r"personality-vectors\.jsonl\.gz is missing \(and 1 more problems\)"
    ):
        verify_backup(backup).raise_if_failed()


# --- directories -------------------------------------------------------------------------------


def test_new_backup_dir_is_named_in_utc(tmp_path: Path) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    path = new_backup_dir(tmp_path, datetime(2025, 8, 5, 3, 0, 1, tzinfo=india))
    assert path == tmp_path / "backup_20250804_213001"
    assert path.is_dir()
    with pytest.raises(UsageError, match="already exists"):
        new_backup_dir(tmp_path, datetime(2025, 8, 4, 21, 30, 1, 999, tzinfo=UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        new_backup_dir(tmp_path, datetime(2025, 8, 4, 21, 30, 2))


def _finished_backup(root: Path, name: str, created_at: datetime) -> Path:
    directory = root / name
    directory.mkdir(mode=0o700)
    _write_file(directory / "users.jsonl.gz", [_users()])
    entry = build_container_entry(directory / "users.jsonl.gz", USERS_PROPERTIES, SERVERLESS)
    write_manifest(directory, "db", "localhost:8081", {"users": entry}, created_at=created_at)
    return directory


def test_latest_backup_goes_by_the_manifest_time_and_skips_unfinished(tmp_path: Path) -> None:
    assert latest_backup(tmp_path / "missing") is None
    assert latest_backup(tmp_path) is None
    _finished_backup(tmp_path, "backup_20250806_000000", NOW - timedelta(days=1))  # renamed
    newest = _finished_backup(tmp_path, "backup_20250801_000000", NOW)
    _finished_backup(tmp_path, "backup_20250802_000000", NOW - timedelta(hours=1, minutes=1))
    unfinished = new_backup_dir(tmp_path, NOW + timedelta(days=3))
    _write_file(unfinished / "users.jsonl.gz", [_users()])
    damaged = _finished_backup(tmp_path, "backup_20250810_000000", NOW + timedelta(days=5))
    (damaged / MANIFEST_NAME).write_bytes(b"{")
    (tmp_path / "backup_notes.txt").write_text("not a directory")
    assert latest_backup(tmp_path) == newest
