"""``python -m asyncmig.emulator``: the ready line, clean exit on SIGINT/SIGTERM, exit 2 on bad input."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient

from tests.conftest import needs_emulator
from tests.helpers import _Deadline

pytestmark = needs_emulator

READY = re.compile(r"AccountEndpoint=http://127\.0\.0\.1:(?P<port>\d+)/;AccountKey=(?P<key>[A-Za-z0-9+/=]+);")


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, "-m", "asyncmig.emulator", "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    with _Deadline(process, 30):
        first = process.stdout.readline()
    return process, first


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_prints_the_connection_string_serves_and_exits_cleanly(sig: int, tmp_path: Path) -> None:
    process, first = start("--data-dir", str(tmp_path / "d"), "--partitions", "3")
    try:
        match = READY.search(first)
        assert match, f"first line was {first!r}"
        assert int(match["port"]) > 0
        connection_string = first[first.index("AccountEndpoint="):].strip()
        async with CosmosClient.from_connection_string(connection_string) as client:
            db = await client.create_database("cli")
            container = await db.create_container("c", PartitionKey("/pk"))
            await container.create_item({"id": "a", "pk": "p"})
            assert (await container.read_item("a", partition_key="p"))["id"] == "a"
            assert len([r async for r in container.read_feed_ranges()]) == 3  # --partitions
        process.send_signal(sig)
        out, err = process.communicate(timeout=15)
        assert process.returncode == 0, err
        assert "Traceback" not in out + err
        assert (tmp_path / "d" / "emulator.sqlite3").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=15)


INVALID = [
    ["--partitions", "0"],
    ["--faults", "503,teapot"],
    ["--fault-rate", "1.5"],
    ["--port", "eighty"],
    ["--key", "not base64!"],
    ["--data-dir", "x", "--in-memory"],
    ["--no-such-option"],
]


def test_invalid_arguments_exit_2() -> None:
    # All at once: each child spends most of its second importing the SDK.
    children = [subprocess.Popen([sys.executable, "-m", "asyncmig.emulator", "--port", "0", *args],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in INVALID]
    try:
        for args, child in zip(INVALID, children, strict=True):
            out, err = child.communicate(timeout=30)
            assert child.returncode == 2, (args, out, err)
            assert "error" in err.lower(), args
            assert "AccountEndpoint" not in out, args
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate(timeout=15)


def test_a_taken_port_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "asyncmig.emulator", "--port", str(port), "--in-memory"],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and str(port) in result.stderr
