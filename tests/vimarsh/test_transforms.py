"""The Vimarsh transforms, one messy case at a time."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from asyncmig.core import jsoncodec
from asyncmig.core.engine.transform import Rejected, Transform
from asyncmig.vimarsh import transforms as t
from asyncmig.vimarsh.transforms import ACTIVITY, USERS, VECTORS, slug

EMBEDDING = [0.012299999594688416, -0.04500000178813934, 2100.607537417505, -0.0, 7]


def vector(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "v1",
        "personality": "krishna",
        "content": "body",
        "source": "Bhagavad Gita As It Is",
        "embedding": list(EMBEDDING),
        "_rid": "abc==",
        "_self": "dbs/x/colls/y/docs/z/",
        "_etag": '"0000"',
        "_attachments": "attachments/",
        "_ts": 1722860000,
    }
    base.update(fields)
    return base


def one(transform: Transform, doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    routed = transform.apply(doc)
    assert len(routed) == 1
    return routed[0]


def vec(doc: dict[str, Any]) -> dict[str, Any]:
    target, out = one(VECTORS, doc)
    assert target == "personality_vectors"
    return out


# --------------------------------------------------------------------------------------------------
# slug
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Lao Tzu", "lao_tzu"),
        ("Krishna", "krishna"),
        ("krishna", "krishna"),
        ("Marcus Aurelius", "marcus_aurelius"),
        ("  Lao   Tzu  ", "lao_tzu"),
        ("Jesus-Christ!!", "jesus_christ"),
        ("__a::b__", "a_b"),
        ("Bhagavad Gita: As It Is (2nd ed.)", "bhagavad_gita_as_it_is_2nd_ed"),
        ("धर्म", "धर्म"),  # the virama (a combining mark) does not split the word
        ("श्रीमद्भगवद्गीता", "श्रीमद्भगवद्गीता"),
        ("Café", "café"),
        ("Cafe\u0301", "café"),  # decomposed spelling gives the same slug (NFKC)
        ("ＫＲＩＳＨＮＡ", "krishna"),  # full-width letters fold (NFKC)
        (":: --", ""),
        (42, "42"),
    ],
)
def test_slug(value: Any, expected: str) -> None:
    assert slug(value) == expected


# --------------------------------------------------------------------------------------------------
# personality-vectors -> personality_vectors
# --------------------------------------------------------------------------------------------------


def test_vector_basic_mapping_and_system_properties() -> None:
    out = vec(vector(chapter=2, verse="Bg. 2.14", title="T", citation="C", created_at="2025-07-29T00:00:00"))
    assert out["id"] == "v1"
    assert out["personality_id"] == "krishna"
    assert out["personality_name"] == "krishna"
    assert out["partition_key"] == "krishna::bhagavad_gita_as_it_is"
    assert out["source"] == "Bhagavad Gita As It Is"
    assert out["foundational_text_ref"] == {
        "source": "Bhagavad Gita As It Is",
        "chapter": 2,
        "verse": "Bg. 2.14",
    }
    assert (out["title"], out["citation"], out["created_at"]) == ("T", "C", "2025-07-29T00:00:00")
    assert out["content_type"] == "verse"
    assert out["category"] == "general"
    assert out["language"] == "English"
    assert out["embedding_model"] == "unknown"
    assert out["topic_tags"] == []
    assert out["migrated_from"] == {"container": "personality-vectors", "_ts": 1722860000}
    assert not {"_rid", "_self", "_etag", "_attachments", "_ts"} & out.keys()
    assert "legacy" not in out  # nothing unmapped
    assert "personality" not in out and "text" not in out


def test_vector_without_ts_has_no_ts_in_migrated_from() -> None:
    doc = vector()
    del doc["_ts"]
    assert vec(doc)["migrated_from"] == {"container": "personality-vectors"}


def test_both_krishna_spellings_become_one_id() -> None:
    lower = vec(vector(personality="krishna"))
    upper = vec(vector(personality="Krishna"))
    assert lower["personality_id"] == upper["personality_id"] == "krishna"
    assert lower["partition_key"] == upper["partition_key"]
    assert upper["personality_name"] == "Krishna"


def test_text_only_body_becomes_content() -> None:
    doc = vector(text="the body lives here")
    del doc["content"]
    out = vec(doc)
    assert out["content"] == "the body lives here"
    assert "legacy" not in out  # text is fully represented by content


@pytest.mark.parametrize("content", [None, ""])
def test_null_or_empty_content_falls_back_to_text(content: str | None) -> None:
    out = vec(vector(content=content, text="from text"))
    assert out["content"] == "from text"


def test_no_body_at_all_gives_empty_content() -> None:
    doc = vector()
    del doc["content"]
    assert vec(doc)["content"] == ""


def test_text_differing_from_content_is_kept_under_legacy() -> None:
    out = vec(vector(content="short", text="short plus purport"))
    assert out["content"] == "short"
    assert out["legacy"] == {"text": "short plus purport"}
    same = vec(vector(content="same", text="same"))
    assert "legacy" not in same


def test_embedding_is_the_same_object_and_bits() -> None:
    doc = vector()
    out = vec(doc)
    assert out["embedding"] is doc["embedding"]
    assert jsoncodec.dumps(out["embedding"]) == jsoncodec.dumps(EMBEDDING)
    assert math.copysign(1.0, out["embedding"][3]) == -1.0
    assert type(out["embedding"][4]) is int  # not converted to float


@pytest.mark.parametrize("missing", ["absent", "null"])
def test_document_without_embedding_is_still_copied(missing: str) -> None:
    doc = vector(has_embedding=False)
    if missing == "absent":
        del doc["embedding"]
    else:
        doc["embedding"] = None
    out = vec(doc)
    assert "embedding" not in out
    assert not t.has_embedding(out)
    assert out["legacy"] == {"has_embedding": False}
    assert t.has_embedding(vec(vector()))


@pytest.mark.parametrize("missing", ["absent", "null"])
def test_missing_personality_is_unknown_and_detectable(missing: str) -> None:
    doc = vector()
    if missing == "absent":
        del doc["personality"]
    else:
        doc["personality"] = None
    out = vec(doc)
    assert out["personality_id"] == "unknown"
    assert "personality_name" not in out
    assert out["partition_key"] == "unknown::bhagavad_gita_as_it_is"
    assert t.personality_unknown(out)
    assert t.personality_missing(out)


def test_literal_unknown_and_unsluggable_personality() -> None:
    literal = vec(vector(personality="Unknown"))
    assert literal["personality_id"] == "unknown" and literal["personality_name"] == "Unknown"
    assert t.personality_unknown(literal) and not t.personality_missing(literal)
    symbols = vec(vector(personality="???"))
    assert symbols["personality_id"] == "unknown" and symbols["personality_name"] == "???"
    assert not t.personality_unknown(vec(vector()))


@pytest.mark.parametrize("missing", ["absent", "null"])
def test_missing_source_gives_unknown_partition(missing: str) -> None:
    doc = vector(chapter=3)
    if missing == "absent":
        del doc["source"]
    else:
        doc["source"] = None
    out = vec(doc)
    assert out["partition_key"] == "krishna::unknown"
    assert "source" not in out
    assert out["foundational_text_ref"] == {"source": None, "chapter": 3, "verse": None}


def test_empty_source_is_kept_but_partition_says_unknown() -> None:
    out = vec(vector(source=""))
    assert out["source"] == ""
    assert out["partition_key"] == "krishna::unknown"


def test_long_titles_sharing_50_characters_get_distinct_partition_keys() -> None:
    prefix = "The Holy Bible, Authorized King James Version (1611): The Gospel According to Saint "
    a = vec(vector(personality="Jesus Christ", source=prefix + "Matthew"))
    b = vec(vector(personality="Jesus Christ", source=prefix + "John"))
    assert (prefix + "Matthew")[:50] == (prefix + "John")[:50]
    assert a["partition_key"] != b["partition_key"]
    assert a["partition_key"].endswith("saint_matthew")  # no truncation
    assert b["source"] == prefix + "John"


def test_separator_inside_names_cannot_make_keys_ambiguous() -> None:
    a = vec(vector(personality="a::b", source="c"))
    b = vec(vector(personality="a", source="b::c"))
    assert a["partition_key"] == "a_b::c"
    assert b["partition_key"] == "a::b_c"
    assert a["partition_key"].count("::") == b["partition_key"].count("::") == 1


def test_unicode_source_in_partition_key() -> None:
    out = vec(vector(source="श्रीमद्भगवद्गीता"))
    assert out["partition_key"] == "krishna::श्रीमद्भगवद्गीता"


def test_partition_key_over_the_cosmos_limit_is_rejected_not_truncated() -> None:
    with pytest.raises(Rejected, match="2048 bytes"):
        VECTORS.apply(vector(source="x" * 3000))


def test_vector_without_id_is_rejected() -> None:
    doc = vector()
    del doc["id"]
    with pytest.raises(Rejected, match="no id"):
        VECTORS.apply(doc)


def test_topic_tags_union_in_first_seen_order() -> None:
    out = vec(
        vector(
            metadata={
                "topic_tags": ["dharma", "karma"],
                "keywords": ["karma", "yoga"],
                "source_file": "f.txt",
            },
            tags=["duty", "dharma"],
            keywords="peace",
        )
    )
    assert out["topic_tags"] == ["dharma", "karma", "duty", "peace", "yoga"]
    # metadata is kept whole (untouched) under legacy; tags/keywords are fully mapped
    assert out["legacy"] == {
        "metadata": {"topic_tags": ["dharma", "karma"], "keywords": ["karma", "yoga"], "source_file": "f.txt"}
    }


def test_topic_tags_keep_values_python_would_consider_equal() -> None:
    out = vec(vector(tags=[1, 1.0, True, {"a": 1}, {"a": 1}]))
    assert jsoncodec.dumps(out["topic_tags"]) == b'[1,1.0,true,{"a":1}]'


def test_unreadable_tags_are_kept_under_legacy() -> None:
    out = vec(vector(tags={"weird": "shape"}, keywords=5))
    assert out["topic_tags"] == []
    assert out["legacy"] == {"tags": {"weird": "shape"}, "keywords": 5}


def test_unknown_fields_go_under_legacy_untouched() -> None:
    extra = {
        "domain": "spiritual",
        "source_metadata": {"url": "https://x", "license": None},
        "authority_level": "primary",
        "has_embedding": True,
        "embedding_dimensions": 768,
        "_ttl": 5,  # a user field with an underscore is not a system property
        "partition_key": "krishna::old",  # collides with a target key: kept, not overwritten
        "legacy": {"older": 1},
    }
    out = vec(vector(**extra))
    assert out["legacy"] == extra
    assert out["partition_key"] == "krishna::bhagavad_gita_as_it_is"


def test_fragile_values_pass_through_bit_for_bit() -> None:
    fragile = {
        "catalog_number": 9007199254740993,
        "huge": 2**70,
        "relevance_score": 2100.607537417505,
        "score_offset": -0.0,
        "sanskrit_term": "धर्म",
        "note": "🕉️ शान्ति 🙏",
        "nested": {"n": 9007199254740993, "f": 2100.607537417505, "z": -0.0, "null": None},
    }
    out = vec(vector(**fragile))
    assert jsoncodec.dumps(out["legacy"]) == jsoncodec.dumps(fragile)
    assert out["legacy"]["catalog_number"] == 9007199254740993
    assert math.copysign(1.0, out["legacy"]["score_offset"]) == -1.0
    assert out["legacy"]["nested"]["null"] is None  # nested nulls are not dropped
    # and the target document survives an exact JSON round trip (integers up to 64 bits: see
    # test_demo_data for the emulator-bound values; orjson parses wider integers as floats)
    del out["legacy"]["huge"]
    assert jsoncodec.dumps(jsoncodec.loads(jsoncodec.dumps(out))) == jsoncodec.dumps(out)


def test_top_level_nulls_dropped_and_defaults_apply_to_nulls() -> None:
    out = vec(
        vector(
            title=None,
            chapter=None,
            sanskrit=None,
            category=None,
            language=None,
            content_type=None,
            embedding_model=None,
            integration_date=None,
        )
    )
    assert None not in out.values()
    assert "title" not in out and "sanskrit" not in out
    assert (out["category"], out["language"], out["content_type"], out["embedding_model"]) == (
        "general",
        "English",
        "verse",
        "unknown",
    )
    assert "legacy" not in out  # an unmapped null carries no value


def test_existing_values_beat_defaults() -> None:
    out = vec(vector(content_type="manual_download", category="x", language="Sanskrit", embedding_model="m"))
    assert (out["content_type"], out["category"], out["language"], out["embedding_model"]) == (
        "manual_download",
        "x",
        "Sanskrit",
        "m",
    )


def test_vectors_transform_is_pure() -> None:
    doc = vector(metadata={"keywords": ["a"]}, tags=["b"], extra={"deep": [1, 2]})
    before = jsoncodec.dumps(doc)
    first = jsoncodec.canonical(vec(doc))
    second = jsoncodec.canonical(vec(copy.deepcopy(doc)))
    assert first == second
    assert jsoncodec.dumps(doc) == before  # input not mutated


# --------------------------------------------------------------------------------------------------
# user_activity -> user_sessions / user_interactions / user_analytics
# --------------------------------------------------------------------------------------------------

USER = "6c1e2a9d-0000-4000-8000-000000000001"


def activity(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "a1",
        "partition_key": USER,
        "user_id": USER,
        "document_type": "interaction",
        "timestamp": "2025-08-01T10:00:00.000001",
        "session_data": None,
        "interaction_data": None,
        "analytics_data": None,
        "_ts": 1722900000,
        "_etag": '"1"',
    }
    base.update(fields)
    return base


INTERACTION_DATA = {
    "session_id": "s-1",
    "sequence": 3,
    "user_query": "What is dharma?",
    "personality_used": "Lao Tzu",
    "response_text": "The Tao ...",
    "response_time_ms": 1234,
    "model_used": "gemini-flash",
    "input_tokens": 12,
    "output_tokens": 340,
    "cost_usd": 0.000123075,
    "user_rating": None,
    "was_bookmarked": False,
    "content_themes": ["spiritual"],
}


def test_session_mapping() -> None:
    doc = activity(
        document_type="session",
        session_data={
            "session_id": "s-1",
            "start_time": "2025-08-01T09:00:00",
            "status": "active",
            "platform": "web",
        },
    )
    target, out = one(ACTIVITY, doc)
    assert target == "user_sessions"
    assert out == {
        "id": "a1",
        "user_id": USER,
        "document_type": "user_session",
        "session_id": "s-1",
        "start_time": "2025-08-01T09:00:00",
        "status": "active",
        "platform": "web",
        "created_at": "2025-08-01T10:00:00.000001",
        "migrated_from": {"container": "user_activity", "_ts": 1722900000},
    }


@pytest.mark.parametrize("document_type", ["session", "User_Session", "SESSION_START"])
def test_session_with_null_session_data_does_not_crash(document_type: str) -> None:
    target, out = one(ACTIVITY, activity(document_type=document_type))
    assert target == "user_sessions"
    assert out["session_id"] == "a1"  # falls back to the document id
    assert out["start_time"] == "2025-08-01T10:00:00.000001"  # falls back to timestamp
    assert "status" not in out
    if document_type != "session":
        assert out["legacy"] == {"document_type": document_type}  # unusual type kept
    else:
        assert "legacy" not in out


def test_session_data_alone_routes_to_sessions() -> None:
    target, _ = one(ACTIVITY, activity(document_type=None, session_data={"session_id": "s"}))
    assert target == "user_sessions"


def test_session_data_keys_that_clash_with_mapped_fields_go_to_legacy() -> None:
    doc = activity(document_type="session", session_data={"session_id": "s", "user_id": "other", "id": "x"})
    _, out = one(ACTIVITY, doc)
    assert out["id"] == "a1" and out["user_id"] == USER
    assert out["legacy"] == {"session_data": {"user_id": "other", "id": "x"}}


def test_interaction_mapping() -> None:
    target, out = one(ACTIVITY, activity(interaction_data=dict(INTERACTION_DATA)))
    assert target == "user_interactions"
    assert out == {
        "id": "a1",
        "interaction_id": "a1",
        "user_id": USER,
        "document_type": "user_interaction",
        "session_id": "s-1",
        "sequence_number": 3,
        "timestamp": "2025-08-01T10:00:00.000001",
        "user_query": "What is dharma?",
        "response_text": "The Tao ...",
        "personality_used": "Lao Tzu",
        "response_time_ms": 1234,
        "model_used": "gemini-flash",
        "was_bookmarked": False,
        "content_themes": ["spiritual"],
        "personality_id": "lao_tzu",
        "cost_data": {
            "input_tokens": 12,
            "output_tokens": 340,
            "cost_usd": 0.000123075,
            "model_used": "gemini-flash",
        },
        "migrated_from": {"container": "user_activity", "_ts": 1722900000},
    }


def test_interaction_with_null_interaction_data_does_not_crash() -> None:
    target, out = one(ACTIVITY, activity(document_type="interaction", interaction_data=None))
    assert target == "user_interactions"
    assert out["interaction_id"] == "a1"
    assert "cost_data" not in out and "personality_id" not in out
    assert "legacy" not in out


def test_interaction_extra_fields_and_other_blocks_are_kept() -> None:
    data = dict(INTERACTION_DATA, tokens_cached=5, experiment={"arm": "b", "z": -0.0})
    doc = activity(
        interaction_data=data, analytics_data={"x": 1}, conversation_data={"c": 1}, session_id="s-old"
    )
    _, out = one(ACTIVITY, doc)
    assert out["legacy"] == {
        "conversation_data": {"c": 1},
        "session_id": "s-old",  # differs from interaction_data.session_id
        "analytics_data": {"x": 1},
        "interaction_data": {"tokens_cached": 5, "experiment": {"arm": "b", "z": -0.0}},
    }
    assert math.copysign(1.0, out["legacy"]["interaction_data"]["experiment"]["z"]) == -1.0


def test_interaction_session_id_falls_back_to_top_level() -> None:
    data = {k: v for k, v in INTERACTION_DATA.items() if k != "session_id"}
    _, out = one(ACTIVITY, activity(interaction_data=data, session_id="s-top"))
    assert out["session_id"] == "s-top"
    assert "legacy" not in out


def test_interaction_personality_spellings_share_an_id() -> None:
    ids = {
        one(ACTIVITY, activity(interaction_data=dict(INTERACTION_DATA, personality_used=p)))[1][
            "personality_id"
        ]
        for p in ("krishna", "Krishna", " KRISHNA ")
    }
    assert ids == {"krishna"}


def test_analytics_snapshot_goes_to_user_analytics() -> None:
    data = {"queries": 5, "big": 9007199254740993}
    target, out = one(ACTIVITY, activity(document_type="analytics_snapshot", analytics_data=data))
    assert target == "user_analytics"
    assert out["analytics_data"] is data
    assert out["document_type"] == "user_analytics"
    assert out["user_id"] == USER
    assert "legacy" not in out


def test_untyped_document_with_only_analytics_data_goes_to_analytics() -> None:
    target, out = one(ACTIVITY, activity(document_type=None, analytics_data={"q": 1}))
    assert target == "user_analytics"


@pytest.mark.parametrize("user_id", ["absent", None, "", "  "])
def test_activity_without_user_id_is_rejected(user_id: Any) -> None:
    doc = activity(interaction_data=dict(INTERACTION_DATA))
    if user_id == "absent":
        del doc["user_id"]
    else:
        doc["user_id"] = user_id
    with pytest.raises(Rejected) as info:
        ACTIVITY.apply(doc)
    assert info.value.reason == (
        "user_activity document has no user_id; cannot choose a partition in user_sessions/user_interactions"
    )


def test_activity_partition_key_kept_only_when_it_differs() -> None:
    _, same = one(ACTIVITY, activity())
    assert "legacy" not in same
    _, other = one(ACTIVITY, activity(partition_key="someone-else"))
    assert other["legacy"] == {"partition_key": "someone-else"}


def test_activity_unknown_top_level_fields_go_to_legacy() -> None:
    _, out = one(ACTIVITY, activity(created_at="c", experiment_flag=True, count=2**64 + 1))
    assert out["legacy"] == {"created_at": "c", "experiment_flag": True, "count": 2**64 + 1}
    assert jsoncodec.dumps(out["legacy"]["count"]) == b"18446744073709551617"


def test_non_dict_data_block_is_kept_whole() -> None:
    target, out = one(ACTIVITY, activity(document_type="interaction", interaction_data="corrupt"))
    assert target == "user_interactions"
    assert out["legacy"] == {"interaction_data": "corrupt"}


def test_activity_transform_is_pure() -> None:
    doc = activity(interaction_data=dict(INTERACTION_DATA, extra=[1]))
    before = jsoncodec.dumps(doc)
    assert jsoncodec.canonical(one(ACTIVITY, doc)[1]) == jsoncodec.canonical(
        one(ACTIVITY, copy.deepcopy(doc))[1]
    )
    assert jsoncodec.dumps(doc) == before


# --------------------------------------------------------------------------------------------------
# users -> users (in place)
# --------------------------------------------------------------------------------------------------


def user(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": USER,
        "partition_key": USER,
        "email": "a@example.com",
        "job_title": None,
        "usage_stats": {"total_cost_usd": 0.0, "favorite_personalities": []},
        "_rid": "r",
        "_ts": 1,
        "_etag": '"e"',
    }
    base.update(fields)
    return base


def test_user_enriched_in_place_keeping_its_body() -> None:
    target, out = one(USERS, user())
    assert target == "users"
    assert out == {
        "id": USER,
        "partition_key": USER,
        "email": "a@example.com",
        "job_title": None,  # explicit nulls of the user body are kept
        "usage_stats": {"total_cost_usd": 0.0, "favorite_personalities": []},
        "user_id": USER,
        "subscription_tier": "free",
        "profile_version": "1.0",
    }


def test_existing_user_values_win() -> None:
    _, out = one(USERS, user(user_id="legacy-id", subscription_tier="premium", profile_version="2.0"))
    assert (out["user_id"], out["subscription_tier"], out["profile_version"]) == (
        "legacy-id",
        "premium",
        "2.0",
    )


def test_explicit_null_counts_as_present_for_users() -> None:
    _, out = one(USERS, user(subscription_tier=None))
    assert out["subscription_tier"] is None
    assert out["profile_version"] == "1.0"


def test_users_transform_is_idempotent() -> None:
    _, once = one(USERS, user())
    _, twice = one(USERS, once)
    assert jsoncodec.dumps(once) == jsoncodec.dumps(twice)


def test_user_without_id_is_rejected() -> None:
    doc = user()
    del doc["id"]
    with pytest.raises(Rejected):
        USERS.apply(doc)


def test_transform_identities() -> None:
    assert {(x.name, x.version) for x in (VECTORS, ACTIVITY, USERS)} == {
        ("vimarsh.personality_vectors", "1"),
        ("vimarsh.user_activity", "1"),
        ("vimarsh.users", "1"),
    }
