"""The benchmark scenarios (method: docs/benchmarks.md): the same data, the same emulator, peers side by side.

Every scenario starts its own emulator process (or uses the account in ``ASYNCMIG_BENCH_COSMOS``),
seeds its source once through asyncmig's core, and gives every copier its own fresh target
container with the source's settings. Each copier runs as a separate process, pinned away from the
emulator's CPU, with a timeout; afterwards the target is read back and its count and content digest
(:class:`asyncmig.core.digest.ContainerDigest`, system properties excluded) must equal the
source's, so a fast-but-wrong copier cannot win.

1. unlimited RU: original, sdk-gather and asyncmig on the demo vector set;
2. RU-bound: targets provisioned at a budget (4,000 RU/s) the copiers can exceed; asyncmig and
   sdk-gather with their defaults;
3. scale and memory: asyncmig at 10,000 and 50,000 vector documents;
4. resume: asyncmig SIGKILLed half way, then resumed; documents written twice and time;
5. emulator capacity for context (``bench/emulator_capacity.py``);
6. one copy shared by workers under one RU budget;
7. scenario 1 on unique keys (``/id``): requests per 100 documents, documents per client CPU-second;
8. scenario 1 with 2 ms of latency per request.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.measure import (
    REPO,
    Admin,
    ProcessRun,
    StatsSampler,
    container_writes,
    last_json_line,
    load_average,
    pin_process,
    py_spy,
    run_measured,
    subprocess_env,
    summarize_collapsed,
)

VECTOR_CONTAINER = "personality-vectors"
PARTITION_KEY = "/personality"
DEMO_SEED = 20250805
DIMENSIONS = 768
PEERS = ("original", "sdk-gather", "asyncmig")
SDK_GATHER_CONCURRENCY = 32


@dataclass(frozen=True)
class Sizes:
    """Document counts and budgets; ``quick`` is the ~1 minute version CI may run."""

    s1_documents: int = 6514
    s2_documents: int = 6514
    s2_budget: float = 4000.0
    # Cosmos DB gives a new container ceil(RU/s / 6,000) physical partitions, so one at 4,000 RU/s;
    # the emulator's default of 4 would meter 1,000 RU/s per range and let the demo set's skew
    # (43 % of its documents hash to one of 4 ranges) bound every copier instead.
    s2_partitions: int = 1
    # Added by the emulator to every request (a network round trip); 0: a local emulator, no latency.
    s1_latency_ms: float = 0.0
    s3_documents: tuple[int, ...] = (10_000, 50_000)
    s4_documents: int = 6514
    s5_seconds: float = 3.0
    s6_documents: int = 6514
    s6_budget: float = 4000.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(s1_documents=500, s2_documents=500, s2_budget=2000.0, s3_documents=(500, 2500),
                   s4_documents=1500, s5_seconds=1.0, s6_documents=500, s6_budget=2000.0)

    def with_documents(self, n: int) -> Sizes:
        """Every scenario at ``n`` documents (scenario 3 at n and 5n): for smoke tests."""
        return replace(self, s1_documents=n, s2_documents=n, s3_documents=(n, 5 * n), s4_documents=n)


@dataclass
class Account:
    """Where one scenario runs."""

    connection_string: str
    endpoint: str
    key: str
    database: str
    admin: Admin | None = None          # the emulator's admin endpoint (None for a real account)
    emulator_pid: int | None = None
    emulator_args: list[str] = field(default_factory=list)

    @property
    def emulated(self) -> bool:
        return self.admin is not None


@dataclass
class Context:
    workdir: Path
    cpus: dict[str, list[int]] | None
    external: str | None = None          # a connection string: run against that account instead
    external_ru: int = 10_000
    timeout_per_document: float = 0.05
    log: Callable[[str], None] = print
    profile: bool = False                # scenario 1: one extra asyncmig run under py-spy
    asyncmig_extra: tuple[str, ...] = ()  # options added to every `asyncmig copy` (default: none)
    results: Path = REPO / "bench" / "results"
    name: str = "bench"

    def timeout(self, documents: int) -> float:
        return 120 + self.timeout_per_document * documents

    @property
    def copier_cpus(self) -> list[int] | None:
        return self.cpus["copier"] if self.cpus else None

    @contextmanager
    def account(self, name: str, *emulator_args: str) -> Iterator[Account]:
        if self.external:
            from asyncmig.connection import parse_connection_string

            endpoint = parse_connection_string(self.external)
            account = Account(self.external, endpoint.url, endpoint.key, f"asyncmig-bench-{name}-{uuid.uuid4().hex[:6]}")
            try:
                yield account
            finally:
                asyncio.run(_delete_database(account))
            return
        from asyncmig.emulator.process import EmulatorProcess

        emulator = EmulatorProcess(*emulator_args).start()
        try:
            assert emulator.process is not None
            pid = emulator.process.pid
            if self.cpus:
                pin_process(pid, self.cpus["emulator"])
            yield Account(emulator.connection_string, emulator.endpoint, emulator.key, "bench",
                          Admin(emulator.endpoint, emulator.key), pid, list(emulator_args))
        finally:
            emulator.stop()


# -- seeding, containers, verification (in this process, through the SDK / asyncmig's core) -------
def _endpoint(account: Account) -> Any:
    from asyncmig.connection import parse_connection_string

    return parse_connection_string(account.connection_string)


async def _create_container(account: Account, name: str, throughput: int | None, partitions: int | None,
                            partition_key: str = PARTITION_KEY) -> None:
    from azure.cosmos import PartitionKey
    from azure.cosmos.aio import CosmosClient

    from asyncmig.core.cosmos.transport import Transport

    async with CosmosClient(account.endpoint, credential=account.key) as client:
        db = await client.create_database_if_not_exists(account.database)
        if not (partitions and account.emulated):
            await db.create_container(name, partition_key=PartitionKey(partition_key), offer_throughput=throughput)
            return
    # The emulator's own header sets a container's physical ranges (a real account ignores it). The
    # SDK's create_container drops initial_headers, so this one request is sent by hand.
    headers = {"x-asyncmig-partition-count": str(partitions), "Content-Type": "application/json"}
    if throughput:
        headers["x-ms-offer-throughput"] = str(throughput)
    body = json.dumps({"id": name, "partitionKey": {"paths": [partition_key], "kind": "Hash", "version": 2}})
    transport = Transport(_endpoint(account), connections=1)
    try:
        reply = await transport.request("POST", f"/dbs/{quote(account.database)}/colls/", headers, body.encode())
        if not reply.ok:
            raise reply.error()
    finally:
        await transport.close()


def create_container(ctx: Context, account: Account, name: str, throughput: int | None = None,
                     partitions: int | None = None, partition_key: str = PARTITION_KEY) -> None:
    if throughput is None and not account.emulated:
        throughput = ctx.external_ru  # a real account has no "unlimited": provision generously
    asyncio.run(_create_container(account, name, throughput, partitions, partition_key))


async def _delete_container(account: Account, name: str) -> None:
    from azure.cosmos.aio import CosmosClient

    async with CosmosClient(account.endpoint, credential=account.key) as client:
        await client.get_database_client(account.database).delete_container(name)


def delete_container(account: Account, name: str) -> None:
    """Free the emulator's memory between runs (best effort)."""
    try:
        asyncio.run(_delete_container(account, name))
    except Exception:  # noqa: BLE001 - cleanup only
        pass


