"""No secret in any output, owner-only files, and an emulator that stays on loopback."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient

from asyncmig.emulator.__main__ import build_parser
from tests.core.support import mixed_documents, seed
from tests.helpers import EmulatorProcess, unique

SECRET_KEY = base64.b64encode(b"asyncmig-test-secret-" + os.urandom(43)).decode()


def _scan(root: Path, needles: list[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {n[:12]}..." for n in needles if n.encode() in data]
    return found


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    command = [sys.executable, "-m", "asyncmig", *(["-v"] if "-v" in args else []),
               *[a for a in args if a != "-v"], "--no-progress"]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    return result.stdout + result.stderr


async def test_the_key_appears_in_no_output_file_or_log(tmp_path: Path) -> None:
    emulator = EmulatorProcess("--key", SECRET_KEY, "--no-rate-limit").start()
    try:
        async with CosmosClient(emulator.endpoint, credential=SECRET_KEY) as client:
            db = await client.create_database(unique("db"))
            source = await db.create_container("src", partition_key=PartitionKey("/pk"))
            await db.create_container("dst", partition_key=PartitionKey("/pk"))
            docs = mixed_documents(200)
            docs.append({"id": "bad#id", "pk": "x"})  # dead-lettered by the copier, so that file exists too
            await seed(source, [d for d in docs if "#" not in d["id"]])
        connection = emulator.connection_string
        env = {**os.environ, "AZURE_COSMOS_CONNECTION_STRING": connection, "PYTHONPATH": str(Path.cwd())}
        work = tmp_path / "work"
        work.mkdir()
        runs = [
            ["copy", f"{db.id}/src", f"{db.id}/dst", "--report", "report.json", "-v"],
            ["copy", f"{db.id}/src", f"{db.id}/nope", "--report", "failed.json"],
            ["copy", f"{db.id}/src", f"{db.id}/dst", "--source-connection", connection, "--dry-run"],
        ]
        outputs = [_run(args, work, env) for args in runs]
        assert "DEBUG" in outputs[0]  # the verbose run really logged
        for text in outputs:
            assert SECRET_KEY not in text and connection not in text
        assert (work / "report.json").exists() and (work / "failed.json").exists()
        assert _scan(work, [SECRET_KEY, connection]) == []
        assert stat.S_IMODE((work / ".asyncmig").stat().st_mode) == 0o700
        for path in work.rglob("*"):
            mode = stat.S_IMODE(path.stat().st_mode)
            if path.is_file() and path.suffix in (".json", ".jsonl") or ".journal." in path.name:
                assert mode == 0o600, f"{path} is {oct(mode)}"
    finally:
        emulator.stop()


def test_the_emulator_binds_to_loopback_by_default() -> None:
    assert build_parser().parse_args([]).host == "127.0.0.1"
