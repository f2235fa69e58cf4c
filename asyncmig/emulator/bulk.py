"""Non-atomic batches: what the .NET, Java and JavaScript SDKs' bulk modes send.

Such a request is addressed to a physical range (``x-ms-documentdb-partitionkeyrangeid``), carries
``x-ms-cosmos-batch-atomic: false`` and no partition key header; every operation names its own key
in ``partitionKey`` (the JSON text of the key array). Each operation runs and commits on its own:
one that fails leaves the others in place. The answer lists one result per operation and is 200
when all succeeded, 207 otherwise. Per operation, as the SDKs expect to parse it:

* 429 / 3200 with ``retryAfterMilliseconds`` once the range's RU budget is spent (the operations
  before it keep their results, so the SDK retries only the throttled ones);
* 410 / 1002 when the key does not belong to the addressed range (the range was split since the
  client cached its routing map), so the SDK refreshes its map and re-routes that operation;
* 424 for the operations after a failure when ``x-ms-cosmos-batch-continue-on-error`` is false.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asyncmig.core import jsoncodec
from asyncmig.emulator.partitioning import PhysicalRange, effective_partition_key, partition_key_values
from asyncmig.emulator.protocol import CosmosError, Reply, bad_request, batch_body, flag
from asyncmig.emulator.store import ContainerRecord

if TYPE_CHECKING:
    from asyncmig.emulator.items import Documents


def is_non_atomic(headers: Any) -> bool:
    return str(headers.get("x-ms-cosmos-batch-atomic", "true")).lower() == "false"


def _error(exc: CosmosError) -> dict[str, Any]:
    result: dict[str, Any] = {"statusCode": exc.status, "requestCharge": 0.0, "message": exc.message}
    if exc.substatus is not None:
        result["subStatusCode"] = exc.substatus
    return result


def _addressed_range(docs: Documents, container: ContainerRecord, headers: Any) -> PhysicalRange:
    range_id = headers.get("x-ms-documentdb-partitionkeyrangeid")
    if range_id is None:
        if headers.get("x-ms-documentdb-partitionkey") is None:
            raise bad_request("A non-atomic batch needs x-ms-documentdb-partitionkeyrangeid.")
        return docs._point_target(container, headers)[2]
    state = docs.store.range_state(container.rid, range_id)
    if not isinstance(state, PhysicalRange):
        raise CosmosError(410, f"Partition key range {range_id} is gone or unknown.", substatus=1002)
    return state


def _operation_key(container: ContainerRecord, op: Any) -> list[Any]:
    """The operation's partition key: its ``partitionKey`` text, else the key of its document."""
    if not isinstance(op, dict):
        raise bad_request("Each batch operation must be a JSON object.")
    raw = op.get("partitionKey")
    if raw is None:
        body = op.get("resourceBody")
        if isinstance(body, dict) and str(op.get("operationType", "")).lower() in ("create", "upsert", "replace"):
            return partition_key_values(container.partition_key, body)
        raise bad_request("Each operation of a non-atomic batch needs its partitionKey.", 1001)
    try:
        values = jsoncodec.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise bad_request(f"partitionKey {raw!r} is not valid JSON.") from exc
    if not isinstance(values, list):
        raise bad_request("partitionKey must be a JSON array.")
    return values


def run(docs: Documents, container: ContainerRecord, headers: Any, operations: list[Any]) -> Reply:
    """Run each operation in its own transaction; see the module docstring for the answers."""
    target = _addressed_range(docs, container, headers)
    continue_on_error = flag(headers, "x-ms-cosmos-batch-continue-on-error")
    results: list[dict[str, Any]] = []
    failed = False
    for op in operations:
        if failed and not continue_on_error:
            results.append({"statusCode": 424, "requestCharge": 0.0})
            continue
        result = _run_one(docs, container, target, op)
        failed = failed or result["statusCode"] >= 400
        results.append(result)
    ru = round(sum(float(result.get("requestCharge", 0)) for result in results), 2)
    reply_headers = docs._doc_headers(container, target, docs.store.current_lsn(container.rid), None)
    return Reply(207 if failed else 200, batch_body(results), ru, reply_headers)


def _run_one(docs: Documents, container: ContainerRecord, target: PhysicalRange, op: Any) -> dict[str, Any]:
    """One operation: admitted against the range's budget (and the request's priority and
    throughput bucket) like a request of its own, then run and committed alone."""
    try:
        values = _operation_key(container, op)
        epk = effective_partition_key(container.partition_key, values)
        if not target.contains(epk):
            raise CosmosError(410, f"The partition key is not served by range {target.id} (it was split).",
                              substatus=1002)
        try:
            grant = docs.admit(container, [target])
        except CosmosError as exc:
            if exc.status != 429:
                raise
            return {**_error(exc), "retryAfterMilliseconds": int(exc.headers.get("x-ms-retry-after-ms", "0"))}
        docs.store.begin()
        try:
            # Committed alone: its own LSN (None), and a view of just its own document.
            result = docs._batch_op(container, op, values, epk, None, docs.batch_view(container, epk, [op]))
        except BaseException:
            docs.store.rollback()
            raise
        docs.store.commit()
        docs.charge(container, [target], grant, float(result.get("requestCharge", 0)))
        return result
    except CosmosError as exc:
        return _error(exc)
