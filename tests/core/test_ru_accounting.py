"""RU accounting: reads are paid for too, and a request that failed without an answer may still
have been executed, so its cost is estimated with the published cost model instead of taken as 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient, DatabaseProxy

from asyncmig.connection import CosmosEndpoint
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos import rucost
from asyncmig.core.cosmos.sink import CosmosSink
from asyncmig.core.cosmos.source import CosmosSource
from asyncmig.core.engine.checkpoint import Checkpoint
from asyncmig.core.engine.deadletter import DeadLetterFile
from asyncmig.core.engine.governor import Governor
from asyncmig.core.engine.pipeline import Pipeline
from asyncmig.core.engine.sink import SinkStatistics
from tests.conftest import Cosmos
from tests.core.memory import MemorySink
from tests.helpers import EmulatorProcess, unique


def _charged(emulator: EmulatorProcess | None, database: str, container: str) -> float | None:
    if emulator is None:
        return None
    return float(emulator.admin("stats")["charged_ru"].get(f"{database}/{container}", 0.0))


async def test_reads_of_a_copy_count_in_its_ru_total(cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path) -> None:
    container = await database.create_container(unique("read"), partition_key=PartitionKey("/pk"))
    for i in range(40):
        await container.upsert_item({"id": f"d{i}", "pk": f"p{i % 5}", "text": "x" * 200})
    before = _charged(cosmos.emulator, database.id, container.id)
    source = CosmosSource(container, page_size=7)
    sink = MemorySink()  # in-process: its writes cost no RU
    with DeadLetterFile(tmp_path / "dead.jsonl") as dead_letters:
        stats = await Pipeline(source, sink, Checkpoint(identity={"t": 1}), tmp_path / "cp.json",
                               dead_letters).run()
    assert stats.written == 40 and sink.stats.ru == 0
    assert source.read_ru > 0 and stats.ru == pytest.approx(source.read_ru)
    if before is not None:  # the emulator's own ledger: what it charged for these reads
        assert source.read_ru == pytest.approx(_charged(cosmos.emulator, database.id, container.id) - before, abs=0.05)


@pytest.fixture(scope="module")
def dropping() -> Iterator[EmulatorProcess]:
    """An emulator that drops ~30 % of document connections (seeded: the same drops every run)."""
    with EmulatorProcess("--partitions", "1", "--fault-rate", "0.3", "--faults", "reset",
                         "--fault-seed", "11") as process:
        yield process


async def test_writes_lost_in_transit_are_charged_their_estimated_cost(dropping: EmulatorProcess) -> None:
    documents = [{"id": f"d{i:02}", "pk": "p", "text": "y" * 300} for i in range(30)]
    size = len(jsoncodec.dumps(documents[0]))
    async with CosmosClient(dropping.endpoint, credential=dropping.key) as client:
        database = await client.create_database(unique("db"))
        container = await database.create_container("c", partition_key=PartitionKey("/pk"))
        async with CosmosSink({"t": container}, Governor(), write_path="lean",
                              endpoint=CosmosEndpoint(dropping.endpoint, dropping.key)) as sink:
            await sink.open({})
            dropping.admin("faults", {"fault_rate": 0})
            [probe], _ = sink.plan("t", [{"id": "probe", "pk": "q", "text": "y" * 300}])
            await sink.write(probe)
            answered = sink.stats.ru  # what one such write costs when the answer arrives
            dropping.admin("faults", {"fault_rate": 0.3})
            before = dropping.admin("stats")["faults_injected"]
            sink.stats = SinkStatistics()
            for document in documents:  # one by one: every request is a single upsert
                [unit], _ = sink.plan("t", [document])
                await sink.write(unit)
            dropped = dropping.admin("stats")["faults_injected"] - before
            paced = sink.governor.budget.statistics().consumed  # the governor paid the same
    assert dropped > 0 and sink.stats.retries == dropped
    assert sink.stats.ru == pytest.approx(len(documents) * answered + dropped * rucost.write(size, 0), abs=0.05)
    assert paced == pytest.approx(answered + sink.stats.ru, abs=0.05)
