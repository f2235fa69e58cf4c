"""SQLite persistence across a SIGKILL restart, --in-memory, concurrent writers, and splitting a
physical range while clients hold cached routing maps, feed ranges and change-feed continuations."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from azure.cosmos import PartitionKey, ThroughputProperties
from azure.cosmos.aio import ContainerProxy, CosmosClient

from tests.conftest import needs_emulator
from tests.helpers import EmulatorProcess, raw_request

pytestmark = needs_emulator


async def drain_feed(container: ContainerProxy, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
    pager = container.query_items_change_feed(**kwargs).by_page()
    items: list[dict[str, Any]] = []
    async for page in pager:
        items.extend([i async for i in page])
    return items, pager.continuation_token or container.client_connection.last_response_headers["etag"]


async def query_pages(container: ContainerProxy, text: str, token: str | None, pages: int | None,
                      **kwargs: Any) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``pages`` pages of ``text`` from ``token``; returns the rows and the next token."""
    pager = container.query_items(text, max_item_count=5, **kwargs).by_page(token)
    rows: list[dict[str, Any]] = []
    count = 0
    async for page in pager:
        rows.extend([r async for r in page])
        count += 1
        if pages is not None and count >= pages:
            break
    return rows, pager.continuation_token


def doc(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"d{i:03d}", "pk": f"p{i % 11}", "n": i, **extra}


async def test_restart_keeps_databases_containers_documents_lsns_and_offers(tmp_path: Path) -> None:
    process = EmulatorProcess(data_dir=tmp_path / "data").start()
    try:
        async with CosmosClient(process.endpoint, process.key) as client:
            db = await client.create_database("keep", offer_throughput=400)
            manual = await db.create_container("manual", PartitionKey("/pk"), offer_throughput=500)
            auto = await db.create_container("auto", PartitionKey(path=["/t", "/u"], kind="MultiHash"),
                                             offer_throughput=ThroughputProperties(auto_scale_max_throughput=4000),
                                             headers={"x-asyncmig-partition-count": "2"}, default_ttl=99)
            for i in range(40):
                await manual.upsert_item(doc(i))
            for i in range(0, 40, 3):
                await manual.upsert_item(doc(i, updated=True))
            await manual.delete_item("d001", partition_key="p1")
            await auto.create_item({"id": "h", "t": "T", "u": "U"})
            before_docs = sorted([d async for d in manual.read_all_items()], key=lambda d: d["id"])
            before_props = await manual.read(), await auto.read()
            feed_before, token = await drain_feed(manual, start_time="Beginning")
            # ORDER BY within one range: the emulator pages it itself (across ranges the SDK merges).
            first_range = [r async for r in manual.read_feed_ranges()][0]
            rows, query_token = await query_pages(manual, "SELECT * FROM c ORDER BY c.n DESC", None, 2,
                                                  feed_range=first_range)
            scan_rows, scan_token = await query_pages(manual, "SELECT * FROM c WHERE c.n >= 0", None, 3)

        process.restart()  # SIGKILL, then the same port and data folder

        async with CosmosClient(process.endpoint, process.key) as client:
            assert [d["id"] async for d in client.list_databases()] == ["keep"]
            db = client.get_database_client("keep")
            assert sorted([c["id"] async for c in db.list_containers()]) == ["auto", "manual"]
            manual = db.get_container_client("manual")
            auto = db.get_container_client("auto")
            assert (await manual.read(), await auto.read()) == before_props
            assert sorted([d async for d in manual.read_all_items()], key=lambda d: d["id"]) == before_docs
            assert (await auto.read_item("h", partition_key=["T", "U"]))["id"] == "h"
            assert len([r async for r in auto.read_feed_ranges()]) == 2
            assert (await db.get_throughput()).offer_throughput == 400
            assert (await manual.get_throughput()).offer_throughput == 500
            assert (await auto.get_throughput()).auto_scale_max_throughput == 4000
            # Query continuations from before the kill finish the query, exactly.
            rest, _ = await query_pages(manual, "SELECT * FROM c ORDER BY c.n DESC", query_token, None,
                                        feed_range=first_range)
            in_range = [d async for d in manual.query_items("SELECT VALUE c.n FROM c", feed_range=first_range)]
            assert len(rows) == 10 and [r["n"] for r in rows + rest] == sorted(in_range, reverse=True)
            rest, _ = await query_pages(manual, "SELECT * FROM c WHERE c.n >= 0", scan_token, None)
            assert Counter(r["id"] for r in scan_rows + rest) == Counter(d["id"] for d in before_docs)
            # The change feed resumes where it was, and LSNs keep counting from where they were.
            assert (await drain_feed(manual, continuation=token))[0] == []
            await manual.upsert_item(doc(500))
            after, _ = await drain_feed(manual, continuation=token)
            assert [d["id"] for d in after] == ["d500"]
            assert after[0]["_lsn"] > max(d["_lsn"] for d in feed_before)
    finally:
        process.stop()


