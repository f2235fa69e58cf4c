"""Addressing by resource id: ``dbs/{rid}/colls/{rid}/docs/{rid}`` as in every ``_self`` link.

The Python SDK uses an item's ``_self`` whenever a dict is passed to ``replace_item`` or
``delete_item``, and other clients follow ``_self`` links from query results. Cosmos accepts a
path that is all names or all RIDs; this module turns a RID path into the name path the
dispatcher serves (the signature was already checked against the path as sent, whose link for
RID paths is the last RID, lower-cased).
"""

from __future__ import annotations

from typing import Any

from asyncmig.emulator.partitioning import effective_partition_key
from asyncmig.emulator.protocol import loads, not_found, partition_key_header
from asyncmig.emulator.store import Store


def to_names(store: Store, segments: list[str], headers: Any) -> list[str]:
    """``segments`` with database, container and document RIDs replaced by their names/ids.

    A path whose database segment names a database is returned unchanged.
    """
    if len(segments) < 2 or segments[0] != "dbs" or store.get_database(segments[1]) is not None:
        return segments
    db_name = store.database_name_by_rid(segments[1])
    if db_name is None:
        return segments  # neither a name nor a RID: the dispatcher answers 404
    names = ["dbs", db_name, *segments[2:]]
    if len(names) < 4 or names[2] != "colls":
        return names
    container = store.container_by_rid(names[3])
    if container is None or container.db != db_name:
        raise not_found("Resource")
    names[3] = container.id
    if len(names) >= 6 and names[4] == "docs":
        names[5] = _document_id(store, container, names[5], headers)
    return names


def _document_id(store: Store, container: Any, rid: str, headers: Any) -> str:
    """The id of the document with this RID in the logical partition the request names.

    Without a partition key header the RID is left in place: the point operation then answers
    400 / 1001, as Cosmos does for a partitioned container.
    """
    values = partition_key_header(headers)
    if values is None:
        return rid
    epk = effective_partition_key(container.partition_key, values)
    for doc_id, body in store.find_docs_by_rid(container.rid, epk, rid):
        if loads(body).get("_rid") == rid:
            return str(doc_id)
    raise not_found("Entity with the specified id")
