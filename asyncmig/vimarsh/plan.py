"""The Vimarsh migration plan as data: source containers, target containers, mappings, expected figures.

Everything the orchestrator, the creator, the validator and the rollback need to agree on lives here
once, so a wrong partition key or TTL cannot creep in through a second copy of the
table. Nothing here talks to Cosmos DB: :func:`container_properties` builds the keyword arguments for
``DatabaseProxy.create_container`` and :func:`compare_container` checks what ``container.read()``
returned, both as plain data.

This module deliberately does not import :mod:`asyncmig.vimarsh.transforms` (the transforms import the
container names from here); a :class:`Mapping` names its transform as a ``module:attribute`` reference
that :func:`transform_of` resolves through :func:`asyncmig.core.engine.transform.load_transform`.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from typing import Any

from azure.cosmos import PartitionKey

from asyncmig.core.engine.transform import Transform, load_transform

# --------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------

DEFAULT_DATABASE = "vimarsh-multi-personality"

# Legacy source containers.
SOURCE_VECTORS = "personality-vectors"
SOURCE_USERS = "users"
SOURCE_ACTIVITY = "user_activity"

# Targets.
USER_SESSIONS = "user_sessions"
USER_INTERACTIONS = "user_interactions"
PERSONALITIES = "personalities"
PERSONALITY_VECTORS = "personality_vectors"
USER_ANALYTICS = "user_analytics"
CONTENT_ANALYTICS = "content_analytics"
DAILY_METRICS = "daily_metrics"
ABUSE_INCIDENTS = "abuse_incidents"
ENGAGEMENT_SUMMARY = "engagement_summary"
CONTENT_POPULARITY = "content_popularity"
INCIDENTS_BY_CONTENT = "incidents_by_content"
USERS = "users"  # kept in place: the same container is source and target

EMBEDDING_PATH = "/embedding"
PRODUCTION_VECTOR_DIMENSIONS = 768


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """One container's planned settings.

    ``autoscale_max`` is the autoscale maximum RU/s for provisioned accounts; ``None`` means the
    migration never sets throughput on this container (it is not created by the migration).
    ``managed`` is True only for containers this migration creates, i.e. the only ones a rollback may
    ever delete.
    """

    name: str
    partition_key_path: str
    default_ttl: int | None
    autoscale_max: int | None
    vector_embedding_path: str | None = None
    managed: bool = True


# The new containers, in the order of docs/vimarsh-migration.md.
NEW_CONTAINERS: tuple[ContainerSpec, ...] = (
    ContainerSpec(USER_SESSIONS, "/user_id", 7_776_000, 2000),
    ContainerSpec(USER_INTERACTIONS, "/user_id", 15_552_000, 4000),
    ContainerSpec(PERSONALITIES, "/personality_id", None, 1000),
    ContainerSpec(PERSONALITY_VECTORS, "/partition_key", None, 4000, vector_embedding_path=EMBEDDING_PATH),
    ContainerSpec(USER_ANALYTICS, "/user_id", None, 1000),
    ContainerSpec(CONTENT_ANALYTICS, "/source", None, 1000),
    ContainerSpec(DAILY_METRICS, "/date", 2_592_000, 1000),
    ContainerSpec(ABUSE_INCIDENTS, "/user_id", None, 1000),
    ContainerSpec(ENGAGEMENT_SUMMARY, "/engagement_tier", None, 1000),
    ContainerSpec(CONTENT_POPULARITY, "/time_period", 2_592_000, 1000),
    ContainerSpec(INCIDENTS_BY_CONTENT, "/source", None, 1000),
)

# `users` stays where it is (PK /partition_key, value = id); it is validated but never created or
# deleted by the migration.
USERS_IN_PLACE = ContainerSpec(USERS, "/partition_key", None, None, managed=False)

# The 12 containers validation checks: the 11 new ones and ``users``, enriched in place.
VALIDATED_CONTAINERS: tuple[ContainerSpec, ...] = (USERS_IN_PLACE, *NEW_CONTAINERS)

# The legacy layout, never deleted by the migration; a rollback recreates a missing one from the
# backup manifest's recorded properties (these specs are the documented fallback).
SOURCE_CONTAINERS: tuple[ContainerSpec, ...] = (
    ContainerSpec(SOURCE_VECTORS, "/personality", None, None, managed=False),
    ContainerSpec(SOURCE_USERS, "/partition_key", None, None, managed=False),
    ContainerSpec(SOURCE_ACTIVITY, "/partition_key", None, None, managed=False),
)

_SOURCE_BY_NAME: dict[str, ContainerSpec] = {spec.name: spec for spec in SOURCE_CONTAINERS}


def source_spec(name: str) -> ContainerSpec:
    """The legacy source container called ``name``.

    :raises KeyError: for a name that is not a legacy source container.
    """
    return _SOURCE_BY_NAME[name]


# --------------------------------------------------------------------------------------------------
# Mappings
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mapping:
    """Which source container feeds which transform, and where its output may land.

    ``in_place`` marks the users mapping: the target is the source container itself, so the
    transform's output replaces (upserts) the documents that were read.
    """

    source: str
    transform_ref: str
    targets: tuple[str, ...]
    in_place: bool = False


MAPPINGS: tuple[Mapping, ...] = (
    Mapping(SOURCE_VECTORS, "asyncmig.vimarsh.transforms:VECTORS", (PERSONALITY_VECTORS,)),
    Mapping(
        SOURCE_ACTIVITY,
        "asyncmig.vimarsh.transforms:ACTIVITY",
        (USER_SESSIONS, USER_INTERACTIONS, USER_ANALYTICS),
    ),
    Mapping(SOURCE_USERS, "asyncmig.vimarsh.transforms:USERS", (USERS,), in_place=True),
)


def transform_of(mapping: Mapping) -> Transform:
    """Resolve the mapping's transform (lazily, so this module stays import-cycle free)."""
    return load_transform(mapping.transform_ref)


