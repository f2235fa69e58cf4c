"""The Cosmos sink against the emulator: planning, writing on both paths, what it dead-letters."""

from __future__ import annotations

from typing import Any

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos._base import _validate_resource
from azure.cosmos.aio import DatabaseProxy

from asyncmig.connection import parse_connection_string
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.sink import CosmosSink, WritePath, refused_by_sdk
from asyncmig.core.engine.governor import Governor
from tests.conftest import Cosmos, needs_emulator
from tests.core.support import contents
from tests.helpers import unique


def _sdk_refusal(document: dict[str, Any]) -> BaseException:
    with pytest.raises((ValueError, TypeError)) as caught:
        _validate_resource(document)  # the SDK's own check, exactly as upsert_item runs it
    return caught.value


def test_only_the_sdks_verdict_on_a_document_counts_as_a_refusal() -> None:
    assert refused_by_sdk(_sdk_refusal({"id": "tab\there"}))
    assert refused_by_sdk(_sdk_refusal({"id": "trailing "}))
    assert refused_by_sdk(_sdk_refusal({"id": 7}))
    assert not refused_by_sdk(ValueError("invalid literal for int() with base 10: 'x'"))  # a bug
    assert not refused_by_sdk(TypeError("unsupported operand"))


@needs_emulator
@pytest.mark.parametrize("path", ["lean", "sdk"])
async def test_batches_per_logical_partition_are_written_and_bad_documents_rejected(
    cosmos: Cosmos, database: DatabaseProxy, path: WritePath
) -> None:
    container = await database.create_container(unique("sink"), partition_key=PartitionKey("/pk"))
    good = [{"id": f"d{i}", "pk": f"p{i % 2}", "n": i} for i in range(6)]
    bad = [{"id": "a/b", "pk": "p0"}, {"pk": "p1"}, {"id": "x" * 300, "pk": "p1"}]
    endpoint = parse_connection_string(cosmos.connection_string)
    async with CosmosSink({"": container}, Governor(), endpoint=endpoint, write_path=path) as sink:
        await sink.open({})
        units, rejected = sink.plan("", [*good, *bad])
        assert {r.document.get("id", "")[:3] for r in rejected} == {"a/b", "", "xxx"}
        if path == "sdk":  # atomic batches per logical partition
            assert sorted(len(u.documents) for u in units) == [3, 3] and all(u.batch for u in units)
        else:  # bulk batches per target physical range, whatever the logical partitions
            ranges = {u.lane for u in units}
            assert len(units) == len(ranges) and sum(len(u.documents) for u in units) == 6
        for unit in units:
            outcome = await sink.write(unit)
            assert outcome.written == len(unit.documents) and not outcome.rejected
    assert await contents(container) == {
        (d["id"], jsoncodec.canonical(d["pk"])): jsoncodec.canonical(d) for d in good
    }
    assert sink.stats.written == len(good) and sink.stats.ru > 0


@needs_emulator
async def test_the_sdk_path_dead_letters_an_id_the_sdk_refuses(cosmos: Cosmos, database: DatabaseProxy) -> None:
    container = await database.create_container(unique("sink"), partition_key=PartitionKey("/pk"))
    endpoint = parse_connection_string(cosmos.connection_string)
    async with CosmosSink({"": container}, Governor(), endpoint=endpoint, write_path="sdk") as sink:
        await sink.open({})
        units, rejected = sink.plan("", [{"id": "ends with a space ", "pk": "p"}])
        assert not rejected
        outcome = await sink.write(units[0])
    assert outcome.written == 0 and len(outcome.rejected) == 1
    assert "refused by the SDK" in outcome.rejected[0].reason


@needs_emulator
async def test_stored_says_which_documents_are_already_in_the_target_as_written(
    cosmos: Cosmos, database: DatabaseProxy
) -> None:
    """What a resumed run asks about the documents a killed run had in flight: read back and
    compared as exact JSON, system properties aside (big integers, -0.0 and unicode included)."""
    container = await database.create_container(unique("stored"), partition_key=PartitionKey("/pk"))
    written = [{"id": "ü-1", "pk": "p", "big": 2**64 + 1, "z": -0.0, "v": [0.1, 1e-7]},
               {"id": "plain", "pk": 7, "n": None},
               {"id": "no-key", "n": 1}]  # an undefined partition key
    endpoint = parse_connection_string(cosmos.connection_string)
    async with CosmosSink({"": container}, Governor(), endpoint=endpoint) as sink:
        await sink.open({})
        for unit in sink.plan("", written)[0]:
            assert (await sink.write(unit)).written == len(unit.documents)
        ru_before = sink.stats.ru
        changed = {**written[1], "n": 0}
        missing = {"id": "never", "pk": "p"}
        assert await sink.stored("", [*written, changed, missing]) == [True, True, True, False, False]
        assert sink.stats.ru > ru_before  # the reads are paid for and counted
