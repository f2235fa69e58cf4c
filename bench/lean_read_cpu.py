"""Client CPU per document for reading the demo vectors (768 numbers each) through the change feed,
on the SDK's iterator and on the lean reader, against the emulator running as its own process (so
its CPU is not counted). Also times decoding a page on the event loop against a worker thread.

    .venv/bin/python -m bench.lean_read_cpu [--vectors 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from itertools import islice
from typing import Any

import anyio
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient

from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.source import CosmosSource
from asyncmig.emulator.process import EmulatorProcess
from asyncmig.vimarsh.demo_data import DemoDataSet
from asyncmig.vimarsh.plan import SOURCE_VECTORS

PAGE_SIZE = 100


async def _load(container: ContainerProxy, documents: list[dict[str, Any]]) -> None:
    async def upsert(chunk: list[dict[str, Any]]) -> None:
        for document in chunk:
            await container.upsert_item(document)

    async with anyio.create_task_group() as group:
        for start in range(0, len(documents), 100):
            group.start_soon(upsert, documents[start:start + 100])


async def _read_all(container: ContainerProxy, path: str) -> tuple[int, float, float]:
    """Documents read, client CPU seconds and wall seconds for one full read."""
    source = CosmosSource(container, page_size=PAGE_SIZE, read_path=path)  # type: ignore[arg-type]
    await source.open()
    partitions = await source.partitions()
    cpu, wall = time.process_time(), time.perf_counter()
    count = 0
    for feed_range in partitions.values():
        async for page in source.pages(feed_range, None):
            count += len(page.documents)
    return count, time.process_time() - cpu, time.perf_counter() - wall


async def _decode_placement(body: bytes, rounds: int) -> dict[str, tuple[float, float]]:
    """(CPU ms, wall ms) per page: decoded on the event loop, and in a worker thread."""
    results: dict[str, tuple[float, float]] = {}
    for where in ("event loop", "worker thread"):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(rounds):
            if where == "event loop":
                jsoncodec.loads(body)
            else:
                await anyio.to_thread.run_sync(jsoncodec.loads, body)
        results[where] = ((time.process_time() - cpu) * 1000 / rounds, (time.perf_counter() - wall) * 1000 / rounds)
    return results


async def main(vectors: int, rounds: int) -> None:
    documents = list(islice(DemoDataSet(vectors=vectors, users=0, sessions=0, interactions=0).documents(
        SOURCE_VECTORS), vectors))
    with EmulatorProcess("--partitions", "4") as emulator:
        async with CosmosClient(emulator.endpoint, credential=emulator.key) as client:
            database = await client.create_database_if_not_exists("bench-read")
            container = await database.create_container_if_not_exists("vectors", PartitionKey("/id"))
            await _load(container, documents)
            print(f"{len(documents)} vector documents, pages of {PAGE_SIZE}, best and median of {rounds} reads")
            for path in ("sdk", "lean"):
                runs = [await _read_all(container, path) for _ in range(rounds)]
                per_doc = [cpu * 1000 / count for count, cpu, _ in runs]
                wall = [count / seconds for count, _, seconds in runs]
                print(f"  {path:4}: client CPU {min(per_doc):.3f} ms/doc (median {statistics.median(per_doc):.3f}),"
                      f" {max(wall):,.0f} docs/s wall")
    page = jsoncodec.dumps({"_rid": "x", "Documents": documents[:PAGE_SIZE], "_count": PAGE_SIZE})
    print(f"decoding one page of {PAGE_SIZE} ({len(page) / 1024:.0f} KB):")
    for where, (cpu_ms, wall_ms) in (await _decode_placement(page, 50)).items():
        print(f"  {where:13}: {cpu_ms:.2f} ms CPU, {wall_ms:.2f} ms wall")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.vectors, arguments.rounds))