async def _delete_database(account: Account) -> None:
    from azure.cosmos.aio import CosmosClient

    try:
        async with CosmosClient(account.endpoint, credential=account.key) as client:
            await client.delete_database(account.database)
    except Exception:  # noqa: BLE001 - cleanup only
        pass


async def _seed(account: Account, name: str, documents: int, state: Path) -> None:
    from asyncmig.core.cosmos.connect import cosmos_client
    from asyncmig.core.cosmos.sink import CosmosSink
    from asyncmig.core.engine.checkpoint import run_identity
    from asyncmig.core.engine.governor import Governor
    from asyncmig.core.engine.iterable_source import IterableSource
    from asyncmig.core.engine.transfer import Transfer, run_transfer
    from asyncmig.core.engine.transform import IDENTITY
    from asyncmig.vimarsh.demo_data import DemoDataSet

    endpoint = _endpoint(account)
    dataset = DemoDataSet(DEMO_SEED, vectors=documents, dimensions=DIMENSIONS)
    async with cosmos_client(endpoint) as client:
        container = client.get_database_client(account.database).get_container_client(name)
        # The sink grew an ``endpoint`` (its lean write path signs requests itself) and became an
        # async context manager; support both shapes so seeding does not depend on that detail.
        takes_endpoint = "endpoint" in inspect.signature(CosmosSink).parameters
        sink = CosmosSink({"": container}, Governor(), **({"endpoint": endpoint} if takes_endpoint else {}))
        job = Transfer(
            source=IterableSource(lambda: dataset.documents(VECTOR_CONTAINER), description="demo vectors",
                                  count=documents),
            sink=sink,
            identity=run_identity(source=endpoint, source_database="demo-generator", source_container=VECTOR_CONTAINER,
                                  target=endpoint, target_database=account.database, target_containers=[name],
                                  transform=IDENTITY, seed=DEMO_SEED, vectors=documents),
            checkpoint=state / f"seed-{name}.checkpoint.json", dead_letter=state / f"seed-{name}.deadletter.jsonl",
            label=f"seed {name}", total=documents, progress=False,
        )
        try:
            await run_transfer(job)
        finally:
            close = getattr(sink, "close", None)
            if close is not None:
                await close()


def seed(ctx: Context, account: Account, name: str, documents: int,
         partition_key: str = PARTITION_KEY) -> dict[str, Any]:
    """Create ``name`` and fill it with the demo vector set (``documents`` vectors, 768 numbers)."""
    started = time.perf_counter()
    create_container(ctx, account, name, partition_key=partition_key)
    state = Path(tempfile.mkdtemp(prefix=f"seed-{name}-", dir=ctx.workdir))  # a fresh checkpoint per seeding
    asyncio.run(_seed(account, name, documents, state))
    return {"container": name, "documents": documents, "seconds": round(time.perf_counter() - started, 2)}


