"""Shared fixtures: a real emulator process (or the account named by ASYNCMIG_TEST_COSMOS)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from azure.cosmos.aio import CosmosClient, DatabaseProxy

from tests.helpers import EmulatorProcess, unique

EXTERNAL = os.environ.get("ASYNCMIG_TEST_COSMOS")
needs_emulator = pytest.mark.skipif(
    bool(EXTERNAL), reason="needs the local emulator's admin endpoints (split, faults, restart)"
)


@dataclass(frozen=True)
class Cosmos:
    """Where SDK-facing tests point: ``emulator`` is None when ASYNCMIG_TEST_COSMOS names another endpoint."""

    endpoint: str
    key: str
    connection_string: str
    emulator: EmulatorProcess | None


@pytest.fixture(scope="session")
def cosmos() -> Iterator[Cosmos]:
    if EXTERNAL:
        from asyncmig.connection import parse_connection_string

        endpoint = parse_connection_string(EXTERNAL)
        yield Cosmos(endpoint.url, endpoint.key, EXTERNAL, None)
        return
    process = EmulatorProcess("--partitions", "4").start()
    try:
        yield Cosmos(process.endpoint, process.key, process.connection_string, process)
    finally:
        process.stop()


@pytest.fixture
async def client(cosmos: Cosmos) -> AsyncIterator[CosmosClient]:
    async with CosmosClient(cosmos.endpoint, credential=cosmos.key) as c:
        yield c


@pytest.fixture
async def database(client: CosmosClient) -> AsyncIterator[DatabaseProxy]:
    db = await client.create_database(unique("db"))
    try:
        yield db
    finally:
        await client.delete_database(db.id)
