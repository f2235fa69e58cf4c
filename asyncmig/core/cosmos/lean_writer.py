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
  SDK's ``no_response=True``) and carries the document bytes.

Left out on purpose: the session token and consistency level (a write needs neither; the SDK's
session tracking serves its own later reads, and asyncmig reads the target through the SDK), and
the SDK's telemetry headers. Writes go to the account URL, not to ``writableLocations[0]``: for a
single-write-region account the global endpoint routes to the write region.

Failures are raised as the exceptions the SDK raises for the same response
(:class:`~azure.cosmos.exceptions.CosmosHttpResponseError` and its 404/409/412 subclasses, or
:class:`~azure.cosmos.exceptions.CosmosBatchOperationError` for a 207), so
:func:`asyncmig.core.cosmos.retry.classify` treats both write paths alike; aiohttp's connection errors and
timeouts propagate unchanged (classified transient). Like the SDK, a 400/1024 (the container was
deleted and re-created under the same name) re-reads the container's ``_rid`` and retries once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from azure.core.utils import CaseInsensitiveDict
from azure.cosmos._base import GetPathFromLink
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosBatchOperationError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)
from yarl import URL

from asyncmig import __version__
from asyncmig.connection import CosmosEndpoint, tls_verify
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos import signing

__all__ = ["LeanContainer", "LeanWriter", "partition_key_header"]

API_VERSION = "2020-07-15"
# The SDK's defaults (documents.py:ConnectionPolicy): 5 s to connect, 65 s to read a response.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 65.0

_BATCH_HEADERS = {
    "x-ms-cosmos-is-batch-request": "True",
    "x-ms-cosmos-batch-atomic": "True",
    "x-ms-cosmos-batch-continue-on-error": "False",
}
_UPSERT_HEADERS = {"x-ms-documentdb-is-upsert": "True", "Prefer": "return=minimal"}
_BATCH_OPERATION = b'{"operationType":"Upsert","resourceBody":'
_FAILED_DEPENDENCY = 424
_COLLECTION_RID_MISMATCH = 1024
_ERROR_TYPES: dict[int, type[CosmosHttpResponseError]] = {
    404: CosmosResourceNotFoundError,
    409: CosmosResourceExistsError,
    412: CosmosAccessConditionFailedError,
}


def partition_key_header(values: Sequence[Any]) -> str:
    """``x-ms-documentdb-partitionkey`` for a key's component values (``{}`` = undefined).

    The same text the SDK sends: JSON with non-ASCII characters escaped (header values must be
    ASCII), ``["x"]`` for a single key, ``["T","U"]`` for a hierarchical one, ``[{}]`` undefined.
    """
    return json.dumps(list(values), separators=(",", ":"))


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
    signed_type: str = field(init=False)
    signed_link: str = field(init=False)

    def __post_init__(self) -> None:
        # The SDK's own path builder: names quoted with '/' safe, left alone for RID-like links.
        self.path = GetPathFromLink(self.link, "docs")
        segments = [*self.link.strip("/").split("/"), "docs"]
        self.signed_type, self.signed_link = signing.resource_type_and_link(segments)


@dataclass(frozen=True, slots=True)
class _ErrorResponse:
    """What an SDK exception reads from an azure-core response, so the exceptions raised here carry
    the same status, headers, parsed error body and text as the SDK's for the same reply."""

    status_code: int
    headers: CaseInsensitiveDict
    content: str

    @property
    def reason(self) -> str:
        return _phrase(self.status_code)

    def text(self, encoding: str | None = None) -> str:
        return self.content