# --------------------------------------------------------------------------------------------------
# Expected figures of the production data; shown beside the actual counts, never used alone.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExpectedFigures:
    """The counts the original scripts hard-coded; validation compares source with target and only
    displays these next to the actual figures."""

    vectors: int
    users: int
    activity: int
    personalities: int


EXPECTED_VECTORS = 6514
EXPECTED_USERS = 18
EXPECTED_ACTIVITY = 121
EXPECTED_PERSONALITIES = 13
EXPECTED = ExpectedFigures(EXPECTED_VECTORS, EXPECTED_USERS, EXPECTED_ACTIVITY, EXPECTED_PERSONALITIES)


# --------------------------------------------------------------------------------------------------
# Container properties
# --------------------------------------------------------------------------------------------------

VECTOR_INDEX_TYPE = "quantizedFlat"


def vector_embedding_policy(path: str, dimensions: int) -> dict[str, Any]:
    """The vector embedding policy for one float32 cosine vector field."""
    return {
        "vectorEmbeddings": [
            {"path": path, "dataType": "float32", "distanceFunction": "cosine", "dimensions": dimensions}
        ]
    }


def vector_indexing_policy(path: str) -> dict[str, Any]:
    """Consistent indexing with the vector's numbers excluded (indexing each of them multiplies write
    RU) and a quantizedFlat vector index so ``VectorDistance`` queries are served."""
    return {
        "indexingMode": "consistent",
        "automatic": True,
        "includedPaths": [{"path": "/*"}],
        "excludedPaths": [{"path": '/"_etag"/?'}, {"path": f"{path}/*"}],
        "vectorIndexes": [{"path": path, "type": VECTOR_INDEX_TYPE}],
    }


def container_properties(spec: ContainerSpec, *, vector_dimensions: int) -> dict[str, Any]:
    """Keyword arguments for azure-cosmos aio ``DatabaseProxy.create_container(**kwargs)``.

    Throughput is deliberately absent: the caller adds autoscale (``spec.autoscale_max``) on a
    provisioned account and nothing on a serverless one. ``vector_dimensions`` is detected from the
    data by the caller (768 in production); it is only used for a container with a vector path.

    :raises ValueError: for a non-positive dimension on a vector container.
    """
    properties: dict[str, Any] = {
        "id": spec.name,
        "partition_key": PartitionKey(path=spec.partition_key_path, kind="Hash", version=2),
    }
    if spec.default_ttl is not None:
        properties["default_ttl"] = spec.default_ttl
    if spec.vector_embedding_path is not None:
        if vector_dimensions <= 0:
            raise ValueError(f"vector dimensions must be positive, got {vector_dimensions}")
        properties["vector_embedding_policy"] = vector_embedding_policy(
            spec.vector_embedding_path, vector_dimensions
        )
        properties["indexing_policy"] = vector_indexing_policy(spec.vector_embedding_path)
    return properties


# --------------------------------------------------------------------------------------------------
# Comparing an existing container with the plan
# --------------------------------------------------------------------------------------------------


class Difference(str):
    """A human-readable difference (it *is* the message string) that also carries the setting name
    and whether it is critical.

    Critical means it cannot be corrected on the existing container (partition key, vector embedding
    policy are immutable in Cosmos DB): the run must stop before any data moves. Non-critical
    differences (TTL, indexing policy) can be corrected with ``replace_container``.
    """

    setting: str
    critical: bool

    def __new__(cls, setting: str, message: str, *, critical: bool) -> Difference:
        obj = super().__new__(cls, message)
        obj.setting = setting
        obj.critical = critical
        return obj


def critical_differences(differences: list[Difference]) -> list[Difference]:
    """Only the differences that must stop the run."""
    return [d for d in differences if d.critical]


def _paths(entries: Any) -> set[str]:
    if not isinstance(entries, list):
        return set()
    return {e["path"] for e in entries if isinstance(e, dict) and isinstance(e.get("path"), str)}


