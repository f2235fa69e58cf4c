"""The Cosmos DB sink: idempotent upserts, paced per target physical range by the governor, with
per-operation results so one bad document cannot hold back the good ones.

Two write paths. ``lean`` (the default) sends **bulk batches per target physical range**, what the
.NET, Java and JavaScript SDKs' bulk modes send: up to 100 upserts and :data:`DEFAULT_BATCH_BYTES`
per request, each operation with its own partition key, each committed on its own
(:class:`~asyncmig.core.cosmos.lean_writer.LeanWriter`, reusing the JSON :meth:`CosmosSink.plan`
encoded to measure each document). A container keyed by ``/id`` thus needs one request per 100
documents instead of one per document. Per operation: 2xx is written; 429 is sent again after the
range's AIMD gate paused for its retry-after; 410/1002 (the range was split) re-reads the ranges and
re-routes the operation; other failures are classified by :func:`~asyncmig.core.cosmos.retry.classify`
exactly as the same reply to a single upsert (retried, dead-lettered with the reason, or fatal).
Documents of a container without a partition key go as single upserts.

``sdk`` (``ASYNCMIG_WRITE_PATH=sdk``) calls ``execute_item_batch``/``upsert_item``: the Python SDK
has no bulk mode, so it groups documents into atomic transactional batches per logical partition,
which gives nothing to a copy of unique keys (one request per document). Atomic batches are not
needed for a copy: every upsert is idempotent and resumable on its own, so the lean path has none.
Everything but the writes (container properties, feed ranges) goes through the SDK on both paths.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import anyio

from asyncmig.connection import CosmosEndpoint
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos import rucost
from asyncmig.core.cosmos.container import Container
from asyncmig.core.cosmos.lean_writer import BulkReply, LeanContainer, LeanWriter, bulk_operations
from asyncmig.core.cosmos.metadata import PhysicalRange
from asyncmig.core.cosmos.partition_keys import (
    effective_partition_key,
    partition_key_problem,
    partition_key_values,
    sdk_partition_key,
)
from asyncmig.core.cosmos.retry import Backoff, Failure, classify, wait_to_retry
from asyncmig.core.cosmos.transport import (
    THROUGHPUT_BUCKET_HEADER,
    CosmosHttpError,
    as_http_error,
    priority_headers,
)
from asyncmig.core.engine.governor import DEFAULT_MAX_CONCURRENCY, Governor
from asyncmig.core.engine.sink import Rejection, SinkStatistics, WriteOutcome, WriteUnit
from asyncmig.core.engine.transform import Document, strip_system
from asyncmig.errors import UsageError

if TYPE_CHECKING:
    from azure.cosmos.aio import ContainerProxy

WritePath = Literal["lean", "sdk"]
# Chooses the write path when the caller does not: an operational escape hatch back to the SDK's
# own requests, and how the end-to-end tests and benchmarks run the copier on either path.
ENV_WRITE_PATH = "ASYNCMIG_WRITE_PATH"

MAX_DOCUMENT_BYTES = 2 * 1024 * 1024
SYSTEM_OVERHEAD_BYTES = 200  # _rid, _self, _etag, _attachments, _ts added by the service
MAX_BATCH_OPERATIONS = 100
# Documents per bulk request, measured on the emulator with 16 KB vector documents keyed by /id
# (docs/throughput.md): 128 KB 13.8 requests per 100 documents and 0.176 ms of client CPU each,
# 256 KB 6.6 / 0.158 ms, 512 KB 3.4 / 0.143 ms and the most documents per second, 1 MB 1.8 / 0.149 ms
# and slower (each request holds the range longer). .NET's bulk mode uses about 220 KB.
DEFAULT_BATCH_BYTES = 512 * 1024
_BAD_ID = re.compile(r"[/\\?#]")
MAX_THROUGHPUT_BUCKET = 5
BULK_REQUEST_SECONDS = 0.5  # a bulk batch costs at most this much of its range's RU budget
Priority = Literal["High", "Low"]


@dataclass(frozen=True, slots=True)
class Politeness:
    """How a copy yields to the application sharing its containers (docs/throughput.md).

    :ivar priority: ``Low`` requests are throttled first when a container is busy (priority-based
        execution must be enabled on the account; otherwise the header is ignored); the copy's
        source reads carry it too (:class:`~asyncmig.core.cosmos.source.CosmosSource`).
    :ivar throughput_bucket: meter the copy's writes in this throughput bucket (1-5), capped at the
        share of the container's RU/s the bucket was given.
    """

    priority: Priority | None = None
    throughput_bucket: int | None = None

    def headers(self) -> dict[str, str]:
        """The request headers the lean path adds to every write."""
        headers = priority_headers(self.priority)
        if self.throughput_bucket is not None:
            headers[THROUGHPUT_BUCKET_HEADER] = str(self.throughput_bucket)
        return headers

    def sdk_options(self) -> dict[str, Any]:
        """The same, as the SDK's keyword arguments (it sends the same headers)."""
        options: dict[str, Any] = {}
        if self.priority:
            options["priority"] = self.priority
        if self.throughput_bucket is not None:
            options["throughput_bucket"] = self.throughput_bucket
        return options


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
class _BulkUnit(WriteUnit):
    """Upserts of one target physical range, sent as one non-atomic (bulk) batch."""

    range_id: str = ""
    operations: list[bytes] = field(default_factory=list)  # each document's bulk upsert
    epks: list[str] = field(default_factory=list)  # each document's effective partition key, to re-route


