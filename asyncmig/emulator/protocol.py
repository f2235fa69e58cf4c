"""Wire-level pieces shared by the emulator's handlers: errors, responses and request headers.

The SDKs spell boolean headers ``True``/``False`` (compared case-insensitively here), send the
partition key header as a JSON array, and expect every response, errors included, to carry a
request charge and an activity id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from asyncmig.core import jsoncodec

MAX_DOCUMENT_BYTES = 2 * 1024 * 1024
MAX_BATCH_OPERATIONS = 100
MAX_PAGE_BYTES = 4 * 1024 * 1024
DEFAULT_PAGE_ITEMS = 100

_CODES = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 408: "RequestTimeout",
    409: "Conflict", 410: "Gone", 412: "PreconditionFailed", 413: "RequestEntityTooLarge",
    429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable",
}


class CosmosError(Exception):
    """An error answer in Cosmos DB's shape: ``{"code": ..., "message": ...}`` plus substatus."""

    def __init__(
        self, status: int, message: str, *, substatus: int | None = None, headers: dict[str, str] | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.substatus = substatus
        self.headers = headers or {}
        self.extra = extra or {}  # more body fields, e.g. a query plan's "additionalErrorInfo"

    def response(self, activity_id: str) -> web.Response:
        headers = {"x-ms-activity-id": activity_id, "x-ms-request-charge": "0.0", **self.headers}
        if self.substatus is not None:
            headers["x-ms-substatus"] = str(self.substatus)
        body = {"code": _CODES.get(self.status, "Error"), "message": self.message, **self.extra}
        return web.Response(status=self.status, body=jsoncodec.dumps(body), headers=headers,
                            content_type="application/json")


def not_found(what: str) -> CosmosError:
    return CosmosError(404, f"{what} does not exist in the system.")


def owner_missing(what: str) -> CosmosError:
    # Substatus 1003: "owner resource does not exist" (a database or container, not a document).
    return CosmosError(404, f"Owner resource does not exist: {what}.", substatus=1003)


def bad_request(message: str, substatus: int | None = None) -> CosmosError:
    return CosmosError(400, message, substatus=substatus)


@dataclass(slots=True)
class Reply:
    """A successful answer; ``charge`` becomes ``x-ms-request-charge``."""

    status: int = 200
    body: bytes = b""
    charge: float = 1.0
    headers: dict[str, str] = field(default_factory=dict)

    def response(self, activity_id: str) -> web.Response:
        headers = {"x-ms-activity-id": activity_id, "x-ms-request-charge": f"{self.charge:.2f}", **self.headers}
        if self.body:
            return web.Response(status=self.status, body=self.body, headers=headers,
                                content_type="application/json")
        return web.Response(status=self.status, headers=headers)


def feed_body(collection_key: str, rid: str, items: list[bytes]) -> bytes:
    """``{"_rid":..., "<key>":[...], "_count":n}`` assembled from already-encoded items."""
    return b"".join((b'{"_rid":"', rid.encode(), b'","', collection_key.encode(), b'":[',
                     b",".join(items), b'],"_count":', str(len(items)).encode(), b"}"))


RAW_BODY = "\x00raw"  # a batch result's stored document bytes, spliced in as "resourceBody"


def batch_body(results: list[dict[str, Any]]) -> bytes:
    """The batch response array, with each document's stored bytes spliced in unchanged (parsing
    them only to encode them again was a third of a vector batch's server time)."""
    parts = []
    for result in results:
        raw = result.pop(RAW_BODY, None)
        encoded = jsoncodec.dumps(result)
        parts.append(encoded if raw is None else encoded[:-1] + b',"resourceBody":' + raw + b"}")
    return b"[" + b",".join(parts) + b"]"


def flag(headers: Any, name: str) -> bool:
    return str(headers.get(name, "")).lower() == "true"


def page_size(headers: Any) -> int | None:
    """Requested page size; ``None`` means as many as fit in a 4 MB page."""
    raw = headers.get("x-ms-max-item-count")
    if raw is None:
        return DEFAULT_PAGE_ITEMS
    try:
        value = int(raw)
    except ValueError as exc:
        raise bad_request(f"invalid x-ms-max-item-count {raw!r}") from exc
    return None if value <= 0 else value




loads = jsoncodec.loads  # exact, with a C-speed pre-check for the wide integers orjson would round


def partition_key_header(headers: Any) -> list[Any] | None:
    raw = headers.get("x-ms-documentdb-partitionkey")
    if raw is None:
        return None
    try:
        value = jsoncodec.loads(raw)
    except ValueError as exc:
        raise bad_request(f"x-ms-documentdb-partitionkey is not valid JSON: {raw!r}") from exc
    if not isinstance(value, list):
        raise bad_request("x-ms-documentdb-partitionkey must be a JSON array")
    if any(isinstance(c, list) or (isinstance(c, dict) and c) for c in value):
        # {} stands for undefined; any other object or an array is not a key value.
        raise bad_request(f"Partition key {raw} is invalid: components must be strings, numbers, "
                          "booleans, null or {} (undefined).")
    return value


def parse_body(raw: bytes) -> Any:
    try:
        return loads(raw)
    except jsoncodec.NonFiniteNumber as exc:
        raise bad_request(f"The request payload is invalid: {exc}") from exc
    except ValueError as exc:
        raise bad_request(f"The request payload is invalid JSON: {exc}") from exc
