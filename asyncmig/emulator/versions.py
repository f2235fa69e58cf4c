"""The all versions and deletes change feed, as on an account with continuous backup.

Every emulated container keeps a versions log (:meth:`Store.put_doc` and the delete methods append
to it), so a client sending ``A-IM: Full-Fidelity Feed`` (the SDKs' ``mode="AllVersionsAndDeletes"``)
gets every create, replace and delete in LSN order, not only the latest version of each document.

Each change has the shape Cosmos DB documents for this mode::

    {"current": {...the version written, with "_lsn"...},
     "metadata": {"operationType": "replace", "lsn": 7, "crts": 1764480000, "previousImageLSN": 5}}

    {"current": {}, "previous": {...the version that was deleted...},
     "metadata": {"operationType": "delete", "lsn": 8, "crts": 1764480001, "previousImageLSN": 7,
                  "timeToLiveExpired": false, "id": "d1", "partitionKey": {"pk": "p1"}}}

Clients should take a delete's id and partition key from ``metadata``: that is what every Cosmos DB
account returns, while ``previous`` is not guaranteed.

As in Cosmos DB, this mode can only start from now (``If-None-Match: *``) or resume from an etag a
previous read returned; reading from the beginning or from a point in time answers 400. Positions
are container-wide LSNs filtered by effective partition key, so the feed works per feed range and
per partition key, and a continuation taken before a split keeps working on the children.
"""

from __future__ import annotations

from typing import Any

from asyncmig.core import jsoncodec
from asyncmig.emulator import costs
from asyncmig.emulator.items import Documents
from asyncmig.emulator.protocol import Reply, bad_request, feed_body, loads, page_size
from asyncmig.emulator.store import ContainerRecord, StoredVersion

FULL_FIDELITY = "full-fidelity feed"  # the A-IM value, compared case-insensitively


def wants_all_versions(headers: Any) -> bool:
    return str(headers.get("a-im", "")).strip().lower() == FULL_FIDELITY


def all_versions_feed(documents: Documents, container: ContainerRecord, headers: Any) -> Reply:
    """One page of the all versions and deletes change feed for the scope the routing headers name."""
    marker = headers.get("if-none-match")
    if not marker:
        raise bad_request("FullFidelity Change Feed must have valid If-None-Match header. Reading all "
                          "versions and deletes from the beginning or from a point in time is not supported: "
                          "start from now or from a continuation.")
    ranges, low, high = documents._scope(container, headers)  # the same routing as every other feed
    rate = documents.admit(container, ranges)
    current = documents.store.current_lsn(container.rid)
    after = current
    if marker != "*":
        try:
            after = int(marker.strip('"'))
        except ValueError as exc:
            raise bad_request(f"invalid change feed continuation {marker!r}") from exc
    limit = page_size(headers) or 1000
    lo = max(low, min(r.min for r in ranges))
    hi = min(high, max(r.max for r in ranges))
    changes = documents.store.versions(container.rid, lo, hi, after, limit) if marker != "*" else []
    if not changes:
        documents.charge(container, ranges, rate, costs.CHANGE_FEED_EMPTY_RU)
        return Reply(304, b"", costs.CHANGE_FEED_EMPTY_RU, {"etag": f'"{current}"'})
    items = [_change(container, change) for change in changes]
    ru = costs.query_page([len(change.body) for change in changes])
    documents.charge(container, ranges, rate, ru)
    etag = changes[-1].lsn if len(changes) >= limit else current
    reply_headers = {"etag": f'"{etag}"', "x-ms-item-count": str(len(items)), "lsn": str(current)}
    if len(ranges) == 1:
        reply_headers["x-ms-documentdb-partitionkeyrangeid"] = ranges[0].id
    return Reply(200, feed_body("Documents", container.rid, items), ru, reply_headers)


def _change(container: ContainerRecord, change: StoredVersion) -> bytes:
    """One change in the documented shape; stored bodies are spliced in unparsed (exact values)."""
    metadata: dict[str, Any] = {"operationType": change.operation, "lsn": change.lsn, "crts": change.ts}
    if change.previous_lsn is not None:
        metadata["previousImageLSN"] = change.previous_lsn
    if change.operation == "delete":
        metadata["timeToLiveExpired"] = False
        metadata["id"] = change.id
        metadata["partitionKey"] = _partition_key(container, change.body)
        return (b'{"current":{},"previous":' + change.body + b',"metadata":' + jsoncodec.dumps(metadata) + b"}")
    current = change.body[:-1] + b',"_lsn":' + str(change.lsn).encode() + b"}"
    return b'{"current":' + current + b',"metadata":' + jsoncodec.dumps(metadata) + b"}"


def _partition_key(container: ContainerRecord, body: bytes) -> dict[str, Any]:
    """The deleted version's partition key as {property path: value}, every level of a hierarchical key."""
    document = loads(body)
    values: dict[str, Any] = {}
    for path in container.partition_key["paths"]:
        node: Any = document
        for part in path.strip("/").split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        values[path.strip("/")] = node
    return values
