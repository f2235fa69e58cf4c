"""The deterministic demo data set: counts, determinism, and the mess it must contain."""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections import Counter
from typing import Any

import pytest

from asyncmig.core import jsoncodec
from asyncmig.vimarsh import demo_data
from asyncmig.vimarsh.demo_data import DemoDataSet
from asyncmig.vimarsh.transforms import ACTIVITY, USERS, VECTORS, slug

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def default() -> DemoDataSet:
    return DemoDataSet()


@pytest.fixture(scope="module")
def vectors(default: DemoDataSet) -> list[dict[str, Any]]:
    return list(default.documents("personality-vectors"))


@pytest.fixture(scope="module")
def users(default: DemoDataSet) -> list[dict[str, Any]]:
    return list(default.documents("users"))


@pytest.fixture(scope="module")
def activity(default: DemoDataSet) -> list[dict[str, Any]]:
    return list(default.documents("user_activity"))


def digest(stream: Any) -> str:
    h = hashlib.sha256()
    for doc in stream:
        h.update(jsoncodec.dumps(doc))
        h.update(b"\n")
    return h.hexdigest()


def test_composition_sums_to_production() -> None:
    assert sum(count for _, _, count in demo_data._GROUPS) == 6514
    assert demo_data.DEFAULT_SESSIONS + demo_data.DEFAULT_INTERACTIONS == 121


def test_production_counts(
    default: DemoDataSet,
    vectors: list[dict[str, Any]],
    users: list[dict[str, Any]],
    activity: list[dict[str, Any]],
) -> None:
    assert (len(vectors), len(users), len(activity)) == (6514, 18, 121)
    f = default.figures
    assert (f.vectors, f.users, f.activity, f.sessions, f.interactions, f.personalities) == (
        6514,
        18,
        121,
        18,
        103,
        13,
    )
    assert f.text_only_bodies == 2955
    assert f.vectors_without_embedding == 415
    assert f.dimensions == 768


def test_figures_match_the_documents(
    default: DemoDataSet, vectors: list[dict[str, Any]], activity: list[dict[str, Any]]
) -> None:
    f = default.figures
    without = sum(1 for d in vectors if d.get("embedding") is None)
    text_only = sum(1 for d in vectors if not d.get("content") and d.get("text"))
    per = Counter(slug(d["personality"]) for d in vectors)
    assert without == f.vectors_without_embedding
    assert text_only == f.text_only_bodies
    assert tuple(sorted(per.items())) == f.vectors_per_personality
    assert tuple(sorted(per)) == f.personality_ids
    kinds = Counter(d["document_type"] for d in activity)
    assert kinds == {"session": f.sessions, "interaction": f.interactions}


def test_thirteen_personalities_after_slugging(vectors: list[dict[str, Any]]) -> None:
    raw = {d["personality"] for d in vectors}
    assert {"krishna", "Krishna", "Lao Tzu", "Marcus Aurelius", "Jesus Christ"} <= raw
    assert len(raw) > 13  # the mess: more spellings than personalities
    assert {slug(p) for p in raw} == {
        "krishna", "buddha", "confucius", "einstein", "lao_tzu", "lincoln", "marcus_aurelius",
        "newton", "rumi", "chanakya", "jesus_christ", "tesla", "muhammad",
    }  # fmt: skip


def test_determinism_same_seed_same_bytes() -> None:
    a = DemoDataSet(seed=11, vectors=300, dimensions=32)
    b = DemoDataSet(seed=11, vectors=300, dimensions=32)
    for name in ("personality-vectors", "users", "user_activity"):
        first = digest(a.documents(name))
        assert first == digest(b.documents(name))
        assert first == digest(a.documents(name))  # every call is a fresh, identical stream
    other = DemoDataSet(seed=12, vectors=300, dimensions=32)
    assert digest(other.documents("personality-vectors")) != digest(a.documents("personality-vectors"))
    assert digest(other.documents("users")) != digest(a.documents("users"))


def test_default_vectors_digest_is_stable(vectors: list[dict[str, Any]]) -> None:
    assert digest(vectors) == digest(DemoDataSet().documents("personality-vectors"))


