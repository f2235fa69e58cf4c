"""Partition key values and effective partition keys (EPKs), computed as the SDK computes them.

The sink groups documents by target physical range and the emulator places them; both use the
SDK's own ``azure.cosmos.partition_key`` so client and server can never disagree.
"""

from __future__ import annotations

from typing import Any

from azure.cosmos.partition_key import PartitionKey, _Undefined

MIN_EPK = ""
MAX_EPK = "FF"


def partition_key_object(definition: dict[str, Any]) -> PartitionKey:
    kind = definition.get("kind", "Hash")
    paths = definition["paths"]
    return PartitionKey(
        path=paths if kind == "MultiHash" else paths[0], kind=kind, version=definition.get("version", 1)
    )


def effective_partition_key(definition: dict[str, Any], values: list[Any]) -> str:
    """EPK of a partition key value list (the JSON array of the ``x-ms-documentdb-partitionkey`` header)."""
    if values == []:
        return MIN_EPK
    components = [_Undefined() if value == {} else value for value in values]
    return str(partition_key_object(definition)._get_effective_partition_key_string(components))


_MISSING = object()


def _value_at(document: dict[str, Any], path: str) -> Any:
    node: Any = document
    for part in path.strip("/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def partition_key_values(definition: dict[str, Any], document: dict[str, Any]) -> list[Any]:
    """The partition key component values of a document, as on the wire: ``{}`` stands for undefined.

    A ``systemKey`` container (one migrated from the non-partitioned kind: its key path is the
    system's ``/_partitionKey``) keeps documents without a key value in the "empty" partition,
    whose value list is ``[]``; the SDK sends that too.
    """
    values = []
    for path in definition["paths"]:
        value = _value_at(document, path)
        if value is _MISSING and definition.get("systemKey"):
            return []
        values.append({} if value is _MISSING else value)
    return values


def partition_key_problem(definition: dict[str, Any], document: dict[str, Any]) -> str | None:
    """Why Cosmos DB would refuse this document's partition key value, or ``None``.

    A key value must be a string, number, boolean or null (or absent); an object or array is
    refused by the service, so it is caught before a request is spent on it.
    """
    for path in definition["paths"]:
        value = _value_at(document, path)
        if isinstance(value, dict | list):
            kind = "object" if isinstance(value, dict) else "array"
            return (f"partition key {path} holds a JSON {kind}; a partition key value must be a string, "
                    "number, boolean or null: fix the document (or the transform) and restore it from here")
    return None


def same_partition_key(a: list[Any], b: list[Any]) -> bool:
    """Compare two component lists the way Cosmos does: 5 and 5.0 are the same key, True is not 1."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, bool) or isinstance(y, bool):
            if x is not y:
                return False
        elif isinstance(x, int | float) and isinstance(y, int | float):
            if float(x) != float(y):
                return False
        elif x != y:
            return False
    return True
