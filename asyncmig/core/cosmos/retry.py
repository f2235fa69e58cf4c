"""What to retry, how long to wait, and an SDK client that leaves retrying to us.

The SDK's own throttle retries are switched off (:func:`asyncmig.core.cosmos.connect.cosmos_client_kwargs`): it would sleep
inside a request while holding a partition slot, hide the 429s the governor needs to see, and give
up after 9 tries / 30 s. :func:`classify` sorts every failure into one of five kinds, by HTTP
status and sub-status (the table ``_RULES``, documented in docs/reliability.md):

* ``throttled`` — 429: wait ``x-ms-retry-after-ms`` (the partition gate pauses), then retry;
* ``transient`` — timeouts, 408/449/5xx, dropped connections, a container still being created
  (404/1013), a lagging replica (404/1002), a write-region failover (403/3, 403/1008): back off
  with jitter, retry;
* ``split`` — 410: the partition layout changed; refresh routing, then retry;
* ``permanent`` — this document (or batch operation) can never succeed (400, 409, 412, 413, a full
  logical partition 403/1014): dead-letter it with a reason that says what to do;
* ``fatal`` — the run cannot go on (bad key or role, missing container, account limits, anything
  unrecognised).

Unknown exceptions are fatal on purpose: retrying what we do not understand risks looping forever.
Upserting the source body is idempotent, so retrying a write whose outcome is unknown (408, a
dropped connection) is safe even though the SDK refuses to.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import aiohttp
import anyio

from asyncmig.core.cosmos.transport import BatchOperationFailed, as_http_error, if_loaded
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
from asyncmig.redaction import redact
from asyncmig.settings import ENV_CONNECTION_STRING

__all__ = [
    "Backoff", "Failure", "FailureKind", "classify", "retrying", "wait_to_retry",
]

T = TypeVar("T")

FailureKind = Literal["throttled", "transient", "permanent", "fatal", "split"]

HEADER_CHARGE = "x-ms-request-charge"
HEADER_RETRY_AFTER = "x-ms-retry-after-ms"


@dataclass(frozen=True, slots=True)
class _Rule:
    """What asyncmig does with one HTTP status (+ sub-status), and what the user is told."""

    kind: FailureKind
    advice: str
    error: type[AsyncmigError] = AsyncmigError  # raised when this failure ends the run


_KEY_ADVICE = (
    f"check the AccountKey in {ENV_CONNECTION_STRING} (or, signed in with Microsoft Entra ID, that the "
    "identity has the Cosmos DB Built-in Data Contributor role) and the account's firewall and network rules"
)
_ROLE_ADVICE = (
    "the Microsoft Entra identity lacks a Cosmos DB data-plane role for this operation; assign one "
    "(e.g. Cosmos DB Built-in Data Contributor) on the account or container"
)
_LIMIT_ADVICE = "an account or database limit was reached; raise it in the Azure portal or free capacity"

# Looked up by (status, sub-status), then by (status, None). Sub-status 0 means none. The codes
# are the service's published ones (REST "HTTP status codes" page and the SDKs' SubStatusCodes).
_RULES: dict[tuple[int, int | None], _Rule] = {
    (429, None): _Rule("throttled", "request rate too large", TransientExhausted),
    (408, None): _Rule("transient", "the request timed out", TransientExhausted),
    (449, None): _Rule("transient", "the service asked to retry (concurrent update)", TransientExhausted),
    (500, None): _Rule("transient", "internal server error", TransientExhausted),
    (502, None): _Rule("transient", "bad gateway", TransientExhausted),
    (503, None): _Rule("transient", "service unavailable", TransientExhausted),
    (504, None): _Rule("transient", "gateway timeout", TransientExhausted),
    (410, None): _Rule("split", "the partition layout changed (split)", TransientExhausted),
    (410, 1000): _Rule("split", "the routing (name) cache is stale", TransientExhausted),
    (410, 1008): _Rule("split", "a partition is migrating", TransientExhausted),
    (404, None): _Rule(
        "fatal", "not found; check the database and container names, or create them first", ResourceMissing
    ),
    (404, 1002): _Rule("transient", "the replica has not caught up with the session yet", TransientExhausted),
    (404, 1003): _Rule(
        "fatal", "the database or container does not exist (deleted?); check the names or create them first",
        ResourceMissing,
    ),
    (404, 1013): _Rule("transient", "the container is still being created", TransientExhausted),
    (404, 1023): _Rule("transient", "the store is not ready yet", TransientExhausted),
    (401, None): _Rule(
        "fatal", f"the request signature or token was refused; {_KEY_ADVICE}", AuthenticationFailed
    ),
    (401, 5202): _Rule(
        "fatal", "local (key) authentication is disabled on this account; use Microsoft Entra ID instead",
        AuthenticationFailed,
    ),
    (403, None): _Rule("fatal", f"the account refused the request; {_KEY_ADVICE}", AuthenticationFailed),
    (403, 3): _Rule(
        "transient", "this region does not accept writes now (the write region is failing over)",
        TransientExhausted,
    ),
    (403, 1008): _Rule(
        "transient", "the database account was not found in this region (failover in progress)",
        TransientExhausted,
    ),
    (403, 1014): _Rule(
        "permanent", "the document's logical partition is full (20 GB per partition key value); "
        "the target needs a partition key with more distinct values (or hierarchical keys)",
    ),
    (403, 1028): _Rule(
        "fatal", "the account's total throughput limit is reached; raise the limit or lower the "
        "target's provisioned throughput",
    ),
    (403, 1005): _Rule("fatal", _LIMIT_ADVICE),
    (403, 1010): _Rule("fatal", _LIMIT_ADVICE),
    (403, 1019): _Rule("fatal", _LIMIT_ADVICE),
    (403, 1020): _Rule("fatal", _LIMIT_ADVICE),
    (400, None): _Rule(
        "permanent", "the service found the document invalid; fix it and restore it from the dead-letter file"
    ),
    (400, 1001): _Rule(
        "permanent", "the document's partition key value does not match the one sent; check the "
        "transform and the target's partition key path",
    ),
    (409, None): _Rule("permanent", "a document with this id already exists in its logical partition"),
    (409, 3302): _Rule(
        "permanent", "another document with the same id hashes to the same partition key; rename one id"
    ),
    (412, None): _Rule(
        "permanent", "the document changed since it was read (etag precondition); re-run to copy the new version"
    ),
    (413, None): _Rule("permanent", "the document exceeds Cosmos DB's 2 MB item size limit; shrink or split it"),
    (422, None): _Rule("permanent", "the service could not process the document"),
}
# Sub-statuses that share one rule: Entra token problems, RBAC and network security perimeter refusals.
_RULES.update({(401, sub): _Rule(
    "fatal", "the Microsoft Entra token was refused (expired, wrong tenant or audience); sign in again",
    AuthenticationFailed,
) for sub in range(5000, 5013)})
_RULES.update({
    (403, sub): _Rule("fatal", _ROLE_ADVICE, AuthenticationFailed) for sub in (*range(5301, 5307), 5400)
})
# 403/5300: a Microsoft Entra ID token used for a management operation (create/replace/delete, throughput).
_RULES[(403, 5300)] = _Rule(
    "fatal", "signed in with Microsoft Entra ID, asyncmig cannot create or change databases, containers "
    "or throughput; create them in advance (portal, az cli, Bicep) or use an account key (--auth key)",
    ControlPlaneRequired,
)
_RULES.update({(403, sub): _Rule(
    "fatal", "the account's network security perimeter denied the request; allow this client in it",
    AuthenticationFailed,
) for sub in range(5307, 5314)})
_DOCUMENT_NOT_FOUND = _Rule("permanent", "the document does not exist")
_UNKNOWN = _Rule("fatal", "unexpected response; not retried")
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
        if self.retryable:
            return TransientExhausted(f"{context}: {self.reason}; re-run the same command to resume")
        if self.status is None or self.kind == "permanent":
            return AsyncmigError(f"{context}: {self.reason}")
        return _rule(self.status, self.sub_status, document=False).error(f"{context}: {self.reason}")


def _rule(status: int, sub_status: int | None, *, document: bool) -> _Rule:
    if status == 404 and document and not sub_status:
        return _DOCUMENT_NOT_FOUND
    return _RULES.get((status, sub_status or None)) or _RULES.get((status, None)) or _UNKNOWN


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


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
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
    rule = _rule(status, sub_status, document=document)
    retry_ms = _float(_header(headers, HEADER_RETRY_AFTER))
    code = f"{status}/{sub_status}" if sub_status else str(status)
    return Failure(
        kind=rule.kind,
        status=status,
        sub_status=sub_status,
        retry_after_s=retry_ms / 1000.0 if retry_ms is not None and retry_ms >= 0 else None,
        charge=_float(_header(headers, HEADER_CHARGE)),
        reason=_reason(f"HTTP {code} ({rule.advice})" + (":" if message else ""), message),
    )


def _batch_failure(exc: BatchOperationFailed) -> Failure:
    """A transactional batch refused because one operation failed: unless that failure is worth a
    retry, it is the failed document's own problem (permanent), not the run's."""
    status, sub_status, index, responses = exc.status, exc.sub_status, exc.error_index, exc.operation_responses
    if sub_status is None and index is not None and 0 <= index < len(responses):
        sub_status = _int(responses[index].get("subStatusCode"))  # the failed operation's own
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
    sdk, core = if_loaded("azure.cosmos.exceptions"), if_loaded("azure.core.exceptions")
    if (isinstance(exc, aiohttp.ClientError | ConnectionError | TimeoutError)
            or (core is not None and isinstance(exc, core.ServiceRequestError | core.ServiceResponseError))
            or (sdk is not None and isinstance(exc, sdk.CosmosClientTimeoutError))):
        return Failure("transient", None, None, None, None, _reason(type(exc).__name__ + ":", str(exc)))
    if isinstance(exc, Rejected | NonFiniteNumber):
        return Failure("permanent", None, None, None, None, _reason("rejected:", str(exc)))
    return Failure("fatal", None, None, None, None, _reason(type(exc).__name__ + ":", str(exc)))


# One generator for every Backoff: each write makes one, and seeding a new generator from the OS
# cost 8 us each (timeit; ~1 % of a copy's CPU), for draws that only a retry makes.
_JITTER = random.Random()


class Backoff:
    """Retry pacing for one operation: exponential backoff with "equal" jitter.

    Attempt *n* waits a uniform random time in ``[c/2, c]`` with ``c = min(cap, base * 2**(n-1))``:
    the random half spreads the retries of many tasks instead of synchronising them, the fixed half
    guarantees that the attempts span a minimum time (about 6 s with the defaults), so an outage of
    a few seconds (a gateway restart, a failover) cannot use up every attempt by unlucky draws, as
    full jitter could. Throttled failures wait what the server
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
        self._rng = rng if rng is not None else _JITTER

    def _jitter(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        return self._rng.uniform(ceiling / 2, ceiling)

    def next_delay(self, failure: Failure) -> float | None:
        """Seconds to wait before retrying after ``failure``, or ``None`` when retries are spent
        (see :func:`wait_to_retry`).

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


async def wait_to_retry(backoff: Backoff, failure: Failure, *, what: str, sleep: bool = True,
                        cause: BaseException | None = None) -> float:
    """Wait out ``failure`` before the next attempt, or raise the error that ends the run.

    :param what: names the operation in the error, e.g. ``"reading users"``.
    :param sleep: False when something else does the waiting (a partition gate's pause after a 429,
        or the caller, which may find it need not wait): the delay is returned either way.
    :param cause: the exception ``failure`` was classified from; the error is raised from it.
    :raises AsyncmigError: ``failure.as_error(what)`` when it must not be retried or retries are spent.
    """
    delay = backoff.next_delay(failure) if failure.retryable else None
    if delay is None:
        error = failure.as_error(what)
        if cause is not None:
            raise error from cause
        raise error
    if sleep:
        await anyio.sleep(delay)
    return delay


async def retrying(
    operation: Callable[[], Awaitable[T]], *, what: str, backoff: Backoff | None = None,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """``await operation()`` until it succeeds, retrying throttled, transient and split failures.

    Every failure is sorted by :func:`classify`; one that must not be retried, or one that outlasts
    ``backoff``, ends in the asyncmig error it maps to, raised from the original exception.
    Cancellation is never caught. ``before_retry`` runs before each new attempt (e.g. to reopen an
    iterator the failure left broken).
    """
    backoff = backoff if backoff is not None else Backoff()
    while True:
        try:
            return await operation()
        except Exception as exc:  # noqa: BLE001 - classified: retried or turned into an asyncmig error
            await wait_to_retry(backoff, classify(exc), what=what, cause=exc)
        if before_retry is not None:
            before_retry()
