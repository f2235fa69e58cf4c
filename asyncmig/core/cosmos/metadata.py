"""The metadata requests a copy sends besides its reads and writes, over the one transport.

Container and database properties, the physical partition key ranges, a resource's offer
(throughput) and a ``COUNT`` per range: each as ``azure-cosmos`` 4.17.1 sends it, so a copy on the
lean paths never imports the SDK (that import alone is ~60 ms of CPU, some 6 % of what a
6,514-document copy costs). Every refusal comes back as the transport's
:class:`~asyncmig.core.cosmos.transport.CosmosHttpError`, for the caller to classify.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.links import path_from_link
from asyncmig.core.cosmos.transport import CosmosHttpError, Transport

__all__ = ["COUNT_PER_RANGE", "PhysicalRange", "Throughput", "count_documents", "offer_ru", "read_offer", "read_physical_ranges",
           "read_resource"]

_NOT_MODIFIED = 304
_QUERY_HEADERS = {"Content-Type": "application/query+json", "x-ms-documentdb-isquery": "true"}
# What the SDK sends each physical range for a feed-range count (``query_items(..., feed_range=...)``):
# the query as it is, answered per range with that range's count, which it adds up (the gateway does
# not aggregate across ranges itself).
COUNT_PER_RANGE = "SELECT VALUE COUNT(1) FROM c"


@dataclass(frozen=True, slots=True)
class Throughput:
    """Provisioned RU/s (the autoscale maximum when autoscaled), and whose they are."""

    ru: float
    dedicated: bool  # the container's own; False: its database's, shared with its other containers


@dataclass(frozen=True, slots=True)
class PhysicalRange:
    """A physical partition key range: ``id`` addresses requests to it, ``[low, high)`` is the
    effective-partition-key interval it serves (upper-case hex)."""

    id: str
    low: str
    high: str


async def read_resource(transport: Transport, link: str) -> dict[str, Any]:
    """A database's or container's properties (``dbs/{db}`` or ``dbs/{db}/colls/{coll}``).

    :raises CosmosHttpError: the account refused (404: it does not exist).
    """
    reply = await transport.request("GET", path_from_link(link))
    if not reply.ok:
        raise reply.error()
    properties = jsoncodec.loads(reply.body)
    if not isinstance(properties, dict):
        raise CosmosHttpError(reply.status, None, reply.headers, f"the properties of {link} are not an object")
    return properties


async def read_physical_ranges(transport: Transport, link: str, rid: str | None = None) -> list[PhysicalRange]:
    """The container's live partition key ranges, sorted: the ranges feed drained until it answers
    304, as the SDK reads it; a range named as another's parent (split away) is left out.

    :param rid: the container's ``_rid``, sent as the intended collection (a re-created container is refused).
    """
    headers = {"A-IM": "Incremental Feed", "x-ms-max-item-count": "-1"}
    if rid is not None:
        headers["x-ms-cosmos-intended-collection-rid"] = rid
    path = path_from_link(link, "pkranges")
    found: dict[str, dict[str, Any]] = {}
    while True:
        reply = await transport.request("GET", path, headers)
        if reply.status == _NOT_MODIFIED:
            break
        if not reply.ok:
            raise reply.error()
        for entry in jsoncodec.loads(reply.body).get("PartitionKeyRanges", []):
            found[str(entry["id"])] = entry
        etag = reply.headers.get("etag")
        if etag is None or etag == headers.get("If-None-Match"):
            break
        headers = {**headers, "If-None-Match": etag}
    gone = {str(parent) for entry in found.values() for parent in entry.get("parents") or ()}
    return sorted((PhysicalRange(key, str(e["minInclusive"]).upper(), str(e["maxExclusive"]).upper())
                   for key, e in found.items() if key not in gone), key=lambda r: r.low)


async def read_offer(transport: Transport, resource_self: str) -> dict[str, Any] | None:
    """The offer of a database or container (by its ``_self``), or None when it has none of its own.

    :raises CosmosHttpError: the account refused; a serverless account answers 400 (no offers at all).
    """
    query = {"query": "SELECT * FROM root r WHERE r.resource=@link",
             "parameters": [{"name": "@link", "value": resource_self}]}
    headers = dict(_QUERY_HEADERS)
    while True:
        reply = await transport.request("POST", "/offers", headers, jsoncodec.dumps(query))
        if not reply.ok:
            raise reply.error()
        offers = jsoncodec.loads(reply.body).get("Offers") or []
        if offers:
            offer: dict[str, Any] = offers[0]
            return offer
        continuation = reply.headers.get("x-ms-continuation")
        if not continuation:
            return None
        headers = {**_QUERY_HEADERS, "x-ms-continuation": continuation}


def offer_ru(offer: Mapping[str, Any]) -> float:
    """An offer's RU/s: the autoscale maximum when autoscaled, else the manual throughput (0: neither)."""
    content = offer.get("content") or {}
    autoscale = content.get("offerAutopilotSettings") or {}
    return float(autoscale.get("maxThroughput") or content.get("offerThroughput") or 0)


async def count_documents(
    transport: Transport, link: str, rid: str, ranges: list[PhysicalRange], low: str, high: str, *,
    headers: Mapping[str, str] | None = None, on_charge: Callable[[float], None] | None = None,
) -> int:
    """The documents in ``[low, high)``: the per-range ``COUNT`` on every physical range overlapping
    it, scoped to the interval where a range is wider (as the SDK scopes a feed-range query).

    :param ranges: the container's current physical ranges (:func:`read_physical_ranges`).
    :param headers: added to every request (the priority level).
    :raises CosmosHttpError: a range refused (410 after a split: read the ranges again and retry).
    """
    total = 0
    path = path_from_link(link, "docs")
    body = jsoncodec.dumps({"query": COUNT_PER_RANGE})
    for physical in (r for r in ranges if r.low < high and low < r.high):
        scope = {**_QUERY_HEADERS, **(headers or {}), "x-ms-cosmos-intended-collection-rid": rid,
                 "x-ms-documentdb-partitionkeyrangeid": physical.id, "x-ms-read-key-type": "EffectivePartitionKeyRange"}
        if low > physical.low or high < physical.high:
            scope.update({"x-ms-start-epk": max(low, physical.low), "x-ms-end-epk": min(high, physical.high)})
        while True:
            reply = await transport.request("POST", path, scope, body)
            if not reply.ok:
                raise reply.error()
            if on_charge is not None and reply.charge is not None:
                on_charge(reply.charge)
            total += sum(int(count) for count in jsoncodec.loads(reply.body).get("Documents") or [])
            continuation = reply.headers.get("x-ms-continuation")
            if not continuation:
                break
            scope = {**scope, "x-ms-continuation": continuation}
    return total
