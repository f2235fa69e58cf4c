"""The plan as data: container settings, creation kwargs, comparison, mappings."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from azure.cosmos import PartitionKey

from asyncmig.core.engine.transform import Transform
from asyncmig.vimarsh import plan, transforms
from asyncmig.vimarsh.plan import (
    NEW_CONTAINERS,
    SOURCE_CONTAINERS,
    VALIDATED_CONTAINERS,
    ContainerSpec,
    compare_container,
    container_properties,
    critical_differences,
)

# The table of new containers (docs/vimarsh-migration.md), typed in again independently of the module.
PLANNED_TABLE = [
    ("user_sessions", "/user_id", 7_776_000, 2000),
    ("user_interactions", "/user_id", 15_552_000, 4000),
    ("personalities", "/personality_id", None, 1000),
    ("personality_vectors", "/partition_key", None, 4000),
    ("user_analytics", "/user_id", None, 1000),
    ("content_analytics", "/source", None, 1000),
    ("daily_metrics", "/date", 2_592_000, 1000),
    ("abuse_incidents", "/user_id", None, 1000),
    ("engagement_summary", "/engagement_tier", None, 1000),
    ("content_popularity", "/time_period", 2_592_000, 1000),
    ("incidents_by_content", "/source", None, 1000),
]


PLANNED = {spec.name: spec for spec in VALIDATED_CONTAINERS}


def target_spec(name: str) -> ContainerSpec:
    return PLANNED[name]


def test_eleven_new_containers_exactly_as_a2() -> None:
    assert [(s.name, s.partition_key_path, s.default_ttl, s.autoscale_max) for s in NEW_CONTAINERS] == PLANNED_TABLE
    assert all(s.managed for s in NEW_CONTAINERS)
    assert [s.name for s in NEW_CONTAINERS if s.vector_embedding_path] == ["personality_vectors"]
    assert target_spec("personality_vectors").vector_embedding_path == "/embedding"


def test_users_is_validated_in_place_with_its_own_key() -> None:
    assert len(VALIDATED_CONTAINERS) == 12
    users = target_spec("users")
    assert users in VALIDATED_CONTAINERS
    assert (users.partition_key_path, users.default_ttl, users.autoscale_max, users.managed) == (
        "/partition_key",
        None,
        None,
        False,
    )
    assert len({s.name for s in VALIDATED_CONTAINERS}) == 12


def test_source_containers_and_keys() -> None:
    assert [(s.name, s.partition_key_path, s.managed) for s in SOURCE_CONTAINERS] == [
        ("personality-vectors", "/personality", False),
        ("users", "/partition_key", False),
        ("user_activity", "/partition_key", False),
    ]
    # a rollback may only delete managed containers: never a source container
    assert not {s.name for s in SOURCE_CONTAINERS} & {s.name for s in NEW_CONTAINERS}


def test_specs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        NEW_CONTAINERS[0].default_ttl = 1  # type: ignore[misc]


def test_properties_of_a_ttl_container() -> None:
    props = container_properties(target_spec("user_sessions"), vector_dimensions=768)
    assert props == {
        "id": "user_sessions",
        "partition_key": PartitionKey(path="/user_id", kind="Hash", version=2),
        "default_ttl": 7_776_000,
    }
    assert isinstance(props["partition_key"], PartitionKey)
    assert props["partition_key"].version == 2


def test_properties_without_ttl_have_no_ttl_key_and_no_throughput() -> None:
    for spec in NEW_CONTAINERS:
        props = container_properties(spec, vector_dimensions=768)
        assert ("default_ttl" in props) == (spec.default_ttl is not None)
        assert not {"offer_throughput", "throughput"} & props.keys()


def test_properties_of_personality_vectors() -> None:
    props = container_properties(target_spec("personality_vectors"), vector_dimensions=1536)
    assert props == {
        "id": "personality_vectors",
        "partition_key": PartitionKey(path="/partition_key", kind="Hash", version=2),
        "vector_embedding_policy": {
            "vectorEmbeddings": [
                {
                    "path": "/embedding",
                    "dataType": "float32",
                    "distanceFunction": "cosine",
                    "dimensions": 1536,
                }
            ]
        },
        "indexing_policy": {
            "indexingMode": "consistent",
            "automatic": True,
            "includedPaths": [{"path": "/*"}],
            "excludedPaths": [{"path": '/"_etag"/?'}, {"path": "/embedding/*"}],
            "vectorIndexes": [{"path": "/embedding", "type": "quantizedFlat"}],
        },
    }


def test_vector_container_needs_positive_dimensions() -> None:
    with pytest.raises(ValueError):
        container_properties(target_spec("personality_vectors"), vector_dimensions=0)


def read_output(spec: plan.ContainerSpec, dimensions: int = 768) -> dict[str, Any]:
    """What container.read() returns for a container created from the plan."""
    props = container_properties(spec, vector_dimensions=dimensions)
    out: dict[str, Any] = {
        "id": spec.name,
        "partitionKey": {"paths": [spec.partition_key_path], "kind": "Hash", "version": 2},
        "indexingPolicy": props.get(
            "indexing_policy",
            {
                "indexingMode": "consistent",
                "automatic": True,
                "includedPaths": [{"path": "/*"}],
                "excludedPaths": [{"path": '/"_etag"/?'}],
            },
        ),
        "_rid": "x",
        "_ts": 1,
    }
    if spec.default_ttl is not None:
        out["defaultTtl"] = spec.default_ttl
    if "vector_embedding_policy" in props:
        out["vectorEmbeddingPolicy"] = props["vector_embedding_policy"]
    return out


@pytest.mark.parametrize("spec", VALIDATED_CONTAINERS, ids=lambda s: s.name)
def test_matching_container_has_no_differences(spec: plan.ContainerSpec) -> None:
    assert compare_container(spec, read_output(spec), vector_dimensions=768) == []


def test_wrong_partition_key_is_critical() -> None:
    spec = target_spec("user_interactions")
    props = read_output(spec)
    props["partitionKey"] = {"paths": ["/partition_key"], "kind": "Hash", "version": 2}
    diffs = compare_container(spec, props)
    assert len(diffs) == 1
    assert diffs[0].critical and diffs[0].setting == "partitionKey"
    assert "/partition_key" in diffs[0] and "/user_id" in diffs[0]
    assert critical_differences(diffs) == diffs


def test_multihash_key_is_a_different_key() -> None:
    spec = target_spec("personality_vectors")
    props = read_output(spec)
    props["partitionKey"] = {"paths": ["/personality_id", "/source"], "kind": "MultiHash", "version": 2}
    assert [d.setting for d in critical_differences(compare_container(spec, props))] == ["partitionKey"]


def test_version_1_key_is_critical_for_created_containers_only() -> None:
    spec = target_spec("personality_vectors")
    props = read_output(spec)
    props["partitionKey"] = {"paths": ["/partition_key"], "kind": "Hash"}  # V1: no version reported
    diffs = compare_container(spec, props)
    assert [d.critical for d in diffs] == [True] and "version" in diffs[0]
    users = target_spec("users")
    legacy_users = read_output(users)
    legacy_users["partitionKey"] = {"paths": ["/partition_key"], "kind": "Hash"}
    assert compare_container(users, legacy_users) == []


def test_wrong_and_missing_ttl_are_reported_but_fixable() -> None:
    spec = target_spec("user_sessions")
    wrong = read_output(spec)
    wrong["defaultTtl"] = 86_400
    diffs = compare_container(spec, wrong)
    assert [(d.setting, d.critical) for d in diffs] == [("defaultTtl", False)]
    assert "86400" in diffs[0] and "7776000" in diffs[0]

    missing = read_output(spec)
    del missing["defaultTtl"]  # what the serverless creation script left behind
    assert [d.setting for d in compare_container(spec, missing)] == ["defaultTtl"]

    no_ttl = target_spec("personalities")
    enabled = read_output(no_ttl)
    enabled["defaultTtl"] = -1  # TTL switched on: items with a ttl would expire
    assert [d.setting for d in compare_container(no_ttl, enabled)] == ["defaultTtl"]


def test_vector_container_without_vector_policy() -> None:
    spec = target_spec("personality_vectors")
    bare = {
        "id": "personality_vectors",
        "partitionKey": {"paths": ["/partition_key"], "kind": "Hash", "version": 2},
        "indexingPolicy": {
            "indexingMode": "consistent",
            "automatic": True,
            "includedPaths": [{"path": "/*"}],
            "excludedPaths": [{"path": '/"_etag"/?'}],
        },
    }
    diffs = compare_container(spec, bare, vector_dimensions=768)
    assert [d.setting for d in critical_differences(diffs)] == ["vectorEmbeddingPolicy"]
    messages = " | ".join(diffs)
    assert "/embedding/* is not excluded" in messages and "no vector index" in messages


def test_vector_dimension_and_index_type_mismatch() -> None:
    spec = target_spec("personality_vectors")
    props = read_output(spec, dimensions=1536)
    props["indexingPolicy"]["vectorIndexes"] = [{"path": "/embedding", "type": "diskANN"}]
    diffs = compare_container(spec, props, vector_dimensions=768)
    assert sorted((d.setting, d.critical) for d in diffs) == [
        ("indexingPolicy", False),
        ("vectorEmbeddingPolicy", True),
    ]
    assert compare_container(spec, props) != []  # the index type is wrong even without a dimension


def test_lazy_indexing_is_reported() -> None:
    spec = target_spec("daily_metrics")
    props = read_output(spec)
    props["indexingPolicy"]["indexingMode"] = "lazy"
    assert [d.setting for d in compare_container(spec, props)] == ["indexingPolicy"]


def test_differences_are_plain_strings() -> None:
    spec = target_spec("daily_metrics")
    props = read_output(spec)
    props["defaultTtl"] = 1
    (diff,) = compare_container(spec, props)
    assert isinstance(diff, str)
    assert diff.startswith("daily_metrics: defaultTtl is 1")


def test_mappings() -> None:
    by_source = {m.source: m for m in plan.MAPPINGS}
    assert by_source["personality-vectors"].targets == ("personality_vectors",)
    assert set(by_source["user_activity"].targets) == {"user_sessions", "user_interactions", "user_analytics"}
    assert by_source["users"].targets == ("users",) and by_source["users"].in_place
    assert not by_source["personality-vectors"].in_place
    assert plan.transform_of(by_source["personality-vectors"]) is transforms.VECTORS
    assert plan.transform_of(by_source["user_activity"]) is transforms.ACTIVITY
    assert plan.transform_of(by_source["users"]) is transforms.USERS
    for mapping in plan.MAPPINGS:
        assert isinstance(plan.transform_of(mapping), Transform)
        for target in mapping.targets:
            assert target in PLANNED  # every target is a planned container


def test_expected_figures() -> None:
    assert plan.EXPECTED == plan.ExpectedFigures(vectors=6514, users=18, activity=121, personalities=13)
