"""Bad input gets a clear one-line error, a meaningful exit code, and loses nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from azure.cosmos import PartitionKey
from azure.cosmos.aio import DatabaseProxy

from asyncmig.emulator import WELL_KNOWN_KEY
from tests.conftest import Cosmos
from tests.core.support import contents, run_copier, seed
from tests.helpers import run_asyncmig, unique

TIMEOUT_S = 120


def _asyncmig(connection: str | None, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_asyncmig(connection, cwd, *args, "--no-progress", timeout=TIMEOUT_S)


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_malformed_connection_strings_are_refused_without_echoing_the_key(tmp_path: Path) -> None:
    for text in ("not a connection string", "AccountEndpoint=http://127.0.0.1:1/;",
                 f"AccountEndpoint=ftp://x/;AccountKey={WELL_KNOWN_KEY};", "AccountEndpoint=https://a/;AccountKey=%%%;"):
        result = _asyncmig(text, "copy", "a/b", "c/d", cwd=tmp_path)
        assert result.returncode == 2, (text, result.stderr)
        line = _one_line_error(result)
        assert any(word in line for word in ("connection string", "AccountEndpoint", "AccountKey")), line
        assert WELL_KNOWN_KEY not in result.stderr and "%%%" not in result.stderr


def test_a_wrong_key_is_an_authentication_error(cosmos: Cosmos, tmp_path: Path) -> None:
    wrong = "A" * 86 + "=="
    result = _asyncmig(f"AccountEndpoint={cosmos.endpoint};AccountKey={wrong};", "copy", "a/b", "a/c", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    line = _one_line_error(result)
    assert "AccountKey" in line and wrong not in result.stderr


def test_an_unreachable_endpoint_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    result = _asyncmig(f"AccountEndpoint=http://127.0.0.1:{port}/;AccountKey={WELL_KNOWN_KEY};",
                       "copy", "a/b", "a/c", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "cannot reach" in _one_line_error(result)
    assert time.monotonic() - started < 60  # no endless retry


async def test_missing_database_and_container_are_named(cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path) -> None:
    missing_db = _asyncmig(cosmos.connection_string, "copy", "no-such-db/x", f"{database.id}/y", cwd=tmp_path)
    assert missing_db.returncode == 4
    assert "database 'no-such-db' does not exist" in _one_line_error(missing_db)
    source = await database.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    missing = _asyncmig(cosmos.connection_string, "copy", f"{database.id}/{source.id}", f"{database.id}/nope",
                        cwd=tmp_path)
    assert missing.returncode == 4
    assert f"{database.id}/nope does not exist" in _one_line_error(missing)


async def test_an_empty_source_copies_nothing_and_succeeds(cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path) -> None:
    source = await database.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    target = await database.create_container(unique("dst"), partition_key=PartitionKey("/pk"))
    result = run_copier(cosmos.connection_string, f"{database.id}/{source.id}", f"{database.id}/{target.id}",
                        "--checkpoint", str(tmp_path / "ck.json"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert await contents(target) == {}


async def test_deeply_nested_and_unicode_heavy_documents_survive_exactly(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    nested: dict = {"leaf": "धर्म"}
    for depth in range(60):
        nested = {f"level{depth}": nested, "list": [depth, [depth, {"x": -0.0}]]}
    documents = [
        {"id": "nested", "pk": "a", "n": nested},
        {"id": "unicode-ü-धर्म-😀-\u200b", "pk": "ü", "text": "🌍" * 500 + "\u0301\u0300 combining", "rtl": "مرحبا"},
        {"id": "numbers", "pk": "b", "big": 2**63 + 7, "bigger": 2**80, "long": 2100.607537417505, "neg0": -0.0,
         "tiny": 5e-324, "huge": 1.7976931348623157e308},
    ]
    source = await database.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    target = await database.create_container(unique("dst"), partition_key=PartitionKey("/pk"))
    await seed(source, documents)
    result = run_copier(cosmos.connection_string, f"{database.id}/{source.id}", f"{database.id}/{target.id}",
                        "--checkpoint", str(tmp_path / "ck.json"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert await contents(target) == await contents(source)
    copied = await target.read_item("numbers", partition_key="b")
    assert copied["bigger"] == 2**80 and isinstance(copied["bigger"], int)


def test_a_corrupt_state_file_is_refused(cosmos: Cosmos, tmp_path: Path) -> None:
    state = tmp_path / ".asyncmig" / "vimarsh-vimarsh-multi-personality" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"format": "asyncmig-vimarsh-state", "host": "x"')
    result = _asyncmig(cosmos.connection_string, "validate", cwd=tmp_path)
    assert result.returncode == 5
    line = _one_line_error(result)
    assert str(state.relative_to(tmp_path)) in line and "damaged" in line


def test_a_full_disk_during_backup_is_a_clear_error_and_a_rerun_completes(tmp_path: Path) -> None:
    import resource

    from tests.helpers import EmulatorProcess

    def small_files() -> None:  # the child may write files of at most 64 KiB: the backup runs out of "disk"
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    with EmulatorProcess("--no-rate-limit") as emulator:
        env = {**os.environ, "AZURE_COSMOS_CONNECTION_STRING": emulator.connection_string}
        seeded = subprocess.run([sys.executable, "-m", "asyncmig", "seed-demo", "--vectors", "200", "--dimensions", "64",
                                 "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        assert seeded.returncode == 0, seeded.stderr
        full = subprocess.run([sys.executable, "-m", "asyncmig", "backup", "--no-progress"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S, preexec_fn=small_files)
        assert full.returncode == 74, full.stdout + full.stderr
        assert "File too large" in _one_line_error(full) and "re-run" in full.stderr
        retried = subprocess.run([sys.executable, "-m", "asyncmig", "backup", "--no-progress"], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=TIMEOUT_S)
        assert retried.returncode == 0, retried.stdout + retried.stderr
        verified = subprocess.run([sys.executable, "-m", "asyncmig", "backup", "verify"], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=TIMEOUT_S)
        assert verified.returncode == 0, verified.stdout + verified.stderr
