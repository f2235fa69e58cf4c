"""retrying(): the one retry loop for reads, on Backoff and classify."""

from __future__ import annotations

import random

import anyio
import pytest

from asyncmig.core.cosmos.retry import Backoff, retrying
from asyncmig.errors import AsyncmigError, TransientExhausted


def quick(max_attempts: int = 8) -> Backoff:
    return Backoff(base=0.0, cap=0.0, max_attempts=max_attempts, rng=random.Random(0))


async def test_transient_failures_are_retried_until_the_operation_succeeds() -> None:
    calls: list[int] = []
    reopened: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("peer reset")
        return "ok"

    result = await retrying(flaky, what="reading users", backoff=quick(),
                            before_retry=lambda: reopened.append(1))
    assert result == "ok" and len(calls) == 3 and len(reopened) == 2


async def test_a_persisting_fault_ends_with_the_error_and_its_cause() -> None:
    async def broken() -> None:
        raise TimeoutError("no answer")

    with pytest.raises(TransientExhausted, match="reading users") as caught:
        await retrying(broken, what="reading users", backoff=quick(max_attempts=3))
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_a_failure_that_must_not_be_retried_is_raised_at_once() -> None:
    calls: list[int] = []

    async def bug() -> None:
        calls.append(1)
        raise RuntimeError("a bug, not a fault")

    with pytest.raises(AsyncmigError, match="reading users") as caught:
        await retrying(bug, what="reading users", backoff=quick())
    assert calls == [1] and isinstance(caught.value.__cause__, RuntimeError)


async def test_cancellation_is_never_retried() -> None:
    calls: list[int] = []

    async def slow() -> None:
        calls.append(1)
        await anyio.sleep_forever()

    with anyio.move_on_after(0.01):
        await retrying(slow, what="reading users", backoff=quick())
    assert calls == [1]
