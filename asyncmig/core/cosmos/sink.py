"""The Cosmos DB sink: idempotent upserts, transactional batches per logical partition, paced per
target physical range by the governor, with failed batches split so one bad document cannot
hold back the good ones.

Two write paths send the same requests. ``lean`` (the default) sends them with
:class:`~asyncmig.core.cosmos.lean_writer.LeanWriter`, reusing the JSON :meth:`CosmosSink.plan` encoded
to measure each document; ``sdk`` calls ``execute_item_batch``/``upsert_item``, which encode with
the standard library (twice for a batch) and parse the batch response: 0.39 ms of client CPU per
16 KB vector document against 0.031 ms (docs/measurements.md). Everything but the writes
(container properties, feed ranges) goes through the SDK on both paths.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import anyio
from azure.cosmos.aio import ContainerProxy
from azure.cosmos.exceptions import CosmosResourceNotFoundError
from azure.cosmos.partition_key import NonePartitionKeyValue

from asyncmig.connection import CosmosEndpoint
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos import rucost
from asyncmig.core.cosmos.lean_writer import LeanContainer, LeanWriter
from asyncmig.core.cosmos.partition_keys import (
    effective_partition_key,
    partition_key_problem,
    partition_key_values,
)
from asyncmig.core.cosmos.retry import Backoff, Failure, classify, wait_to_retry
from asyncmig.core.engine.governor import DEFAULT_MAX_CONCURRENCY, Governor
from asyncmig.core.engine.sink import Rejection, SinkStatistics, WriteOutcome, WriteUnit
from asyncmig.core.engine.transform import Document
from asyncmig.errors import UsageError

WritePath = Literal["lean", "sdk"]
# Chooses the write path when the caller does not: an operational escape hatch back to the SDK's
# own requests, and how the end-to-end tests and benchmarks run the copier on either path.
ENV_WRITE_PATH = "ASYNCMIG_WRITE_PATH"

MAX_DOCUMENT_BYTES = 2 * 1024 * 1024
SYSTEM_OVERHEAD_BYTES = 200  # _rid, _self, _etag, _attachments, _ts added by the service
MAX_BATCH_OPERATIONS = 100
DEFAULT_BATCH_BYTES = 256 * 1024  # like .NET bulk (220 KB): smaller requests meter smoothly per range
_BAD_ID = re.compile(r"[/\\?#]")


def document_problem(document: Any, encoded_size: int) -> str | None:
    """Why Cosmos DB would refuse this document, or None; checked before spending RU on it."""
    if not isinstance(document, dict):
        return "a document must be a JSON object"
    doc_id = document.get("id")
    if not isinstance(doc_id, str) or not doc_id:
        return "the document has no string 'id'"
    if len(doc_id) > 255 or _BAD_ID.search(doc_id):
        return f"id {doc_id[:80]!r} is not accepted by Cosmos DB (at most 255 characters, none of / \\ ? #)"
    if encoded_size + SYSTEM_OVERHEAD_BYTES > MAX_DOCUMENT_BYTES:
        return f"the document is {encoded_size} bytes; Cosmos DB accepts at most {MAX_DOCUMENT_BYTES} bytes"
    return None


def lane_name(target: str, low: str, high: str) -> str:
    """One lane per target physical range: ``target[min,max)``."""
    return f"{target}[{low},{high})"


@dataclass(slots=True)
class _Target:
    container: ContainerProxy
    definition: dict[str, Any]
    ranges: list[tuple[str, str]]
    lean: LeanContainer | None  # how the lean path addresses it; None on the SDK path
    ru_per_doc: float = 10.0  # running estimate, corrected by every real charge

    def lane(self, target: str, epk: str) -> str:
        for low, high in self.ranges:
            if low <= epk < high:
                return lane_name(target, low, high)
        return f"{target}[?]"


class CosmosSink:
    """Upserts into one or more containers (a transform may route to several) of one account.

    Use it as an async context manager (or call :meth:`close`): the lean path holds a connection
    pool.

    :param endpoint: the account the targets live in; the lean path authorizes its requests as it says (key or Entra ID).
    :param write_path: ``"lean"`` or ``"sdk"``; ``None`` reads :data:`ENV_WRITE_PATH`, default lean.
    :param insecure: skip TLS verification for a non-loopback endpoint (as the SDK client does).
    """

    durable_writes = True  # an acknowledged upsert is durable by itself

    def __init__(
        self, targets: dict[str, ContainerProxy], governor: Governor, *, endpoint: CosmosEndpoint | None = None,
        write_path: WritePath | None = None, insecure: bool = False, batch_bytes: int = DEFAULT_BATCH_BYTES,
    ) -> None:
        chosen = write_path or os.environ.get(ENV_WRITE_PATH) or "lean"
        if chosen not in ("lean", "sdk"):
            raise UsageError(f"{ENV_WRITE_PATH} must be 'lean' or 'sdk', not {chosen!r}")
        if chosen == "lean" and endpoint is None:
            raise UsageError("the lean write path needs the target account's endpoint")
        self.write_path: WritePath = "lean" if chosen == "lean" else "sdk"
        self._endpoint = endpoint
        self._insecure = insecure
        self._containers = targets
        self.governor = governor
        self.batch_bytes = batch_bytes
        self.description = ", ".join(c.id for c in targets.values())
        self._targets: dict[str, _Target] = {}
        self._writer: LeanWriter | None = None
        self.stats = SinkStatistics()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self, state: dict[str, Any]) -> None:
        lean = self.write_path == "lean"
        for name, container in self._containers.items():
            try:
                properties = await container.read()
                ranges = [fr["Range"] async for fr in container.read_feed_ranges(force_refresh=True)]
            except Exception as exc:  # noqa: BLE001 - classified into an asyncmig error
                raise classify(exc).as_error(f"opening target container {container.id!r}") from exc
            address = LeanContainer(container.container_link, properties["_rid"], _rid_reader(container)) if lean else None
            self._targets[name] = _Target(
                container, properties["partitionKey"], sorted((r["min"], r["max"]) for r in ranges), address
            )
        self.governor.share_budget(
            [lane_name(name, low, high) for name, target in self._targets.items() for low, high in target.ranges]
        )
        if lean and self._writer is None:
            assert self._endpoint is not None  # checked in __init__
            # One connection per request the governor can admit: every lane (target range) at its
            # maximum concurrency, so a request never queues for a connection behind its own gate.
            lanes = sum(len(t.ranges) for t in self._targets.values())
            self._writer = LeanWriter(self._endpoint, connections=max(1, lanes) * DEFAULT_MAX_CONCURRENCY,
                                      insecure=self._insecure)

    def plan(self, target: str, documents: list[Document]) -> tuple[list[WriteUnit], list[Rejection]]:
        spec = self._targets[target]
        groups: dict[bytes, list[tuple[Document, bytes]]] = defaultdict(list)
        keys: dict[bytes, list[Any]] = {}
        rejected: list[Rejection] = []
        for doc in documents:
            # An exact-size copy: orjson's result can keep a much larger allocation alive (measured
            # ~120 KB for ~17 KB of JSON), and these bytes live until the unit is written.
            try:
                encoded = bytes(memoryview(jsoncodec.dumps(doc))) if isinstance(doc, dict) else b""
            except jsoncodec.NonFiniteNumber as exc:
                rejected.append(Rejection(doc, str(exc), 400))
                continue
            problem = document_problem(doc, len(encoded)) or partition_key_problem(spec.definition, doc)
            if problem:
                rejected.append(Rejection(doc, problem, 413 if "bytes" in problem else 400))
                continue
            values = partition_key_values(spec.definition, doc)
            key = jsoncodec.dumps(values)
            keys.setdefault(key, values)
            groups[key].append((doc, encoded))
        units: list[WriteUnit] = []
        for key, members in groups.items():
            values = keys[key]
            lane = spec.lane(target, effective_partition_key(spec.definition, values))
            if len(members) == 1 or not values or {} in values:  # alone, or an empty/undefined key: single upserts
                units.extend(WriteUnit(target, lane, [doc], encoded=[encoded]) for doc, encoded in members)
                continue
            shared = values[0] if len(values) == 1 else values
            chunk: list[Document] = []
            chunk_encoded: list[bytes] = []
            chunk_bytes = 0
            for doc, encoded in members:
                if chunk and (len(chunk) >= MAX_BATCH_OPERATIONS or chunk_bytes + len(encoded) > self.batch_bytes):
                    units.append(_unit(target, lane, chunk, chunk_encoded, shared))
                    chunk, chunk_encoded, chunk_bytes = [], [], 0
                chunk.append(doc)
                chunk_encoded.append(encoded)
                chunk_bytes += len(encoded)
            units.append(_unit(target, lane, chunk, chunk_encoded, shared))
        return units, rejected

    def plan_deletes(self, target: str, documents: list[Document]) -> tuple[list[WriteUnit], list[Rejection]]:
        """One delete per document (a delete of a document already gone succeeds)."""
        spec = self._targets[target]
        units: list[WriteUnit] = []
        rejected: list[Rejection] = []
        for doc in documents:
            if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
                rejected.append(Rejection(doc, "a deleted document without an id cannot be deleted", 400))
                continue
            values = partition_key_values(spec.definition, doc)
            lane = spec.lane(target, effective_partition_key(spec.definition, values))
            units.append(WriteUnit(target, lane, [doc], values[0] if len(values) == 1 else values, delete=True))
        return units, rejected

    async def write(self, unit: WriteUnit) -> WriteOutcome:
        outcome = WriteOutcome()
        backoff = Backoff()
        pending = [unit]
        while pending:
            current = pending.pop()
            failure = await self._attempt(current, outcome, pending)
            if failure is None:
                continue
            self.stats.retries += 1
            pending.append(current)
            # Counts 429s too: endless throttling ends the run. For a 429 the partition gate's pause
            # does the waiting; other waits happen outside the partition slot, so other writers proceed.
            await wait_to_retry(backoff, failure, what=f"writing to {self._targets[current.target].container.id!r}",
                                sleep=failure.kind != "throttled")
        return outcome

    async def _attempt(self, unit: WriteUnit, outcome: WriteOutcome, pending: list[WriteUnit]) -> Failure | None:
        """Send one request; returns the failure when ``unit`` must be retried, else None."""
        spec = self._targets[unit.target]
        estimate = spec.ru_per_doc * len(unit.documents)
        async with self.governor.request(unit.lane, estimate) as ticket:
            self.stats.requests += 1
            try:
                reported = await self._send(spec, unit)
            except _RefusedBySdk as exc:
                ticket.charge = 0.0
                if unit.batch:
                    pending.extend(_singles(unit))
                else:
                    outcome.rejected.append(Rejection(unit.documents[0], f"refused by the SDK: {exc}", 400))
                return None
            except Exception as exc:  # noqa: BLE001 - every failure is classified below
                failure = classify(exc)
                ticket.charge = failure.charge if failure.charge is not None else _unreported_charge(failure, unit)
                self.stats.ru += ticket.charge
                if failure.kind == "throttled":
                    self.stats.throttled += 1
                    ticket.throttled(failure.retry_after_s, failure.charge)
                    return failure
                if failure.retryable:
                    return failure
                if failure.kind == "permanent":
                    _isolate(unit, failure, outcome, pending)
                    return None
                raise failure.as_error(f"writing to {spec.container.id!r}") from exc
            charge = estimate if reported is None else reported
            ticket.charge = charge
            self.stats.ru += charge
            self.stats.written += len(unit.documents)
            outcome.written += len(unit.documents)
            spec.ru_per_doc = 0.8 * spec.ru_per_doc + 0.2 * charge / len(unit.documents)
            return None

    async def _send(self, spec: _Target, unit: WriteUnit) -> float | None:
        """Send one unit's request; returns its charge (None when the response did not say)."""
        if unit.delete:
            return await _delete_with_sdk(spec.container, unit)
        if self._writer is None or spec.lean is None:
            return await _send_with_sdk(spec.container, unit)
        encoded = unit.encoded if unit.encoded is not None else [jsoncodec.dumps(d) for d in unit.documents]
        key = partition_key_values(spec.definition, unit.documents[0])
        if unit.batch:
            return await self._writer.upsert_batch(spec.lean, key, encoded)
        return await self._writer.upsert(spec.lean, key, encoded[0])

    async def flush(self) -> dict[str, Any]:
        return {}  # every acknowledged upsert is already durable

    async def close(self) -> None:
        self._targets.clear()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with anyio.CancelScope(shield=True):  # also on the way out of a cancelled run
                await writer.close()