def _write_ru_estimate() -> Callable[[dict[str, Any]], float]:
    """A document's write RU under default indexing, by the cost model the emulator charges with
    (published size table plus indexed terms); used only to see how the RU is spread over ranges."""
    from asyncmig.core import jsoncodec
    from asyncmig.core.cosmos import rucost
    from asyncmig.core.engine.transform import strip_system

    try:
        from asyncmig.emulator.costs import IndexingPolicy

        policy: Any = IndexingPolicy(None)
    except ImportError:  # pragma: no cover - the emulator package moved
        policy = None

    def estimate(document: dict[str, Any]) -> float:
        user = strip_system(document)
        terms = policy.terms(user) if policy is not None else 0
        return rucost.write(len(jsoncodec.dumps(user)) + 200, terms)  # + the system properties it gets

    return estimate


async def _digest(account: Account, name: str) -> tuple[int, str, list[dict[str, Any]]]:
    from azure.cosmos.aio import CosmosClient

    from asyncmig.core.digest import ContainerDigest

    estimate = _write_ru_estimate()
    async with CosmosClient(account.endpoint, credential=account.key) as client:  # default retries
        container = client.get_database_client(account.database).get_container_client(name)
        ranges = [fr async for fr in container.read_feed_ranges()]

        async def part(feed_range: Any) -> tuple[ContainerDigest, dict[str, Any]]:
            digest = ContainerDigest()
            ru = 0.0
            async for doc in container.query_items("SELECT * FROM c", feed_range=feed_range, max_item_count=1000):
                digest.add(doc)
                ru += estimate(doc)
            bounds = feed_range.get("Range", {}) if isinstance(feed_range, dict) else {}
            return digest, {"range": [bounds.get("min"), bounds.get("max")], "documents": digest.count,
                            "estimated_write_ru": round(ru, 1)}

        total = ContainerDigest()
        parts = await asyncio.gather(*(part(fr) for fr in ranges))
        for piece, _ in parts:
            total.merge(piece)
    return total.count, total.hexdigest, [info for _, info in parts]


def digest(account: Account, name: str) -> dict[str, Any]:
    """Count and multiset content digest of a container (system properties excluded), and how its
    documents and estimated write RU are spread over its physical ranges."""
    started = time.perf_counter()
    count, hexdigest, ranges = asyncio.run(_digest(account, name))
    return {"count": count, "digest": hexdigest, "ranges": ranges, "seconds": round(time.perf_counter() - started, 2)}


# -- one copier run ---------------------------------------------------------------------------------
def copier_command(peer: str, source: str, target: str, documents: int, run_dir: Path,
                   asyncmig_extra: tuple[str, ...] = ()) -> list[str]:
    if peer == "original":
        return [sys.executable, "-m", "bench.peers.original", source, target, "--count", str(documents)]
    if peer == "sdk-gather":
        return [sys.executable, "-m", "bench.peers.sdk_gather", source, target, "--count", str(documents),
                "--concurrency", str(SDK_GATHER_CONCURRENCY)]
    if peer == "asyncmig":  # its defaults: only where state and the report go, and no progress bar
        return [sys.executable, "-m", "asyncmig", "copy", source, target, "--no-progress",
                "--report", str(run_dir / "report.json"), "--checkpoint", str(run_dir / "copy.checkpoint.json"),
                *asyncmig_extra]
    raise ValueError(peer)


STARTUP_IMPORTS = {
    "original": "import azure.cosmos, bench.peers.original",
    "sdk-gather": "import azure.cosmos.aio, bench.peers.sdk_gather",
    "asyncmig": "import asyncmig.cli, asyncmig.copy, uvloop",  # a copy loads no azure module
}


def startup_cost(ctx: Context, peer: str) -> dict[str, float]:
    """CPU and RSS of starting the interpreter and importing what the peer imports (no copying):
    context for the per-document figures of small runs."""
    run = run_measured([sys.executable, "-c", STARTUP_IMPORTS[peer]], cwd=ctx.workdir / "startup" / peer,
                       env=subprocess_env(), timeout=60, cpus=ctx.copier_cpus)
    return {"cpu_s": round(run.cpu_s, 3), "wall_s": round(run.wall_s, 3), "peak_rss_mb": round(run.peak_rss_mb, 1)}


def run_copier(ctx: Context, account: Account, peer: str, source: str, target: str, documents: int, run_dir: Path,
               *, sample: bool = True, kill_when: Callable[[float], bool] | None = None, poll: float = 0.1,
               ) -> tuple[ProcessRun, StatsSampler | None]:
    sampler = StatsSampler(account.admin) if sample and account.admin is not None else None
    command = copier_command(peer, f"{account.database}/{source}", f"{account.database}/{target}", documents, run_dir,
                             ctx.asyncmig_extra)
    run = run_measured(command, cwd=run_dir, env=subprocess_env(account.connection_string),
                       timeout=ctx.timeout(documents), cpus=ctx.copier_cpus, sampler=sampler,
                       emulator_pid=account.emulator_pid, kill_when=kill_when, poll=poll)
    return run, sampler


