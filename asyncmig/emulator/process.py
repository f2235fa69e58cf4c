"""Running the emulator as a child process: start, wait for its ready line, stop cleanly.

Used by ``make migrate`` (the embedded default), the benchmark and the tests, so every one of
them talks to a real server process over real HTTP.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
_READY = re.compile(r"AccountEndpoint=(?P<endpoint>\S+?);AccountKey=(?P<key>\S+?);")


class kill_after:  # noqa: N801 - used as a context manager, named for what it does
    """Kill ``process`` if the ``with`` block is still running after ``seconds`` (so a read from a
    hung child returns instead of blocking forever)."""

    def __init__(self, process: subprocess.Popen[str], seconds: float) -> None:
        self._timer = threading.Timer(seconds, process.kill)

    def __enter__(self) -> None:
        self._timer.start()

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


class EmulatorProcess:
    """``python -m asyncmig.emulator`` in a child process; restartable on the same port and data.

    ``own_session`` puts the child in its own process group, so a Ctrl-C meant for the parent does
    not kill the server underneath a run that is trying to save its checkpoint.
    """

    def __init__(self, *args: str, data_dir: Path | None = None, port: int = 0, own_session: bool = False) -> None:
        self.args = list(args)
        self.data_dir = data_dir
        self.port = port
        self.own_session = own_session
        self.process: subprocess.Popen[str] | None = None
        self.endpoint = ""
        self.key = ""

    @property
    def connection_string(self) -> str:
        return f"AccountEndpoint={self.endpoint};AccountKey={self.key};"

    def start(self) -> EmulatorProcess:
        """Start and wait (at most ``START_TIMEOUT_S``) for the ready line.

        :raises RuntimeError: the server exited or did not answer in time (its output is included).
        """
        storage = ["--data-dir", str(self.data_dir)] if self.data_dir else ["--in-memory"]
        command = [sys.executable, "-m", "asyncmig.emulator", "--port", str(self.port), *storage, *self.args]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ},
            start_new_session=self.own_session,
        )
        assert self.process.stdout is not None
        seen: list[str] = []
        with kill_after(self.process, START_TIMEOUT_S):
            for line in self.process.stdout:
                seen.append(line)
                match = _READY.search(line)
                if match:
                    self.endpoint, self.key = match["endpoint"], match["key"]
                    self.port = int(self.endpoint.rstrip("/").rsplit(":", 1)[1])
                    return self
        code = self.process.wait(timeout=STOP_TIMEOUT_S)
        raise RuntimeError(f"the emulator did not start (exit code {code}): {''.join(seen)[-2000:]}")

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
        """Kill hard (SIGKILL) and start again on the same port and data folder."""
        self.stop(signal.SIGKILL)
        self.start()

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
