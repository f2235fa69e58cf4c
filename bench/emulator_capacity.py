"""How much load one emulator core serves: ``python -m bench.emulator_capacity [--seconds N]``.

The emulator runs as a subprocess (``--no-rate-limit --in-memory``) pinned to CPU 0. The load comes
from this process, pinned to the other CPUs when there are any, using aiohttp (on uvloop when
installed) with hand-signed requests and orjson bodies: the same requests the SDK sends, at a small
fraction of the SDK's client CPU (the SDK's own request pipeline would be the bottleneck), with many
requests in flight and 100-operation transactional batches where the scenario says so. CPU time of both processes is
sampled from /proc, so the table shows whether the server (one core at ~100 %) or the client was
the limit.

Scenarios: single upserts of ~1 KB documents and of 768-number vector documents, the same as
100-operation batches, point reads of the 1 KB documents, and per-feed-range ``SELECT *`` query
pages of 100 documents (following continuations).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import platform
import random
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

RESULTS = Path(__file__).resolve().parent / "results"
READY = re.compile(r"AccountEndpoint=(?P<endpoint>\S+?);AccountKey=(?P<key>\S+?);")
DB, DOCS, VECTORS = "bench", "docs", "vectors"
PARTITION_KEYS = 1000


@dataclass
class Result:
    scenario: str
    concurrency: int
    seconds: float
    requests: int
    documents: int
    server_cpu: float          # fraction of one core used by the emulator process
    client_cpu: float          # fraction of one core used by this (client) process
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def documents_per_s(self) -> float:
        return self.documents / self.seconds

    @property
    def server_ms_per_request(self) -> float:
        """Emulator CPU per request: holds even when other processes share the core."""
        return 1000 * self.server_cpu * self.seconds / max(1, self.requests)

    @property
    def full_core_documents_per_s(self) -> float:
        """Documents/s the emulator would serve with 100 % of its core (measured rate / CPU share)."""
        return self.documents_per_s / max(self.server_cpu, 1e-9)


class Signer:
    """The SDK's master-key signature (HMAC-SHA256 over verb, resource type, link and date), for
    name-based links."""

    def __init__(self, key: str) -> None:
        self.key = base64.b64decode(key)
        self._date = ""
        self._stamp = 0.0

    def headers(self, verb: str, resource_type: str, link: str) -> dict[str, str]:
        now = time.time()
        if now - self._stamp >= 1:
            self._date, self._stamp = formatdate(now, usegmt=True), now
        text = f"{verb}\n{resource_type}\n{link}\n{self._date.lower()}\n\n".encode()
        sig = base64.b64encode(hmac.new(self.key, text, hashlib.sha256).digest()).decode()
        return {"x-ms-date": self._date, "x-ms-version": "2020-07-15",
                "authorization": quote(f"type=master&ver=1.0&sig={sig}", safe="-_.!~*'()")}


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, endpoint: str, key: str, server_pid: int, session: aiohttp.ClientSession) -> None:
        self.base = endpoint.rstrip("/")
        self.signer = Signer(key)
        self.server_pid = server_pid
        self.session = session
        self.rng = random.Random(7)
        self.written: list[tuple[str, str]] = []

    async def call(self, method: str, path: str, resource_type: str, link: str, *, body: bytes | None = None,
                   headers: dict[str, str] | None = None, expect: tuple[int, ...] = (200, 201)
                   ) -> tuple[bytes, dict[str, str]]:
        all_headers = {**self.signer.headers(method.lower(), resource_type, link), **(headers or {})}
        async with self.session.request(method, self.base + path, data=body, headers=all_headers) as response:
            data = await response.read()
            if response.status not in expect:
                raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
            return data, dict(response.headers)

    # -- setup ---------------------------------------------------------------------------------
    async def setup(self) -> None:
        await self.call("POST", "/dbs", "dbs", "", body=orjson.dumps({"id": DB}))
        for name in (DOCS, VECTORS):
            definition = {"id": name, "partitionKey": {"paths": ["/pk"], "kind": "Hash", "version": 2}}
            await self.call("POST", f"/dbs/{DB}/colls", "colls", f"dbs/{DB}", body=orjson.dumps(definition))

    # -- documents -----------------------------------------------------------------------------
    def small_doc(self) -> dict[str, Any]:
        doc_id = os.urandom(8).hex()
        return {"id": doc_id, "pk": f"p{self.rng.randrange(PARTITION_KEYS)}", "n": self.rng.random(),
                "pad": "x" * 880}

    def vector_doc(self, pk: str | None = None) -> dict[str, Any]:
        return {"id": os.urandom(8).hex(), "pk": pk or f"p{self.rng.randrange(PARTITION_KEYS)}",
                "embedding": [self.rng.uniform(-1, 1) for _ in range(768)], "text": "y" * 200}

    async def upsert(self, container: str, doc: dict[str, Any]) -> int:
        await self.call("POST", f"/dbs/{DB}/colls/{container}/docs", "docs", f"dbs/{DB}/colls/{container}",
                        body=orjson.dumps(doc), headers={
                            "x-ms-documentdb-partitionkey": orjson.dumps([doc["pk"]]).decode(),
                            "x-ms-documentdb-is-upsert": "True", "Content-Type": "application/json"})
        if container == DOCS:
            self.written.append((doc["id"], doc["pk"]))
        return 1

    async def batch(self, container: str, docs: list[dict[str, Any]]) -> int:
        operations = [{"operationType": "Upsert", "resourceBody": d} for d in docs]
        data, _ = await self.call(
            "POST", f"/dbs/{DB}/colls/{container}/docs", "docs", f"dbs/{DB}/colls/{container}",
            body=orjson.dumps(operations), headers={
                "x-ms-documentdb-partitionkey": orjson.dumps([docs[0]["pk"]]).decode(),
                "x-ms-cosmos-is-batch-request": "True", "x-ms-cosmos-batch-atomic": "True",
                "Content-Type": "application/json"})
        if container == DOCS:
            self.written.extend((d["id"], d["pk"]) for d in docs)
        return len(docs)

    async def read(self) -> int:
        doc_id, pk = self.written[self.rng.randrange(len(self.written))]
        await self.call("GET", f"/dbs/{DB}/colls/{DOCS}/docs/{doc_id}/", "docs", f"dbs/{DB}/colls/{DOCS}/docs/{doc_id}",
                        headers={"x-ms-documentdb-partitionkey": orjson.dumps([pk]).decode()})
        return 1

    async def ranges(self) -> list[str]:
        data, _ = await self.call("GET", f"/dbs/{DB}/colls/{DOCS}/pkranges/", "pkranges", f"dbs/{DB}/colls/{DOCS}")
        return [r["id"] for r in orjson.loads(data)["PartitionKeyRanges"]]

    async def query_page(self, range_id: str, continuation: str | None) -> tuple[int, str | None]:
        headers = {"x-ms-documentdb-isquery": "true", "Content-Type": "application/query+json",
                   "x-ms-documentdb-partitionkeyrangeid": range_id, "x-ms-max-item-count": "100"}
        if continuation:
            headers["x-ms-continuation"] = continuation
        data, got = await self.call("POST", f"/dbs/{DB}/colls/{DOCS}/docs", "docs", f"dbs/{DB}/colls/{DOCS}",
                                    body=b'{"query":"SELECT * FROM c"}', headers=headers)
        return orjson.loads(data)["_count"], got.get("x-ms-continuation")

    # -- driver --------------------------------------------------------------------------------
    async def measure(self, scenario: str, seconds: float, concurrency: int,
                      step: Callable[[int], Awaitable[int]], warmup: float = 0.5, **extra: Any) -> Result:
        loop = asyncio.get_running_loop()

        async def run(duration: float, counts: list[int]) -> None:
            deadline = loop.time() + duration

            async def worker(w: int) -> None:
                while loop.time() < deadline:
                    done = await step(w)  # (not `counts[1] += await ...`: that reads before awaiting)
                    counts[0] += 1
                    counts[1] += done

            await asyncio.gather(*(worker(w) for w in range(concurrency)))

        await run(warmup, [0, 0])
        counts = [0, 0]
        server0, client0, t0 = cpu_seconds(self.server_pid), time.process_time(), time.perf_counter()
        await run(seconds, counts)
        elapsed = time.perf_counter() - t0
        result = Result(scenario, concurrency, elapsed, counts[0], counts[1],
                        (cpu_seconds(self.server_pid) - server0) / elapsed,
                        (time.process_time() - client0) / elapsed, extra)
        print(f"  {scenario}: {result.requests_per_s:,.0f} req/s, {result.documents_per_s:,.0f} docs/s "
              f"(server CPU {result.server_cpu:.0%} = {result.server_ms_per_request:.2f} ms/request, "
              f"client CPU {result.client_cpu:.0%})", flush=True)
        return result

    async def scenarios(self, seconds: float) -> list[Result]:
        results = [
            await self.measure("upsert 1 KB", seconds, 64, lambda w: self.upsert(DOCS, self.small_doc())),
            await self.measure("upsert vector (768 numbers)", seconds, 64,
                               lambda w: self.upsert(VECTORS, self.vector_doc())),
        ]

        async def small_batch(w: int) -> int:
            pk = f"p{self.rng.randrange(PARTITION_KEYS)}"
            return await self.batch(DOCS, [{**self.small_doc(), "pk": pk} for _ in range(100)])

        async def vector_batch(w: int) -> int:
            pk = f"p{self.rng.randrange(PARTITION_KEYS)}"
            return await self.batch(VECTORS, [self.vector_doc(pk) for _ in range(100)])

        results.append(await self.measure("batch upsert 1 KB (100 ops)", seconds, 8, small_batch))
        results.append(await self.measure("batch upsert vector (100 ops)", seconds, 8, vector_batch))
        results.append(await self.measure("point read 1 KB", seconds, 64, lambda w: self.read()))

        range_ids = await self.ranges()
        cursors: dict[int, tuple[str, str | None]] = {}

        async def page(w: int) -> int:
            range_id, token = cursors.get(w, (range_ids[w % len(range_ids)], None))
            count, token = await self.query_page(range_id, token)
            cursors[w] = (range_id, token) if token else (range_ids[(w + 1) % len(range_ids)], None)
            return count

        results.append(await self.measure("query page SELECT * (100 docs, per feed range)", seconds, 16, page,
                                          documents_in_container=len(self.written)))
        return results


def start_emulator(pin: bool) -> tuple[subprocess.Popen[str], str, str]:
    def pin_to_core_0() -> None:
        os.sched_setaffinity(0, {0})

    # Four ranges per container, as in every earlier run (without --partitions the emulator would size
    # these containers, which have no throughput, at one range, and the figures would not compare).
    command = [sys.executable, "-m", "asyncmig.emulator", "--port", "0", "--in-memory", "--no-rate-limit",
               "--partitions", "4"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=pin_to_core_0 if pin else None)
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    for line in process.stdout:
        match = READY.search(line)
        if match:
            return process, match["endpoint"], match["key"]
        if time.monotonic() > deadline:
            break
    process.kill()
    raise RuntimeError("the emulator did not start")


async def main_async(seconds: float) -> dict[str, Any]:
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    can_pin = hasattr(os, "sched_setaffinity")
    cores = sorted(os.sched_getaffinity(0)) if can_pin else list(range(os.cpu_count() or 1))
    process, endpoint, key = start_emulator(can_pin and 0 in cores)
    if can_pin and len(cores) > 1:
        os.sched_setaffinity(0, set(cores) - {0})  # the client stays off the server's core
    try:
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
            bench = Bench(endpoint, key, process.pid, session)
            await bench.setup()
            print(f"emulator pid {process.pid} on CPU 0; client on CPUs {sorted(os.sched_getaffinity(0))}")
            results = await bench.scenarios(seconds)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds_per_scenario": seconds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "server": "python -m asyncmig.emulator --in-memory --no-rate-limit --partitions 4, pinned to CPU 0",
        "client": "aiohttp + orjson, hand-signed requests, one process on the other CPUs",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "results": [{**asdict(r), "requests_per_s": round(r.requests_per_s, 1),
                     "documents_per_s": round(r.documents_per_s, 1),
                     "server_ms_per_request": round(r.server_ms_per_request, 3),
                     "full_core_documents_per_s": round(r.full_core_documents_per_s, 1)} for r in results],
    }


def markdown(report: dict[str, Any]) -> str:
    lines = ["| scenario | in flight | requests/s | documents/s | server CPU | server ms/request "
             "| documents/s per full core | client CPU |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        lines.append(f"| {r['scenario']} | {r['concurrency']} | {r['requests_per_s']:,.0f} | "
                     f"{r['documents_per_s']:,.0f} | {r['server_cpu']:.0%} | {r['server_ms_per_request']:.2f} | "
                     f"{r['full_core_documents_per_s']:,.0f} | {r['client_cpu']:.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator_capacity", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per scenario (default 5)")
    args = parser.parse_args(argv)
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up for the client
        uvloop.install()
    except ImportError:
        pass
    report = asyncio.run(main_async(args.seconds))
    table = markdown(report)
    print()
    print(table)
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / f"emulator_capacity-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps({**report, "table": table}, indent=2) + "\n")
    print(f"\nwrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