async def test_in_memory_keeps_nothing() -> None:
    process = EmulatorProcess().start()  # --in-memory
    try:
        async with CosmosClient(process.endpoint, process.key) as client:
            db = await client.create_database("gone")
            container = await db.create_container("c", PartitionKey("/pk"))
            await container.create_item(doc(1))
        process.restart()
        async with CosmosClient(process.endpoint, process.key) as client:
            assert [d async for d in client.list_databases()] == []
    finally:
        process.stop()


async def test_concurrent_requests_never_corrupt_the_store(tmp_path: Path) -> None:
    process = EmulatorProcess("--no-rate-limit", data_dir=tmp_path / "data").start()
    try:
        async with CosmosClient(process.endpoint, process.key) as client:
            db = await client.create_database("busy")
            container = await db.create_container("c", PartitionKey("/pk"))

            async def life(i: int) -> None:  # one writer per id, all ids at once
                await container.create_item(doc(i))
                await container.patch_item(f"d{i:03d}", partition_key=f"p{i % 11}",
                                           patch_operations=[{"op": "incr", "path": "/n", "value": 1000}])
                await container.replace_item(f"d{i:03d}", doc(i, replaced=True, n=i + 1000))
                if i % 5 == 0:
                    await container.delete_item(f"d{i:03d}", partition_key=f"p{i % 11}")

            async def batch(k: int) -> None:
                await container.execute_item_batch(
                    [("upsert", ({"id": f"b{k}-{j}", "pk": f"batch{k}", "n": j},)) for j in range(20)],
                    partition_key=f"batch{k}")

            async def doomed(k: int) -> None:  # always fails at its last operation
                try:
                    await container.execute_item_batch(
                        [("create", ({"id": f"x{j}", "pk": f"batch{k}"},)) for j in range(5)]
                        + [("read", ("missing",))], partition_key=f"batch{k}")
                except Exception:
                    return
                raise AssertionError("the batch should have failed")

            async def reader() -> None:
                for _ in range(5):
                    [d async for d in container.query_items("SELECT * FROM c WHERE c.n > 10")]

            await asyncio.gather(*(life(i) for i in range(150)), *(batch(k) for k in range(8)),
                                 *(doomed(k) for k in range(8)), *(reader() for _ in range(4)))
        process.stop(9)  # SIGKILL in the middle of nothing in particular
        with sqlite3.connect(tmp_path / "data" / "emulator.sqlite3") as check:
            assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        process.start()
        async with CosmosClient(process.endpoint, process.key) as client:
            container = client.get_database_client("busy").get_container_client("c")
            stored = {d["id"]: d async for d in container.read_all_items()}
            expected = {f"d{i:03d}" for i in range(150) if i % 5} | {f"b{k}-{j}" for k in range(8) for j in range(20)}
            assert set(stored) == expected
            assert all(stored[f"d{i:03d}"]["n"] == i + 1000 and stored[f"d{i:03d}"]["replaced"]
                       for i in range(150) if i % 5)
            feed, _ = await drain_feed(container, start_time="Beginning")
            assert Counter(d["id"] for d in feed) == Counter(expected)
            # Each write has its own LSN, except that a transactional batch commits at one.
            by_lsn: dict[int, set[str]] = {}
            for d in feed:
                by_lsn.setdefault(d["_lsn"], set()).add(d["id"].split("-")[0] if d["id"].startswith("b") else d["id"])
            assert all(len(owners) == 1 for owners in by_lsn.values())
    finally:
        process.stop()


def _tiles(ranges: list[dict[str, Any]]) -> bool:
    bounds = sorted((r["Range"]["min"], r["Range"]["max"]) for r in ranges)
    return bounds[0][0] == "" and bounds[-1][1] == "FF" and all(
        a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))