@dataclass(slots=True)
class _Target:
    container: Container
    definition: dict[str, Any]
    ranges: list[PhysicalRange]  # ids are empty on the SDK path, which addresses ranges by key
    lean: LeanContainer | None  # how the lean path addresses it; None on the SDK path
    ru_per_doc: float = 10.0  # running estimate, corrected by every real charge
    routing_version: int = 0  # bumped by every refresh of ``ranges``
    routing_lock: anyio.Lock = field(default_factory=anyio.Lock)

    def range_of(self, epk: str) -> PhysicalRange | None:
        for r in self.ranges:
            if r.low <= epk < r.high:
                return r
        return None

    def lane(self, target: str, epk: str) -> str:
        r = self.range_of(epk)
        return f"{target}[?]" if r is None else lane_name(target, r.low, r.high)


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
        self, targets: Mapping[str, Container | ContainerProxy], governor: Governor, *, endpoint: CosmosEndpoint | None = None,
        write_path: WritePath | None = None, insecure: bool = False, batch_bytes: int = DEFAULT_BATCH_BYTES,
        politeness: Politeness | None = None,
    ) -> None:
        chosen = write_path or os.environ.get(ENV_WRITE_PATH) or "lean"
        if chosen not in ("lean", "sdk"):
            raise UsageError(f"{ENV_WRITE_PATH} must be 'lean' or 'sdk', not {chosen!r}")
        if chosen == "lean" and endpoint is None:
            raise UsageError("the lean write path needs the target account's endpoint")
        self.write_path: WritePath = "lean" if chosen == "lean" else "sdk"
        self._endpoint = endpoint
        self._insecure = insecure
        self._containers = {name: Container.of(container) for name, container in targets.items()}
        self.governor = governor
        self.batch_bytes = batch_bytes
        self.politeness = politeness or Politeness()
        self.description = ", ".join(c.id for c in self._containers.values())
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
                feed = [fr["Range"] for fr in await container.feed_ranges()]
            except Exception as exc:  # noqa: BLE001 - classified into an asyncmig error
                raise classify(exc).as_error(f"opening target container {container.id!r}") from exc
            address = LeanContainer(container.link, properties["_rid"], _rid_reader(container)) if lean else None
            ranges = sorted((PhysicalRange("", r["min"], r["max"]) for r in feed), key=lambda r: r.low)
            self._targets[name] = _Target(container, properties["partitionKey"], ranges, address)
        if lean and self._writer is None:
            assert self._endpoint is not None  # checked in __init__
            # One connection per request the governor can admit: every lane (target range) at its
            # maximum concurrency, so a request never queues for a connection behind its own gate.
            lanes = sum(len(t.ranges) for t in self._targets.values())
            self._writer = LeanWriter(self._endpoint, connections=max(1, lanes) * DEFAULT_MAX_CONCURRENCY,
                                      insecure=self._insecure, politeness=self.politeness.headers())
        for target in self._targets.values():  # the lean path addresses bulk batches by range id
            if self._writer is not None and target.lean is not None:
                try:
                    target.ranges = await self._writer.physical_ranges(target.lean)
                except Exception as exc:  # noqa: BLE001 - classified into an asyncmig error
                    raise classify(exc).as_error(f"reading the ranges of {target.container.id!r}") from exc
        self._share_budget()

    def _share_budget(self) -> None:
        self.governor.share_budget(
            [lane_name(name, r.low, r.high) for name, target in self._targets.items() for r in target.ranges]
        )

    def plan(self, target: str, documents: list[Document]) -> tuple[list[WriteUnit], list[Rejection]]:
        spec = self._targets[target]
        groups: dict[bytes, list[tuple[Document, bytes]]] = defaultdict(list)
        keys: dict[bytes, list[Any]] = {}
        rejected: list[Rejection] = []
        for doc in documents:
            encoded = jsoncodec.dumps(doc, finite=True) if isinstance(doc, dict) else b""
            problem = document_problem(doc, len(encoded)) or partition_key_problem(spec.definition, doc)
            if problem:
                rejected.append(Rejection(doc, problem, 413 if "bytes" in problem else 400))
                continue
            values = partition_key_values(spec.definition, doc)
            key = jsoncodec.dumps(values)
            keys.setdefault(key, values)
            groups[key].append((doc, encoded))
        if spec.lean is not None:
            return self._plan_bulk(target, spec, groups, keys), rejected
        return self._plan_transactional(target, spec, groups, keys), rejected

    def _plan_bulk(self, target: str, spec: _Target, groups: dict[bytes, list[tuple[Document, bytes]]],
                   keys: dict[bytes, list[Any]]) -> list[WriteUnit]:
        """The lean path: one bulk batch per target physical range (up to the operation and byte
        caps), whatever the logical partitions. An undefined key travels as ``[{}]``, as the SDKs'
        bulk modes send it; the empty key of a container without one goes as a single upsert."""
        units: list[WriteUnit] = []
        by_range: dict[str, list[tuple[Document, bytes, str]]] = defaultdict(list)
        for key, members in groups.items():
            values = keys[key]
            epk = effective_partition_key(spec.definition, values)
            if not values:
                lane = spec.lane(target, epk)
                units.extend(WriteUnit(target, lane, [doc], encoded=[bytes(memoryview(encoded))])
                             for doc, encoded in members)
                continue
            upserts = bulk_operations(values, (encoded for _, encoded in members))
            by_range[spec.lane(target, epk)] += [(doc, op, epk) for (doc, _), op in zip(members, upserts, strict=True)]
        for lane, operations in by_range.items():
            units += self._bulk_units(target, spec, lane, operations)
        return units

    def _bulk_units(self, target: str, spec: _Target, lane: str,
                    members: list[tuple[Document, bytes, str]]) -> list[WriteUnit]:
        """Chunks of one range's operations, each within the operation and byte caps."""
        r = spec.range_of(members[0][2])
        range_id = "" if r is None else r.id
        most = self._operations_per_request(spec)
        units: list[WriteUnit] = []
        chunk: list[tuple[Document, bytes, str]] = []
        chunk_bytes = 0
        for member in members:
            size = len(member[1])
            if chunk and (len(chunk) >= most or chunk_bytes + size > self.batch_bytes):
                units.append(_bulk_unit(target, lane, range_id, chunk))
                chunk, chunk_bytes = [], 0
            chunk.append(member)
            chunk_bytes += size
        units.append(_bulk_unit(target, lane, range_id, chunk))
        return units

    def _operations_per_request(self, spec: _Target) -> int:
        """At most 100 operations, and at most what half a second of the range's share of the RU
        budget pays for: Cosmos DB admits a bulk batch's operations one by one against the range's
        bucket (one second of its throughput), so a bigger request is throttled part-way whenever it
        is sent, and every request would count as throttled."""
        budget = self.governor.budget.budget
        lanes = sum(len(t.ranges) for t in self._targets.values())
        if budget is None or not lanes:
            return MAX_BATCH_OPERATIONS
        affordable = int(BULK_REQUEST_SECONDS * budget / lanes / max(spec.ru_per_doc, 1.0))
        return max(1, min(MAX_BATCH_OPERATIONS, affordable))

    def _plan_transactional(self, target: str, spec: _Target, groups: dict[bytes, list[tuple[Document, bytes]]],
                            keys: dict[bytes, list[Any]]) -> list[WriteUnit]:
        """The SDK path: atomic batches of one logical partition (the Python SDK has no bulk mode)."""
        units: list[WriteUnit] = []
        for key, members in groups.items():
            values = keys[key]
            lane = spec.lane(target, effective_partition_key(spec.definition, values))
            # Exact-size copies: orjson's result can keep a much larger allocation alive (measured
            # ~120 KB for ~17 KB of JSON), and these bytes live until the unit is written. (A bulk
            # operation is a new exact-size object already.)
            members = [(doc, bytes(memoryview(encoded))) for doc, encoded in members]
            if len(members) == 1 or not values or {} in values:  # alone, or an empty/undefined key: single upserts
                units.extend(WriteUnit(target, lane, [doc], encoded=[encoded]) for doc, encoded in members)
                continue
            shared = sdk_partition_key(values)
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
        return units

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
            units.append(WriteUnit(target, lane, [doc], sdk_partition_key(values), delete=True))
        return units, rejected

    async def write(self, unit: WriteUnit) -> WriteOutcome:
        outcome = WriteOutcome()
        backoff = Backoff()
        pending = [unit]
        while pending:
            current = pending.pop()
            if isinstance(current, _BulkUnit):
                retry = await self._attempt_bulk(current, outcome, pending)
            else:
                failure = await self._attempt(current, outcome, pending)
                retry = None if failure is None else (failure, current)
            if retry is None:
                continue
            failure, again = retry
            self.stats.retries += 1
            pending.append(again)
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
                failure = self._refused(exc, ticket, unit)
                if failure.retryable:
                    return failure
                if failure.kind == "permanent":
                    _isolate(unit, failure, outcome, pending)
                    return None
                raise failure.as_error(f"writing to {spec.container.id!r}") from exc
            charge = estimate if reported is None else reported
            self._written(spec, ticket, charge, len(unit.documents), outcome)
            return None

    async def _attempt_bulk(self, unit: _BulkUnit, outcome: WriteOutcome,
                            pending: list[WriteUnit]) -> tuple[Failure, WriteUnit] | None:
        """Send one bulk batch; returns what to send again (and why) when some operations must be
        retried in place. Operations of a split range are re-routed into ``pending``."""
        spec = self._targets[unit.target]
        assert self._writer is not None and spec.lean is not None
        estimate = spec.ru_per_doc * len(unit.documents)
        seen_routing = spec.routing_version
        moved: list[int] = []
        async with self.governor.request(unit.lane, estimate) as ticket:
            self.stats.requests += 1
            try:
                reply = await self._writer.bulk(spec.lean, unit.range_id, unit.operations)
            except Exception as exc:  # noqa: BLE001 - every failure is classified below
                failure = self._refused(exc, ticket, unit)
                if failure.kind == "split":  # the addressed range is gone: re-route every operation
                    moved = list(range(len(unit.documents)))
                elif failure.retryable:
                    return failure, unit
                elif failure.kind == "permanent" and len(unit.documents) > 1:
                    pending.extend(_bulk_subset(unit, [i]) for i in range(len(unit.documents)))  # find the bad one
                    return None
                elif failure.kind == "permanent":
                    outcome.rejected.append(Rejection(unit.documents[0], failure.reason, failure.status))
                    return None
                else:
                    raise failure.as_error(f"writing to {spec.container.id!r}") from exc
            else:
                retry = self._settle_bulk(spec, unit, reply, ticket, outcome, moved)
                if retry is not None:
                    return retry
        if moved:
            await self._refresh_routing(unit.target, seen_routing)
            members = [(unit.documents[i], unit.operations[i], unit.epks[i]) for i in moved]
            pending += self._reroute(unit.target, spec, members)
        return None

    def _settle_bulk(self, spec: _Target, unit: _BulkUnit, reply: BulkReply, ticket: Any, outcome: WriteOutcome,
                     moved: list[int]) -> tuple[Failure, WriteUnit] | None:
        """Sort a bulk reply's results: written, rejected (with the reason), to retry here, or to
        re-route (appended to ``moved``); returns the retry and the failure that paces it."""
        written = 0
        again: list[int] = []
        pacing: Failure | None = None
        for index, result in enumerate(reply.results):
            status = _int(result.get("statusCode"))
            if 200 <= status < 300:
                written += 1
                continue
            failure = operation_failure(result)
            if failure.kind == "split":
                moved.append(index)
            elif failure.retryable:
                again.append(index)
                if pacing is None or failure.kind == "throttled" and pacing.kind != "throttled":
                    pacing = failure
                elif failure.kind == "throttled" and (failure.retry_after_s or 0) > (pacing.retry_after_s or 0):
                    pacing = failure
            elif failure.kind == "permanent":
                outcome.rejected.append(Rejection(unit.documents[index], failure.reason, failure.status))
            else:
                raise failure.as_error(f"writing to {spec.container.id!r}")
        charge = reply.charge if reply.charge is not None else sum(_float(r.get("requestCharge")) for r in reply.results)
        self._written(spec, ticket, charge, written, outcome)
        if pacing is None:
            return None
        if pacing.kind == "throttled":
            self.stats.throttled += 1
            ticket.slot.throttled(pacing.retry_after_s)  # the range's gate pauses and shrinks
        return pacing, _bulk_subset(unit, again)

    def _refused(self, exc: Exception, ticket: Any, unit: WriteUnit) -> Failure:
        """Classify a refused request, settle its charge, and report a 429 to the range's gate."""
        failure = classify(exc)
        ticket.charge = failure.charge if failure.charge is not None else _unreported_charge(failure, unit)
        self.stats.ru += ticket.charge
        if failure.kind == "throttled":
            self.stats.throttled += 1
            ticket.throttled(failure.retry_after_s, failure.charge)
        return failure

    def _written(self, spec: _Target, ticket: Any, charge: float, written: int, outcome: WriteOutcome) -> None:
        ticket.charge = charge
        self.stats.ru += charge
        self.stats.written += written
        outcome.written += written
        if written:
            spec.ru_per_doc = 0.8 * spec.ru_per_doc + 0.2 * charge / written

    async def _refresh_routing(self, target: str, seen_version: int) -> None:
        """Re-read a target's physical ranges after a split (once for all writers that saw it)."""
        spec = self._targets[target]
        assert self._writer is not None and spec.lean is not None
        async with spec.routing_lock:
            if spec.routing_version != seen_version:
                return  # another writer already refreshed after this failure
            try:
                spec.ranges = await self._writer.physical_ranges(spec.lean)
            except Exception as exc:  # noqa: BLE001 - classified into an asyncmig error
                raise classify(exc).as_error(f"reading the ranges of {spec.container.id!r}") from exc
            spec.routing_version += 1
            self._share_budget()

    def _reroute(self, target: str, spec: _Target, members: list[tuple[Document, bytes, str]]) -> list[WriteUnit]:
        """Operations of a split range as bulk batches to the ranges that serve them now."""
        by_lane: dict[str, list[tuple[Document, bytes, str]]] = defaultdict(list)
        for member in members:
            by_lane[spec.lane(target, member[2])].append(member)
        return [unit for lane, group in by_lane.items() for unit in self._bulk_units(target, spec, lane, group)]

    async def _send(self, spec: _Target, unit: WriteUnit) -> float | None:
        """Send one unit's request; returns its charge (None when the response did not say)."""
        if unit.delete:
            return await _delete_with_sdk(await spec.container.sdk(), unit, self.politeness.sdk_options())
        if self._writer is None or spec.lean is None:
            return await _send_with_sdk(await spec.container.sdk(), unit, self.politeness.sdk_options())
        encoded = unit.encoded if unit.encoded is not None else [jsoncodec.dumps(d) for d in unit.documents]
        key = partition_key_values(spec.definition, unit.documents[0])
        if unit.batch:
            return await self._writer.upsert_batch(spec.lean, key, encoded)
        return await self._writer.upsert(spec.lean, key, encoded[0])

    async def stored(self, target: str, documents: list[Document]) -> list[bool]:
        """Whether each document is in ``target`` as an upsert of it would leave it (system
        properties aside; compared as exact JSON): read back one by one, a point read costing a few
        RU against ~17 for writing a vector document again.

        :raises Exception: what a read raised other than 404 (the caller writes them instead).
        """
        spec = self._targets[target]
        proxy = await spec.container.sdk()
        limiter = anyio.CapacityLimiter(DEFAULT_MAX_CONCURRENCY)
        found = [False] * len(documents)

        async def check(index: int, document: Document) -> None:
            key = sdk_partition_key(partition_key_values(spec.definition, document))
            charges: list[Mapping[str, Any]] = []
            async with limiter:
                try:
                    current = await proxy.read_item(
                        document["id"], partition_key=key, response_hook=lambda headers, _: charges.append(headers))
                except Exception as exc:  # noqa: BLE001 - a missing document is an answer; the rest propagate
                    if (http := as_http_error(exc)) is not None and http.status == 404:
                        return
                    raise
                finally:
                    self.stats.ru += sum(_charge(h) or 0.0 for h in charges)
            found[index] = jsoncodec.canonical(strip_system(current)) == jsoncodec.canonical(document)

        async with anyio.create_task_group() as group:
            for index, document in enumerate(documents):
                group.start_soon(check, index, document)
        return found

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