class LeanWriter:
    """Upserts and transactional batches over one pooled aiohttp session, for every target
    container of one account.

    :param connections: the connection pool size; size it for the sink's concurrency (requests
        beyond it wait for a free connection rather than fail).
    :param insecure: skip TLS verification for a non-loopback endpoint (see :func:`tls_verify`).
    """

    def __init__(self, endpoint: CosmosEndpoint, *, connections: int, insecure: bool = False) -> None:
        self._base_url = endpoint.url.rstrip("/")
        self._key = signing.decode_key(endpoint.key)
        self._proxy, proxy_auth = _environment_proxy(self._base_url)
        credentials = {"Proxy-Authorization": proxy_auth.encode()} if proxy_auth else {}
        # An https request reaches the proxy as a CONNECT, which carries the proxy's credentials;
        # a plain http request goes to the proxy itself, so it carries them.
        self._proxy_headers = credentials or None
        plain_http = self._base_url.lower().startswith("http:")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, ssl=tls_verify(endpoint, insecure=insecure)),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S),
            headers={"User-Agent": f"asyncmig/{__version__} aiohttp/{aiohttp.__version__}",
                     **(credentials if plain_http else {})},
            cookie_jar=aiohttp.DummyCookieJar(),  # Cosmos DB sets no cookies; skip the per-request jar work
        )

    async def upsert_batch(
        self, container: LeanContainer, partition_key: Sequence[Any], documents: Sequence[bytes]
    ) -> float | None:
        """Upsert documents of one logical partition atomically; returns the request charge.

        :param partition_key: the key's component values, as :func:`partition_key_header` takes them.
        :param documents: each document's compact JSON, spliced into the body without re-encoding.
        :raises CosmosBatchOperationError: an operation failed (207); nothing was written.
        :raises CosmosHttpResponseError: the batch as a whole was refused (429, 413, ...).
        """
        parts = [b"["]
        for document in documents:
            parts += (_BATCH_OPERATION, document, b"},")
        parts[-1] = b"}]"
        return await self._post(container, partition_key, b"".join(parts), batch=True)

    async def upsert(self, container: LeanContainer, partition_key: Sequence[Any], document: bytes) -> float | None:
        """Upsert one document (its compact JSON); returns the request charge.

        :raises CosmosHttpResponseError: the upsert was refused.
        """
        return await self._post(container, partition_key, document, batch=False)

    async def close(self) -> None:
        await self._session.close()

    async def _post(
        self, container: LeanContainer, partition_key: Sequence[Any], body: bytes, *, batch: bool
    ) -> float | None:
        key_header = partition_key_header(partition_key)
        try:
            return await self._send(container, key_header, body, batch=batch)
        except CosmosHttpResponseError as exc:
            if exc.status_code != 400 or exc.sub_status != _COLLECTION_RID_MISMATCH:
                raise
        container.rid = await container.read_rid()  # as the SDK does: re-read the container, retry once
        return await self._send(container, key_header, body, batch=batch)

    async def _send(self, container: LeanContainer, key_header: str, body: bytes, *, batch: bool) -> float | None:
        date = signing.http_date()
        token = signing.authorization(self._key, "post", container.signed_type, container.signed_link, date)
        headers = {
            **(_BATCH_HEADERS if batch else _UPSERT_HEADERS),
            "x-ms-version": API_VERSION,
            "x-ms-date": date,
            "authorization": token,
            "x-ms-activity-id": str(uuid.uuid4()),
            "x-ms-documentdb-partitionkey": key_header,
            "x-ms-cosmos-intended-collection-rid": container.rid,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        async with self._session.post(self._base_url + container.path, data=body, headers=headers,
                                      proxy=self._proxy, proxy_headers=self._proxy_headers) as response:
            # Read even a success body we do not need: an unread body closes the pooled connection.
            payload = await response.read()
            status = response.status
            if 200 <= status < 300 and status != 207:
                return _charge(response.headers)
            raise _error(status, CaseInsensitiveDict(response.headers), payload, batch=batch)


def _environment_proxy(url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for the account (``HTTPS_PROXY``, ``NO_PROXY``, ``~/.netrc``),
    honoured as the SDK's transport honours it, but looked up once: aiohttp's ``trust_env`` repeats
    the lookup for every request in a worker thread, about 0.25 ms of CPU each (measured)."""
    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None


def _charge(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers["x-ms-request-charge"])
    except (KeyError, ValueError):
        return None


def _error(status: int, headers: CaseInsensitiveDict, payload: bytes, *, batch: bool) -> Exception:
    """The exception the SDK raises for this response (aio/_asynchronous_request.py, aio/ccc:Batch)."""
    text = payload.decode("utf-8", errors="replace")
    if status == 207 and batch:
        try:
            results = jsoncodec.loads(payload)
        except ValueError:
            results = None
        if isinstance(results, list) and all(isinstance(r, dict) for r in results):
            return _batch_error(headers, results)
    # (a 207 that is not a list of operation results is unexpected: raised as is, classified fatal)
    error_type = _ERROR_TYPES.get(status, CosmosHttpResponseError)
    return error_type(message=text, response=_ErrorResponse(status, headers, text))


def _batch_error(headers: CaseInsensitiveDict, results: list[dict[str, Any]]) -> CosmosBatchOperationError:
    """A 207: the failed operation carries its own status, every other one 424 (nothing was written)."""
    failed = [(i, r) for i, r in enumerate(results) if _status(r) >= 400 and _status(r) != _FAILED_DEPENDENCY]
    # Atomic batches fail at one operation; the SDK reports the last non-424 one, which is the same.
    index, result = failed[0] if failed else (0, {})
    status = _status(result)
    detail = result.get("message") or _phrase(status)
    return CosmosBatchOperationError(
        error_index=index, headers=headers, status_code=status, operation_responses=results,
        message=f"There was an error in the transactional batch on index {index}. Error message: {detail}",
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _status(result: Mapping[str, Any]) -> int:
    try:
        return int(result.get("statusCode", 0))
    except (TypeError, ValueError):
        return 0
