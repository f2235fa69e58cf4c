"""Live sources: reader retries, ``copy --follow`` with a concurrent writer and injected faults, the
per-range count check, and what a stop request means while following."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import anyio
import pytest
from azure.core.exceptions import AzureError
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy
from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceNotFoundError

from asyncmig.core.cosmos.container import Container
from asyncmig.core.cosmos.source import CosmosSource
from asyncmig.core.engine.checkpoint import Checkpoint
from asyncmig.core.engine.deadletter import DeadLetterFile
from asyncmig.core.engine.pipeline import Pipeline, RunStatistics
from asyncmig.core.engine.progress import lag_text
from asyncmig.core.engine.sink import SinkStatistics, WriteOutcome, WriteUnit
from asyncmig.core.engine.source import SourcePage
from asyncmig.core.engine.transform import Document
from asyncmig.errors import TransientExhausted
from tests.conftest import Cosmos, needs_emulator
from tests.core.support import contents, copier, run_copier, seed
from tests.helpers import EmulatorProcess, unique

pytestmark = needs_emulator
REPO = str(Path(__file__).resolve().parents[2])


async def _read_all(source: CosmosSource) -> int:
    documents = 0
    for feed_range in (await source.partitions()).values():
        async for page in source.pages(feed_range, None):
            documents += len(page.documents)
    return documents


class FlakyPager:
    """What ``by_page()`` returns, over a list of documents, failing every other request with a
    dropped connection (the SDK retries those itself against Cosmos, so scattered faults that reach
    the copier cannot be scripted through a server without making the test slow and random)."""

    def __init__(self, documents: list[Document], start: int, requests: list[int]) -> None:
        self.documents = documents
        self.at = start
        self.continuation_token: str | None = str(start)
        self.requests = requests

    def __aiter__(self) -> FlakyPager:
        return self

    async def __anext__(self) -> AsyncIterator[Document]:
        self.requests[0] += 1
        if self.requests[0] % 2 == 0:
            raise aiohttp.ClientConnectionError("fault injection: connection dropped")
        if self.at >= len(self.documents):
            raise StopAsyncIteration
        page = self.documents[self.at:self.at + 1]
        self.at += 1
        self.continuation_token = str(self.at)

        async def items() -> AsyncIterator[Document]:
            for doc in page:
                yield doc
        return items()


class FlakySource(CosmosSource):
    """The Cosmos source's reading loop over :class:`FlakyPager` instead of the SDK's pager."""

    def __init__(self, documents: list[Document]) -> None:
        # A stand-in for the SDK proxy: the pagers below never use it.
        super().__init__(Container("db", "flaky", proxy=cast(ContainerProxy, object())), page_size=1, what="flaky")
        self.documents = documents
        self.requests = [0]

    def _pager(self, proxy: Any, feed_range: Any, position: str | None, responses: Any) -> Any:
        return FlakyPager(self.documents, int(position or 0), self.requests)


async def test_reader_retries_start_afresh_after_every_page() -> None:
    """Scattered transient faults over a long read must not add up to the limit for faults in a row."""
    documents = [{"id": f"d{i}"} for i in range(30)]
    source = FlakySource(documents)
    read: list[Document] = []
    with anyio.fail_after(60):
        async for page in source.pages({"Range": {"min": "", "max": "FF"}}, None):
            read.extend(page.documents)
    assert read == documents
    assert source.requests[0] > 2 * 30  # thirty faults, far beyond eight


class EarlyEndPager(FlakyPager):
    """Ends after two pages although the range holds more, as the SDK does when the service answers
    an empty 200 page in the middle of a range (it treats that like a 304)."""

    def __init__(self, documents: list[Document], start: int, requests: list[int]) -> None:
        super().__init__(documents, start, requests)
        self.pages = 0

    async def __anext__(self) -> AsyncIterator[Document]:
        if self.pages == 2:
            raise StopAsyncIteration
        self.pages += 1
        self.requests[0] = 0  # never a fault (FlakyPager fails every other request)
        return await super().__anext__()


class EarlyEndSource(FlakySource):
    def _pager(self, proxy: Any, feed_range: Any, position: str | None, responses: Any) -> Any:
        return EarlyEndPager(self.documents, int(position or 0), self.requests)


async def test_a_pass_is_not_over_when_the_sdk_stops_at_an_empty_page() -> None:
    documents = [{"id": f"d{i}"} for i in range(7)]
    pages = [page async for page in EarlyEndSource(documents).pages({"Range": {"min": "", "max": "FF"}}, None)]
    assert [d for p in pages for d in p.documents] == documents
    assert [p.caught_up for p in pages] == [False] * 7 + [True]


class NoDeletesSource(FlakySource):
    """An account without the all-versions-and-deletes change feed: asking for it answers 400."""

    def _now_pager(self, proxy: Any, feed_range: Any, responses: Any) -> Any:
        raise CosmosHttpResponseError(status_code=400, message="Full fidelity change feed is not enabled")


async def test_without_the_deletes_feed_the_source_says_so_and_reads_latest_versions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    documents = [{"id": f"d{i}"} for i in range(5)]
    source = NoDeletesSource(documents)
    source.deletes = True
    pages = [page async for page in source.pages({"Range": {"min": "", "max": "FF"}}, None)]
    pages += [page async for page in source.pages({"Range": {"min": "FF", "max": "FFFF"}}, None)]
    assert source.deletes_available is False
    assert [d for p in pages for d in p.documents] == documents * 2
    assert all(p.position is not None and not p.position.startswith("{") for p in pages)  # latest-version only
    said = [r.getMessage() for r in caplog.records if "all-versions-and-deletes" in r.getMessage()]
    assert len(said) == 1 and "asyncmig reconcile" in said[0]  # once, not per range


async def test_a_fault_that_persists_still_ends_the_read(cosmos: Cosmos, database: DatabaseProxy) -> None:
    """Exit 75's error: the allowance for faults in a row is spent."""
    assert cosmos.emulator is not None
    container = await database.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    await seed(container, [{"id": f"d{i}", "pk": "p"} for i in range(5)])
    source = CosmosSource(container, page_size=2)
    await source.open()
    cosmos.emulator.admin("faults", {"fault_rate": 1.0, "faults": ["503"]})
    try:
        with anyio.fail_after(120), pytest.raises(TransientExhausted, match="re-run the same command"):
            await _read_all(source)
    finally:
        cosmos.emulator.admin("faults", {"fault_rate": 0.0})


