"""One vector-dimension detector for create, backup and validate, with one tie rule."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import DatabaseProxy

from asyncmig.core.files.jsonl import JsonlGzWriter
from asyncmig.phases import backup, create
from asyncmig.phases.validate import MappingCheck, _Expectations
from asyncmig.vimarsh import plan
from asyncmig.vimarsh.dimensions import DimensionTally, vector_length

# 768-dimension vectors and legacy 384-dimension ones, equally many: the tie case.
TIED = [{"id": f"a{i}", "embedding": [0.5] * 768} for i in range(3)] + [
    {"id": f"b{i}", "embedding": [0.25] * 384} for i in range(3)
]
NOT_VECTORS = [{"id": "e", "embedding": []}, {"id": "n", "embedding": None}, {"id": "m"},
               {"id": "s", "embedding": "0.1,0.2"}]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_a_tie_goes_to_the_longer_length_whatever_the_order(order: tuple[int, ...]) -> None:
    groups = [TIED[:3], TIED[3:], NOT_VECTORS]
    tally = DimensionTally()
    for index in order:
        for document in groups[index]:
            tally.add(document.get("embedding"))
    assert tally.most_common() == 768


def test_the_most_common_length_wins_and_empty_lists_are_not_vectors() -> None:
    tally = DimensionTally()
    for value in ([1.0] * 4, [1.0] * 4, [1.0] * 8, [], [], [], None, "x"):
        tally.add(value)
    assert tally.most_common() == 4
    assert DimensionTally().most_common() is None
    assert [vector_length(v) for v in ([1, 2], [], None, "ab", {"a": 1})] == [2, None, None, None, None]


def test_backup_and_validate_detect_the_same_dimension(tmp_path: Path) -> None:
    path = tmp_path / "vectors.jsonl.gz"
    with JsonlGzWriter.open(path) as writer:
        writer.write([*TIED, *NOT_VECTORS])
        writer.commit()
    assert backup.detect_vector_dimensions(path) == 768
    expectations = _Expectations()
    check = MappingCheck(source=plan.SOURCE_VECTORS, read_from="test", targets=(plan.PERSONALITY_VECTORS,),
                         dead_letter_file="-", allow_dead_letters=False)
    for document in [*TIED, *NOT_VECTORS]:
        expectations.expect(plan.PERSONALITY_VECTORS, {**document, "personality_id": "p"}, check)
    assert expectations.detected_dimensions() == 768


async def test_create_detects_the_same_dimension(database: DatabaseProxy) -> None:
    container = await database.create_container(plan.SOURCE_VECTORS, partition_key=PartitionKey("/id"))
    for document in [*TIED[3:], *NOT_VECTORS, *TIED[:3]]:  # the legacy ones first
        await container.upsert_item(document)
    assert await create.detect_vector_dimensions(database) == 768