class _RefusedBySdk(Exception):
    """The SDK refused a request before sending it (its own client-side validation)."""


# What the SDK's own check of a document's id raises (azure.cosmos._base._validate_resource) before
# it sends anything: the one client-side verdict on a document, as opposed to a bug.
_SDK_DOCUMENT_REFUSALS = frozenset({
    "Id contains illegal chars.", "Id ends with a space or newline.", "Id type must be a string.",
})


def refused_by_sdk(exc: BaseException) -> bool:
    """True when ``exc`` is the SDK refusing a document's id, which dead-letters that document."""
    return isinstance(exc, ValueError | TypeError) and str(exc) in _SDK_DOCUMENT_REFUSALS


async def _send_with_sdk(container: ContainerProxy, unit: WriteUnit) -> float | None:
    result: Any
    try:
        if unit.batch:
            operations = [("upsert", (doc,)) for doc in unit.documents]
            result = await container.execute_item_batch(operations, partition_key=unit.partition_key)
        else:
            result = await container.upsert_item(unit.documents[0], no_response=True)
    except (ValueError, TypeError) as exc:
        if not refused_by_sdk(exc):
            raise  # not a verdict on the document: a bug must not dead-letter every document
        raise _RefusedBySdk(str(exc)) from exc
    charge = result.get_response_headers().get("x-ms-request-charge")
    return None if charge is None else float(charge)


