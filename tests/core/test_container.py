"""A copy's containers over the lean transport: the same answers as the SDK's, and no SDK loaded.

Each metadata request the copier now sends by hand (container and database properties, physical
ranges, per-range counts, offers, the all-versions "now" position) is compared with what the SDK
answers for the same container, on the emulator run as a real process; a whole copy through the CLI
is then checked not to import ``azure.cosmos`` (nor azure-core) at all.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos import PartitionKey, ThroughputProperties
from azure.cosmos.aio import ContainerProxy, DatabaseProxy

from asyncmig.connection import CosmosEndpoint
from asyncmig.core.cosmos.connect import provisioned_throughput
from asyncmig.core.cosmos.container import Account, Container, open_container
from asyncmig.core.cosmos.source import CosmosSource
from asyncmig.errors import ConnectionFailed, ResourceMissing
from tests.conftest import Cosmos, needs_emulator
from tests.core.support import seed
from tests.helpers import EmulatorProcess, unique

pytestmark = needs_emulator
DOCUMENTS = [{"id": f"d{i}", "pk": f"p{i % 17}", "n": i} for i in range(150)]


@pytest.fixture
async def account(cosmos: Cosmos) -> AsyncIterator[Account]:
    async with Account(CosmosEndpoint(cosmos.endpoint, cosmos.key)) as opened:
        yield opened


async def _filled(database: DatabaseProxy) -> ContainerProxy:
    container = await database.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    await seed(container, DOCUMENTS)
    return container


async def test_properties_ranges_and_counts_are_the_sdks(database: DatabaseProxy, account: Account) -> None:
    proxy = await _filled(database)
    lean, properties = await open_container(account, database.id, proxy.id, role="source")
    assert properties == await proxy.read()
    sdk_ranges = [fr async for fr in proxy.read_feed_ranges(force_refresh=True)]
    assert await lean.feed_ranges() == sdk_ranges
    assert len(sdk_ranges) > 1
    charges: list[float] = []
    assert await lean.count(None, on_charge=charges.append) == len(DOCUMENTS)
    for feed_range in sdk_ranges:
        expected = [n async for n in proxy.query_items("SELECT VALUE COUNT(1) FROM c", feed_range=feed_range)]
        assert await lean.count(feed_range, rid=properties["_rid"], on_charge=charges.append) == sum(expected)
    assert charges and all(c > 0 for c in charges)  # every range's query is charged


async def test_a_count_over_part_of_a_range_counts_only_that_part(database: DatabaseProxy, account: Account) -> None:
    proxy = await _filled(database)
    lean = account.container(database.id, proxy.id)
    whole = (await lean.feed_ranges())[0]["Range"]
    low, high = (int((bound or "00").ljust(4, "0")[:4], 16) for bound in (whole["min"], whole["max"]))
    middle = format((low + high) // 2, "04X")
    assert whole["min"] < middle < whole["max"]
    halves = [{"Range": {**whole, "max": middle}}, {"Range": {**whole, "min": middle}}]
    counts = [await lean.count(half, on_charge=lambda _: None) for half in halves]
    sdk = [sum([n async for n in proxy.query_items("SELECT VALUE COUNT(1) FROM c", feed_range=half)])
           for half in halves]
    assert counts == sdk
    assert sum(counts) == await lean.count({"Range": whole}, on_charge=lambda _: None)


async def test_counts_survive_a_split() -> None:
    with EmulatorProcess("--partitions", "1") as process:
        async with Account(CosmosEndpoint(process.endpoint, process.key)) as account:
            from azure.cosmos.aio import CosmosClient

            async with CosmosClient(process.endpoint, credential=process.key) as client:
                database = await client.create_database("split")
                proxy = await database.create_container("c", partition_key=PartitionKey("/pk"))
                await seed(proxy, DOCUMENTS)
                lean = account.container("split", "c")
                (before,) = await lean.feed_ranges()
                process.admin("split", {"database": "split", "container": "c", "range": "0"})
                assert len(await lean.feed_ranges()) == 2
                # the old feed range now spans both children: counted on each, added up
                assert await lean.count(before, on_charge=lambda _: None) == len(DOCUMENTS)


@pytest.mark.parametrize("kind", ["manual", "autoscale", "shared", "none"])
async def test_throughput_is_read_as_the_sdk_reads_it(client: Any, account: Account, kind: str) -> None:
    shared = ThroughputProperties(offer_throughput=1200) if kind == "shared" else None
    database = await client.create_database(unique("tp"), offer_throughput=shared)
    try:
        own = {"manual": ThroughputProperties(offer_throughput=800),
               "autoscale": ThroughputProperties(auto_scale_max_throughput=4000)}.get(kind)
        proxy = await database.create_container(unique("c"), partition_key=PartitionKey("/pk"), offer_throughput=own)
        _, properties = await open_container(account, database.id, proxy.id, role="target")
        lean = await account.provisioned_throughput(properties, database.id)
        assert lean == await provisioned_throughput(proxy, database)
        expected = {"manual": (800.0, True), "autoscale": (4000.0, True), "shared": (1200.0, False)}.get(kind)
        assert (None if lean is None else (lean.ru, lean.dedicated)) == expected
    finally:
        await client.delete_database(database.id)


async def test_missing_databases_and_containers_are_named(database: DatabaseProxy, account: Account) -> None:
    with pytest.raises(ResourceMissing, match="source database 'no-such-db' does not exist"):
        await open_container(account, "no-such-db", "c", role="source")
    with pytest.raises(ResourceMissing, match=f"target container {database.id}/absent does not exist"):
        await open_container(account, database.id, "absent", role="target")


async def test_an_unreachable_account_fails_at_once_with_its_host(cosmos: Cosmos) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with Account(CosmosEndpoint(f"http://127.0.0.1:{port}/", cosmos.key)) as nowhere:
        with pytest.raises(ConnectionFailed, match="cannot reach the Cosmos DB account at 127.0.0.1"):
            await open_container(nowhere, "db", "c", role="source")


async def test_the_all_versions_start_is_the_sdks(database: DatabaseProxy, account: Account) -> None:
    proxy = await _filled(database)
    lean_source = CosmosSource(account.container(database.id, proxy.id), deletes=True)
    sdk_source = CosmosSource(proxy, deletes=True, read_path="sdk")
    for source in (lean_source, sdk_source):
        await source.open()
    for feed_range in (await lean_source.partitions()).values():
        lean = await lean_source._changes_from_now(feed_range)
        sdk = await sdk_source._changes_from_now(feed_range)
        assert lean is not None and sdk is not None
        assert _state(lean) == _state(sdk)  # the same mode, start, range and etag
    assert lean_source.deletes_available is True


def _state(token: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(base64.b64decode(token))
    return state


async def test_a_wrapped_proxy_keeps_the_sdk_for_its_metadata(database: DatabaseProxy) -> None:
    proxy = await _filled(database)
    wrapped = Container.of(proxy)
    assert wrapped.account is None and await wrapped.sdk() is proxy
    assert await wrapped.count(None, on_charge=lambda _: None) == len(DOCUMENTS)
    assert Container.of(wrapped) is wrapped


def test_a_copy_never_loads_the_sdk(cosmos: Cosmos, tmp_path: Path) -> None:
    """The whole `asyncmig copy` (counts, "now" positions, bulk writes, report) without loading the
    SDK or azure-core."""
    script = textwrap.dedent("""
        import asyncio, sys
        async def seed(cs):
            from azure.cosmos.aio import CosmosClient
            from azure.cosmos import PartitionKey
            from asyncmig.connection import parse_connection_string
            e = parse_connection_string(cs)
            async with CosmosClient(e.url, credential=e.key) as c:
                db = await c.create_database_if_not_exists("nosdk")
                src = await db.create_container_if_not_exists("src", PartitionKey("/pk"))
                await db.create_container_if_not_exists("dst", PartitionKey("/pk"))
                for i in range(300):
                    await src.upsert_item({"id": f"d{i}", "pk": f"p{i % 7}", "big": 2**70 + i})
        if sys.argv[1] == "seed":
            asyncio.run(seed(sys.argv[2]))
        else:
            sys.argv = ["asyncmig", "copy", "nosdk/src", "nosdk/dst", "--no-progress", "--report", "report.json"]
            from asyncmig.__main__ import run
            try:
                run()
            finally:
                loaded = sorted(m for m in sys.modules if m.split(".")[0] == "azure")
                print("LOADED", loaded, file=sys.stderr)
    """)
    env = {**os.environ, "AZURE_COSMOS_CONNECTION_STRING": cosmos.connection_string}
    (tmp_path / "run.py").write_text(script)
    subprocess.run([sys.executable, "run.py", "seed", cosmos.connection_string], cwd=tmp_path, env=env, check=True,
                   timeout=120, capture_output=True, stdin=subprocess.DEVNULL)
    result = subprocess.run([sys.executable, "run.py", "copy"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=240, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stderr, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["documents"]["written"] == 300 and report["documents"]["source_count"] == 300
    assert report["count_check"]["checked"] and not report["count_check"]["mismatches"]