async def _send_with_sdk(container: ContainerProxy, unit: WriteUnit, options: Mapping[str, Any]) -> float | None:
    result: Any
    try:
        if unit.batch:
            operations = [("upsert", (doc,)) for doc in unit.documents]
            result = await container.execute_item_batch(operations, partition_key=unit.partition_key, **options)
        else:
            result = await container.upsert_item(unit.documents[0], no_response=True, **options)
    except (ValueError, TypeError) as exc:
        if not refused_by_sdk(exc):
            raise  # not a verdict on the document: a bug must not dead-letter every document
        raise _RefusedBySdk(str(exc)) from exc
    charge = result.get_response_headers().get("x-ms-request-charge")
    return None if charge is None else float(charge)


async def _delete_with_sdk(container: ContainerProxy, unit: WriteUnit, options: Mapping[str, Any]) -> float | None:
    """Delete the unit's document; one already gone (404 without a sub-status) counts as deleted."""
    document = unit.documents[0]
    seen: list[Any] = []
    try:
        await container.delete_item(document["id"], partition_key=unit.partition_key,
                                    response_hook=lambda headers, _: seen.append(headers), **options)
    except Exception as exc:  # noqa: BLE001 - a document already gone counts as deleted; the rest propagate
        http = as_http_error(exc)
        if http is None or http.status != 404 or http.sub_status not in (None, 0):  # sub-status: the container is missing
            raise
        return _charge(http.headers)
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


