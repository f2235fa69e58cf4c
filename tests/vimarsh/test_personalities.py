"""The personalities generator."""

from __future__ import annotations

import random
from typing import Any

import pytest

from asyncmig.core import jsoncodec
from asyncmig.vimarsh.demo_data import DemoDataSet
from asyncmig.vimarsh.personalities import PersonalityAccumulator, domain_of, generate_personalities
from asyncmig.vimarsh.transforms import VECTORS

STAMP = "2025-08-05T12:00:00Z"


def migrated(i: int, personality: Any, source: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": f"v{i}", "content": "x", "embedding": [0.1]}
    if personality is not None:
        doc["personality"] = personality
    if source is not None:
        doc["source"] = source
    return VECTORS.apply(doc)[0][1]


SAMPLE = [
    migrated(0, "krishna", "Bhagavad Gita As It Is"),
    migrated(1, "Krishna", "Srimad Bhagavatam"),
    migrated(2, "Krishna", "Bhagavad Gita As It Is"),
    migrated(3, "krishna", None),
    migrated(4, "Lao Tzu", "Tao Te Ching"),
    migrated(5, "Newton", "Opticks"),
    migrated(6, "Lincoln", "Speeches"),
    migrated(7, "Zeno of Citium", "Fragments"),
    migrated(8, "zeno of citium", "Fragments"),
    migrated(9, "Zeno of  Citium", "Fragments"),
    migrated(10, None, "Orphan Work"),
]


def by_id(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in docs}


def test_one_document_per_distinct_personality_id() -> None:
    docs = generate_personalities(SAMPLE, STAMP)
    assert [d["id"] for d in docs] == ["krishna", "lao_tzu", "lincoln", "newton", "unknown", "zeno_of_citium"]
    for d in docs:
        assert d["id"] == d["personality_id"]
        assert d["document_type"] == "personality_config"
        assert d["created_at"] == d["updated_at"] == STAMP
        assert d["description"]


def test_counts_sources_and_names() -> None:
    docs = by_id(generate_personalities(SAMPLE, STAMP))
    krishna = docs["krishna"]
    assert krishna["vector_count"] == 4
    assert krishna["associated_sources"] == [
        "Bhagavad Gita As It Is",
        "Srimad Bhagavatam",
    ]  # distinct, sorted
    assert krishna["display_name"] == "Lord Krishna"
    assert docs["lao_tzu"]["display_name"] == "Lao Tzu"
    # not in the table: the most common spelling (ties broken alphabetically) names it
    assert docs["zeno_of_citium"]["display_name"] == "Zeno of  Citium"
    assert docs["zeno_of_citium"]["vector_count"] == 3
    assert docs["zeno_of_citium"]["associated_sources"] == ["Fragments"]


def test_domains() -> None:
    docs = by_id(generate_personalities(SAMPLE, STAMP))
    assert docs["krishna"]["domain"] == "spiritual"
    assert docs["lao_tzu"]["domain"] == "spiritual"
    assert docs["newton"]["domain"] == "scientific"
    assert docs["lincoln"]["domain"] == "historical"
    assert docs["zeno_of_citium"]["domain"] == "general"
    expected = {
        "spiritual": ["krishna", "buddha", "jesus_christ", "muhammad", "rumi", "lao_tzu"],
        "philosophical": ["confucius", "marcus_aurelius", "chanakya"],
        "scientific": ["einstein", "newton", "tesla"],
        "historical": ["lincoln"],
        "general": ["shiva", "unknown"],
    }
    for domain, ids in expected.items():
        assert {domain_of(pid) for pid in ids} == {domain}


def test_unknown_personality_exists_but_is_inactive() -> None:
    docs = by_id(generate_personalities(SAMPLE, STAMP))
    assert docs["unknown"]["vector_count"] == 1
    assert docs["unknown"]["is_active"] is False
    assert all(d["is_active"] for pid, d in docs.items() if pid != "unknown")


def test_output_does_not_depend_on_read_order() -> None:
    expected = jsoncodec.canonical(generate_personalities(SAMPLE, STAMP))
    rng = random.Random(7)
    for _ in range(5):
        shuffled = list(SAMPLE)
        rng.shuffle(shuffled)
        assert jsoncodec.canonical(generate_personalities(shuffled, STAMP)) == expected


def test_document_without_personality_id_is_refused() -> None:
    with pytest.raises(ValueError, match="personality_id"):
        PersonalityAccumulator().add({"id": "x"})


def test_counts_helper() -> None:
    acc = PersonalityAccumulator()
    acc.add_all(SAMPLE)
    assert acc.counts()["krishna"] == 4
    assert sum(acc.counts().values()) == len(SAMPLE)


def test_demo_data_gives_thirteen_personalities() -> None:
    data = DemoDataSet(vectors=6514, dimensions=4)
    acc = PersonalityAccumulator()
    for doc in data.documents("personality-vectors"):
        acc.add(VECTORS.apply(doc)[0][1])
    docs = acc.documents(STAMP)
    assert len(docs) == 13 == data.figures.personalities
    assert tuple((d["id"], d["vector_count"]) for d in docs) == data.figures.vectors_per_personality
    assert sum(d["vector_count"] for d in docs) == 6514
    assert {d["display_name"] for d in docs} >= {"Lord Krishna", "Lao Tzu", "Marcus Aurelius", "Jesus Christ"}
    assert all(d["domain"] != "general" for d in docs)  # all 13 are in the built-in table
