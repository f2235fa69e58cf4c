"""Transforms used by the copier tests (imported by the copier subprocess through PYTHONPATH)."""

from __future__ import annotations

from asyncmig.core.engine.transform import DEFAULT_TARGET, Document, Rejected, Routed, strip_system


def poison(document: Document) -> Routed:
    """Leave most documents alone; make a few impossible for Cosmos DB in each way it refuses."""
    doc = strip_system(document)
    n = doc.get("n", 0)
    if n % 100 == 1:
        raise Rejected("test transform refuses n % 100 == 1")
    if n % 100 == 2:
        doc["id"] = f"bad#{doc['id']}"  # '#' is not allowed in an id
    if n % 100 == 3:
        doc["huge"] = "x" * (2 * 1024 * 1024)  # over the 2 MB document limit
    if n % 100 == 4:
        doc["score"] = float("nan")  # not representable in JSON
    return [(DEFAULT_TARGET, doc)]


def prefixed(document: Document) -> Routed:
    """Each document under another id (``t-<id>``): a delete at the source must find the derived one."""
    doc = strip_system(document)
    return [(DEFAULT_TARGET, {**doc, "id": f"t-{doc['id']}", "source_id": doc["id"]})]
