"""Definitions Cosmos DB refuses with 400: containers, throughput settings and unsupported resources.

Each check raises :class:`CosmosError` (400) with a message that names the offending setting, so a
definition that the emulator accepts is one a real account accepts too (and the other way round).
"""

from __future__ import annotations

from typing import Any

from asyncmig.core import jsoncodec
from asyncmig.emulator.protocol import CosmosError, bad_request

MAX_PARTITION_KEY_PATHS = 3
MIN_MANUAL_THROUGHPUT = 400
MIN_AUTOSCALE_MAX_THROUGHPUT = 1000
VECTOR_DATA_TYPES = ("float32", "float16", "int8", "uint8")
VECTOR_DISTANCES = ("euclidean", "cosine", "dotproduct")
MAX_VECTOR_DIMENSIONS = {"flat": 505, "quantizedFlat": 4096, "diskANN": 4096}
MAX_EMBEDDING_DIMENSIONS = 4096

# Resource kinds under a database or container that Cosmos DB has and this emulator does not serve.
UNSUPPORTED_RESOURCES = {
    "users": "users and permissions",
    "permissions": "users and permissions",
    "conflicts": "the conflicts feed",
    "sprocs": "stored procedures",
    "triggers": "triggers",
    "udfs": "user-defined functions",
    "attachments": "attachments",
    "clientencryptionkeys": "client encryption keys",
}


def unsupported_resource(segment: str) -> CosmosError:
    feature = UNSUPPORTED_RESOURCES[segment]
    return bad_request(f"This emulator does not support {feature} (/{segment}); Cosmos DB does.")


def check_throughput_headers(headers: Any) -> None:
    """Manual throughput of at least 400 RU/s; an autoscale maximum of at least 1,000, in thousands."""
    manual = headers.get("x-ms-offer-throughput")
    if manual is not None:
        value = _integer(manual, "x-ms-offer-throughput")
        if value < MIN_MANUAL_THROUGHPUT:
            raise bad_request(f"The offer throughput {value} is below the minimum of {MIN_MANUAL_THROUGHPUT} RU/s.")
    autopilot = headers.get("x-ms-cosmos-offer-autopilot-settings")
    if autopilot is not None:
        try:
            settings = jsoncodec.loads(autopilot)
            maximum = settings["maxThroughput"]
        except (ValueError, KeyError, TypeError) as exc:
            raise bad_request(f"x-ms-cosmos-offer-autopilot-settings is not valid: {autopilot!r}") from exc
        check_autoscale_maximum(maximum)


def check_autoscale_maximum(maximum: Any) -> None:
    if type(maximum) is not int or maximum < MIN_AUTOSCALE_MAX_THROUGHPUT or maximum % 1000:
        raise bad_request(f"The autoscale maximum throughput {maximum!r} is invalid: it must be at least "
                          f"{MIN_AUTOSCALE_MAX_THROUGHPUT} RU/s, in increments of 1000.")


def check_container(body: dict[str, Any]) -> None:
    """Everything in a container definition that Cosmos DB validates before creating it."""
    _check_partition_key(body.get("partitionKey"))
    check_default_ttl(body)
    _check_vectors(body.get("vectorEmbeddingPolicy"), body.get("indexingPolicy"))


def check_default_ttl(body: dict[str, Any]) -> None:
    """``defaultTtl`` is absent, -1 (items may set their own ttl) or a positive number of seconds."""
    if "defaultTtl" not in body or body["defaultTtl"] is None:
        return
    ttl = body["defaultTtl"]
    if type(ttl) is not int or not (ttl == -1 or ttl > 0):
        raise bad_request(f"The value of defaultTtl ({ttl!r}) is invalid: it must be -1 or a positive number "
                          "of seconds; leave it out to turn time-to-live off.")