# -- the count check, on in-memory parts ---------------------------------------------------------

class CountedSource:
    """One partition of fixed documents whose independent count says ``counted``."""

    description = "memory"
    page_size = 10
    read_ru = 0.0

    def __init__(self, documents: list[Document], counted: int) -> None:
        self.documents = documents
        self.counted = counted

    async def open(self) -> None:
        return None

    def partition_key(self, document: Document) -> Any:
        return None

    async def partitions(self) -> dict[str, Any]:
        return {"all": {"range": "all"}}

    async def pages(self, partition: Any, position: str | None) -> AsyncIterator[SourcePage]:
        start = int(position or 0)
        for at in range(start, len(self.documents), self.page_size):
            yield SourcePage(self.documents[at:at + self.page_size], str(min(at + self.page_size, len(self.documents))))
        yield SourcePage([], str(len(self.documents)), caught_up=True)

    async def count(self) -> int | None:
        return self.counted

    async def count_partition(self, partition: Any) -> int | None:
        return self.counted


class ListSink:
    description = "memory"
    durable_writes = True

    def __init__(self) -> None:
        self.stats = SinkStatistics()
        self.stored: list[Document] = []

    async def open(self, state: dict[str, Any]) -> None:
        return None

    def plan(self, target: str, documents: list[Document]) -> tuple[list[WriteUnit], list[Any]]:
        return [WriteUnit(target, "lane", documents)], []

    async def write(self, unit: WriteUnit) -> WriteOutcome:
        self.stored.extend(unit.documents)
        return WriteOutcome(written=len(unit.documents))

    async def flush(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("counted", [25, 27])
async def test_the_bulk_pass_is_checked_against_an_independent_count(tmp_path: Path, counted: int) -> None:
    documents = [{"id": f"d{i}", "_lsn": i + 1} for i in range(25)]
    with DeadLetterFile(tmp_path / "dead.jsonl") as dead:
        pipeline = Pipeline(CountedSource(documents, counted), ListSink(), Checkpoint(identity={}),
                            tmp_path / "ck.json", dead)
        stats = await pipeline.run()
    assert stats.bulk == {"all": {"read": 25, "count": counted}}
    assert pipeline.checkpoint.ranges["all"].bulk_done


# -- copy --follow, end to end ------------------------------------------------------------------

class Writer:
    """The application: inserts, updates and deletes at random, retrying what faults interrupt."""

    def __init__(self, container: ContainerProxy, ids: list[str], seed_: int = 3) -> None:
        self.container = container
        self.live = set(ids)
        self.rng = random.Random(seed_)
        self.operations = {"insert": 0, "update": 0, "delete": 0}
        self._next = 0

    async def _retry(self, operation: Any) -> None:
        for _ in range(20):
            try:
                await operation()
                return
            except CosmosResourceNotFoundError:
                return  # a delete whose first attempt ran before its connection dropped
            except (CosmosHttpResponseError, AzureError, OSError):
                await anyio.sleep(0.01)
        raise AssertionError("the writer could not get an operation through")

    async def step(self) -> None:
        choice = self.rng.random()
        if choice < 0.35 or not self.live:
            self._next += 1
            doc_id = f"new-{self._next}"
            await self._retry(lambda: self.container.upsert_item({"id": doc_id, "pk": f"p{self._next % 9}", "v": 0}))
            self.live.add(doc_id)
            self.operations["insert"] += 1
            return
        doc_id = self.rng.choice(sorted(self.live))
        pk = f"p{int(doc_id.split('-')[1]) % 9}"
        if choice < 0.8:
            version = self.rng.randrange(1, 10**6)
            await self._retry(lambda: self.container.upsert_item({"id": doc_id, "pk": pk, "v": version}))
            self.operations["update"] += 1
        else:
            await self._retry(lambda: self.container.delete_item(doc_id, partition_key=pk))
            self.live.discard(doc_id)
            self.operations["delete"] += 1


async def _converged(source: ContainerProxy, target: ContainerProxy, seconds: float) -> bool:
    """Wait (polling the target, not sleeping a fixed time) until it equals the source."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await contents(target) == await contents(source):
            return True
        await anyio.sleep(0.25)
    return False


def _stop(process: subprocess.Popen[str], *signals: signal.Signals) -> tuple[int, str]:
    for sig in signals:
        process.send_signal(sig)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate(timeout=10)
        raise AssertionError(f"the copier did not stop within 60 s: {err[-2000:]}") from None
    return process.returncode, err


@pytest.mark.timeout(300)
async def test_follow_converges_with_a_concurrent_writer_and_faults(tmp_path: Path) -> None:
    emulator = EmulatorProcess("--partitions", "4", "--no-rate-limit", "--fault-seed", "11").start()
    process: subprocess.Popen[str] | None = None
    try:
        async with CosmosClient(emulator.endpoint, credential=emulator.key) as client:
            database = await client.create_database(unique("db"))
            source = await database.create_container(unique("src"), partition_key=PartitionKey("/pk"))
            target = await database.create_container(unique("dst"), partition_key=PartitionKey("/pk"))
            ids = [f"doc-{i}" for i in range(600)]
            await seed(source, [{"id": i, "pk": f"p{int(i.split('-')[1]) % 9}", "v": 0} for i in ids])
            emulator.admin("faults", {"fault_rate": 0.03, "faults": ["503", "408", "reset"]})
            report = tmp_path / "report.json"
            process = copier(
                emulator.connection_string, f"{database.id}/{source.id}", f"{database.id}/{target.id}",
                "--follow", "--poll-interval", "0.5", "--page-size", "20", "--report", str(report),
                "--checkpoint", str(tmp_path / "ck.json"), cwd=tmp_path,
            )
            writer = Writer(source, ids)
            with anyio.fail_after(120):
                for _ in range(500):
                    await writer.step()
            assert process.poll() is None, process.communicate(timeout=10)[1][-2000:]
            emulator.admin("faults", {"fault_rate": 0.0})
            assert writer.operations["delete"] > 20 and writer.operations["update"] > 50
            assert await _converged(source, target, seconds=60), "the target did not catch up with the source"
            code, err = _stop(process, signal.SIGINT)
            assert code == 0, err[-3000:]
            assert await contents(target) == await contents(source)
            body = json.loads(report.read_text())
            assert body["status"] == "stopped"
            # Deletes made before the copier took its starting position need no delete (never copied).
            assert body["live"]["deletes_followed"] is True and body["live"]["deleted"] > 0
            assert body["live"]["lag"] and body["live"]["lag_seconds_max"] == 0.0  # every range caught up
            assert emulator.admin("stats")["faults_injected"] > 0
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
        emulator.stop()


@pytest.mark.parametrize("transform", [None, "tests.core.poison:prefixed"])
async def test_catch_up_applies_deletes_and_updates_made_after_a_copy(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path, transform: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a transform a delete removes what the deleted document produced: the transform is applied
    to the deleted document's last version (or its id and partition key when that is all the feed has)."""
    source = await database.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    target = await database.create_container(unique("dst"), partition_key=PartitionKey("/pk"))
    await seed(source, [{"id": f"d{i}", "pk": f"p{i % 5}", "v": 0} for i in range(80)])
    args = [f"{database.id}/{source.id}", f"{database.id}/{target.id}", "--checkpoint", str(tmp_path / "ck.json")]
    args += ["--transform", transform] if transform else []
    monkeypatch.setenv("PYTHONPATH", REPO)  # the copier imports the transform
    assert run_copier(cosmos.connection_string, *args, cwd=tmp_path).returncode == 0
    for i in range(0, 80, 4):
        await source.delete_item(f"d{i}", partition_key=f"p{i % 5}")
    await seed(source, [{"id": f"d{i}", "pk": f"p{i % 5}", "v": 1} for i in range(1, 80, 4)])
    caught_up = run_copier(cosmos.connection_string, *args, "--catch-up", "--report", "r.json", cwd=tmp_path)
    assert caught_up.returncode == 0, caught_up.stderr
    copied = {doc["source_id"] if transform else doc["id"]: doc["v"] for doc in await _all(target)}
    expected = {doc["id"]: doc["v"] for doc in await _all(source)}
    assert copied == expected and len(expected) == 60
    assert json.loads((tmp_path / "r.json").read_text())["live"]["deleted"] == 20


async def _all(container: ContainerProxy) -> list[dict[str, Any]]:
    return [doc async for doc in container.read_all_items()]


@pytest.mark.timeout(120)
async def test_a_second_signal_stops_a_follow_at_once(cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path) -> None:
    """The first signal waits for the writes in flight (here: many, into a target of 400 RU/s); the
    second one, sent once the copier said it is stopping, ends it at once with 130."""
    source = await database.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    target = await database.create_container(unique("dst"), partition_key=PartitionKey("/pk"), offer_throughput=400)
    await seed(source, [{"id": f"d{i}", "pk": f"p{i % 20}", "blob": "x" * 20_000} for i in range(400)])
    process = copier(cosmos.connection_string, f"{database.id}/{source.id}", f"{database.id}/{target.id}",
                     "--follow", "--checkpoint", str(tmp_path / "ck.json"), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if await _count(target):  # the copy is writing: its signal handler is in place
                break
            await anyio.sleep(0.1)
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        with anyio.fail_after(30):
            while "stopping" not in (line := await anyio.to_thread.run_sync(process.stderr.readline)):
                assert line, "the copier ended without saying it is stopping"
        code, err = _stop(process, signal.SIGINT)
        assert code == 130, err[-2000:]
        assert await _count(target) < 400  # it did not wait for the rest
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


async def _count(container: ContainerProxy) -> int:
    return sum([n async for n in container.query_items("SELECT VALUE COUNT(1) FROM c")])


async def test_a_copy_of_a_still_source_counts_every_range_alike(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    source = await database.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    target = await database.create_container(unique("dst"), partition_key=PartitionKey("/pk"))
    await seed(source, [{"id": f"d{i}", "pk": f"p{i % 11}"} for i in range(230)])
    result = run_copier(cosmos.connection_string, f"{database.id}/{source.id}", f"{database.id}/{target.id}",
                        "--report", "r.json", "--checkpoint", "ck.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    check = json.loads((tmp_path / "r.json").read_text())["count_check"]
    assert check["checked"] and check["mismatches"] == [] and check["explanation"] is None
    assert len(check["ranges"]) == 4 and sum(r["count"] for r in check["ranges"].values()) == 230
    assert all(r["read"] == r["count"] for r in check["ranges"].values())


def test_the_progress_bar_shows_the_worst_range_behind() -> None:
    stats = RunStatistics(lag={"a": {"documents": 3, "seconds": 1.5}, "b": {"documents": 40, "seconds": None}})
    assert lag_text(stats) == ", behind 40 changes / 1.5 s"
    assert lag_text(RunStatistics()) == ""
    assert lag_text(RunStatistics(lag={"a": {"documents": 0, "seconds": 0.0}})) == ", behind 0 changes / 0.0 s"