async def _delete_with_sdk(container: ContainerProxy, unit: WriteUnit) -> float | None:
    """Delete the unit's document; one already gone (404 without a sub-status) counts as deleted."""
    document = unit.documents[0]
    key = unit.partition_key if unit.partition_key != {} else NonePartitionKeyValue
    seen: list[Any] = []
    try:
        await container.delete_item(document["id"], partition_key=key,
                                    response_hook=lambda headers, _: seen.append(headers))
    except CosmosResourceNotFoundError as exc:
        if getattr(exc, "sub_status", None) not in (None, 0):  # the container itself is missing
            raise
        return _charge(exc.headers)
    return _charge(seen[-1] if seen else None)


def _charge(headers: Any) -> float | None:
    value = headers.get("x-ms-request-charge") if headers is not None else None
    return None if value is None else float(value)


def _unreported_charge(failure: Failure, unit: WriteUnit) -> float:
    """The RU of a failed request whose response named no charge. An error the service answered
    costs nothing then; without an answer (a dropped connection) or after a timeout the writes may
    have run, so they are counted at their published cost (:mod:`~asyncmig.core.cosmos.rucost`,
    without the per-term surcharge, which needs the index policy)."""
    in_transit = failure.status is None and failure.kind == "transient"
    if not (in_transit or failure.status == 408):
        return 0.0
    encoded = unit.encoded if unit.encoded is not None else [jsoncodec.dumps(d) for d in unit.documents]
    return sum(rucost.write(len(body), 0) for body in encoded)