@pytest.mark.parametrize(
    ("vectors", "dimensions", "users", "sessions", "interactions"),
    [(0, 3, 0, 0, 0), (1, 1, 1, 0, 0), (13, 8, 2, 1, 5), (250, 16, 5, 7, 40), (1000, 1536, 18, 18, 103)],
)
def test_sizes_are_parameters(
    vectors: int, dimensions: int, users: int, sessions: int, interactions: int
) -> None:
    dataset = DemoDataSet(3, vectors=vectors, dimensions=dimensions, users=users, sessions=sessions,
                          interactions=interactions)
    streams = dataset.containers()
    vecs = list(streams["personality-vectors"])
    assert len(vecs) == vectors
    assert len(list(streams["users"])) == users
    acts = list(streams["user_activity"])
    assert len(acts) == sessions + interactions
    assert all(len(d["embedding"]) == dimensions for d in vecs if d.get("embedding") is not None)
    f = dataset.figures
    assert f.personalities == len({slug(d["personality"]) for d in vecs})
    assert f.vectors_without_embedding == sum(1 for d in vecs if d.get("embedding") is None)
    assert len({d["id"] for d in vecs}) == vectors


def test_scaled_up_keeps_all_personalities() -> None:
    f = DemoDataSet(vectors=100_000, dimensions=1536).figures
    assert f.personalities == 13
    assert f.vectors == 100_000
    assert sum(n for _, n in f.vectors_per_personality) == 100_000
    assert abs(f.text_only_bodies - 100_000 * 2955 / 6514) < 4  # per-group rounding
    assert abs(f.vectors_without_embedding - 100_000 * 415 / 6514) < 1


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        DemoDataSet(vectors=-1)
    with pytest.raises(ValueError):
        DemoDataSet(dimensions=0)
    with pytest.raises(ValueError):
        DemoDataSet(users=0, sessions=1)
    with pytest.raises(KeyError):
        DemoDataSet().documents("nope")


def test_missing_personality_option() -> None:
    data = DemoDataSet(vectors=200, dimensions=4, missing_personality=4)
    vecs = list(data.documents("personality-vectors"))
    missing = [d for d in vecs if "personality" not in d]
    null = [d for d in vecs if "personality" in d and d["personality"] is None]
    assert len(missing) + len(null) == 4 and missing and null
    assert "unknown" in data.figures.personality_ids
    assert data.figures.vectors_per_personality[data.figures.personality_ids.index("unknown")] == (
        "unknown",
        4,
    )


# --------------------------------------------------------------------------------------------------
# The mess
# --------------------------------------------------------------------------------------------------


def test_vector_mess_present(vectors: list[dict[str, Any]]) -> None:
    assert sum(1 for d in vectors if "content" not in d and d.get("text")) > 2000
    assert any(d.get("content", "") is None and d.get("text") for d in vectors)  # explicit null content
    assert any("embedding" not in d for d in vectors)
    assert any("embedding" in d and d["embedding"] is None for d in vectors)
    assert any(d.get("has_embedding") is False for d in vectors)
    assert any("source" not in d for d in vectors)
    assert any("source" in d and d["source"] is None for d in vectors)
    assert any(d.get("metadata", {}).get("keywords") for d in vectors)
    assert any(d.get("keywords") for d in vectors)
    assert any(d.get("tags") for d in vectors)
    assert any("tags" in d and d["tags"] is None for d in vectors)
    assert any(d.get("content") and d.get("text") and d["content"] != d["text"] for d in vectors)
    assert any(d.get("embedding") == [0.1] * 768 for d in vectors)  # old placeholder vectors
    nulls = Counter(k for d in vectors for k, v in d.items() if v is None)
    assert len(nulls) >= 5  # explicit nulls in many fields