async def test_split_while_running(tmp_path: Path) -> None:
    process = EmulatorProcess("--partitions", "4", data_dir=tmp_path / "data").start()
    try:
        async with CosmosClient(process.endpoint, process.key) as client:
            db = await client.create_database("split")
            container = await db.create_container("c", PartitionKey("/pk"))
            for i in range(80):
                await container.upsert_item(doc(i))
            old_ranges = [r async for r in container.read_feed_ranges()]
            tokens = [(await drain_feed(container, feed_range=r, start_time="Beginning"))[1] for r in old_ranges]
            saved = json.dumps({"ranges": old_ranges, "tokens": tokens})  # a checkpoint written before the split

            answer = process.admin("split", {"database": "split", "container": "c", "range": "0"})
            assert answer["split"] == ["0"] and len(answer["created"]) == 2

            status, headers, body = await raw_request(
                process.endpoint, process.key, "POST", "/dbs/split/colls/c/docs",
                headers={"x-ms-documentdb-isquery": "true", "Content-Type": "application/query+json",
                         "x-ms-documentdb-partitionkeyrangeid": "0"},
                body=b'{"query":"SELECT * FROM c"}')
            assert status == 410 and headers["x-ms-substatus"] == "1002"
            assert json.loads(body)["code"] == "Gone"

            for i in range(80, 120):
                await container.upsert_item(doc(i))
            await container.upsert_item(doc(0, touched=True))

            # The change feed, resumed from the pre-split continuations (the SDK's cached routing
            # map is stale here, so it meets the 410 and re-maps the parent's token onto the children).
            checkpoint = json.loads(saved)
            later: Counter[str] = Counter()
            for token in checkpoint["tokens"]:
                later.update(d["id"] for d in (await drain_feed(container, continuation=token))[0])
            assert later == Counter([f"d{i:03d}" for i in range(80, 120)] + ["d000"])

            # Feed-range queries with the pre-split feed ranges stay complete.
            seen: Counter[str] = Counter()
            for fr in checkpoint["ranges"]:
                seen.update([d["id"] async for d in container.query_items("SELECT * FROM c", feed_range=fr)])
            assert seen == Counter(f"d{i:03d}" for i in range(120))

            new_ranges = [r async for r in container.read_feed_ranges(force_refresh=True)]
            assert len(new_ranges) == 5 and _tiles(new_ranges)
            seen.clear()
            for fr in new_ranges:
                seen.update([d["id"] async for d in container.query_items("SELECT * FROM c", feed_range=fr)])
                seen.update([])
            assert seen == Counter(f"d{i:03d}" for i in range(120))

            # Split everything again: this time the query meets the 410 first (stale cache), and the
            # change feed then resumes with an already refreshed routing map (the SDK splits its
            # token locally and never sends the gone range ids).
            tokens = [(await drain_feed(container, feed_range=r, start_time="Beginning"))[1] for r in new_ranges]
            process.admin("split", {"database": "split", "container": "c"})
            seen.clear()
            for fr in checkpoint["ranges"]:
                seen.update([d["id"] async for d in container.query_items("SELECT * FROM c WHERE c.n >= 0",
                                                                          feed_range=fr)])
            assert seen == Counter(f"d{i:03d}" for i in range(120))
            for i in (3, 50, 100):
                await container.upsert_item(doc(i, third=True))
            later.clear()
            for token in tokens:
                later.update(d["id"] for d in (await drain_feed(container, continuation=token))[0])
            assert later == Counter(["d003", "d050", "d100"])
            everything, _ = await drain_feed(container, start_time="Beginning")
            assert Counter(d["id"] for d in everything) == Counter(f"d{i:03d}" for i in range(120))

        process.restart()
        async with CosmosClient(process.endpoint, process.key) as client:
            container = client.get_database_client("split").get_container_client("c")
            ranges = [r async for r in container.read_feed_ranges(force_refresh=True)]
            assert len(ranges) == 10 and _tiles(ranges)
            seen.clear()
            for fr in ranges:
                seen.update([d["id"] async for d in container.query_items("SELECT * FROM c", feed_range=fr)])
            assert seen == Counter(f"d{i:03d}" for i in range(120))
    finally:
        process.stop()


def test_a_versions_log_keyed_by_lsn_alone_is_upgraded_in_place(tmp_path: Path) -> None:
    """Data folders from before batches shared an LSN keep their versions log when opened."""
    from asyncmig.emulator.store import Store

    path = tmp_path / "emulator.sqlite3"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE versions (coll TEXT NOT NULL, lsn INTEGER NOT NULL, epk TEXT NOT NULL, "
                    "id TEXT NOT NULL, op TEXT NOT NULL, previous_lsn INTEGER, ts INTEGER NOT NULL, "
                    "body BLOB NOT NULL, PRIMARY KEY (coll, lsn)) WITHOUT ROWID")
        old.execute("INSERT INTO versions VALUES ('c', 1, '0A', 'd1', 'create', NULL, 0, x'7b7d')")
    store = Store(path)
    try:
        store.db.execute("INSERT INTO versions VALUES ('c', 2, '0A', 'a', 'create', NULL, 0, x'7b7d')")
        store.db.execute("INSERT INTO versions VALUES ('c', 2, '0A', 'b', 'create', NULL, 0, x'7b7d')")  # one batch
        assert [(v.lsn, v.id) for v in store.versions("c", "", "FF", 0, 10)] == [(1, "d1"), (2, "a"), (2, "b")]
    finally:
        store.close()
