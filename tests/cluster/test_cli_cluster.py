"""The shared copy as users run it: the real CLI in subprocesses, leases in the emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, DatabaseProxy
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from tests.conftest import Cosmos, needs_emulator
from tests.core.support import (
    COPIER_TIMEOUT_S,
    contents,
    copier,
    mixed_documents,
    run_copier,
    seed,
    writes_to,
)
from tests.helpers import unique

ray_installed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("ray") is None, reason="the Ray extra is not installed")


async def _pair(database: DatabaseProxy, n: int) -> tuple[ContainerProxy, ContainerProxy]:
    source = await database.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    target = await database.create_container(unique("dst"), partition_key=PartitionKey("/pk"))
    await seed(source, mixed_documents(n))
    return source, target


def _finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=COPIER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate(timeout=10)
    return process.returncode, out, err


async def _committed_progress(leases: ContainerProxy, driver: subprocess.Popen[Any], at_least: int) -> int:
    """Documents the copy's leases cover, once at least ``at_least`` (or the driver ended).

    The copy runs in other processes: its progress can only be polled, with a deadline."""
    with anyio.fail_after(120):
        while True:
            try:
                committed = sum([lease["state"]["read"] async for lease in leases.query_items("SELECT * FROM c")])
            except CosmosResourceNotFoundError:  # not created yet
                committed = 0
            if committed >= at_least or driver.poll() is not None:
                return committed
            await anyio.sleep(0.1)


def _start_in_own_session(connection_string: str, args: tuple[str, ...], cwd: Path
                          ) -> tuple[subprocess.Popen[bytes], IO[str]]:
    """The CLI in a session of its own, so the driver and every Ray process it starts can be killed together."""
    env = {**os.environ, "AZURE_COSMOS_CONNECTION_STRING": connection_string}
    log = (cwd / "driver.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "asyncmig", "copy", *args, "--no-progress"], cwd=cwd,
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return process, log


async def test_two_plain_processes_share_one_copy_through_a_lease_container(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    source, target = await _pair(database, 1500)
    leases = unique("leases")
    args = (f"{database.id}/{source.id}", f"{database.id}/{target.id}", "--lease-container", leases,
            "--max-leases", "2")
    first = copier(cosmos.connection_string, *args, "--checkpoint", str(tmp_path / "a.json"), cwd=tmp_path)
    second = copier(cosmos.connection_string, *args, "--checkpoint", str(tmp_path / "b.json"), cwd=tmp_path)
    results = await anyio.to_thread.run_sync(lambda: [_finish(first), _finish(second)])
    for code, _, err in results:
        assert code == 0, err
    assert await contents(target) == await contents(source)
    assert await writes_to(target) == 1500  # each range copied by exactly one of them
    assert all("4/4" in out for _, out, _ in results)  # each saw every range done
    assert cosmos.key not in "".join(out + err for _, out, err in results)


@ray_installed
@needs_emulator
async def test_cluster_of_two_ray_workers_holds_the_budget(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    source, target = await _pair(database, 1500)
    budget = 3000.0
    before = cosmos.emulator.admin("stats")["charged_ru"].get(f"{database.id}/{target.id}", 0.0)  # type: ignore[union-attr]
    report = tmp_path / "report.json"
    result = run_copier(cosmos.connection_string, f"{database.id}/{source.id}", f"{database.id}/{target.id}",
                        "--cluster", "local[2]", "--ru-budget", str(budget), "--lease-container", unique("leases"),
                        "--report", str(report), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert await contents(target) == await contents(source)
    data = json.loads(report.read_text())
    charged = cosmos.emulator.admin("stats")["charged_ru"][f"{database.id}/{target.id}"] - before  # type: ignore[union-attr]
    assert data["documents"]["committed"] == 1500 and len(data["workers"]) == 2
    assert sum(w["written"] for w in data["workers"].values()) == 1500
    assert charged / data["elapsed_s"] <= budget * 1.05  # the server's own meter: the budget held
    assert cosmos.key not in report.read_text() + result.stdout + result.stderr


@ray_installed
async def test_a_killed_driver_loses_nothing_and_the_same_command_resumes(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    n = 2000
    source, target = await _pair(database, n)
    leases = unique("leases")
    args = (f"{database.id}/{source.id}", f"{database.id}/{target.id}", "--cluster", "local[2]",
            "--ru-budget", "3000", "--lease-container", leases, "--lease-ttl", "2")
    driver, log = _start_in_own_session(cosmos.connection_string, args, tmp_path)
    try:
        committed = await _committed_progress(database.get_container_client(leases), driver, n // 4)
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started
        driver.wait(timeout=30)
    log.close()
    assert committed < n, "the copy finished before the driver could be killed"
    result = run_copier(cosmos.connection_string, *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert await contents(target) == await contents(source)


@ray_installed
async def test_ctrl_c_stops_every_worker_cleanly_and_the_copy_resumes(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    n = 2000
    source, target = await _pair(database, n)
    leases = unique("leases")
    args = (f"{database.id}/{source.id}", f"{database.id}/{target.id}", "--cluster", "local[2]",
            "--ru-budget", "2000", "--lease-container", leases)
    driver = copier(cosmos.connection_string, *args, cwd=tmp_path)
    lease_container = database.get_container_client(leases)
    await _committed_progress(lease_container, driver, n // 5)
    driver.send_signal(signal.SIGINT)
    code, _, err = await anyio.to_thread.run_sync(_finish, driver)
    assert code == 130, err
    assert "resume" in err.lower()
    owners = [lease["owner"] async for lease in lease_container.query_items("SELECT * FROM c")]
    assert owners and all(owner is None for owner in owners)  # every worker released its leases
    again = run_copier(cosmos.connection_string, *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert await contents(target) == await contents(source)