def test_long_titles_share_their_first_50_characters(vectors: list[dict[str, Any]]) -> None:
    sources = {d["source"] for d in vectors if isinstance(d.get("source"), str)}
    by_prefix: dict[str, set[str]] = {}
    for s in sources:
        by_prefix.setdefault(s[:50], set()).add(s)
    shared = {p: s for p, s in by_prefix.items() if len(s) > 1}
    assert len(shared) >= 3
    keys = {
        VECTORS.apply(d)[0][1]["partition_key"]
        for d in vectors
        if d.get("source") in set().union(*shared.values())
    }
    assert len(keys) >= sum(len(s) for s in shared.values())  # the migration keeps them apart


def test_embeddings_look_like_float32_printed_as_doubles(vectors: list[dict[str, Any]]) -> None:
    emb = next(d["embedding"] for d in vectors if d.get("embedding") and d["embedding"][0] != 0.1)
    assert len(emb) == 768
    assert all(type(x) is float for x in emb)
    assert all(struct.unpack("f", struct.pack("f", x))[0] == x for x in emb)  # exactly float32 values
    assert max(len(repr(x)) for x in emb) >= 15  # long shortest-repr decimals
    assert len(set(emb)) > 600


def test_fragile_values_in_unmapped_fields(vectors: list[dict[str, Any]]) -> None:
    fragile = [d for d in vectors if "catalog_number" in d]
    assert fragile
    doc = fragile[0]
    assert doc["catalog_number"] == 9007199254740993 and doc["catalog_number"] > 2**53
    assert jsoncodec.dumps(doc["relevance_score"]) == b"2100.607537417505"
    assert math.copysign(1.0, doc["score_offset"]) == -1.0
    assert doc["sanskrit_term"] == "धर्म"
    assert "🙏" in doc["note"]
    out = VECTORS.apply(doc)[0][1]
    for key in ("catalog_number", "relevance_score", "score_offset", "sanskrit_term", "note", "metadata"):
        assert jsoncodec.dumps(out["legacy"][key]) == jsoncodec.dumps(doc[key])
    # round trip through exact JSON, as the emulator and backup will do
    assert jsoncodec.dumps(jsoncodec.loads(jsoncodec.dumps(doc))) == jsoncodec.dumps(doc)


def test_users_shaped_like_b12(users: list[dict[str, Any]]) -> None:
    assert len({u["id"] for u in users}) == 18
    for u in users:
        assert UUID4.match(u["id"])
        assert u["partition_key"] == u["id"]
        assert "user_id" not in u and "subscription_tier" not in u
        assert u["document_type"] == "user_profile"
        assert u["profile_picture_url"] is None and u["admin_notes"] is None  # explicit nulls
        assert set(u["usage_stats"]) >= {"total_sessions", "total_cost_usd", "monthly_usage"}


def test_activity_shaped_like_b13(users: list[dict[str, Any]], activity: list[dict[str, Any]]) -> None:
    user_ids = {u["id"] for u in users}
    session_ids = set()
    for d in activity:
        assert {"session_data", "interaction_data", "analytics_data"} <= d.keys()
        assert d["analytics_data"] is None
        assert d["user_id"] in user_ids and d["partition_key"] == d["user_id"]
        if d["document_type"] == "session":
            assert d["interaction_data"] is None and d["session_data"]["status"] == "active"
            session_ids.add(d["session_data"]["session_id"])
        else:
            assert d["session_data"] is None and d["interaction_data"]["user_query"]
    interactions = [d for d in activity if d["document_type"] == "interaction"]
    assert {d["interaction_data"]["session_id"] for d in interactions} <= session_ids
    assert any(d["interaction_data"]["user_rating"] is None for d in interactions)
    assert len({d["id"] for d in activity}) == 121


def test_whole_demo_data_set_migrates_without_rejects(
    vectors: list[dict[str, Any]], users: list[dict[str, Any]], activity: list[dict[str, Any]]
) -> None:
    targets = Counter(VECTORS.apply(d)[0][0] for d in vectors)
    targets.update(USERS.apply(d)[0][0] for d in users)
    targets.update(ACTIVITY.apply(d)[0][0] for d in activity)
    assert targets == {
        "personality_vectors": 6514,
        "users": 18,
        "user_sessions": 18,
        "user_interactions": 103,
    }
