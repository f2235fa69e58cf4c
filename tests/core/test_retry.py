from __future__ import annotations

import base64
import os
import random
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.cosmos.aio import CosmosClient
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosBatchOperationError,
    CosmosClientTimeoutError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from asyncmig.connection import CosmosEndpoint
from asyncmig.core.cosmos.connect import cosmos_client_kwargs
from asyncmig.core.cosmos.retry import Backoff, Failure, classify
from asyncmig.core.engine.transform import Rejected
from asyncmig.core.jsoncodec import NonFiniteNumber
from asyncmig.errors import (
    AsyncmigError,
    AuthenticationFailed,
    ControlPlaneRequired,
    ResourceMissing,
    TransientExhausted,
)
from asyncmig.redaction import register_secret

KEY = base64.b64encode(os.urandom(64)).decode()


class FakeResponse:
    """The parts of an azure-core response the Cosmos exceptions read."""

    def __init__(self, status: int, headers: dict[str, str], body: str) -> None:
        self.status_code = status
        self.reason = "reason"
        self.headers = headers
        self._body = body

    def text(self) -> str:
        return self._body


def cosmos_error(
    status: int,
    sub_status: int | None = None,
    *,
    headers: dict[str, str] | None = None,
    cls: type[CosmosHttpResponseError] = CosmosHttpResponseError,
    message: str = "Something happened",
) -> CosmosHttpResponseError:
    """A Cosmos exception raised the way the SDK raises it: message = response body."""
    all_headers = dict(headers or {})
    if sub_status is not None:
        all_headers["x-ms-substatus"] = str(sub_status)
    body = f'{{"code":"Code{status}","message":"{message}\\r\\nActivityId: 1234, Microsoft.Azure.Documents"}}'
    return cls(message=body, response=FakeResponse(status, all_headers, body))


# -------------------------------------------------------------------------------- classify


def test_429_is_throttled_with_retry_after_and_charge() -> None:
    failure = classify(cosmos_error(429, 3200, headers={"x-ms-retry-after-ms": "250",
                                                        "x-ms-request-charge": "0.38"}))
    assert failure.kind == "throttled" and failure.retryable
    assert (failure.status, failure.sub_status) == (429, 3200)
    assert failure.retry_after_s == pytest.approx(0.25)
    assert failure.charge == pytest.approx(0.38)


def test_headers_are_read_case_insensitively() -> None:
    failure = classify(cosmos_error(429, headers={"X-MS-Retry-After-Ms": "1000", "X-Ms-Request-Charge": "x"}))
    assert failure.retry_after_s == 1.0
    assert failure.charge is None  # unparseable: unknown, not zero


@pytest.mark.parametrize("status", [408, 449, 500, 502, 503, 504])
def test_transient_statuses(status: int) -> None:
    assert classify(cosmos_error(status)).kind == "transient"


@pytest.mark.parametrize("sub_status", [1002, 1007, 1008, None])
def test_410_means_the_partition_layout_changed(sub_status: int | None) -> None:
    assert classify(cosmos_error(410, sub_status)).kind == "split"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, CosmosHttpResponseError),
        (409, CosmosResourceExistsError),
        (412, CosmosAccessConditionFailedError),
        (413, CosmosHttpResponseError),
        (422, CosmosHttpResponseError),
    ],
)
def test_permanent_statuses_name_status_and_message(status: int, cls: type[CosmosHttpResponseError]) -> None:
    failure = classify(cosmos_error(status, 1001, cls=cls, message="Entity is bad"))
    assert failure.kind == "permanent" and not failure.retryable
    assert failure.reason.startswith(f"HTTP {status}/1001 (")
    assert failure.reason.endswith(f"): Code{status}: Entity is bad")


def test_404_is_fatal_for_containers_and_permanent_for_documents() -> None:
    error = cosmos_error(404, cls=CosmosResourceNotFoundError, message="Resource Not Found")
    container = classify(error)
    assert container.kind == "fatal"
    missing = container.as_error("reading container vectors")
    assert isinstance(missing, ResourceMissing) and missing.exit_code == 4
    assert "vectors" in str(missing) and "create them first" in str(missing)
    assert classify(error, document=True).kind == "permanent"


def test_404_read_session_not_available_is_transient() -> None:
    assert classify(cosmos_error(404, 1002, cls=CosmosResourceNotFoundError)).kind == "transient"


