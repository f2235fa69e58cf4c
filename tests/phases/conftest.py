"""Fixtures the phase tests share: an emulator process of their own, and a migrated layout with a
phase context over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.cosmos.aio import CosmosClient, DatabaseProxy

from asyncmig.phases.context import PhaseContext
from tests.conftest import Cosmos
from tests.helpers import EmulatorProcess
from tests.phases.migrated import MigratedLayout, build, context


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
    """A fresh emulator process (1 ms per request, like a nearby account) for CLI runs."""
    process = EmulatorProcess("--latency-ms", "1", data_dir=tmp_path / "emulator").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def layout(database: DatabaseProxy, tmp_path: Path) -> MigratedLayout:
    return await build(database, tmp_path / "backup_20250805_120000")


@pytest.fixture
def ctx(cosmos: Cosmos, client: CosmosClient, layout: MigratedLayout, tmp_path: Path) -> PhaseContext:
    return context(client, cosmos.connection_string, layout, tmp_path)