def copier_report(peer: str, run: ProcessRun, run_dir: Path) -> dict[str, Any] | None:
    """What the copier said about itself: asyncmig's --report, a peer's JSON line."""
    if peer == "asyncmig":
        path = run_dir / "report.json"
        if not path.exists():
            return None
        report = json.loads(path.read_text())
        keep = ("status", "documents", "ru", "requests", "throttled", "throttled_share", "retries", "elapsed_s",
                "ru_budget_per_s", "target_provisioned_ru_per_s", "memory")
        return {k: report.get(k) for k in keep}
    return last_json_line(run.stdout)


def verify(account: Account, target: str, source_digest: dict[str, Any]) -> dict[str, Any]:
    got = digest(account, target)
    result = {"target_count": got["count"], "target_digest": got["digest"], "target_ranges": got["ranges"],
              "equal_to_source": got["count"] == source_digest["count"] and got["digest"] == source_digest["digest"]}
    if account.emulated:
        result["writes"] = container_writes(account.endpoint, account.key, account.database, target)
        result["written_twice"] = result["writes"] - source_digest["count"]
    return result


def measured(ctx: Context, account: Account, peer: str, source: str, source_digest: dict[str, Any], target: str,
             documents: int, run_dir: Path, throughput: int | None = None,
             partition_key: str = PARTITION_KEY) -> tuple[dict[str, Any], StatsSampler | None]:
    """Fresh target, one measured run, the copier's own report, verification against the source."""
    create_container(ctx, account, target, throughput, partition_key=partition_key)
    ctx.log(f"  {peer}: copying {documents:,} documents into {target}")
    run, sampler = run_copier(ctx, account, peer, source, target, documents, run_dir)
    result: dict[str, Any] = {"peer": peer, "target": target, "documents": documents, **run.summary()}
    result["documents_per_s"] = round(documents / run.wall_s, 1) if run.wall_s else None
    result["documents_per_cpu_s"] = round(documents / run.cpu_s, 1) if run.cpu_s else None
    result["client_cpu_ms_per_document"] = round(1000 * run.cpu_s / documents, 3) if documents else None
    result["emulator_cpu_ms_per_document"] = (round(1000 * run.emulator_cpu_s / documents, 3)
                                              if documents and run.emulator_cpu_s is not None else None)
    result["self_report"] = copier_report(peer, run, run_dir)
    written_by = (result["self_report"] or {}).get("requests") if peer == "asyncmig" else None
    # asyncmig counts its own write requests; the SDK peers send one upsert per document.
    writes = written_by if written_by is not None else (documents if peer != "asyncmig" else None)
    result["write_requests_per_100_documents"] = round(100 * writes / documents, 2) if writes and documents else None
    if sampler is not None:
        result["emulator"] = sampler.delta(f"{account.database}/{target}")
        result["emulator"]["sampler_errors"] = sampler.errors
        # Every request the emulator served during the run (the source's reads included): an upper
        # bound on the copier's write requests, the same measure for every peer.
        result["requests_per_100_documents"] = (round(100 * result["emulator"]["requests"] / documents, 2)
                                                if documents else None)
    result["verification"] = verify(account, target, source_digest)
    result["ok"] = run.returncode == 0 and not run.timed_out and result["verification"]["equal_to_source"]
    state = "ok" if result["ok"] else f"FAILED (exit {run.returncode}, equal={result['verification']['equal_to_source']})"
    ctx.log(f"  {peer}: {run.wall_s:.2f} s wall, {run.cpu_s:.2f} s CPU, {run.peak_rss_mb:.0f} MB peak RSS, "
            f"emulator {result['emulator_cores_busy']} cores busy: {state}")
    return result, sampler


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _scenario(number: int, title: str, **parameters: Any) -> dict[str, Any]:
    return {"scenario": number, "title": title, "parameters": parameters,
            "load_average": {"start": load_average()}, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _finish(result: dict[str, Any], started: float) -> dict[str, Any]:
    result["load_average"]["end"] = load_average()
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def profile_asyncmig(ctx: Context, account: Account, source: str, documents: int, results: Path,
                     prefix: str) -> dict[str, Any]:
    """One more asyncmig copy (not measured) under py-spy, with the emulator profiled at the same time:
    where the copier's CPU goes, and where the emulator's goes while it serves asyncmig."""
    spy = py_spy()
    if spy is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    target = "target-profiled"
    create_container(ctx, account, target)
    run_dir = ctx.workdir / "profile"
    run_dir.mkdir(parents=True, exist_ok=True)
    copier_out, emulator_out = run_dir / "asyncmig.collapsed.txt", run_dir / "emulator.collapsed.txt"
    common = ["--format", "raw", "--nolineno", "--rate", "200", "--nonblocking"]
    emulator_spy = None
    if account.emulator_pid is not None:
        emulator_spy = subprocess.Popen([spy, "record", *common, "-o", str(emulator_out), "--pid",
                                         str(account.emulator_pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
    command = [spy, "record", *common, "-o", str(copier_out), "--",
               *copier_command("asyncmig", f"{account.database}/{source}", f"{account.database}/{target}", documents,
                               run_dir, ctx.asyncmig_extra)]
    ctx.log(f"  profiling asyncmig (and the emulator) with py-spy: {documents:,} documents into {target}")
    run = run_measured(command, cwd=run_dir, env=subprocess_env(account.connection_string),
                       timeout=ctx.timeout(documents), cpus=ctx.copier_cpus)
    result: dict[str, Any] = {"note": "py-spy --nonblocking at 200 Hz; this run is not one of the measured ones",
                              "returncode": run.returncode, "wall_s": round(run.wall_s, 3)}
    if emulator_spy is not None:
        emulator_spy.send_signal(signal.SIGINT)
        try:
            emulator_spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            emulator_spy.kill()
            emulator_spy.wait(timeout=10)
    for role, path in (("asyncmig", copier_out), ("emulator", emulator_out)):
        if path.exists():
            # The collapsed stacks themselves, as JSON beside the report (flamegraph.pl / speedscope
            # read them back after "\n".join(lines)).
            saved = results / f"{prefix}-profile-{role}.json"
            saved.write_text(json.dumps({"format": "py-spy record --format raw --nolineno (collapsed stacks)",
                                         "process": role, "lines": path.read_text(errors="replace").splitlines()}))
            result[role] = {"file": saved.name, **summarize_collapsed(path)}
        else:
            result[role] = {"missing": f"py-spy wrote no {path.name}", "stderr": run.stderr[-500:] if role == "asyncmig" else ""}
    delete_container(account, target)
    return result


# -- scenario 1 -------------------------------------------------------------------------------------
def scenario_1(ctx: Context, sizes: Sizes, peers: tuple[str, ...] = PEERS, *, number: int = 1,
               partition_key: str = PARTITION_KEY, latency_ms: float | None = None) -> dict[str, Any]:
    """Unlimited RU; also run as scenario 7 (unique keys, ``/id``) and 8 (2 ms per request)."""
    started = time.perf_counter()
    n = sizes.s1_documents
    emulator_args = ["--no-rate-limit"]
    latency = sizes.s1_latency_ms if latency_ms is None else latency_ms
    if latency:
        emulator_args += ["--latency-ms", str(latency)]
    title = "Unlimited RU: the demo vector set" + (f", keyed by {partition_key}" if partition_key != PARTITION_KEY else "")
    result = _scenario(number, title, documents=n, dimensions=DIMENSIONS, partition_key=partition_key,
                       emulator_args=emulator_args, sdk_gather_concurrency=SDK_GATHER_CONCURRENCY)
    with ctx.account(f"s{number}", *emulator_args) as account:
        result["parameters"]["database"] = account.database
        result["seed"] = seed(ctx, account, "source", n, partition_key)
        source_digest = digest(account, "source")
        result["source"] = source_digest
        result["peers"] = {}
        for peer in peers:
            run_dir = ctx.workdir / f"s{number}" / peer
            result["peers"][peer], sampler = measured(ctx, account, peer, "source", source_digest, f"target-{peer}",
                                                      n, run_dir, partition_key=partition_key)
            if sampler is not None:  # [t, RU charged to the target, 429s, requests]: is the copier steady?
                result["peers"][peer]["timeline"] = sampler.timeline(f"{account.database}/target-{peer}")
            result["peers"][peer]["startup"] = startup_cost(ctx, peer)
            delete_container(account, f"target-{peer}")
        if ctx.profile and "asyncmig" in peers and number == 1:
            result["profile"] = profile_asyncmig(ctx, account, "source", n, ctx.results, ctx.name)
    p = result["peers"]
    wall = {k: v["wall_s"] for k, v in p.items()}
    per_cpu = {k: v["documents_per_cpu_s"] for k, v in p.items()}
    result["ratios"] = {
        "asyncmig_speedup_vs_original_wall": _ratio(wall.get("original"), wall.get("asyncmig")),
        "asyncmig_speedup_vs_sdk_gather_wall": _ratio(wall.get("sdk-gather"), wall.get("asyncmig")),
        "asyncmig_vs_sdk_gather_documents_per_cpu_s": _ratio(per_cpu.get("asyncmig"), per_cpu.get("sdk-gather")),
        "asyncmig_vs_original_documents_per_cpu_s": _ratio(per_cpu.get("asyncmig"), per_cpu.get("original")),
    }
    emulator_cpu = p.get("asyncmig", {}).get("emulator_cpu_s")
    if emulator_cpu and "original" in p:
        # If asyncmig kept the emulator's one core 100 % busy with its own requests, its wall time
        # would be its emulator CPU seconds: the best speedup this emulator allows on this machine.
        result["ratios"]["ceiling_vs_original_if_emulator_core_saturated"] = _ratio(wall["original"], emulator_cpu)
    return _finish(result, started)


# -- scenario 2 -------------------------------------------------------------------------------------
def _write_window(timeline: list[list[float]]) -> tuple[float, float] | None:
    """(start, end) of the target's RU charges: the last sample before the first charge to the
    first sample that shows the final total."""
    if len(timeline) < 2 or timeline[-1][1] <= 0:
        return None
    final = timeline[-1][1]
    first = next(i for i, s in enumerate(timeline) if s[1] > 0)
    last = next(i for i, s in enumerate(timeline) if s[1] >= final - 1e-6)
    return timeline[max(0, first - 1)][0], timeline[last][0]


def scenario_2(ctx: Context, sizes: Sizes, peers: tuple[str, ...] = ("sdk-gather", "asyncmig")) -> dict[str, Any]:
    started = time.perf_counter()
    n, budget = sizes.s2_documents, sizes.s2_budget
    emulator_args = ["--partitions", str(sizes.s2_partitions)]
    result = _scenario(2, "RU-bound: target provisioned at a budget the copiers can exceed", documents=n,
                       dimensions=DIMENSIONS, target_provisioned_ru_per_s=budget, emulator_args=emulator_args,
                       sdk_gather_concurrency=SDK_GATHER_CONCURRENCY)
    with ctx.account("s2", *emulator_args) as account:
        result["parameters"]["database"] = account.database
        result["seed"] = seed(ctx, account, "source", n)  # the source has no offer: unmetered reads
        source_digest = digest(account, "source")
        result["source"] = source_digest
        result["peers"] = {}
        for peer in peers:
            target = f"target-{peer}"
            entry, sampler = measured(ctx, account, peer, "source", source_digest, target, n,
                                      ctx.workdir / "s2" / peer, throughput=int(budget))
            result["peers"][peer] = entry
            wall = entry["wall_s"]
            if sampler is not None:
                timeline = sampler.timeline(f"{account.database}/{target}")
                em = entry["emulator"]
                ru, requests, throttled = em["ru"], em["requests"], em["throttled"]
                window = _write_window(timeline)
                entry["timeline"] = timeline
            else:  # a real account: the copier's own figures (sdk-gather cannot see its 429s)
                report = entry.get("self_report") or {}
                ru_field = report.get("ru")
                ru = ru_field.get("total") if isinstance(ru_field, dict) else ru_field
                requests, throttled, window = report.get("requests"), report.get("throttled"), None
            minimum = ru / budget if ru else None
            # Cosmos DB (and the emulator) split the provisioned RU/s evenly over the physical ranges
            # and meter each on its own: the busiest range's share of the RU bounds any copier.
            ranges = entry["verification"].get("target_ranges") or []
            estimated = sum(r["estimated_write_ru"] for r in ranges)
            busiest = max((r["estimated_write_ru"] for r in ranges), default=0.0)
            bound = (busiest / estimated) * ru / (budget / len(ranges)) if ru and estimated and ranges else None
            entry["ru_bound"] = {
                "ru": ru, "requests": requests, "throttled": throttled,
                "throttled_share": round(throttled / requests, 4) if requests and throttled is not None else None,
                "ru_per_s": round(ru / wall, 1) if ru and wall else None,
                "utilization": round(ru / (budget * wall), 4) if ru and wall else None,
                "write_window_s": round(window[1] - window[0], 3) if window else None,
                "utilization_in_write_window": (round(ru / (budget * (window[1] - window[0])), 4)
                                                if ru and window and window[1] > window[0] else None),
                "theoretical_minimum_s": round(minimum, 3) if minimum else None,
                "time_vs_minimum": round(wall / minimum, 3) if minimum else None,
                "physical_ranges": len(ranges),
                "busiest_range_ru_share": round(busiest / estimated, 4) if estimated else None,
                "partition_bound_minimum_s": round(bound, 3) if bound else None,
                "utilization_vs_partition_bound": round(bound / wall, 4) if bound and wall else None,
            }
            rb = entry["ru_bound"]
            ctx.log(f"  {peer}: {rb['ru']} RU in {wall:.2f} s = utilization {rb['utilization']} "
                    f"(write window {rb['utilization_in_write_window']}), 429s {rb['throttled']}/{rb['requests']}")
            delete_container(account, target)
    return _finish(result, started)


# -- scenario 3 -------------------------------------------------------------------------------------
def scenario_3(ctx: Context, sizes: Sizes) -> dict[str, Any]:
    started = time.perf_counter()
    result = _scenario(3, "Scale and memory: asyncmig at two sizes", documents=list(sizes.s3_documents),
                       dimensions=DIMENSIONS, emulator_args=["--no-rate-limit"])
    result["runs"] = []
    with ctx.account("s3", "--no-rate-limit") as account:
        result["parameters"]["database"] = account.database
        for n in sizes.s3_documents:
            source, target = f"source-{n}", f"target-{n}"
            seeded = seed(ctx, account, source, n)
            source_digest = digest(account, source)
            entry, _ = measured(ctx, account, "asyncmig", source, source_digest, target, n, ctx.workdir / "s3" / str(n))
            entry["seed"], entry["source"] = seeded, source_digest
            result["runs"].append(entry)
            delete_container(account, target)
            delete_container(account, source)
    runs = result["runs"]
    if len(runs) >= 2:
        small, large = runs[0], runs[-1]
        result["ratios"] = {
            "peak_rss_large_vs_small": _ratio(large["peak_rss_mb"], small["peak_rss_mb"]),
            "documents_per_s_large_vs_small": _ratio(large["documents_per_s"], small["documents_per_s"]),
        }
    return _finish(result, started)


# -- scenario 4 -------------------------------------------------------------------------------------
def scenario_4(ctx: Context, sizes: Sizes) -> dict[str, Any]:
    started = time.perf_counter()
    n = sizes.s4_documents
    result = _scenario(4, "Resume: SIGKILL half way, then resume", documents=n, dimensions=DIMENSIONS,
                       emulator_args=["--no-rate-limit"], kill_at_fraction=0.5)
    with ctx.account("s4", "--no-rate-limit") as account:
        result["parameters"]["database"] = account.database
        result["seed"] = seed(ctx, account, "source", n)
        source_digest = digest(account, "source")
        result["source"] = source_digest
        full, _ = measured(ctx, account, "asyncmig", "source", source_digest, "target-uninterrupted", n,
                           ctx.workdir / "s4" / "uninterrupted")
        result["uninterrupted"] = full
        delete_container(account, "target-uninterrupted")

        target = "target-resumed"
        create_container(ctx, account, target)
        run_dir = ctx.workdir / "s4" / "killed"
        def half_way(elapsed: float) -> bool:
            if not account.emulated:  # no LSN on a real account: half the uninterrupted time
                return bool(elapsed >= full["wall_s"] / 2)
            try:
                return container_writes(account.endpoint, account.key, account.database, target) >= n // 2
            except (OSError, RuntimeError):
                return False

        ctx.log(f"  asyncmig: copying {n:,} documents into {target}, SIGKILL at about half way")
        killed, _ = run_copier(ctx, account, "asyncmig", "source", target, n, run_dir, sample=False,
                               kill_when=half_way, poll=0.03)
        at_kill = (container_writes(account.endpoint, account.key, account.database, target)
                   if account.emulated else None)
        ctx.log(f"  asyncmig: killed={killed.killed} after {killed.wall_s:.2f} s with {at_kill} writes; resuming")
        resumed, _ = run_copier(ctx, account, "asyncmig", "source", target, n, run_dir, sample=False)
        verification = verify(account, target, source_digest)
        result["killed_run"] = {**killed.summary(), "writes_at_kill": at_kill}
        result["resumed_run"] = {**resumed.summary(), "self_report": copier_report("asyncmig", resumed, run_dir)}
        result["verification"] = verification
        total = killed.wall_s + resumed.wall_s
        twice = verification.get("written_twice")
        result["resume"] = {
            "killed_on_purpose": killed.killed, "killed_exit": killed.returncode, "resumed_exit": resumed.returncode,
            "documents_written_twice": twice,
            "written_twice_share": round(twice / n, 5) if twice is not None else None,
            "interrupted_total_wall_s": round(total, 3),
            "uninterrupted_wall_s": full["wall_s"],
            "interrupted_vs_uninterrupted_time": _ratio(total, full["wall_s"]),
        }
        result["ok"] = (killed.killed and resumed.returncode == 0 and verification["equal_to_source"]
                        and full["ok"])
        ctx.log(f"  resumed: exit {resumed.returncode}, equal={verification['equal_to_source']}, "
                f"written twice {twice}, time {total:.2f} s vs {full['wall_s']:.2f} s uninterrupted")
    return _finish(result, started)


# -- scenario 5 -------------------------------------------------------------------------------------
def scenario_5(ctx: Context, sizes: Sizes) -> dict[str, Any]:
    started = time.perf_counter()
    result = _scenario(5, "Emulator capacity, for context", seconds_per_measurement=sizes.s5_seconds)
    if ctx.external:
        result["skipped"] = "runs against the local emulator only (ASYNCMIG_BENCH_COSMOS is set)"
        return _finish(result, started)
    if not (REPO / "bench" / "emulator_capacity.py").exists():
        result["skipped"] = "bench/emulator_capacity.py is not present"
        return _finish(result, started)
    command = [sys.executable, "-m", "bench.emulator_capacity", "--seconds", str(sizes.s5_seconds)]
    try:
        done = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                              timeout=120 + 12 * sizes.s5_seconds)
    except subprocess.TimeoutExpired:
        result["error"] = "bench.emulator_capacity timed out"
        return _finish(result, started)
    match = re.search(r"wrote (\S+\.json)", done.stdout)
    if done.returncode != 0 or not match:
        result["error"] = f"bench.emulator_capacity exited {done.returncode}: {done.stderr[-1500:]}"
        return _finish(result, started)
    report = json.loads(Path(match.group(1)).read_text())
    result["report_file"] = str(Path(match.group(1)).relative_to(REPO)) if match.group(1).startswith(str(REPO)) else match.group(1)
    result["capacity"] = {k: report.get(k) for k in ("server", "client", "results", "table")}
    return _finish(result, started)


# -- scenario 6 -------------------------------------------------------------------------------------
def scenario_6(ctx: Context, sizes: Sizes) -> dict[str, Any]:
    """1 vs 2 workers (``--cluster local[N]``, Ray) under one RU budget below what the target allows:
    the budget must hold across workers (the server's meter over the write window), with few 429s."""
    started = time.perf_counter()
    n, budget = sizes.s6_documents, sizes.s6_budget
    result = _scenario(6, "Workers: one copy on 1 and 2 Ray workers under one RU budget", documents=n,
                       dimensions=DIMENSIONS, ru_budget=budget, target_provisioned_ru_per_s=int(2 * budget))
    try:
        import ray  # noqa: F401
    except ImportError:
        result["skipped"] = "Ray is not installed (pip install -e '.[ray]')"
        return _finish(result, started)
    if ctx.external:
        result["skipped"] = "runs against the local emulator only (it reads the server's own RU meter)"
        return _finish(result, started)
    result["runs"] = {}
    # The source has 4 feed ranges for the workers to share; the target one physical range, as in
    # scenario 2: this measures how the workers share the budget, not how the demo set's key skew
    # loads one of several target ranges.
    with ctx.account("s6", "--partitions", "4") as account:
        result["parameters"]["database"] = account.database
        result["seed"] = seed(ctx, account, "source", n)
        source_digest = digest(account, "source")
        for workers in (1, 2):
            target, run_dir = f"target-{workers}w", ctx.workdir / "s6" / f"{workers}w"
            create_container(ctx, account, target, int(2 * budget), partitions=1)
            sampler = StatsSampler(account.admin) if account.admin is not None else None
            command = [sys.executable, "-m", "asyncmig", "copy", f"{account.database}/source",
                       f"{account.database}/{target}", "--no-progress", "--cluster", f"local[{workers}]",
                       "--ru-budget", str(budget), "--report", str(run_dir / "report.json")]
            ctx.log(f"  {workers} worker(s): copying {n:,} documents under {budget:,.0f} RU/s")
            run = run_measured(command, cwd=run_dir, env=subprocess_env(account.connection_string),
                               timeout=ctx.timeout(n) + 60, sampler=sampler, emulator_pid=account.emulator_pid)
            entry: dict[str, Any] = {"workers": workers, **run.summary()}
            report_path = run_dir / "report.json"
            report = json.loads(report_path.read_text()) if report_path.exists() else {}
            entry["workers_detail"] = report.get("workers")
            if sampler is not None:
                timeline = sampler.timeline(f"{account.database}/{target}")
                em = sampler.delta(f"{account.database}/{target}")
                window = _write_window(timeline)
                span = window[1] - window[0] if window else None
                entry["server"] = {
                    "ru": em["ru"], "requests": em["requests"], "throttled": em["throttled"],
                    "throttled_share": round(em["throttled"] / em["requests"], 4) if em["requests"] else None,
                    "write_window_s": round(span, 3) if span else None,
                    "ru_per_s_in_write_window": round(em["ru"] / span, 1) if span else None,
                    "budget_ratio": round(em["ru"] / span / budget, 4) if span else None,
                }
            entry["verification"] = verify(account, target, source_digest)
            entry["ok"] = run.returncode == 0 and entry["verification"]["equal_to_source"]
            server = entry.get("server", {})
            ctx.log(f"  {workers} worker(s): {run.wall_s:.2f} s wall, budget ratio {server.get('budget_ratio')}, "
                    f"429s {server.get('throttled')}/{server.get('requests')}, ok={entry['ok']}")
            result["runs"][str(workers)] = entry
            delete_container(account, target)
    return _finish(result, started)


def scenario_7(ctx: Context, sizes: Sizes) -> dict[str, Any]:
    """Scenario 1 on containers keyed by ``/id``: every document its own logical partition, so only
    bulk batches per physical range (not transactional batches per key) save requests."""
    return scenario_1(ctx, sizes, ("sdk-gather", "asyncmig"), number=7, partition_key="/id")


def scenario_8(ctx: Context, sizes: Sizes) -> dict[str, Any]:
    """Scenario 1 with 2 ms added to every request: a network round trip between copier and account."""
    return scenario_1(ctx, sizes, ("sdk-gather", "asyncmig"), number=8, latency_ms=2.0)


SCENARIOS: dict[int, Callable[[Context, Sizes], dict[str, Any]]] = {
    1: scenario_1, 2: scenario_2, 3: scenario_3, 4: scenario_4, 5: scenario_5, 6: scenario_6, 7: scenario_7,
    8: scenario_8,
}
