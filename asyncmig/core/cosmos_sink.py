"""The Cosmos DB sink: idempotent upserts, transactional batches per logical partition, paced per
target physical range by the governor, with failed batches split so one bad document cannot
hold back the good ones.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import anyio
from azure.cosmos.aio import ContainerProxy

from asyncmig.core import jsoncodec
from asyncmig.core.governor import Governor
from asyncmig.core.partition_keys import effective_partition_key, partition_key_values
from asyncmig.core.retry import Backoff, Failure, classify
from asyncmig.core.sink import Rejection, SinkStatistics, WriteOutcome, WriteUnit
from asyncmig.core.transform import Document

MAX_DOCUMENT_BYTES = 2 * 1024 * 1024
SYSTEM_OVERHEAD_BYTES = 200  # _rid, _self, _etag, _attachments, _ts added by the service
MAX_BATCH_OPERATIONS = 100
DEFAULT_BATCH_BYTES = 1024 * 1024
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


@dataclass(slots=True)
class _Target:
    container: ContainerProxy
    definition: dict[str, Any]
    ranges: list[tuple[str, str]]
    ru_per_doc: float = 10.0  # running estimate, corrected by every real charge

    def lane(self, target: str, epk: str) -> str:
        for low, high in self.ranges:
            if low <= epk < high:
                return f"{target}[{low},{high})"
        return f"{target}[?]"


class CosmosSink:
    """Upserts into one or more containers (a transform may route to several)."""

    def __init__(
        self, targets: dict[str, ContainerProxy], governor: Governor, *, batch_bytes: int = DEFAULT_BATCH_BYTES,
    ) -> None:
        self._containers = targets
        self.governor = governor
        self.batch_bytes = batch_bytes
        self.description = ", ".join(c.id for c in targets.values())
        self._targets: dict[str, _Target] = {}
        self.stats = SinkStatistics()

    async def open(self, state: dict[str, Any]) -> None:
        for name, container in self._containers.items():
            try:
                properties = await container.read()
                ranges = [fr["Range"] async for fr in container.read_feed_ranges(force_refresh=True)]
            except Exception as exc:  # noqa: BLE001 - classified into an asyncmig error
                raise classify(exc).as_error(f"opening target container {container.id!r}") from exc
            self._targets[name] = _Target(
                container, properties["partitionKey"], sorted((r["min"], r["max"]) for r in ranges)
            )

    def plan(self, target: str, documents: list[Document]) -> tuple[list[WriteUnit], list[Rejection]]:
        spec = self._targets[target]
        groups: dict[bytes, list[tuple[Document, int]]] = defaultdict(list)
        keys: dict[bytes, list[Any]] = {}
        rejected: list[Rejection] = []
        for doc in documents:
            size = len(jsoncodec.dumps(doc)) if isinstance(doc, dict) else 0
            problem = document_problem(doc, size)
            if problem:
                rejected.append(Rejection(doc, problem, 413 if "bytes" in problem else 400))
                continue
            values = partition_key_values(spec.definition, doc)
            key = jsoncodec.dumps(values)
            keys.setdefault(key, values)
            groups[key].append((doc, size))
        units: list[WriteUnit] = []
        for key, members in groups.items():
            values = keys[key]
            lane = spec.lane(target, effective_partition_key(spec.definition, values))
            if len(members) == 1 or {} in values:  # a lone document, or an undefined key: single upserts
                units.extend(WriteUnit(target, lane, [doc]) for doc, _ in members)
                continue
            shared = values[0] if len(values) == 1 else values
            chunk: list[Document] = []
            chunk_bytes = 0
            for doc, size in members:
                if chunk and (len(chunk) >= MAX_BATCH_OPERATIONS or chunk_bytes + size > self.batch_bytes):
                    units.append(_unit(target, lane, chunk, shared))
                    chunk, chunk_bytes = [], 0
                chunk.append(doc)
                chunk_bytes += size
            units.append(_unit(target, lane, chunk, shared))
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
            delay = backoff.next_delay(failure)  # counts 429s too: endless throttling ends the run
            if delay is None:
                raise failure.as_error(f"writing to {self._targets[current.target].container.id!r}")
            if failure.kind != "throttled":  # for a 429 the partition gate's pause does the waiting
                await anyio.sleep(delay)  # outside the partition slot, so other writers proceed
        return outcome

    async def _attempt(self, unit: WriteUnit, outcome: WriteOutcome, pending: list[WriteUnit]) -> Failure | None:
        """Send one request; returns the failure when ``unit`` must be retried, else None."""
        spec = self._targets[unit.target]
        estimate = spec.ru_per_doc * len(unit.documents)
        async with self.governor.request(unit.lane, estimate) as ticket:
            self.stats.requests += 1
            try:
                result: Any
                if unit.batch:
                    operations = [("upsert", (doc,)) for doc in unit.documents]
                    result = await spec.container.execute_item_batch(operations, partition_key=unit.partition_key)
                else:
                    result = await spec.container.upsert_item(unit.documents[0], no_response=True)
            except ValueError as exc:  # the SDK's own client-side validation (e.g. an id it refuses)
                ticket.charge = 0.0
                if unit.batch:
                    pending.extend(WriteUnit(unit.target, unit.lane, [d]) for d in unit.documents)
                else:
                    outcome.rejected.append(Rejection(unit.documents[0], f"refused by the SDK: {exc}", 400))
                return None
            except Exception as exc:  # noqa: BLE001 - every failure is classified below
                failure = classify(exc)
                ticket.charge = failure.charge or 0.0
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
            charge = float(result.get_response_headers().get("x-ms-request-charge", estimate))
            ticket.charge = charge
            self.stats.ru += charge
            self.stats.written += len(unit.documents)
            outcome.written += len(unit.documents)
            spec.ru_per_doc = 0.8 * spec.ru_per_doc + 0.2 * charge / len(unit.documents)
            return None

    async def flush(self) -> dict[str, Any]:
        return {}  # every acknowledged upsert is already durable

    async def close(self) -> None:
        self._targets.clear()


def _unit(target: str, lane: str, documents: list[Document], shared: Any) -> WriteUnit:
    if len(documents) == 1:
        return WriteUnit(target, lane, documents)
    return WriteUnit(target, lane, documents, shared, batch=True)


def _isolate(unit: WriteUnit, failure: Failure, outcome: WriteOutcome, pending: list[WriteUnit]) -> None:
    """Split a failed batch so the good documents are retried and the bad one is rejected."""
    if not unit.batch:
        outcome.rejected.append(Rejection(unit.documents[0], failure.reason, failure.status))
        return
    index = failure.error_index
    if index is None or not 0 <= index < len(unit.documents):  # the batch as a whole was refused
        pending.extend(WriteUnit(unit.target, unit.lane, [d]) for d in unit.documents)
        return
    outcome.rejected.append(Rejection(unit.documents[index], failure.reason, failure.status))
    rest = unit.documents[:index] + unit.documents[index + 1:]
    if rest:
        pending.append(_unit(unit.target, unit.lane, rest, unit.partition_key))