@pytest.mark.parametrize(("status", "sub_status"), [(401, None), (403, None)])
def test_auth_failures_are_fatal(status: int, sub_status: int | None) -> None:
    failure = classify(cosmos_error(status, sub_status))
    assert failure.kind == "fatal"
    error = failure.as_error("connecting")
    assert isinstance(error, AuthenticationFailed) and error.exit_code == 3
    assert "AccountKey" in str(error)


@pytest.mark.parametrize("sub_status", [3, 1008])
def test_403_during_region_failover_is_transient(sub_status: int) -> None:
    assert classify(cosmos_error(403, sub_status)).kind == "transient"


@pytest.mark.parametrize("status", [405, 501, 424])
def test_unknown_statuses_are_fatal(status: int) -> None:
    failure = classify(cosmos_error(status))
    assert failure.kind == "fatal"
    assert type(failure.as_error("x")).__name__ == "AsyncmigError"


@pytest.mark.parametrize(
    "exc",
    [
        ServiceRequestError("connection refused"),
        ServiceResponseError("connection reset"),
        CosmosClientTimeoutError(),
        aiohttp.ClientConnectionError("boom"),
        aiohttp.ServerDisconnectedError(),
        ConnectionResetError(104, "reset by peer"),
        TimeoutError(),  # asyncio.TimeoutError is the same class since 3.11
    ],
)
def test_transport_failures_are_transient(exc: BaseException) -> None:
    failure = classify(exc)
    assert failure.kind == "transient"
    assert failure.status is None
    assert failure.reason.startswith(type(exc).__name__)


def test_aiohttp_response_errors_use_the_status_table() -> None:
    exc = aiohttp.ClientResponseError(
        request_info=None, history=(), status=429, message="Too Many",  # type: ignore[arg-type]
        headers={"x-ms-retry-after-ms": "20"},  # type: ignore[arg-type]
    )
    failure = classify(exc)
    assert failure.kind == "throttled" and failure.retry_after_s == pytest.approx(0.02)


def test_document_problems_are_permanent() -> None:
    assert classify(Rejected("no user_id")).kind == "permanent"
    assert classify(NonFiniteNumber("nan at /x")).kind == "permanent"


@pytest.mark.parametrize("exc", [KeyError("x"), OSError(28, "No space left on device"), RuntimeError("?")])
def test_anything_unknown_is_fatal_never_retried(exc: BaseException) -> None:
    failure = classify(exc)
    assert failure.kind == "fatal" and not failure.retryable
    with pytest.raises(ValueError, match="must not be retried"):
        Backoff().next_delay(failure)


def test_reasons_are_redacted_and_short() -> None:
    register_secret(KEY)
    failure = classify(cosmos_error(400, message=f"bad AccountKey={KEY} " + "x" * 1000))
    assert KEY not in failure.reason
    assert len(failure.reason) <= 300
    transport = classify(ServiceRequestError(f"failed with {KEY}"))
    assert KEY not in transport.reason


def batch_error(status: int, index: int, headers: dict[str, str] | None = None,
                responses: list[dict[str, Any]] | None = None) -> CosmosBatchOperationError:
    if responses is None:
        responses = [{"statusCode": 424}] * 3
        responses[index] = {"statusCode": status, "requestCharge": 1.0}
    return CosmosBatchOperationError(
        error_index=index, headers=headers or {"x-ms-request-charge": "3.5"}, status_code=status,
        message=f"There was an error in the transactional batch on index {index}. Error message: Conflict",
        operation_responses=responses,
    )


def test_batch_operation_error_is_permanent_for_the_failing_index() -> None:
    failure = classify(batch_error(409, 1))
    assert failure.kind == "permanent"
    assert failure.error_index == 1
    assert [r["statusCode"] for r in failure.operation_responses] == [424, 409, 424]
    assert failure.charge == pytest.approx(3.5)
    assert failure.reason.startswith("batch operation 1:") and "409" in failure.reason
    assert classify(batch_error(404, 0)).kind == "permanent"  # replace of a missing document


def test_batch_operation_throttled_keeps_retry_after() -> None:
    responses = [{"statusCode": 429, "retryAfterMilliseconds": 120}, {"statusCode": 424}]
    failure = classify(batch_error(429, 0, responses=responses))
    assert failure.kind == "throttled"
    assert failure.retry_after_s == pytest.approx(0.12)


