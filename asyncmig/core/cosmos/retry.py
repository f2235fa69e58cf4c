"""What to retry, how long to wait, and an SDK client that leaves retrying to us.

The SDK's own throttle retries are switched off (:func:`cosmos_client_kwargs`): it would sleep
inside a request while holding a partition slot, hide the 429s the governor needs to see, and give
up after 9 tries / 30 s. :func:`classify` sorts every failure into one of five kinds:

* ``throttled`` — 429: wait ``x-ms-retry-after-ms`` (the partition gate pauses), then retry;
* ``transient`` — timeouts, 408/449/5xx, dropped connections: back off with jitter, retry;
* ``split`` — 410: the partition layout changed; refresh routing, then retry;
* ``permanent`` — this document (or batch operation) can never succeed: dead-letter it;
* ``fatal`` — the run cannot go on (bad key, missing container, anything unrecognised).

Unknown exceptions are fatal on purpose: retrying what we do not understand risks looping forever.
Upserting the source body is idempotent, so retrying a write whose outcome is unknown (408, a
dropped connection) is safe even though the SDK refuses to.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.cosmos._retry_options import RetryOptions
from azure.cosmos.documents import ConnectionPolicy
from azure.cosmos.exceptions import CosmosClientTimeoutError

from asyncmig.config import ENV_CONNECTION_STRING, CosmosEndpoint, redact, tls_verify
from asyncmig.core.cosmos.transport import BatchOperationFailed, as_http_error
from asyncmig.core.engine.transform import Rejected
from asyncmig.core.jsoncodec import NonFiniteNumber
from asyncmig.core.jsoncodec import loads as json_loads
from asyncmig.errors import (
    AsyncmigError,
    AuthenticationFailed,
    ControlPlaneRequired,
    ResourceMissing,
    TransientExhausted,
)

__all__ = ["Backoff", "Failure", "FailureKind", "classify", "cosmos_client_kwargs"]

FailureKind = Literal["throttled", "transient", "permanent", "fatal", "split"]

HEADER_CHARGE = "x-ms-request-charge"
HEADER_RETRY_AFTER = "x-ms-retry-after-ms"

_TRANSIENT_STATUSES = frozenset({408, 449, 500, 502, 503, 504})
_PERMANENT_STATUSES = frozenset({400, 409, 412, 413, 422})
# 403 substatuses the SDK's endpoint discovery retries: a region failover in progress.
_TRANSIENT_FORBIDDEN = frozenset({3, 1008})
# 403/5300: an Entra ID token used for a management operation (create/delete/replace, throughput).
_ENTRA_NOT_AUTHORIZED = 5300
_READ_SESSION_NOT_AVAILABLE = 1002  # on a 404: the replica is behind the session token
_MAX_REASON = 300


@dataclass(frozen=True, slots=True)
class Failure:
    """How to treat one failed request.

    ``charge`` is the RU the failed request cost (``None`` when the response said nothing);
    ``reason`` is a short, redacted description fit for logs and the dead-letter file. For a
    failed transactional batch, ``error_index`` is the operation that failed and
    ``operation_responses`` the per-operation results (the others carry status 424).
    """

    kind: FailureKind
    status: int | None
    sub_status: int | None
    retry_after_s: float | None
    charge: float | None
    reason: str
    error_index: int | None = None
    operation_responses: tuple[Mapping[str, Any], ...] = field(default=(), compare=False, hash=False)

    @property
    def retryable(self) -> bool:
        """Throttled, transient and split failures are retried; permanent and fatal ones are not."""
        return self.kind in ("throttled", "transient", "split")

    def as_error(self, context: str) -> AsyncmigError:
        """The asyncmig error to raise when this failure ends the run; ``context`` names the operation."""
        if self.status == 403 and self.sub_status == _ENTRA_NOT_AUTHORIZED:
            return ControlPlaneRequired(
                f"{context}: Microsoft Entra ID sign-in can read and write data but not create or change "
                "databases, containers or throughput; create them in advance (Azure portal, az cli, Bicep) "
                f"or run this step with an account key (AccountKey in {ENV_CONNECTION_STRING}, --auth key)"
            )
        if self.status in (401, 403):
            return AuthenticationFailed(
                f"{context}: the account refused the request ({self.reason}); check the AccountKey in "
                f"{ENV_CONNECTION_STRING} (or, signed in with Microsoft Entra ID, that the identity has the "
                "Cosmos DB Built-in Data Contributor role) and the account's firewall and network rules"
            )
        if self.kind == "fatal" and self.status == 404:
            return ResourceMissing(
                f"{context}: not found ({self.reason}); check the database and container names, "
                "or create them first"
            )
        if self.retryable:
            return TransientExhausted(f"{context}: {self.reason}; re-run the same command to resume")
        return AsyncmigError(f"{context}: {self.reason}")


def _header(headers: Any, name: str) -> str | None:
    """A header from any of the shapes the SDK and aiohttp use, looked up case-insensitively."""
    if not isinstance(headers, Mapping):
        return None
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if str(k).lower() == wanted), None)
    return None if value is None else str(value)


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _server_message(text: str | None) -> str:
    """The ``code: message`` of a Cosmos error body, first line only (ActivityIds etc. dropped)."""
    if not text:
        return ""
    try:
        body = json_loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        code = body.get("code")
        text = f"{code}: {body['message']}" if code else body["message"]
    return text.strip().splitlines()[0] if text.strip() else ""


def _reason(prefix: str, message: str) -> str:
    text = f"{prefix} {message}".strip() if message else prefix
    text = " ".join(redact(text).split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def _from_status(
    status: int, sub_status: int | None, headers: Any, message: str, *, document: bool
) -> Failure:
    kind: FailureKind
    if status == 429:
        kind = "throttled"
    elif status in _TRANSIENT_STATUSES:
        kind = "transient"
    elif status == 410:
        kind = "split"
    elif status in _PERMANENT_STATUSES:
        kind = "permanent"
    elif status == 403 and sub_status in _TRANSIENT_FORBIDDEN:
        kind = "transient"
    elif status == 404 and sub_status == _READ_SESSION_NOT_AVAILABLE:
        kind = "transient"
    elif status == 404 and document:
        kind = "permanent"
    else:
        kind = "fatal"
    retry_ms = _float(_header(headers, HEADER_RETRY_AFTER))
    code = f"{status}/{sub_status}" if sub_status else str(status)
    return Failure(
        kind=kind,
        status=status,
        sub_status=sub_status,
        retry_after_s=retry_ms / 1000.0 if retry_ms is not None and retry_ms >= 0 else None,
        charge=_float(_header(headers, HEADER_CHARGE)),
        reason=_reason(f"HTTP {code}", message),
    )


def _batch_failure(exc: BatchOperationFailed) -> Failure:
    """A transactional batch refused because one operation failed: unless that failure is worth a
    retry, it is the failed document's own problem (permanent), not the run's."""
    status, sub_status, index, responses = exc.status, exc.sub_status, exc.error_index, exc.operation_responses
    failure = _from_status(status, sub_status, exc.headers, exc.message, document=True)
    kind: FailureKind = failure.kind if failure.retryable else "permanent"
    retry_after = failure.retry_after_s
    if retry_after is None and index is not None and 0 <= index < len(responses):
        retry_ms = _float(str(responses[index].get("retryAfterMilliseconds")))
        retry_after = retry_ms / 1000.0 if retry_ms is not None else None
    return Failure(
        kind=kind,
        status=status,
        sub_status=sub_status,
        retry_after_s=retry_after,
        charge=failure.charge,
        reason=_reason(f"batch operation {index}:", failure.reason),
        error_index=index,
        operation_responses=responses,
    )


def classify(exc: BaseException, *, document: bool = False) -> Failure:
    """Sort a failure into throttled / transient / split / permanent / fatal.

    :param document: the request concerned one document (a point read, replace or patch), so a
        404 means that document is missing (``permanent``) rather than the container (``fatal``).

    Never pass a cancellation or ``KeyboardInterrupt``: those must propagate, not be classified
    (they would come out ``fatal``).
    """
    http = as_http_error(exc)  # both write paths' refusals, in one representation
    if isinstance(http, BatchOperationFailed):
        return _batch_failure(http)
    if http is not None:
        return _from_status(http.status, http.sub_status, http.headers, _server_message(http.message),
                            document=document)
    if isinstance(exc, aiohttp.ClientResponseError):
        return _from_status(exc.status, None, exc.headers, exc.message, document=document)
    if isinstance(exc, ServiceRequestError | ServiceResponseError | CosmosClientTimeoutError
                  | aiohttp.ClientError | ConnectionError | TimeoutError):
        return Failure("transient", None, None, None, None, _reason(type(exc).__name__ + ":", str(exc)))
    if isinstance(exc, Rejected | NonFiniteNumber):
        return Failure("permanent", None, None, None, None, _reason("rejected:", str(exc)))
    return Failure("fatal", None, None, None, None, _reason(type(exc).__name__ + ":", str(exc)))


class Backoff:
    """Retry pacing for one operation: exponential backoff with full jitter.

    Attempt *n* waits a uniform random time in ``[0, min(cap, base * 2**(n-1))]``, which spreads
    retries of many tasks instead of synchronising them. Throttled failures wait what the server
    asked (``retry_after_s``) and are counted apart with their own, larger limit: a 429 means
    "slow down", not "broken".
    """

    def __init__(
        self,
        *,
        base: float = 0.1,
        cap: float = 10.0,
        max_attempts: int = 8,
        max_throttled: int = 100,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1 or max_throttled < 1:
            raise ValueError("max_attempts and max_throttled must be at least 1")
        self.base = base
        self.cap = cap
        self.max_attempts = max_attempts
        self.max_throttled = max_throttled
        self.attempts = 0  # transient and split failures so far
        self.throttled = 0  # throttled failures so far
        self._rng = rng if rng is not None else random.Random()

    def _jitter(self, attempt: int) -> float:
        return self._rng.uniform(0.0, min(self.cap, self.base * 2 ** (attempt - 1)))

    def next_delay(self, failure: Failure) -> float | None:
        """Seconds to wait before retrying after ``failure``, or ``None`` when retries are spent
        (then raise :meth:`exhausted_error`).

        :raises ValueError: for a failure that must not be retried (permanent or fatal).
        """
        if failure.kind == "throttled":
            self.throttled += 1
            if self.throttled >= self.max_throttled:
                return None
            if failure.retry_after_s is not None:
                return failure.retry_after_s
            return self._jitter(self.throttled)
        if failure.kind in ("transient", "split"):
            self.attempts += 1
            if self.attempts >= self.max_attempts:
                return None
            return self._jitter(self.attempts)
        raise ValueError(f"a {failure.kind} failure must not be retried ({failure.reason})")

    def exhausted_error(
        self, failure: Failure, *, what: str, checkpoint: str | os.PathLike[str]
    ) -> TransientExhausted:
        """The error that ends the run once :meth:`next_delay` returned ``None``."""
        attempts = self.throttled if failure.kind == "throttled" else self.attempts
        return TransientExhausted(redact(
            f"{what} failed: {failure.reason}; the fault persisted after {attempts} attempts; "
            f"progress is saved in {os.fspath(checkpoint)}; re-run the same command to resume"
        ))


def cosmos_client_kwargs(endpoint: CosmosEndpoint, *, insecure: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``azure.cosmos.aio.CosmosClient(endpoint.url, credential=endpoint.key, **kw)``.

    Throttle retries are disabled through a ``ConnectionPolicy`` whose ``RetryOptions`` allow 0
    attempts (``retry_total=0`` would not do it: the SDK treats 0 as "not given"), so every 429
    reaches :func:`classify`. A new policy object is built per call because the SDK mutates it.
    """
    policy = ConnectionPolicy()
    policy.RetryOptions = RetryOptions(max_retry_attempt_count=0)
    return {"connection_policy": policy, "connection_verify": tls_verify(endpoint, insecure=insecure)}