def _rid_reader(container: ContainerProxy) -> Callable[[], Awaitable[str]]:
    """Reads the container's current ``_rid`` (after it was deleted and re-created)."""
    async def read_rid() -> str:
        return str((await container.read())["_rid"])
    return read_rid


def _unit(
    target: str, lane: str, documents: list[Document], encoded: list[bytes] | None, shared: Any
) -> WriteUnit:
    if len(documents) == 1:
        return WriteUnit(target, lane, documents, encoded=encoded)
    return WriteUnit(target, lane, documents, shared, batch=True, encoded=encoded)


def _singles(unit: WriteUnit) -> list[WriteUnit]:
    """A batch's documents as single upserts, keeping their encoded JSON."""
    encoded = unit.encoded
    return [WriteUnit(unit.target, unit.lane, [doc], encoded=None if encoded is None else [encoded[i]])
            for i, doc in enumerate(unit.documents)]


def _isolate(unit: WriteUnit, failure: Failure, outcome: WriteOutcome, pending: list[WriteUnit]) -> None:
    """Split a failed batch so the good documents are retried and the bad one is rejected."""
    if not unit.batch:
        outcome.rejected.append(Rejection(unit.documents[0], failure.reason, failure.status))
        return
    index = failure.error_index
    if index is None or not 0 <= index < len(unit.documents):  # the batch as a whole was refused
        pending.extend(_singles(unit))
        return
    outcome.rejected.append(Rejection(unit.documents[index], failure.reason, failure.status))
    rest = unit.documents[:index] + unit.documents[index + 1:]
    encoded = None if unit.encoded is None else unit.encoded[:index] + unit.encoded[index + 1:]
    if rest:
        pending.append(_unit(unit.target, unit.lane, rest, encoded, unit.partition_key))