def _check_partition_key(definition: Any) -> None:
    if not isinstance(definition, dict) or not isinstance(definition.get("paths"), list) or not definition["paths"]:
        raise bad_request("A container needs a partitionKey definition with paths.")
    paths = definition["paths"]
    if len(paths) > MAX_PARTITION_KEY_PATHS:
        raise bad_request(f"A hierarchical partition key has at most {MAX_PARTITION_KEY_PATHS} paths; "
                          f"this one has {len(paths)}.")
    if len(paths) > 1 and definition.get("kind") != "MultiHash":
        raise bad_request('A partition key with several paths must be of kind "MultiHash".')
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/") or len(path) < 2 or "*" in path:
            raise bad_request(f"The partition key path {path!r} is invalid: it must look like /property.")


def _check_vectors(policy: Any, indexing: Any) -> None:
    embeddings: dict[str, int] = {}
    if policy is not None:
        entries = policy.get("vectorEmbeddings") if isinstance(policy, dict) else None
        if not isinstance(entries, list):
            raise bad_request('The vector embedding policy needs a "vectorEmbeddings" list.')
        for entry in entries:
            path, dimensions = _check_embedding(entry)
            if path in embeddings:
                raise bad_request(f"The vector embedding policy lists the path {path} twice.")
            embeddings[path] = dimensions
    indexes = indexing.get("vectorIndexes") if isinstance(indexing, dict) else None
    if not indexes:
        return
    if not isinstance(indexes, list):
        raise bad_request("vectorIndexes must be a list.")
    assert isinstance(indexing, dict)
    excluded = {p.get("path") for p in indexing.get("excludedPaths") or () if isinstance(p, dict)}
    for index in indexes:
        index_path = index.get("path") if isinstance(index, dict) else None
        kind = index.get("type") if isinstance(index, dict) else None
        if not isinstance(index_path, str) or index_path not in embeddings:
            raise bad_request(f"The vector index path {index_path!r} is not in the vector embedding policy.")
        if kind not in MAX_VECTOR_DIMENSIONS:
            raise bad_request(f"The vector index type {kind!r} is invalid; use one of {', '.join(MAX_VECTOR_DIMENSIONS)}.")
        if embeddings[index_path] > MAX_VECTOR_DIMENSIONS[kind]:
            raise bad_request(f"A {kind} vector index supports at most {MAX_VECTOR_DIMENSIONS[kind]} dimensions; "
                              f"{index_path} has {embeddings[index_path]}.")
        if not ({f"{index_path}/*", f"{index_path}/?", "/*"} & excluded):
            raise bad_request(f"The vector path {index_path} must be excluded from the indexing policy "
                              f'(add {{"path": "{index_path}/*"}} to excludedPaths).')


def _check_embedding(entry: Any) -> tuple[str, int]:
    if not isinstance(entry, dict):
        raise bad_request("Each vector embedding must be an object.")
    path = entry.get("path")
    if not isinstance(path, str) or not path.startswith("/") or len(path) < 2 or "*" in path or "[]" in path:
        raise bad_request(f"The vector embedding policy has an invalid path {path!r}.")
    data_type = entry.get("dataType", "float32")
    if data_type not in VECTOR_DATA_TYPES:
        raise bad_request(f"The vector data type {data_type!r} for {path} is invalid; "
                          f"use one of {', '.join(VECTOR_DATA_TYPES)}.")
    distance = entry.get("distanceFunction", "cosine")
    if distance not in VECTOR_DISTANCES:
        raise bad_request(f"The vector distance function {distance!r} for {path} is invalid; "
                          f"use one of {', '.join(VECTOR_DISTANCES)}.")
    dimensions = entry.get("dimensions")
    if type(dimensions) is not int or not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS:
        raise bad_request(f"The vector dimensions {dimensions!r} for {path} are invalid: "
                          f"a whole number from 1 to {MAX_EMBEDDING_DIMENSIONS}.")
    return path, dimensions


def _integer(raw: str, name: str) -> int:
    try:
        return int(raw)
    except ValueError as exc:
        raise bad_request(f"{name} must be an integer, got {raw!r}") from exc
