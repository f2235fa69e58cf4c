"""The application that keeps writing while ``asyncmig run --live`` migrates: a separate process.

Run as ``python -m tests.live_writer <connection string> <database> <seed> [--deletes]``. It reads
the ids of the legacy containers once, then until SIGTERM applies, at a steady rate, updates (a few
hot documents many times), inserts and (with ``--deletes``) deletes to ``users``, ``user_activity``
and ``personality-vectors``, as an application would: read, change, write back. Faults the
emulator injects are retried, as the application's SDK would. On SIGTERM it finishes the write in
hand and prints one JSON line: the writes it made per container and kind.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceNotFoundError

from asyncmig.connection import parse_connection_string
from asyncmig.vimarsh.plan import SOURCE_ACTIVITY, SOURCE_USERS, SOURCE_VECTORS

PAUSE_S = 0.01  # between writes: a steady rate, not a flood
HOT = 3  # documents per container updated again and again


def _body(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if not k.startswith("_")}


class Writer:
    def __init__(self, containers: dict[str, ContainerProxy], seed: int, deletes: bool) -> None:
        self.containers = containers
        self.rng = random.Random(seed)
        self.deletes = deletes
        self.keys: dict[str, list[tuple[str, Any]]] = {}
        self.counts: dict[str, dict[str, int]] = {name: {"update": 0, "insert": 0, "delete": 0} for name in containers}
        self.serial = 0

    async def load(self) -> None:
        for name, container in self.containers.items():
            path = (await container.read())["partitionKey"]["paths"][0].strip("/")
            self.keys[name] = sorted(
                [(d["id"], d[path]) async for d in container.query_items(f"SELECT c.id, c.{path} FROM c")]
            )

    async def step(self) -> None:
        name = self.rng.choice(sorted(self.containers))
        keys = self.keys[name]
        roll = self.rng.random()
        if roll < 0.6 and keys:
            pool = keys[:HOT] if self.rng.random() < 0.5 else keys
            await self._update(name, self.rng.choice(pool))
        elif roll < 0.85 or not self.deletes or len(keys) <= HOT + 1:
            await self._insert(name)
        else:
            key = keys.pop(self.rng.randrange(HOT, len(keys)))  # hot documents stay to be updated
            await self._retry(lambda: self.containers[name].delete_item(key[0], partition_key=key[1]), missing_ok=True)
            self.counts[name]["delete"] += 1

    async def _update(self, name: str, key: tuple[str, Any]) -> None:
        container = self.containers[name]
        current = await self._retry(lambda: container.read_item(key[0], partition_key=key[1]))
        body = _body(current)
        body["live_writes"] = int(body.get("live_writes", 0)) + 1
        await self._retry(lambda: container.upsert_item(body))
        self.counts[name]["update"] += 1

    async def _insert(self, name: str) -> None:
        container = self.containers[name]
        model_key = self.rng.choice(self.keys[name])
        model = _body(await self._retry(lambda: container.read_item(model_key[0], partition_key=model_key[1])))
        self.serial += 1
        model["id"] = f"live-{self.serial:05d}-{model['id']}"[:200]
        model.pop("live_writes", None)
        if name == SOURCE_USERS:  # a new user is its own partition
            model["partition_key"] = model["id"]
            for added in ("user_id", "subscription_tier", "profile_version"):
                model.pop(added, None)
        await self._retry(lambda: container.upsert_item(model))
        path = "personality" if name == SOURCE_VECTORS else "partition_key"
        self.keys[name].append((model["id"], model[path]))
        self.counts[name]["insert"] += 1

    async def _retry(self, call: Any, *, missing_ok: bool = False) -> Any:
        for attempt in range(50):
            try:
                return await call()
            except CosmosResourceNotFoundError:
                if missing_ok:
                    return None
                raise
            except CosmosHttpResponseError as exc:
                if exc.status_code not in (408, 429, 449, 500, 503):
                    raise
                await anyio.sleep(min(0.5, 0.01 * 2**attempt))
            except (ServiceRequestError, ServiceResponseError):  # a connection the emulator reset
                await anyio.sleep(min(0.5, 0.01 * 2**attempt))
        raise RuntimeError("the emulator kept failing")


async def main(connection_string: str, database: str, seed: int, deletes: bool) -> None:
    endpoint = parse_connection_string(connection_string)
    stop = anyio.Event()
    async with CosmosClient(endpoint.url, credential=endpoint.key) as client:
        db = client.get_database_client(database)
        names = (SOURCE_USERS, SOURCE_ACTIVITY, SOURCE_VECTORS)
        writer = Writer({n: db.get_container_client(n) for n in names}, seed, deletes)
        await writer.load()
        async with anyio.create_task_group() as group:

            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                    async for _ in received:
                        stop.set()
                        return

            group.start_soon(on_signal)
            print("writing", flush=True)
            while not stop.is_set():
                await writer.step()
                await anyio.sleep(PAUSE_S)
            group.cancel_scope.cancel()
    print(json.dumps(writer.counts), flush=True)


def start_writer(connection_string: str, database: str, seed: int, *, deletes: bool = False) -> subprocess.Popen[str]:
    """Start the writer process; returns once it has read the ids and begun writing."""
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.live_writer", connection_string, database, str(seed),
         *(["--deletes"] if deletes else [])],
        cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "writing", writer.communicate(timeout=60)
    return writer


def stop_writer(writer: subprocess.Popen[str]) -> dict[str, dict[str, int]]:
    """SIGTERM the writer; returns its writes per container and kind."""
    writer.send_signal(signal.SIGTERM)
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    counts: dict[str, dict[str, int]] = json.loads(out.strip().splitlines()[-1])
    return counts


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), "--deletes" in sys.argv[4:])
