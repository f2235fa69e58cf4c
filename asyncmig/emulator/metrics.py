"""Diagnostic response headers a client can ask for: query metrics, index metrics and quota usage.

Cosmos DB adds them only when requested (``x-ms-documentdb-populatequerymetrics``,
``x-ms-cosmos-populateindexmetrics``, ``x-ms-documentdb-populatequotainfo``). The emulator measures
what it can (documents loaded and returned, bytes, wall time) and reports the rest as zero; index
metrics name the paths a query filters or sorts on, as the indexes it used or would need.
"""

from __future__ import annotations

import base64
from typing import Any

from asyncmig.core import jsoncodec
from asyncmig.emulator.costs import IndexingPolicy

QUERY_METRICS = "x-ms-documentdb-query-metrics"
INDEX_UTILIZATION = "x-ms-cosmos-index-utilization"
INDEX_TRANSFORMATION_PROGRESS = "x-ms-documentdb-collection-index-transformation-progress"
RESOURCE_USAGE = "x-ms-resource-usage"
RESOURCE_QUOTA = "x-ms-resource-quota"
_PARTITION_STORAGE_KB = 50 * 1024 * 1024  # 50 GB per physical partition


def query_metrics(*, retrieved: list[int], output: list[bytes], elapsed_ms: float) -> str:
    """The semicolon-separated metrics string Cosmos DB returns for one page of a query."""
    retrieved_size = sum(retrieved)
    output_size = sum(map(len, output))
    fields: list[tuple[str, float | int]] = [
        ("totalExecutionTimeInMs", elapsed_ms), ("queryCompileTimeInMs", 0.0),
        ("queryLogicalPlanBuildTimeInMs", 0.0), ("queryPhysicalPlanBuildTimeInMs", 0.0),
        ("queryOptimizationTimeInMs", 0.0), ("VMExecutionTimeInMs", elapsed_ms), ("indexLookupTimeInMs", 0.0),
        ("documentLoadTimeInMs", 0.0), ("systemFunctionExecuteTimeInMs", 0.0),
        ("userFunctionExecuteTimeInMs", 0.0), ("retrievedDocumentCount", len(retrieved)),
        ("retrievedDocumentSize", retrieved_size), ("outputDocumentCount", len(output)),
        ("outputDocumentSize", output_size), ("writeOutputTimeInMs", 0.0),
        ("indexUtilizationRatio", round(len(output) / len(retrieved), 2) if retrieved else 0.0),
    ]
    return ";".join(f"{name}={value:.2f}" if isinstance(value, float) else f"{name}={value}"
                    for name, value in fields)


def index_utilization(parsed: Any, policy: IndexingPolicy) -> str:
    """Base64 JSON naming the single-path indexes a query uses (or would use, were they not excluded)."""
    paths: list[str] = []
    for node in ([parsed.where] if parsed.where is not None else []) + [expr for expr, _ in parsed.order]:
        _property_paths(node, parsed.alias, paths)
    utilized: list[dict[str, Any]] = []
    potential: list[dict[str, Any]] = []
    for path in dict.fromkeys(paths):
        entry = {"FilterExpression": "", "IndexSpec": f"{path}/?", "FilterPreciseSet": True,
                 "IndexPreciseSet": True, "IndexImpactScore": "High"}
        (utilized if policy.indexes(path) else potential).append(entry)
    body = {"UtilizedSingleIndexes": utilized, "PotentialSingleIndexes": potential,
            "UtilizedCompositeIndexes": [], "PotentialCompositeIndexes": []}
    return base64.b64encode(jsoncodec.dumps(body)).decode()


def _property_paths(node: Any, alias: str, found: list[str]) -> None:
    if not isinstance(node, tuple) or not node:
        return
    path = _path_of(node, alias)
    if path is not None:
        found.append(path)
        return
    for child in node[1:]:
        if isinstance(child, tuple):
            if child and isinstance(child[0], str):
                _property_paths(child, alias, found)
            else:
                for item in child:
                    _property_paths(item, alias, found)


def _path_of(node: Any, alias: str) -> str | None:
    """``/a/b`` for ``c.a.b`` or ``c["a"]["b"]``; None for anything else."""
    steps: list[str] = []
    while node[0] in ("prop", "index"):
        key = node[2] if node[0] == "prop" else (node[2][1] if node[2][0] == "const" else None)
        if not isinstance(key, str | int) or isinstance(key, bool):
            return None
        steps.append(str(key))
        node = node[1]
    if node != ("ident", alias) or not steps:
        return None
    return "/" + "/".join(reversed(steps))


def quota_headers(document_count: int, documents_bytes: int, partitions: int) -> dict[str, str]:
    """Usage and quota of a container, sizes in KB as Cosmos DB reports them."""
    size_kb = -(-documents_bytes // 1024)
    usage = (f"functions=0;storedProcedures=0;triggers=0;documentSize={size_kb // 1024};"
             f"documentsSize={size_kb};documentsCount={document_count};collectionSize={size_kb};")
    storage_kb = _PARTITION_STORAGE_KB * max(1, partitions)
    quota = (f"functions=25;storedProcedures=100;triggers=25;documentSize={storage_kb // 1024};"
             f"documentsSize={storage_kb};documentsCount=-1;collectionSize={storage_kb};")
    return {RESOURCE_USAGE: usage, RESOURCE_QUOTA: quota}
