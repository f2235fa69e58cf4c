"""Injected faults (--fault-rate, --faults, --fault-seed, admin 'faults') as a client observes them."""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import CosmosHttpResponseError

from tests.conftest import needs_emulator
from tests.helpers import EmulatorProcess

pytestmark = needs_emulator


def plain_client(process: EmulatorProcess) -> CosmosClient:
    """No endpoint-discovery retry of 503, no transport retries: every fault reaches the test."""
    return CosmosClient(process.endpoint, process.key, enable_endpoint_discovery=False,
                        retry_total=0, retry_connect=0, retry_read=0, retry_status=0)


async def setup_container(client: CosmosClient) -> ContainerProxy:
    # Only document requests get faults, so creating the database and container always works.
    db = await client.create_database("faults")
    return await db.create_container("c", PartitionKey("/pk"))


async def outcomes(container: ContainerProxy, count: int) -> list[Any]:
    """Sequential creates (never retried by the SDK), one outcome each: "ok" or the status code."""
    results: list[Any] = []
    for i in range(count):
        try:
            await container.create_item({"id": f"d{i}", "pk": "p"})
            results.append("ok")
        except CosmosHttpResponseError as exc:
            results.append(exc.status_code)
    return results


async def test_every_document_request_fails_with_503() -> None:
    with EmulatorProcess("--fault-rate", "1", "--faults", "503") as process:
        async with plain_client(process) as client:
            container = await setup_container(client)
            with pytest.raises(CosmosHttpResponseError) as caught:
                await container.create_item({"id": "a", "pk": "p"})
            assert caught.value.status_code == 503
            assert "x-ms-request-charge" in caught.value.headers
            with pytest.raises(CosmosHttpResponseError) as caught:
                await container.read_item("a", partition_key="p")
            assert caught.value.status_code == 503
        stats = process.admin("stats")
        assert stats["faults_injected"] >= 2
        process.admin("faults", {"fault_rate": 0})
        async with plain_client(process) as client:
            container = client.get_database_client("faults").get_container_client("c")
            # A 503 is injected before the operation runs: the create never happened.
            assert [d async for d in container.read_all_items()] == []


async def test_408_is_observed() -> None:
    with EmulatorProcess("--fault-rate", "1", "--faults", "408", "--fault-seed", "1") as process:
        async with plain_client(process) as client:
            container = await setup_container(client)
            assert set(await outcomes(container, 4)) == {408}


async def test_connection_reset_is_observed() -> None:
    with EmulatorProcess("--fault-rate", "1", "--faults", "reset") as process:
        async with plain_client(process) as client:
            container = await setup_container(client)
            with pytest.raises((ServiceRequestError, ServiceResponseError)):
                await container.create_item({"id": "a", "pk": "p"})
        assert process.admin("stats")["faults_injected"] >= 1


async def test_faults_change_at_runtime() -> None:
    with EmulatorProcess() as process:
        async with plain_client(process) as client:
            container = await setup_container(client)
            assert await outcomes(container, 3) == ["ok"] * 3
            assert process.admin("faults", {"fault_rate": 1.0, "faults": ["503"]}) == {
                "fault_rate": 1.0, "faults": ["503"]}
            assert set(await outcomes(container, 3)) == {503}
            process.admin("faults", {"fault_rate": 0})
            assert (await container.read_item("d0", partition_key="p"))["id"] == "d0"


async def test_a_fault_seed_makes_faults_reproducible() -> None:
    runs = []
    for _ in range(2):
        with EmulatorProcess("--fault-rate", "0.4", "--faults", "503", "--fault-seed", "42") as process:
            async with plain_client(process) as client:
                runs.append(await outcomes(await setup_container(client), 25))
    assert runs[0] == runs[1]
    assert "ok" in runs[0] and 503 in runs[0]