# -------------------------------------------------------------------------------- Backoff


def transient() -> Failure:
    return Failure("transient", 503, None, None, None, "HTTP 503 ServiceUnavailable")


def test_backoff_is_jittered_exponential_and_capped() -> None:
    backoff = Backoff(base=0.1, cap=1.0, max_attempts=10, rng=random.Random(7))
    delays = [backoff.next_delay(transient()) for _ in range(9)]
    ceilings = [min(1.0, 0.1 * 2**n) for n in range(9)]
    assert all(d is not None and c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert backoff.next_delay(transient()) is None  # the 10th attempt failed: give up
    assert backoff.attempts == 10
    # the same seed gives the same schedule (deterministic tests and benchmarks)
    again = Backoff(base=0.1, cap=1.0, max_attempts=10, rng=random.Random(7))
    assert [again.next_delay(transient()) for _ in range(9)] == delays


def test_backoff_jitter_actually_spreads_retries() -> None:
    rng = random.Random(1)
    samples = [Backoff(rng=rng).next_delay(transient()) for _ in range(200)]
    assert len({round(s or 0, 6) for s in samples}) > 150
    assert 0.05 <= min(s or 0 for s in samples) and max(s or 0 for s in samples) <= 0.1


class _LowestDraws(random.Random):
    """Every draw at the bottom of its range: the unluckiest schedule jitter can produce."""

    def uniform(self, a: float, b: float) -> float:
        return a


def test_retries_span_a_few_seconds_however_unlucky_the_draws() -> None:
    # With full jitter, eight draws near zero gave up within milliseconds: an emulator restart or a
    # gateway failover of a few seconds then failed a write that one more second would have saved.
    backoff = Backoff(rng=_LowestDraws())
    waited = 0.0
    while (delay := backoff.next_delay(transient())) is not None:
        waited += delay
    assert waited >= 6.0


def test_throttles_wait_what_the_server_asked_and_have_their_own_limit() -> None:
    backoff = Backoff(max_attempts=2, max_throttled=5, rng=random.Random(0))
    throttled = Failure("throttled", 429, 3200, 0.75, 0.0, "HTTP 429/3200")
    assert [backoff.next_delay(throttled) for _ in range(4)] == [0.75] * 4
    assert backoff.attempts == 0  # throttles do not use up transient attempts
    assert backoff.next_delay(transient()) is not None
    assert backoff.next_delay(throttled) is None
    no_header = Failure("throttled", 429, None, None, None, "HTTP 429")
    assert 0 <= (Backoff(rng=random.Random(0)).next_delay(no_header) or 0) <= 0.1


# -------------------------------------------------------------------------------- client kwargs


async def test_client_kwargs_disable_sdk_throttle_retries() -> None:
    endpoint = CosmosEndpoint("https://acct.documents.azure.com:443/", KEY)
    kwargs = cosmos_client_kwargs(endpoint)
    assert kwargs["connection_verify"] is True
    assert kwargs["connection_policy"] is not cosmos_client_kwargs(endpoint)["connection_policy"]
    client = CosmosClient(endpoint.url, credential=endpoint.key, **kwargs)
    try:
        policy = client.client_connection.connection_policy
        assert policy.RetryOptions.MaxRetryAttemptCount == 0
        assert policy.DisableSSLVerification is False
    finally:
        await client.close()


def test_client_kwargs_skip_verification_for_loopback_and_insecure() -> None:
    local = CosmosEndpoint("https://127.0.0.1:8081/", KEY)
    assert cosmos_client_kwargs(local)["connection_verify"] is False
    remote = CosmosEndpoint("https://kwargs-insecure.documents.azure.com/", KEY)
    assert cosmos_client_kwargs(remote, insecure=True)["connection_verify"] is False


# ------------------------------------------------------------------ status + sub-status table
# (status, sub-status, document request?, expected kind, error class when it ends the run, words the
# reason must hold so the user knows what is wrong and what to do)
STATUS_TABLE: list[tuple[int, int | None, bool, str, type[Exception], str]] = [
    (429, 3200, False, "throttled", TransientExhausted, "request rate"),
    (429, 3092, False, "throttled", TransientExhausted, "request rate"),
    (429, None, True, "throttled", TransientExhausted, "request rate"),
    (408, None, True, "transient", TransientExhausted, "timed out"),
    (449, None, True, "transient", TransientExhausted, "retry"),
    (500, None, False, "transient", TransientExhausted, "server"),
    (503, None, False, "transient", TransientExhausted, "unavailable"),
    (503, 1007, False, "transient", TransientExhausted, "unavailable"),
    (410, 1000, False, "split", TransientExhausted, "routing"),
    (410, 1002, False, "split", TransientExhausted, "split"),
    (410, 1007, True, "split", TransientExhausted, "split"),
    (410, 1008, True, "split", TransientExhausted, "migrat"),
    (404, 1002, True, "transient", TransientExhausted, "session"),
    (404, 1013, False, "transient", TransientExhausted, "still being created"),
    (404, 1013, True, "transient", TransientExhausted, "still being created"),
    (404, 1003, True, "fatal", ResourceMissing, "database or container"),
    (404, None, False, "fatal", ResourceMissing, "create them first"),
    (404, None, True, "permanent", AsyncmigError, "does not exist"),
    (401, None, False, "fatal", AuthenticationFailed, "AccountKey"),
    (401, 5006, False, "fatal", AuthenticationFailed, "token"),
    (401, 5202, False, "fatal", AuthenticationFailed, "local (key) authentication is disabled"),
    (403, None, False, "fatal", AuthenticationFailed, "AccountKey"),
    (403, 5300, False, "fatal", ControlPlaneRequired, "create them in advance"),
    (403, 5301, False, "fatal", AuthenticationFailed, "role"),
    (403, 5400, False, "fatal", AuthenticationFailed, "role"),
    (403, 5307, False, "fatal", AuthenticationFailed, "network security perimeter"),
    (403, 3, True, "transient", TransientExhausted, "write region"),
    (403, 1008, False, "transient", TransientExhausted, "account"),
    (403, 1014, True, "permanent", AsyncmigError, "logical partition"),
    (403, 1028, True, "fatal", AsyncmigError, "throughput limit"),
    (403, 1005, False, "fatal", AsyncmigError, "limit"),
    (403, 1010, False, "fatal", AsyncmigError, "limit"),
    (400, None, True, "permanent", AsyncmigError, "invalid"),
    (400, 1001, True, "permanent", AsyncmigError, "partition key"),
    (409, None, True, "permanent", AsyncmigError, "already exists"),
    (409, 3302, True, "permanent", AsyncmigError, "same id"),
    (412, None, True, "permanent", AsyncmigError, "changed"),
    (413, None, True, "permanent", AsyncmigError, "2 MB"),
]


@pytest.mark.parametrize(
    ("status", "sub_status", "document", "kind", "error_class", "advice"), STATUS_TABLE,
    ids=[f"{s}/{sub}{'-doc' if d else ''}" for s, sub, d, *_ in STATUS_TABLE],
)
def test_status_and_sub_status_table(
    status: int, sub_status: int | None, document: bool, kind: str, error_class: type[Exception], advice: str
) -> None:
    failure = classify(cosmos_error(status, sub_status, message="Server says so"), document=document)
    assert failure.kind == kind
    assert advice.lower() in failure.reason.lower()
    assert "Server says so" in failure.reason
    error = failure.as_error("writing to t")
    assert type(error) is error_class
    if status in (401, 403) and not issubclass(error_class, AuthenticationFailed):
        assert "AccountKey" not in str(error)  # a full partition or a failover is not a key problem


def test_a_full_logical_partition_goes_to_the_dead_letter_file_in_a_batch() -> None:
    in_header = CosmosBatchOperationError(
        error_index=1, headers={"x-ms-substatus": "1014"}, status_code=403,
        message="partition key quota exceeded", operation_responses=[{"statusCode": 424}] * 3,
    )
    in_operation = batch_error(403, 1, responses=[
        {"statusCode": 424}, {"statusCode": 403, "subStatusCode": 1014}, {"statusCode": 424},
    ])
    for exc in (in_header, in_operation):
        failure = classify(exc)
        assert failure.kind == "permanent" and "logical partition" in failure.reason
        assert (failure.status, failure.sub_status) == (403, 1014)
