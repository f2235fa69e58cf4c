"""The fault matrix: the Vimarsh run under one injected fault, re-run until done, then validated.

A trial passes only when the final ``asyncmig run --yes`` exits 0, which includes the validation
phase: every target document equals the transform of its source document (per-document digests,
id by id, so nothing lost, nothing extra), settings and personalities as planned. Results are
appended as JSON lines to ``$ASYNCMIG_FAULT_RESULTS`` when set, for the README table.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.helpers import EmulatorProcess, run_asyncmig

VECTORS = 300
DIMENSIONS = 16
RUN_TIMEOUT_S = 300
DATABASE = "vimarsh-multi-personality"


@dataclass
class Outcome:
    fault: str
    seed: int
    interruptions: int
    reruns: int
    final_exit: int
    validated: bool
    seconds: float
    detail: str = ""


def _env(emulator: EmulatorProcess) -> dict[str, str]:
    return {**os.environ, "AZURE_COSMOS_CONNECTION_STRING": emulator.connection_string}


def cli(emulator: EmulatorProcess, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_asyncmig(emulator.connection_string, cwd, *args, "--no-progress", timeout=RUN_TIMEOUT_S)


def start_run(emulator: EmulatorProcess, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "asyncmig", "run", "--yes", "--no-progress"], cwd=cwd,
                            env=_env(emulator), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def requests_served(emulator: EmulatorProcess) -> int:
    return int(emulator.admin("stats")["requests"])


def wait_until(condition: Callable[[], bool], process: subprocess.Popen[str] | None, timeout: float = 120) -> bool:
    """Poll ``condition``; False when ``process`` finished first (the moment passed)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            return False
        if time.monotonic() > deadline:
            raise TimeoutError("the fault moment was never reached")
        time.sleep(0.01)
    return True


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = process.communicate(timeout=RUN_TIMEOUT_S)
    return process.returncode, out + err


class Trial:
    """One emulator (persistent data), one seeded legacy layout, one working directory."""

    def __init__(self, root: Path, *emulator_args: str) -> None:
        self.root = root
        self.emulator = EmulatorProcess(*emulator_args, data_dir=root / "emulator")
        self.work = root / "work"
        self.work.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Trial:
        self.emulator.start()
        seeded = cli(self.emulator, self.work, "seed-demo", "--vectors", str(VECTORS), "--dimensions", str(DIMENSIONS))
        assert seeded.returncode == 0, seeded.stderr
        self.baseline_requests = requests_served(self.emulator)
        return self

    def __exit__(self, *exc: object) -> None:
        self.emulator.stop()

    def complete(self, outcome: Outcome, max_reruns: int = 5, extra: tuple[str, ...] = ()) -> Outcome:
        """Re-run until the run exits 0 (or stops making sense); records the final state."""
        for _ in range(max_reruns):
            result = cli(self.emulator, self.work, "run", "--yes", *extra)
            outcome.reruns += 1
            outcome.final_exit = result.returncode
            if result.returncode == 0:
                outcome.validated = "validate" in result.stdout and "migration complete" in result.stdout
                return outcome
            outcome.detail = (result.stdout + result.stderr)[-600:]
        return outcome


def interrupt_at_random(trial: Trial, outcome: Outcome, sig: int, rng: random.Random, total_requests: int) -> None:
    """Start a run and send ``sig`` when the emulator has served a random share of a full run's requests."""
    threshold = trial.baseline_requests + int(rng.uniform(0.02, 0.95) * total_requests)
    process = start_run(trial.emulator, trial.work)
    try:
        if wait_until(lambda: requests_served(trial.emulator) >= threshold, process):
            process.send_signal(sig)
            outcome.interruptions += 1
    finally:
        code, _ = finish(process)
    if sig != signal.SIGKILL and outcome.interruptions:
        assert code in (0, 130), f"after signal {sig} the run exited {code}"


def record(outcome: Outcome) -> None:
    target = os.environ.get("ASYNCMIG_FAULT_RESULTS")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(outcome)) + "\n")


def _state_finished(trial: Trial, phase: str) -> bool:
    from asyncmig.connection import parse_connection_string
    from asyncmig.phases.state import load_state

    path = trial.work / ".asyncmig" / f"vimarsh-{DATABASE}" / "state.json"
    host = parse_connection_string(trial.emulator.connection_string).host
    return path.exists() and load_state(path, host=host, database=DATABASE).is_finished(phase)  # written atomically


def run_live_until_cutover(trial: Trial, outcome: Outcome, stop_writing: Callable[[], None],
                           writes_while_following: int = 300, max_runs: int = 6) -> None:
    """``run --live`` (re-run after a failure) until it follows; after ``writes_while_following``
    more emulator requests, ``stop_writing()`` (the application stops), ``asyncmig cutover``, and
    wait for the run's verdict; records it in ``outcome``."""
    for _ in range(max_runs):
        run = subprocess.Popen([sys.executable, "-m", "asyncmig", "run", "--live", "--yes", "--no-progress"],
                               cwd=trial.work, env=_env(trial.emulator), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        outcome.reruns += 1
        following = wait_until(lambda: _state_finished(trial, "migrate"), run, timeout=RUN_TIMEOUT_S)
        if following and not _state_finished(trial, "follow"):
            threshold = requests_served(trial.emulator) + writes_while_following
            following = wait_until(lambda t=threshold: requests_served(trial.emulator) >= t, run)
        if following:
            stop_writing()
            subprocess.run([sys.executable, "-m", "asyncmig", "cutover"], cwd=trial.work, env=_env(trial.emulator),
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        code, output = finish(run)
        outcome.final_exit = code
        if code == 0:
            outcome.validated = "Validation of" in output and "safe to point the application" in output
            return
        outcome.interruptions += 1  # a fault the run could not ride out: re-run, as an operator would
        outcome.detail = output[-600:]
