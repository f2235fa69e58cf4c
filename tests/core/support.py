"""Test support for the streaming core: seeding containers, reading them back, running the CLI."""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import anyio
from azure.cosmos.aio import ContainerProxy

from asyncmig.core import jsoncodec
from asyncmig.core.engine.transform import strip_system

COPIER_TIMEOUT_S = 240


def mixed_documents(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Documents of many shapes, with the values copiers are known to damage."""
    rng = random.Random(seed)
    docs: list[dict[str, Any]] = []
    for i in range(n):
        kind = i % 6
        doc: dict[str, Any] = {"id": f"doc-{i:06d}", "pk": f"p{rng.randrange(40)}", "n": i}
        if kind == 0:
            doc["vector"] = [rng.gauss(0, 0.05) for _ in range(96)]
        elif kind == 1:
            doc.update(big=2**53 + i, bigger=2**64 + i, long=2100.607537417505, neg_zero=-0.0, tiny=1e-7)
        elif kind == 2:
            doc.update(text="धर्म 😀 naïve — ünïcode", nested={"a": [{"b": [1, {"c": None}]}], "e": {}})
        elif kind == 3:
            doc["pk"] = rng.randrange(5)  # numeric partition key values
        elif kind == 4:
            doc.update(flags=[True, False, None], empty="", zero=0)
        else:
            doc["blob"] = "x" * rng.randrange(100, 20_000)
        docs.append(doc)
    return docs


async def seed(container: ContainerProxy, documents: list[dict[str, Any]], concurrency: int = 32) -> None:
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(doc: dict[str, Any]) -> None:
        async with limiter:
            await container.upsert_item(doc)

    async with anyio.create_task_group() as tg:
        for doc in documents:
            tg.start_soon(one, doc)


async def contents(container: ContainerProxy) -> dict[tuple[str, bytes], bytes]:
    """Every document as exact canonical JSON without system properties, keyed by (id, partition key)."""
    definition = (await container.read())["partitionKey"]["paths"][0].strip("/")
    result: dict[tuple[str, bytes], bytes] = {}
    async for doc in container.read_all_items(max_item_count=1000):
        key = (doc["id"], jsoncodec.canonical(doc.get(definition, {})))
        assert key not in result, f"document {key} appears twice"
        result[key] = jsoncodec.canonical(strip_system(doc))
    return result


async def writes_to(container: ContainerProxy) -> int:
    """How many document writes (creates and replaces) a container has taken, as the emulator logged
    them. (Its highest LSN no longer counts them: a transactional batch commits at one LSN.)"""
    connection = container.client_connection
    database = container.database_link.split("/")[-1]
    async with aiohttp.ClientSession() as session, session.post(
        f"{connection.url_connection.rstrip('/')}/_admin/writes",
        json={"database": database, "container": container.id},
        headers={"x-asyncmig-admin-key": connection.master_key or ""},
    ) as response:
        response.raise_for_status()
        return int((await response.json())["writes"])


def copier(connection_string: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "AZURE_COSMOS_CONNECTION_STRING": connection_string, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "asyncmig", "copy", *args, "--no-progress"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def run_copier(connection_string: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    process = copier(connection_string, *args, cwd=cwd)
    try:
        out, err = process.communicate(timeout=COPIER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate(timeout=10)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def account_key() -> str:
    """A fresh random account key (64 bytes, base64), as the portal shows one."""
    return base64.b64encode(os.urandom(64)).decode("ascii")


def connection_string(key: str, url: str = "https://acct.documents.azure.com:443/") -> str:
    return f"AccountEndpoint={url};AccountKey={key};"
