"""create-containers: idempotent, and a container whose partition key differs stops the run first."""

from __future__ import annotations

import subprocess
from pathlib import Path

from azure.cosmos import PartitionKey

from tests.helpers import EmulatorProcess, run_asyncmig

TIMEOUT_S = 180


def _cli(emulator: EmulatorProcess, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_asyncmig(emulator.connection_string, cwd, *args, "--no-progress", timeout=TIMEOUT_S)


async def test_a_container_with_another_partition_key_stops_the_run_before_data_moves(tmp_path: Path) -> None:
    from azure.cosmos.aio import CosmosClient

    with EmulatorProcess() as emulator:
        assert _cli(emulator, tmp_path, "seed-demo", "--vectors", "50", "--dimensions", "8").returncode == 0
        async with CosmosClient(emulator.endpoint, credential=emulator.key) as client:
            db = client.get_database_client("vimarsh-multi-personality")
            await db.create_container("user_sessions", partition_key=PartitionKey("/id"))  # the plan says /user_id
        result = _cli(emulator, tmp_path, "run", "--yes")
        assert result.returncode == 4, result.stdout + result.stderr
        assert "user_sessions" in result.stderr and "not created by asyncmig" in result.stderr
        async with CosmosClient(emulator.endpoint, credential=emulator.key) as client:
            db = client.get_database_client("vimarsh-multi-personality")
            names = {c["id"] async for c in db.list_containers()}
            assert "personality_vectors" not in names  # nothing was created, nothing moved
        again = _cli(emulator, tmp_path, "create-containers", "--yes")
        assert again.returncode == 4  # still refused, never "fixed" by deleting the user's container
