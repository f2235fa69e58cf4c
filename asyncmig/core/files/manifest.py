"""The backup manifest: a backup without a complete manifest is not a backup.

A backup directory ``backup_YYYYMMDD_HHMMSS/`` (UTC, mode 0700) holds one ``<container>.jsonl.gz``
per source container and, written last and atomically, ``manifest.json``::

    {"format": "asyncmig-backup", "version": 1, "created_at": "<ISO 8601, UTC>",
     "database": "<name>", "source_host": "<host, never the key>", "complete": true,
     "containers": {"<name>": {"file": "<name>.jsonl.gz", "count": n, "size": bytes,
                               "sha256": "<of the file>", "content_digest": "<count>:<hex>",
                               "properties": {"partitionKey": {...}, "indexingPolicy": {...}, ...},
                               "throughput": {"kind": "manual" | "autoscale" | "serverless" | "shared",
                                              "value": int | null}}}}

The original backup listed containers it meant to export even when the export failed, had no
counts, checksums or container settings, and used a manifest name and schema its own rollback could
not read. Here every figure is computed from the finished file (:func:`build_container_entry`),
:func:`read_manifest` refuses anything incomplete or malformed, and :func:`verify_backup` recomputes
everything from the files, so a truncated file, an edited line, a flipped bit, a missing file or a
lost or extra document is reported before a restore relies on the backup.

``throughput.kind`` ``"shared"`` (value null) is for a container without its own offer in a
database with shared throughput; ``"autoscale"`` carries the maximum RU/s.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeGuard

from asyncmig.core import jsoncodec
from asyncmig.core.digest import ContainerDigest
from asyncmig.core.files.fsutil import atomic_write, ensure_dir, fsync_dir
from asyncmig.core.files.jsonl import FILE_SUFFIX, JsonlGzReader
from asyncmig.errors import BackupCorrupt, UsageError

FORMAT = "asyncmig-backup"
VERSION = 1
MANIFEST_NAME = "manifest.json"
BACKUP_PREFIX = "backup_"
THROUGHPUT_KINDS = ("manual", "autoscale", "serverless", "shared")

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class Throughput(TypedDict):
    kind: Literal["manual", "autoscale", "serverless", "shared"]
    value: int | None


class ContainerEntry(TypedDict):
    file: str
    count: int
    size: int
    sha256: str
    content_digest: str
    properties: dict[str, Any]
    throughput: Throughput


class Manifest(TypedDict):
    format: str
    version: int
    created_at: str
    database: str
    source_host: str
    complete: bool
    containers: dict[str, ContainerEntry]


def container_file_name(container: str) -> str:
    """``<container>.jsonl.gz``, refusing names that are not a plain file name.

    Cosmos DB ids cannot contain ``/``, ``\\``, ``?`` or ``#``, but a name coming from a manifest
    or the command line is checked anyway so it can never point outside the backup directory.

    :raises UsageError: for an empty name, ``.``/``..``, a path separator or a NUL.
    """
    if not _is_plain_name(container):
        raise UsageError(f"container name {container!r} cannot be used as a backup file name")
    return container + FILE_SUFFIX


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


def build_container_entry(
    path: Path, properties: Mapping[str, Any], throughput: Throughput
) -> ContainerEntry:
    """The manifest entry of a finished data file, from one streaming pass over it.

    Reads every line (so an unreadable file never gets an entry) while hashing the compressed
    bytes and digesting the documents; memory stays bounded by one inflated chunk.

    :param properties: the container's properties as read from the source (partition key,
        indexing policy, defaultTtl, vector embedding policy, ...), stored verbatim for restore.
    :raises BackupCorrupt: when the file is missing or unreadable.
    :raises ValueError: when ``properties`` or ``throughput`` cannot be restored from.
    """
    path = Path(path)
    entry: dict[str, Any] = {"properties": dict(properties), "throughput": dict(throughput)}
    problem = _properties_problem(entry["properties"]) or _throughput_problem(entry["throughput"])
    if problem:
        raise ValueError(f"{path}: {problem}")
    file_hash = hashlib.sha256()
    digest = ContainerDigest()
    with JsonlGzReader(path, on_raw=file_hash.update) as reader:
        for document in reader:
            digest.add(document)
    return ContainerEntry(
        file=path.name,
        count=digest.count,
        size=path.stat().st_size,
        sha256=file_hash.hexdigest(),
        content_digest=digest.to_json(),
        properties=entry["properties"],
        throughput=entry["throughput"],
    )


def write_manifest(
    backup_dir: Path,
    database: str,
    source_host: str,
    entries: Mapping[str, ContainerEntry],
    *,
    created_at: datetime | None = None,
) -> Path:
    """Write ``manifest.json`` atomically (temp file, fsync, rename, fsync dir; mode 0600).

    Call it last, once every data file is closed and has its entry: its presence is what makes
    the directory a backup. Each entry's file must still exist with the size recorded.

    :raises ValueError: for a malformed entry, a naive ``created_at``, or a ``source_host`` that
        looks like a connection string (the manifest must never hold the key).
    :raises BackupCorrupt: when a data file is missing or changed size since its entry was built.
    """
    backup_dir = Path(backup_dir)
    if not database:
        raise ValueError("the manifest needs the database name")
    if not source_host or ";" in source_host or "accountkey" in source_host.lower():
        raise ValueError("source_host must be the account host alone, never a connection string or key")
    when = datetime.now(UTC) if created_at is None else created_at
    if when.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    containers: dict[str, ContainerEntry] = {}
    for name, entry in entries.items():
        problem = _entry_problem(name, entry)
        if problem:
            raise ValueError(f"manifest entry for container {name!r}: {problem}")
        file = backup_dir / entry["file"]
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            raise BackupCorrupt(f"{file} is missing: cannot write a manifest for it") from None
        if size != entry["size"]:
            raise BackupCorrupt(f"{file} is {size} bytes but its entry says {entry['size']}: it changed")
        containers[name] = entry
    manifest = Manifest(
        format=FORMAT,
        version=VERSION,
        created_at=when.astimezone(UTC).isoformat(timespec="microseconds"),
        database=database,
        source_host=source_host,
        complete=True,
        containers=containers,
    )
    path = backup_dir / MANIFEST_NAME
    atomic_write(path, jsoncodec.dumps(manifest) + b"\n")
    return path


def read_manifest(backup_dir: Path) -> Manifest:
    """The validated manifest of a finished backup.

    :raises BackupCorrupt: when the directory or its manifest is missing, not valid JSON, of
        another format or a newer version, not marked complete, or missing a field.
    """
    backup_dir = Path(backup_dir)
    path = backup_dir / MANIFEST_NAME
    if not backup_dir.is_dir():
        raise BackupCorrupt(f"backup directory {backup_dir} does not exist")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BackupCorrupt(
            f"{backup_dir} has no {MANIFEST_NAME}: the backup did not finish; it cannot be used for "
            "restore or rollback"
        ) from None
    try:
        manifest = jsoncodec.loads(data)
    except ValueError as exc:
        raise BackupCorrupt(f"{path} is not valid JSON ({exc}): the manifest is damaged") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise BackupCorrupt(f"{path}: {problem}; it cannot be used for restore or rollback")
    return manifest  # type: ignore[no-any-return]  # validated field by field above


def _manifest_problem(manifest: Any) -> str | None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return f"not an {FORMAT} manifest"
    version = manifest.get("version")
    if not _is_int(version):
        return "the version is missing"
    if version > VERSION:
        return f"format version {version} is newer than this asyncmig reads ({VERSION}); upgrade asyncmig"
    if version != VERSION:
        return f"unknown format version {version}"
    if manifest.get("complete") is not True:
        return "the backup is not marked complete"
    created_at = manifest.get("created_at")
    if _parse_time(created_at) is None:
        return f"created_at {created_at!r} is not a timezone-aware ISO 8601 time"
    for field in ("database", "source_host"):
        if not isinstance(manifest.get(field), str) or not manifest[field]:
            return f"{field} is missing"
    containers = manifest.get("containers")
    if not isinstance(containers, dict):
        return "the container list is missing"
    for name, entry in containers.items():
        problem = _entry_problem(name, entry)
        if problem:
            return f"the entry for container {name!r} is invalid: {problem}"
    return None


def _entry_problem(name: str, entry: Any) -> str | None:
    if not _is_plain_name(name):
        return "the container name is not a plain file name"
    if not isinstance(entry, dict):
        return "not an object"
    file = entry.get("file")
    if not isinstance(file, str) or not _is_plain_name(file) or not file.endswith(FILE_SUFFIX):
        return f"file {file!r} is not a plain *{FILE_SUFFIX} file name"
    for field in ("count", "size"):
        value = entry.get(field)
        if not _is_int(value) or value < 0:
            return f"{field} {value!r} is not a count"
    if not isinstance(entry.get("sha256"), str) or not _SHA256_HEX.fullmatch(entry["sha256"]):
        return f"sha256 {entry.get('sha256')!r} is not 64 lowercase hex digits"
    try:
        digest = ContainerDigest.from_json(entry.get("content_digest"))
    except ValueError as exc:
        return str(exc)
    if digest.count != entry["count"]:
        return f"content_digest counts {digest.count} documents but count is {entry['count']}"
    return _properties_problem(entry.get("properties")) or _throughput_problem(entry.get("throughput"))


def _properties_problem(properties: Any) -> str | None:
    """The partition key is what a restore cannot do without; the rest is kept as read."""
    if not isinstance(properties, dict):
        return "properties are missing"
    partition_key = properties.get("partitionKey")
    paths = partition_key.get("paths") if isinstance(partition_key, dict) else None
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        return "properties.partitionKey.paths is missing: the container could not be recreated"
    return None


def _throughput_problem(throughput: Any) -> str | None:
    if not isinstance(throughput, dict) or throughput.get("kind") not in THROUGHPUT_KINDS:
        return f"throughput must be {{'kind': one of {THROUGHPUT_KINDS}, 'value': ...}}, got {throughput!r}"
    value = throughput.get("value")
    if throughput["kind"] in ("manual", "autoscale"):
        if not _is_int(value) or value <= 0:
            return f"{throughput['kind']} throughput needs a positive RU/s value, got {value!r}"
    elif value is not None:
        return f"{throughput['kind']} throughput has no RU/s value, got {value!r}"
    return None


def _is_int(value: object) -> TypeGuard[int]:
    """An int that is not a bool (JSON true is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


@dataclass(frozen=True, slots=True)
class ContainerVerification:
    """What :func:`verify_backup` found for one container; ``actual_count`` is None when the file
    could not be read to its end."""

    name: str
    file: Path
    expected_count: int
    actual_count: int | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Per-container results of :func:`verify_backup`, in manifest order."""

    backup_dir: Path
    containers: tuple[ContainerVerification, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.containers)

    @property
    def problems(self) -> list[str]:
        """Every problem, each prefixed with its container name."""
        return [f"{c.name}: {p}" for c in self.containers for p in c.problems]

    def raise_if_failed(self) -> None:
        """:raises BackupCorrupt: naming the first problem (and how many more there are)."""
        problems = self.problems
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise BackupCorrupt(f"backup {self.backup_dir} failed verification: {problems[0]}{more}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary for reports."""
        return {
            "backup_dir": str(self.backup_dir),
            "ok": self.ok,
            "containers": {
                c.name: {
                    "ok": c.ok,
                    "expected_count": c.expected_count,
                    "actual_count": c.actual_count,
                    "problems": list(c.problems),
                }
                for c in self.containers
            },
        }


def verify_backup(backup_dir: Path) -> VerifyReport:
    """Recompute every figure of the manifest from the files and compare.

    Each file is streamed once: its size, SHA-256, the readability of every line, the document
    count and the content digest. A missing, truncated, edited, bit-flipped or re-compressed file
    and a lost or extra document all show up as problems of that container.

    :raises BackupCorrupt: when the manifest itself is missing or invalid (nothing to verify against).
    """
    backup_dir = Path(backup_dir)
    manifest = read_manifest(backup_dir)
    results = [_verify_container(backup_dir, name, entry) for name, entry in manifest["containers"].items()]
    return VerifyReport(backup_dir=backup_dir, containers=tuple(results))


def _verify_container(backup_dir: Path, name: str, entry: ContainerEntry) -> ContainerVerification:
    file = backup_dir / entry["file"]
    problems: list[str] = []
    actual_count: int | None = None
    if not file.is_file():
        problems.append(f"{file} is missing")
    else:
        size = file.stat().st_size
        if size != entry["size"]:
            problems.append(f"{file} is {size} bytes but the manifest says {entry['size']}")
        file_hash = hashlib.sha256()
        digest = ContainerDigest()
        try:
            with JsonlGzReader(file, on_raw=file_hash.update) as reader:
                for document in reader:
                    digest.add(document)
        except BackupCorrupt as exc:
            problems.append(str(exc))
        else:
            actual_count = digest.count
            if file_hash.hexdigest() != entry["sha256"]:
                problems.append(
                    f"{file}: SHA-256 differs from the manifest: the file changed after the backup"
                )
            if digest.count != entry["count"]:
                problems.append(
                    f"{file} holds {digest.count} documents but the manifest says {entry['count']}"
                )
            elif digest.to_json() != entry["content_digest"]:
                problems.append(
                    f"{file}: the content digest differs from the manifest: documents were altered"
                )
    return ContainerVerification(
        name=name,
        file=file,
        expected_count=entry["count"],
        actual_count=actual_count,
        problems=tuple(problems),
    )


def new_backup_dir(root: Path, now: datetime) -> Path:
    """Create ``root/backup_YYYYMMDD_HHMMSS/`` (UTC, mode 0700) for a new backup.

    :raises ValueError: for a naive ``now`` (local time made the original's names ambiguous).
    :raises UsageError: when that directory already exists (two backups in the same second).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    root = ensure_dir(root)
    path = root / now.astimezone(UTC).strftime(f"{BACKUP_PREFIX}%Y%m%d_%H%M%S")
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        raise UsageError(f"{path} already exists: another backup started in the same second; retry") from None
    path.chmod(0o700)  # mkdir's mode is filtered by the umask
    fsync_dir(root)
    return path


def latest_backup(root: Path) -> Path | None:
    """The complete backup under ``root`` with the newest manifest ``created_at``, or None.

    Directories without a valid, complete manifest are skipped: they are not backups. Ordering
    by the manifest's time, not the directory name, keeps a renamed or copied backup in place.
    The files are not verified here; run :func:`verify_backup` before relying on the result.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    found: list[tuple[datetime, str, Path]] = []
    for child in root.iterdir():
        if not child.name.startswith(BACKUP_PREFIX) or not child.is_dir():
            continue
        try:
            manifest = read_manifest(child)
        except BackupCorrupt:
            continue
        found.append((datetime.fromisoformat(manifest["created_at"]), child.name, child))  # validated
    return max(found)[2] if found else None