def compare_container(
    spec: ContainerSpec,
    properties: MappingABC[str, Any],
    *,
    vector_dimensions: int | None = None,
) -> list[Difference]:
    """Differences between an existing container (``container.read()`` output) and ``spec``.

    An empty list means the container matches and may be reused. ``vector_dimensions`` is checked
    only when given. Default indexing of non-vector containers is not pinned down beyond its mode,
    because Cosmos DB fills in its own defaults.
    """
    name = spec.name
    diffs: list[Difference] = []

    actual_id = properties.get("id")
    if actual_id is not None and actual_id != name:
        diffs.append(Difference("id", f"{name}: container id is {actual_id!r}", critical=True))

    pk = properties.get("partitionKey")
    if not isinstance(pk, MappingABC):
        diffs.append(
            Difference(
                "partitionKey",
                f"{name}: partition key definition missing, expected {spec.partition_key_path}",
                critical=True,
            )
        )
    else:
        paths = pk.get("paths")
        kind = pk.get("kind", "Hash")
        version = pk.get("version") or 1  # Cosmos DB omits the version for V1 keys
        if paths != [spec.partition_key_path] or kind != "Hash":
            diffs.append(
                Difference(
                    "partitionKey",
                    f"{name}: partition key is {kind} {paths!r}, expected Hash [{spec.partition_key_path!r}]",
                    critical=True,
                )
            )
        elif spec.managed and version != 2:
            # V1 keys hash only the first 101 bytes: long "<personality>::<source>" keys would collide.
            diffs.append(
                Difference(
                    "partitionKey",
                    f"{name}: partition key version is {version}, expected 2 (large partition keys)",
                    critical=True,
                )
            )

    ttl = properties.get("defaultTtl")
    if ttl != spec.default_ttl:
        expected = "none" if spec.default_ttl is None else str(spec.default_ttl)
        actual = "none" if ttl is None else str(ttl)
        diffs.append(
            Difference("defaultTtl", f"{name}: defaultTtl is {actual}, expected {expected}", critical=False)
        )

    indexing = properties.get("indexingPolicy")
    indexing = indexing if isinstance(indexing, MappingABC) else {}
    mode = indexing.get("indexingMode")
    if isinstance(mode, str) and mode.lower() != "consistent":
        diffs.append(
            Difference(
                "indexingPolicy", f"{name}: indexingMode is {mode!r}, expected 'consistent'", critical=False
            )
        )

    vector_policy = properties.get("vectorEmbeddingPolicy")
    embeddings = vector_policy.get("vectorEmbeddings") if isinstance(vector_policy, MappingABC) else None
    embeddings = embeddings if isinstance(embeddings, list) else []

    if spec.vector_embedding_path is None:
        if embeddings:
            diffs.append(
                Difference(
                    "vectorEmbeddingPolicy",
                    f"{name}: has a vector embedding policy the plan does not have",
                    critical=False,
                )
            )
        return diffs

    path = spec.vector_embedding_path
    entry = next((e for e in embeddings if isinstance(e, MappingABC) and e.get("path") == path), None)
    if entry is None:
        diffs.append(
            Difference(
                "vectorEmbeddingPolicy",
                f"{name}: no vector embedding policy for {path} (it cannot be added to an existing container)",
                critical=True,
            )
        )
    else:
        wanted: dict[str, Any] = {"dataType": "float32", "distanceFunction": "cosine"}
        if vector_dimensions is not None:
            wanted["dimensions"] = vector_dimensions
        for key, value in wanted.items():
            if entry.get(key) != value:
                diffs.append(
                    Difference(
                        "vectorEmbeddingPolicy",
                        f"{name}: vector {key} for {path} is {entry.get(key)!r}, expected {value!r}",
                        critical=True,
                    )
                )

    if f"{path}/*" not in _paths(indexing.get("excludedPaths")):
        diffs.append(
            Difference(
                "indexingPolicy",
                f"{name}: {path}/* is not excluded from indexing (every vector number would be indexed)",
                critical=False,
            )
        )
    if "/*" not in _paths(indexing.get("includedPaths")) and indexing:
        diffs.append(Difference("indexingPolicy", f"{name}: '/*' is not an included path", critical=False))
    vector_indexes = indexing.get("vectorIndexes")
    vector_indexes = vector_indexes if isinstance(vector_indexes, list) else []
    index = next((v for v in vector_indexes if isinstance(v, MappingABC) and v.get("path") == path), None)
    if index is None:
        diffs.append(Difference("indexingPolicy", f"{name}: no vector index on {path}", critical=False))
    elif index.get("type") != VECTOR_INDEX_TYPE:
        diffs.append(
            Difference(
                "indexingPolicy",
                f"{name}: vector index on {path} is {index.get('type')!r}, expected {VECTOR_INDEX_TYPE!r}",
                critical=False,
            )
        )
    return diffs
