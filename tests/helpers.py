"""Starting the emulator as a real server process for tests, and talking to its admin endpoints."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 15
_READY = re.compile(r"AccountEndpoint=(?P<endpoint>\S+?);AccountKey=(?P<key>\S+?);")


class EmulatorProcess:
    """``python -m asyncmig.emulator`` in a subprocess; restartable on the same data folder and port."""

    def __init__(self, *args: str, data_dir: Path | None = None) -> None:
        self.args = list(args)
        self.data_dir = data_dir
        self.process: subprocess.Popen[str] | None = None
        self.endpoint = ""
        self.key = ""
        self.port = 0

    @property
    def connection_string(self) -> str:
        return f"AccountEndpoint={self.endpoint};AccountKey={self.key};"

    def start(self) -> EmulatorProcess:
        storage = ["--data-dir", str(self.data_dir)] if self.data_dir else ["--in-memory"]
        command = [sys.executable, "-m", "asyncmig.emulator", "--port", str(self.port), *storage, *self.args]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ},
        )
        assert self.process.stdout is not None
        # Read the start-up line under a hard deadline (a hung child must not hang the suite).
        timer = _Deadline(self.process, START_TIMEOUT_S)
        with timer:
            for line in self.process.stdout:
                match = _READY.search(line)
                if match:
                    self.endpoint, self.key = match["endpoint"], match["key"]
                    self.port = int(self.endpoint.rstrip("/").rsplit(":", 1)[1])
                    return self
        raise RuntimeError(f"emulator did not start (exit code {self.process.poll()})")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=STOP_TIMEOUT_S)
        if self.process.stdout:
            self.process.stdout.close()
        self.process = None
        return code

    def restart(self) -> None:
        """Stop hard (SIGKILL) and start again on the same port and data folder."""
        self.stop(signal.SIGKILL)
        self.start()

    def admin(self, action: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.endpoint}_admin/{action}", data=json.dumps(body or {}).encode(), method="POST",
            headers={"x-asyncmig-admin-key": self.key},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


class _Deadline:
    """Kill a child that does not answer in time, so a blocking read returns."""

    def __init__(self, process: subprocess.Popen[str], seconds: float) -> None:
        self.process = process
        self.seconds = seconds
        self._timer: Any = None

    def __enter__(self) -> None:
        import threading

        self._timer = threading.Timer(self.seconds, self.process.kill)
        self._timer.start()

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
