"""Fault matrix rows: each fault, then re-runs until one exits 0, which must validate.

One trial per row runs in ``make test``; ``make faults`` runs all."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest
from azure.cosmos.aio import CosmosClient

from tests.faults.matrix import (
    DATABASE,
    Outcome,
    Trial,
    cli,
    finish,
    interrupt_at_random,
    record,
    requests_served,
    run_live_until_cutover,
    start_run,
    wait_until,
)
from tests.helpers import EmulatorProcess
from tests.live_writer import start_writer, stop_writer

pytestmark = pytest.mark.timeout(900)
FULL = pytest.mark.slow
# A full run of the reduced demo set takes about 284 emulator requests (measured with bulk writes per
# target range; 396 with transactional batches); fault moments are drawn as shares of it, so they
# land in every phase, backup included.
TYPICAL_REQUESTS = 280


def _seeds(fast: int, full: int) -> list:
    return [pytest.param(s, id=f"seed{s}") for s in range(fast)] + [
        pytest.param(s, id=f"seed{s}", marks=FULL) for s in range(fast, full)
    ]


def _check(outcome: Outcome, *, interrupted: bool = False) -> None:
    record(outcome)
    if interrupted:
        assert outcome.interruptions >= 1, "the fault never landed: the run finished first"
    assert outcome.final_exit == 0 and outcome.validated, outcome.detail


@pytest.mark.parametrize("seed", _seeds(1, 20))
def test_sigkill_at_random_moments(tmp_path: Path, seed: int) -> None:
    started = time.monotonic()
    with Trial(tmp_path, "--latency-ms", "2") as trial:
        outcome = Outcome("SIGKILL at a random moment", seed, 0, 0, -1, False, 0.0)
        interrupt_at_random(trial, outcome, signal.SIGKILL, random.Random(seed), TYPICAL_REQUESTS)
        trial.complete(outcome)
    outcome.seconds = time.monotonic() - started
    _check(outcome, interrupted=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("seed", _seeds(1, 5))
def test_ctrl_c_and_sigterm_at_random_moments(tmp_path: Path, seed: int, sig: int) -> None:
    started = time.monotonic()
    with Trial(tmp_path, "--latency-ms", "2") as trial:
        outcome = Outcome(f"{signal.Signals(sig).name} at a random moment", seed, 0, 0, -1, False, 0.0)
        interrupt_at_random(trial, outcome, sig, random.Random(100 + seed), TYPICAL_REQUESTS)
        trial.complete(outcome)
    outcome.seconds = time.monotonic() - started
    _check(outcome, interrupted=True)


@pytest.mark.parametrize("rate", [0.05, pytest.param(0.20, marks=FULL)], ids=["5pct", "20pct"])
@pytest.mark.parametrize("seed", _seeds(1, 3))
def test_transient_faults(tmp_path: Path, seed: int, rate: float) -> None:
    started = time.monotonic()
    with Trial(tmp_path, "--fault-seed", str(seed)) as trial:
        trial.emulator.admin("faults", {"fault_rate": rate, "faults": ["503", "408", "reset"]})
        outcome = trial.complete(Outcome(f"{rate:.0%} of requests 503/408/reset", seed, 0, 0, -1, False, 0.0))
        outcome.detail += f" injected={trial.emulator.admin('stats')['faults_injected']}"
    outcome.seconds = time.monotonic() - started
    _check(outcome)


async def _precreate_with_low_throughput(emulator: EmulatorProcess, ru: int) -> None:
    """Create the 11 targets with the planned settings but a tenth of the throughput a run would use."""
    from asyncmig.vimarsh import plan

    async with CosmosClient(emulator.endpoint, credential=emulator.key) as client:
        db = client.get_database_client(DATABASE)
        for spec in plan.NEW_CONTAINERS:
            await db.create_container(**plan.container_properties(spec, vector_dimensions=16),
                                      offer_throughput=ru)  # manual: autoscale cannot go below 1,000


@pytest.mark.parametrize("seed", _seeds(1, 3))
async def test_429_storm(tmp_path: Path, seed: int) -> None:
    started = time.monotonic()
    with Trial(tmp_path) as trial:
        await _precreate_with_low_throughput(trial.emulator, 400)
        # The copier is told it may use 4,000 RU/s: ten times what each target was given.
        outcome = trial.complete(Outcome("429 storm (targets at 400 RU/s, copier budget 4,000)", seed, 0, 0, -1,
                                         False, 0.0), extra=("--ru-budget", "4000"))
        outcome.detail += f" throttled={trial.emulator.admin('stats')['throttled']}"
        assert trial.emulator.admin("stats")["throttled"] > 0
    outcome.seconds = time.monotonic() - started
    _check(outcome)


@pytest.mark.parametrize("seed", _seeds(1, 3))
def test_emulator_killed_and_restarted_mid_phase(tmp_path: Path, seed: int) -> None:
    started = time.monotonic()
    rng = random.Random(200 + seed)
    with Trial(tmp_path, "--latency-ms", "2") as trial:
        outcome = Outcome("emulator killed and restarted mid-phase", seed, 0, 0, -1, False, 0.0)
        threshold = trial.baseline_requests + int(rng.uniform(0.1, 0.8) * TYPICAL_REQUESTS)
        process = start_run(trial.emulator, trial.work)
        if wait_until(lambda: requests_served(trial.emulator) >= threshold, process):
            trial.emulator.restart()
            outcome.interruptions += 1
        finish(process)
        trial.complete(outcome)
    outcome.seconds = time.monotonic() - started
    _check(outcome, interrupted=True)


@pytest.mark.parametrize("seed", _seeds(1, 3))
def test_physical_partitions_split_mid_copy(tmp_path: Path, seed: int) -> None:
    started = time.monotonic()
    rng = random.Random(300 + seed)
    with Trial(tmp_path, "--latency-ms", "2") as trial:
        outcome = Outcome("source and target ranges split mid-copy", seed, 0, 0, -1, False, 0.0)
        process = start_run(trial.emulator, trial.work)
        threshold = trial.baseline_requests + int(rng.uniform(0.3, 0.6) * TYPICAL_REQUESTS)
        if wait_until(lambda: requests_served(trial.emulator) >= threshold, process):
            for container in ("personality-vectors", "personality_vectors"):
                try:
                    trial.emulator.admin("split", {"database": DATABASE, "container": container, "range": "0"})
                    outcome.interruptions += 1
                except OSError:  # the target may not exist yet at this moment
                    pass
        code, output = finish(process)
        outcome.detail = output[-300:]
        trial.complete(outcome)
    outcome.seconds = time.monotonic() - started
    _check(outcome, interrupted=True)


def test_a_second_run_on_the_same_state_refuses_and_the_first_is_unharmed(tmp_path: Path) -> None:
    started = time.monotonic()
    with Trial(tmp_path, "--latency-ms", "3") as trial:
        lock = trial.work / ".asyncmig" / f"vimarsh-{DATABASE}" / "asyncmig.lock"
        first = start_run(trial.emulator, trial.work)
        assert wait_until(lambda: lock.exists() and lock.read_text().strip() != "", first)
        second = cli(trial.emulator, trial.work, "run", "--yes")
        code, output = finish(first)
    outcome = Outcome("two runs at once on the same state", 0, 0, 0, code, "migration complete" in output,
                      time.monotonic() - started, detail=f"second exit {second.returncode}")
    record(outcome)
    assert second.returncode == 5 and "another asyncmig run" in second.stderr
    assert code == 0, output


@pytest.mark.parametrize("seed", _seeds(1, 5))
def test_live_source(tmp_path: Path, seed: int) -> None:
    """An application process writes (updates, some documents many times, inserts and deletes) to
    users, user_activity and personality-vectors during every phase of ``run --live``, with 3 % of
    requests failing; it stops, ``asyncmig cutover`` is requested, and the run must validate: no
    document missing, extra (a delete not followed) or stale."""
    started = time.monotonic()
    with Trial(tmp_path, "--latency-ms", "1", "--fault-seed", str(seed)) as trial:
        outcome = Outcome("live source: writer in every phase of run --live, 3% faults, cutover", seed, 0, 0, -1,
                          False, 0.0)
        trial.emulator.admin("faults", {"fault_rate": 0.03, "faults": ["503", "408", "reset"]})
        writer = start_writer(trial.emulator.connection_string, DATABASE, 1000 + seed, deletes=True)
        counts: dict[str, dict[str, int]] = {}

        def stop_writing() -> None:
            if writer.poll() is None:
                counts.update(stop_writer(writer))

        try:
            run_live_until_cutover(trial, outcome, stop_writing)
        finally:
            stop_writing()
        outcome.detail += f" writes={counts} injected={trial.emulator.admin('stats')['faults_injected']}"
    outcome.seconds = time.monotonic() - started
    _check(outcome)
    for kind in ("update", "insert", "delete"):
        assert sum(c[kind] for c in counts.values()), counts


def test_baseline_without_faults(tmp_path: Path) -> None:
    """The uninterrupted run the overhead column is measured against."""
    started = time.monotonic()
    with Trial(tmp_path, "--latency-ms", "2") as trial:
        outcome = trial.complete(Outcome("none (baseline)", 0, 0, 0, -1, False, 0.0), max_reruns=1)
    outcome.seconds = time.monotonic() - started
    _check(outcome)
    assert outcome.reruns == 1