def operation_failure(result: Mapping[str, Any]) -> Failure:
    """A bulk operation's failed result, classified exactly as the same reply to a single upsert."""
    headers = {"x-ms-request-charge": str(_float(result.get("requestCharge")))}
    if result.get("retryAfterMilliseconds") is not None:
        headers["x-ms-retry-after-ms"] = str(result["retryAfterMilliseconds"])
    sub_status = _int(result.get("subStatusCode")) or None
    message = str(result.get("message") or "")
    return classify(CosmosHttpError(_int(result.get("statusCode")), sub_status, headers, message))


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _bulk_unit(target: str, lane: str, range_id: str, members: list[tuple[Document, bytes, str]]) -> _BulkUnit:
    """A bulk batch of the members (also of one: one code path for every per-operation answer)."""
    return _BulkUnit(target, lane, [m[0] for m in members], range_id=range_id,
                     operations=[m[1] for m in members], epks=[m[2] for m in members])


def _bulk_subset(unit: _BulkUnit, indexes: list[int]) -> _BulkUnit:
    return _BulkUnit(unit.target, unit.lane, [unit.documents[i] for i in indexes], range_id=unit.range_id,
                     operations=[unit.operations[i] for i in indexes], epks=[unit.epks[i] for i in indexes])


def _rid_reader(container: Container) -> Callable[[], Awaitable[str]]:
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
