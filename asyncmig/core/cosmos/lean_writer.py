"""The lean write path: the SDK's upsert and transactional-batch requests, sent with aiohttp.

Why it exists: measured client CPU per 16 KB vector document (docs/measurements.md) is 1.10 ms
for the SDK's ``upsert_item`` and 0.39 ms for ``execute_item_batch`` (90 % of it the standard
library's JSON encoder formatting floats, the batch body encoded twice), against 0.031 ms for the
same batch request signed by hand with bytes orjson had already produced. The SDK offers no hook
to change its encoder, so the sink sends its writes here and keeps the SDK for everything else
(reads, metadata, container creation).

What is sent is what ``azure-cosmos`` 4.17.1 sends (its request headers, batch body and routing), to the same
path, signed by the same algorithm (:mod:`asyncmig.core.cosmos.signing`):

* ``POST /dbs/{db}/colls/{coll}/docs/`` with ``x-ms-version``, ``x-ms-date``, ``authorization``,
  ``x-ms-activity-id``, ``x-ms-documentdb-partitionkey`` (JSON, ASCII-escaped),
  ``x-ms-cosmos-intended-collection-rid``, ``Content-Type``/``Accept: application/json``;
* a transactional batch adds ``x-ms-cosmos-is-batch-request: True``, ``x-ms-cosmos-batch-atomic:
  True``, ``x-ms-cosmos-batch-continue-on-error: False`` and carries
  ``[{"operationType":"Upsert","resourceBody":<document>},...]``, spliced from the document bytes;
* a single upsert adds ``x-ms-documentdb-is-upsert: True`` and ``Prefer: return=minimal`` (the
  SDK's ``no_response=True``) and carries the document bytes;
* a bulk (non-atomic) batch, what the .NET, Java and JavaScript SDKs' bulk modes send and the Python
  SDK cannot: no partition key header but ``x-ms-documentdb-partitionkeyrangeid`` (the target
  physical range), ``x-ms-cosmos-batch-atomic: False``, ``x-ms-cosmos-batch-continue-on-error:
  True``, and every operation naming its own key: ``{"operationType":"Upsert","partitionKey":
  "[\"k\"]","minimalReturnPreference":true,"resourceBody":<document>}`` (the minimal reply as the
  Java SDK asks for it: the JavaScript SDK leaves it out and gets every document echoed back). Each
  operation commits on its own and the reply (200, or 207 when any failed) lists one result per
  operation: :meth:`LeanWriter.bulk` returns them.

Politeness headers (``x-ms-cosmos-priority-level``, ``x-ms-cosmos-throughput-bucket``) go on every
write when the writer is given them (docs/throughput.md).

Left out on purpose: the session token and consistency level (a write needs neither; the SDK's
session tracking serves its own later reads, and asyncmig reads the target through the SDK), and
the SDK's telemetry headers. Writes go to the account URL, not to ``writableLocations[0]``: for a
single-write-region account the global endpoint routes to the write region.

Requests go through :class:`~asyncmig.core.cosmos.transport.Transport`, which authorizes them (the
account key or a Microsoft Entra ID token) and turns a refusal into a
:class:`~asyncmig.core.cosmos.transport.CosmosHttpError` (a
:class:`~asyncmig.core.cosmos.transport.BatchOperationFailed` for a 207), which
:func:`asyncmig.core.cosmos.retry.classify` reads exactly as it reads the SDK's exceptions for the
same reply; aiohttp's connection errors and timeouts propagate unchanged (classified transient).
Like the SDK, a 400/1024 (the container was deleted and re-created under the same name) re-reads the
container's ``_rid`` and retries once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from asyncmig.connection import CosmosEndpoint
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.links import path_from_link
from asyncmig.core.cosmos.metadata import PhysicalRange, read_physical_ranges
from asyncmig.core.cosmos.transport import Authorizer, CosmosHttpError, Response, Transport

__all__ = ["BulkReply", "LeanContainer", "LeanWriter", "PhysicalRange", "bulk_operations", "partition_key_header"]

_BATCH_HEADERS = {
    "x-ms-cosmos-is-batch-request": "True",
    "x-ms-cosmos-batch-atomic": "True",
    "x-ms-cosmos-batch-continue-on-error": "False",
}
_UPSERT_HEADERS = {"x-ms-documentdb-is-upsert": "True", "Prefer": "return=minimal"}
_BULK_HEADERS = {
    "x-ms-cosmos-is-batch-request": "True",
    "x-ms-cosmos-batch-atomic": "False",
    "x-ms-cosmos-batch-continue-on-error": "True",
}
_BATCH_OPERATION = b'{"operationType":"Upsert","resourceBody":'
_COLLECTION_RID_MISMATCH = 1024


def partition_key_header(values: Sequence[Any]) -> str:
    """``x-ms-documentdb-partitionkey`` for a key's component values (``{}`` = undefined).

    The same text the SDK sends: JSON with non-ASCII characters escaped (header values must be
    ASCII), ``["x"]`` for a single key, ``["T","U"]`` for a hierarchical one, ``[{}]`` undefined.
    """
    return json.dumps(list(values), separators=(",", ":"))


def bulk_operations(partition_key: Sequence[Any], documents: Iterable[bytes]) -> list[bytes]:
    """Upserts for a bulk batch, of documents sharing one key: the key as the JSON text of the key
    array, a minimal reply asked for, then each document's bytes spliced in without re-encoding
    (orjson keeps big integers and unicode exact). Each upsert is a new exact-size object: orjson's
    own result holds about a quarter more memory than its length, for as long as the write waits.

    ``minimalReturnPreference`` is what the Java SDK's bulk mode sets when content on write is off:
    the result then carries status, charge and etag but not the stored document, which the copier
    never reads (echoed, a 100-document vector batch's reply was as large as its request).
    """
    key_text = jsoncodec.dumps(jsoncodec.dumps(list(partition_key)).decode())
    head = b'{"operationType":"Upsert","partitionKey":' + key_text + b',"minimalReturnPreference":true,"resourceBody":'
    return [b"".join((head, document, b"}")) for document in documents]


def _operation_results(body: bytes) -> Any:
    """A bulk reply's results, parsed at orjson's speed: only their status fields are read, so the
    exact-integer scan of :func:`jsoncodec.loads` is skipped unless orjson refuses the reply (an
    account that ignores ``minimalReturnPreference`` echoes documents, which may hold such integers)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return jsoncodec.loads(body)


@dataclass(frozen=True, slots=True)
class BulkReply:
    """A bulk batch's answer: the request charge and one result per operation, in order (each a
    dict with ``statusCode``, maybe ``subStatusCode``, ``requestCharge``, ``retryAfterMilliseconds``)."""

    charge: float | None
    results: list[dict[str, Any]]
    headers: Mapping[str, str]


@dataclass(slots=True)
class LeanContainer:
    """A target container as requests address it.

    :ivar link: the SDK's container link, ``dbs/{db}/colls/{coll}`` with names unquoted
        (``ContainerProxy.container_link``).
    :ivar rid: the container's ``_rid``, sent as ``x-ms-cosmos-intended-collection-rid`` so that a
        container deleted and re-created under the same name is refused (400/1024) rather than
        silently written into; updated by :attr:`read_rid` when that happens.
    :ivar read_rid: reads the container again and returns its current ``_rid``.
    """

    link: str
    rid: str
    read_rid: Callable[[], Awaitable[str]]
    path: str = field(init=False)

    def __post_init__(self) -> None:
        # The SDK's path rule: names quoted with "/" safe, left alone for RID-like links.
        self.path = path_from_link(self.link, "docs")


class LeanWriter:
    """Upserts, transactional and bulk batches over one pooled aiohttp session, for every target
    container of one account.

    :param connections: the connection pool size; size it for the sink's concurrency (requests
        beyond it wait for a free connection rather than fail).
    :param insecure: skip TLS verification for a non-loopback endpoint (see :func:`tls_verify`).
    :param authorizer: how requests are authorized; default the endpoint's key, else Entra ID.
    :param politeness: headers sent with every write (priority level, throughput bucket).
    """

    def __init__(self, endpoint: CosmosEndpoint, *, connections: int, insecure: bool = False,
                 authorizer: Authorizer | None = None, politeness: Mapping[str, str] | None = None) -> None:
        self._transport = Transport(endpoint, connections=connections, insecure=insecure, authorizer=authorizer)
        self._politeness = dict(politeness or {})

    async def bulk(self, container: LeanContainer, range_id: str, operations: Sequence[bytes]) -> BulkReply:
        """Send upserts (each from :func:`bulk_operations`) as one non-atomic batch to a physical range.

        :raises CosmosHttpError: the request as a whole was refused (429, 413, 410 for a range that
            was split, ...); per-operation failures are in the reply instead.
        """
        parts = [b"["]
        for operation in operations:
            parts += (operation, b",")
        parts[-1] = b"]"
        body = b"".join(parts)
        headers = {**_BULK_HEADERS, "x-ms-documentdb-partitionkeyrangeid": range_id}
        try:
            response = await self._send(container, headers, body, bulk=True)
        except CosmosHttpError as exc:
            if exc.status != 400 or exc.sub_status != _COLLECTION_RID_MISMATCH:
                raise
            container.rid = await container.read_rid()
            response = await self._send(container, headers, body, bulk=True)
        results = _operation_results(response.body)
        if not isinstance(results, list) or len(results) != len(operations):
            raise CosmosHttpError(response.status, None, response.headers,
                                  f"a bulk reply must list one result per operation ({len(operations)})")
        return BulkReply(response.charge, results, response.headers)

    async def physical_ranges(self, container: LeanContainer) -> list[PhysicalRange]:
        """The container's current physical ranges (see :func:`~asyncmig.core.cosmos.metadata.read_physical_ranges`)."""
        return await read_physical_ranges(self._transport, container.link)

    async def upsert_batch(
        self, container: LeanContainer, partition_key: Sequence[Any], documents: Sequence[bytes]
    ) -> float | None:
        """Upsert documents of one logical partition atomically; returns the request charge.

        :param partition_key: the key's component values, as :func:`partition_key_header` takes them.
        :param documents: each document's compact JSON, spliced into the body without re-encoding.
        :raises BatchOperationFailed: an operation failed (207); nothing was written.
        :raises CosmosHttpError: the batch as a whole was refused (429, 413, ...).
        """
        parts = [b"["]
        for document in documents:
            parts += (_BATCH_OPERATION, document, b"},")
        parts[-1] = b"}]"
        return await self._post(container, partition_key, b"".join(parts), batch=True)

    async def upsert(self, container: LeanContainer, partition_key: Sequence[Any], document: bytes) -> float | None:
        """Upsert one document (its compact JSON); returns the request charge.

        :raises CosmosHttpError: the upsert was refused.
        """
        return await self._post(container, partition_key, document, batch=False)

    async def close(self) -> None:
        await self._transport.close()

    async def _post(
        self, container: LeanContainer, partition_key: Sequence[Any], body: bytes, *, batch: bool
    ) -> float | None:
        key_header = partition_key_header(partition_key)
        try:
            return await self._post_keyed(container, key_header, body, batch=batch)
        except CosmosHttpError as exc:
            if exc.status != 400 or exc.sub_status != _COLLECTION_RID_MISMATCH:
                raise
        container.rid = await container.read_rid()  # as the SDK does: re-read the container, retry once
        return await self._post_keyed(container, key_header, body, batch=batch)

    async def _post_keyed(self, container: LeanContainer, key_header: str, body: bytes, *, batch: bool) -> float | None:
        headers = {**(_BATCH_HEADERS if batch else _UPSERT_HEADERS), "x-ms-documentdb-partitionkey": key_header}
        response = await self._send(container, headers, body, batch=batch)
        return response.charge

    async def _send(self, container: LeanContainer, headers: Mapping[str, str], body: bytes, *,
                    batch: bool = False, bulk: bool = False) -> Response:
        """POST to the container's documents; a refusal is raised (a bulk batch's 207 is not one:
        its operations' results say what failed)."""
        sent = {**headers, **self._politeness, "x-ms-cosmos-intended-collection-rid": container.rid,
                "Content-Type": "application/json"}
        response = await self._transport.request("POST", container.path, sent, body)
        if response.ok or (bulk and response.status == 207):
            return response
        raise response.error(batch=batch)
