"""The document plane: point operations, patch, transactional batch, queries and the change feed.

Each public method gets a resolved container and the request, does its work synchronously against
the store (so no other request interleaves), and returns a :class:`Reply` or raises
:class:`CosmosError`. Throttling happens before any work: a 429 never changes data.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

from asyncmig.core import jsoncodec
from asyncmig.emulator import bulk, costs, metrics, priority, query_plan
from asyncmig.emulator.partitioning import (
    PhysicalRange,
    effective_partition_key,
    partition_key_values,
    same_partition_key,
)
from asyncmig.emulator.protocol import (
    MAX_BATCH_OPERATIONS,
    MAX_DOCUMENT_BYTES,
    MAX_PAGE_BYTES,
    RAW_BODY,
    CosmosError,
    Reply,
    bad_request,
    batch_body,
    feed_body,
    flag,
    loads,
    not_found,
    page_size,
    parse_body,
    partition_key_header,
)
from asyncmig.emulator.query import QueryError, compile_query
from asyncmig.emulator.store import ContainerRecord, Store, StoredDoc, new_rid
from asyncmig.emulator.throttle import Stats, Throttle

_SYSTEM = ("_rid", "_self", "_etag", "_attachments", "_ts", "_lsn")
_BAD_ID = re.compile(r"[/\\?#]")
_SELECT_STAR = re.compile(r"^\s*select\s+\*\s+from\s", re.IGNORECASE)
_SELECT_ALL = re.compile(r"^\s*select\s+\*\s+from\s+\w+\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Grant:
    """What an admitted request is charged to: its range's budget and maybe a throughput bucket's."""

    rate: float                              # the range's RU/s
    bucket: tuple[str, float] | None = None  # (bucket name, its RU/s on the range)


class Documents:
    def __init__(self, store: Store, throttle: Throttle, stats: Stats) -> None:
        self.store = store
        self.throttle = throttle
        self.stats = stats
        self._policies: dict[str, tuple[str, costs.IndexingPolicy]] = {}
        self._epks: dict[tuple[str, str], tuple[list[Any], str]] = {}

    # -- metering ----------------------------------------------------------------------------
    def rate(self, container: ContainerRecord) -> float | None:
        """Per-range RU/s: the container's offer (or its database's) split over its online ranges."""
        offer = self._offer(container)
        if offer is None:
            return None
        content = offer["content"]
        autoscale = content.get("offerAutopilotSettings")
        total = autoscale["maxThroughput"] if autoscale else content.get("offerThroughput")
        if not total:
            return None
        return float(total) / max(1, len(self.store.ranges(container.rid)))

    def _offer(self, container: ContainerRecord) -> dict[str, Any] | None:
        offer = self.store.offer_for(container.rid)
        if offer is None:
            db = self.store.get_database(container.db)
            offer = self.store.offer_for(db["_rid"]) if db else None
        return offer

    def admit(self, container: ContainerRecord, ranges: list[PhysicalRange]) -> Grant | None:
        """Admit the current request on ``ranges`` or raise 429; the grant says what to charge.

        A request in a configured throughput bucket must fit that bucket first (429 / 3212), then
        the range as a whole, where a low-priority request leaves a reserve (429 / 3200); see
        :mod:`asyncmig.emulator.priority`.
        """
        if not self.throttle.enabled:
            return None  # (the rate is only needed to meter; --no-rate-limit skips finding it)
        rate = self.rate(container)
        if rate is None:
            return None
        request = priority.current()
        offer = self._offer(container)
        share = priority.bucket_share(offer["content"], request.bucket) if offer else None
        grant = Grant(rate, None if share is None else (f"bucket{request.bucket}", rate * share))
        if grant.bucket is not None:
            name, bucket_rate = grant.bucket
            waits = [w for r in ranges
                     if (w := self.throttle.admit(container.rid, f"{r.id}/{name}", bucket_rate)) is not None]
            if waits:
                self._throttled(max(waits), priority.BUCKET_THROTTLED_SUBSTATUS,
                                f"Request rate is large: throughput bucket {request.bucket} used its share of "
                                "the container's throughput.")
        waits = [w for r in ranges
                 if (w := self.throttle.admit(container.rid, r.id, rate, low_priority=request.low_priority))
                 is not None]
        if waits:
            self._throttled(max(waits), 3200,
                            "Request rate is large. More Request Units may be needed, so no changes were made. "
                            "Please retry this request later.")
        return grant

    def _throttled(self, wait_ms: int, substatus: int, message: str) -> NoReturn:
        self.stats.throttled += 1
        raise CosmosError(429, message, substatus=substatus, headers={"x-ms-retry-after-ms": str(wait_ms)})

    def charge(self, container: ContainerRecord, ranges: list[PhysicalRange], grant: Grant | None, ru: float) -> None:
        for r in ranges:
            if grant is not None:
                self.throttle.charge(container.rid, r.id, grant.rate, ru / len(ranges))
                if grant.bucket is not None:
                    name, bucket_rate = grant.bucket
                    self.throttle.charge(container.rid, f"{r.id}/{name}", bucket_rate, ru / len(ranges))
        self.stats.add_charge(f"{container.db}/{container.id}", ru)

    def _policy(self, container: ContainerRecord) -> costs.IndexingPolicy:
        """The container's indexing policy, rebuilt only when the container changes.

        Keyed by the container's ``_etag`` (every replace changes it). It used to be keyed by ``id()``
        of the policy dict, but each request parses a fresh container body, so the cache almost never
        hit, and when CPython reused a freed address it could return the policy from before a
        ``replace_container`` (stale write charges).
        """
        version = str(container.body.get("_etag", ""))
        cached = self._policies.get(container.rid)
        if cached is None or cached[0] != version:
            cached = (version, costs.IndexingPolicy(container.body.get("indexingPolicy")))
            self._policies[container.rid] = cached
        return cached[1]

    # -- routing -----------------------------------------------------------------------------
    def _range_for(self, container: ContainerRecord, epk: str) -> PhysicalRange:
        for r in self.store.ranges(container.rid):
            if r.contains(epk):
                return r
        raise CosmosError(500, f"no physical range holds EPK {epk}")

    def _scope(self, container: ContainerRecord, headers: Any) -> tuple[list[PhysicalRange], str, str]:
        """The physical ranges a read touches and its EPK bounds, from the routing headers."""
        range_id = headers.get("x-ms-documentdb-partitionkeyrangeid")
        pk = partition_key_header(headers)
        if range_id is not None:
            state = self.store.range_state(container.rid, range_id)
            if state is False:
                raise CosmosError(410, f"Partition key range {range_id} is gone (it was split).", substatus=1002)
            if state is None:
                raise CosmosError(410, f"Partition key range {range_id} does not exist.", substatus=1002)
            assert isinstance(state, PhysicalRange)
            # EPKs are upper-case hex; a client that sends lower case (the Python SDK's V1 hashes)
            # would otherwise compare above every boundary.
            low = max(state.min, headers.get("x-ms-start-epk", state.min).upper())
            high = min(state.max, headers.get("x-ms-end-epk", state.max).upper())
            return [state], low, high
        if pk is not None:
            epk = effective_partition_key(container.partition_key, pk)
            return [self._range_for(container, epk)], epk, epk + "\x00"
        low = headers.get("x-ms-start-epk", "").upper()
        high = headers.get("x-ms-end-epk", "FF").upper()
        return [r for r in self.store.ranges(container.rid) if r.min < high and low < r.max], low, high

    def _point_target(self, container: ContainerRecord, headers: Any) -> tuple[list[Any], str, PhysicalRange]:
        """Partition key values, EPK and range of a point operation.

        The (values, EPK) pair is memoised per container and raw header: the SDK's pure-Python
        MurmurHash was ~12 % of an upsert's server time, and workloads reuse their keys.
        """
        raw = headers.get("x-ms-documentdb-partitionkey")
        cached = self._epks.get((container.rid, raw)) if raw is not None else None
        if cached is None:
            values = partition_key_header(headers)
            if values is None:
                raise bad_request("This operation needs a partition key (x-ms-documentdb-partitionkey).", 1001)
            paths = container.partition_key.get("paths") or ()
            if values and len(values) != len(paths):  # ([] is the "none" key of a system-key container)
                raise bad_request(f"The partition key supplied has {len(values)} component(s) but the container's "
                                  f"key has {len(paths)} ({', '.join(paths)}): a point operation needs all of them.",
                                  1001)
            cached = (values, effective_partition_key(container.partition_key, values))
            if len(self._epks) >= 100_000:
                self._epks.clear()
            self._epks[(container.rid, raw)] = cached
        values, epk = cached
        return values, epk, self._range_for(container, epk)

    def _doc_headers(self, container: ContainerRecord, r: PhysicalRange, lsn: int, etag: str | None) -> dict[str, str]:
        headers = {
            "x-ms-session-token": f"{r.id}:-1#{max(lsn, 1)}",
            "x-ms-alt-content-path": f"dbs/{container.db}/colls/{container.id}",
            "x-ms-documentdb-partitionkeyrangeid": r.id,
            "lsn": str(lsn),
        }
        if etag:
            headers["etag"] = etag
        return headers

    # -- writes ------------------------------------------------------------------------------
    def _prepare(self, container: ContainerRecord, document: Any, header_pk: list[Any], epk: str) -> dict[str, Any]:
        """Validate a document for writing; raises the error real Cosmos gives for each problem."""
        if not isinstance(document, dict):
            raise bad_request("The input content is invalid: a document must be a JSON object.")
        doc_id = document.get("id")
        if not isinstance(doc_id, str) or not doc_id:
            raise bad_request("The input content is invalid because the required properties - 'id; ' - are missing.")
        if len(doc_id) > 255 or _BAD_ID.search(doc_id):
            raise bad_request(f"The input name '{doc_id}' is invalid. Ensure to provide a unique non-empty string "
                              "less than '255' characters and without '/', '\\', '?' or '#'.")
        body_pk = partition_key_values(container.partition_key, document)
        if not same_partition_key(body_pk, header_pk) and epk != effective_partition_key(container.partition_key, body_pk):
            raise bad_request("PartitionKey extracted from document doesn't match the one specified in the header.", 1001)
        return {k: v for k, v in document.items() if k not in _SYSTEM}

    def _store(
        self, container: ContainerRecord, epk: str, user: dict[str, Any], rid: str | None, lsn: int | None = None,
    ) -> tuple[bytes, int, str, int]:
        """Persist a validated document; returns (body, lsn, etag, indexed terms).

        ``lsn`` is given for the writes of one transactional batch, which all commit at one LSN.
        """
        ts = int(time.time())
        etag = f'"{os.urandom(8).hex()}"'
        rid = rid or new_rid(container.rid, 16)
        body = {**user, "_rid": rid, "_self": f"{container.body['_self']}docs/{rid}/", "_etag": etag,
                "_attachments": "attachments/", "_ts": ts}
        encoded = jsoncodec.dumps(body)
        lsn = self.store.next_lsn(container.rid) if lsn is None else lsn
        self.store.put_doc(container.rid, epk, user["id"], lsn, ts, encoded)
        return encoded, lsn, etag, self._policy(container).terms(user)

    @staticmethod
    def _existing_meta(stored_body: bytes) -> tuple[str, str]:
        """``_rid`` and ``_etag`` of a stored body without parsing the user's part of it.

        :meth:`_store` always appends the system properties last (``_prepare`` strips any the client
        sent), so the last top-level ``,"_rid":`` starts a small JSON tail; a 768-number document no
        longer gets parsed whole on every upsert just to learn its etag.
        """
        at = stored_body.rfind(b',"_rid":')
        if at >= 0:
            try:
                tail = loads(b"{" + stored_body[at + 1:])
                return tail["_rid"], tail["_etag"]
            except (ValueError, KeyError, TypeError):
                pass
        parsed = loads(stored_body)
        return parsed["_rid"], parsed["_etag"]

    def write(self, container: ContainerRecord, headers: Any, raw: bytes, *, upsert: bool) -> Reply:
        _check_size(len(raw))
        header_pk, epk, r = self._point_target(container, headers)
        rate = self.admit(container, [r])
        user = self._prepare(container, parse_body(raw), header_pk, epk)
        existing = self.store.get_doc(container.rid, epk, user["id"])
        if existing and not upsert:
            raise CosmosError(409, "Entity with the specified id already exists in the system.")
        rid = None
        if existing:
            rid, etag = self._existing_meta(existing.body)
            self._check_if_match(headers, etag)
        body, lsn, etag, ru = self._write_committed(container, epk, user, rid, r, rate)
        return Reply(200 if existing else 201, _unless_minimal(headers, body), ru,
                     self._doc_headers(container, r, lsn, etag))

    def _write_committed(
        self, container: ContainerRecord, epk: str, user: dict[str, Any], rid: str | None, r: PhysicalRange,
        rate: Grant | None,
    ) -> tuple[bytes, int, str, float]:
        """Store one document in its own transaction and charge it; returns (body, lsn, etag, RU)."""
        self.store.begin()
        try:
            body, lsn, etag, terms = self._store(container, epk, user, rid)
        except BaseException:
            self.store.rollback()
            raise
        self.store.commit()
        ru = costs.write(len(body), terms)
        self.charge(container, [r], rate, ru)
        return body, lsn, etag, ru

    @staticmethod
    def _check_if_match(headers: Any, etag: str) -> None:
        wanted = headers.get("if-match")
        if wanted and wanted != "*" and wanted != etag:
            raise CosmosError(412, "Operation cannot be performed because one of the specified precondition is not met.")

    @staticmethod
    def _check_condition(condition: Any, current: dict[str, Any]) -> None:
        """A patch's ``condition`` (``FROM c WHERE ...``): 412 when the document does not match."""
        if not condition:
            return
        try:
            matched, _ = compile_query(f"SELECT * {condition}").evaluate_one(current)
        except QueryError as exc:
            raise bad_request(f"invalid patch condition: {exc}") from exc
        if not matched:
            raise CosmosError(412, "Precondition of the patch operation was not met.")

    def read(self, container: ContainerRecord, headers: Any, doc_id: str) -> Reply:
        _, epk, r = self._point_target(container, headers)
        rate = self.admit(container, [r])
        existing = self.store.get_doc(container.rid, epk, doc_id)
        if existing is None:
            self.charge(container, [r], rate, costs.NOT_FOUND_READ_RU)
            error = not_found("Entity with the specified id")
            error.headers["x-ms-request-charge"] = f"{costs.NOT_FOUND_READ_RU:.2f}"
            raise error
        ru = costs.point_read(len(existing.body))
        self.charge(container, [r], rate, ru)
        _, etag = self._existing_meta(existing.body)
        # The lsn header is the partition's (here: the container's) latest LSN, not the item's.
        doc_headers = self._doc_headers(container, r, self.store.current_lsn(container.rid), etag)
        if headers.get("if-none-match") == etag:
            return Reply(304, b"", ru, doc_headers)
        return Reply(200, existing.body, ru, doc_headers)

    def replace(self, container: ContainerRecord, headers: Any, doc_id: str, raw: bytes) -> Reply:
        _check_size(len(raw))
        header_pk, epk, r = self._point_target(container, headers)
        rate = self.admit(container, [r])
        user = self._prepare(container, parse_body(raw), header_pk, epk)
        if user["id"] != doc_id:
            raise bad_request("The id in the document does not match the id in the request path.")
        existing = self.store.get_doc(container.rid, epk, doc_id)
        if existing is None:
            raise not_found("Entity with the specified id")
        rid, etag = self._existing_meta(existing.body)
        self._check_if_match(headers, etag)
        body, lsn, etag, ru = self._write_committed(container, epk, user, rid, r, rate)
        return Reply(200, _unless_minimal(headers, body), ru, self._doc_headers(container, r, lsn, etag))

    def delete(self, container: ContainerRecord, headers: Any, doc_id: str) -> Reply:
        _, epk, r = self._point_target(container, headers)
        rate = self.admit(container, [r])
        existing = self.store.get_doc(container.rid, epk, doc_id)
        if existing is None:
            raise not_found("Entity with the specified id")
        self._check_if_match(headers, self._existing_meta(existing.body)[1])
        lsn = self.store.delete_doc(container.rid, epk, doc_id)
        ru = costs.write(len(existing.body), 0)
        self.charge(container, [r], rate, ru)
        return Reply(204, b"", ru, self._doc_headers(container, r, lsn, None))

    def patch(self, container: ContainerRecord, headers: Any, doc_id: str, raw: bytes) -> Reply:
        header_pk, epk, r = self._point_target(container, headers)
        rate = self.admit(container, [r])
        request = patch_request(parse_body(raw))
        existing = self.store.get_doc(container.rid, epk, doc_id)
        if existing is None:
            raise not_found("Entity with the specified id")
        current = loads(existing.body)
        self._check_if_match(headers, current["_etag"])
        self._check_condition(request.get("condition"), current)
        patched = apply_patch(current, request.get("operations", []))
        user = self._prepare(container, patched, header_pk, epk)
        _check_size(len(jsoncodec.dumps(user)))
        self.store.begin()
        try:
            body, lsn, etag, terms = self._store(container, epk, user, current["_rid"])
        except BaseException:
            self.store.rollback()
            raise
        self.store.commit()
        ru = costs.write(len(body), terms)
        self.charge(container, [r], rate, ru)
        return Reply(200, _unless_minimal(headers, body), ru, self._doc_headers(container, r, lsn, etag))

    def delete_partition(self, container: ContainerRecord, headers: Any) -> Reply:
        _, epk, r = self._point_target(container, headers)
        rate = self.admit(container, [r])
        removed = self.store.delete_partition(container.rid, epk)
        ru = 10.0 + removed
        self.charge(container, [r], rate, ru)
        return Reply(200, b"", ru)

    # -- transactional batch -----------------------------------------------------------------
    def batch(self, container: ContainerRecord, headers: Any, raw: bytes) -> Reply:
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise CosmosError(413, f"Batch request is too large ({len(raw)} bytes; the limit is {MAX_DOCUMENT_BYTES}).")
        operations = parse_body(raw)
        if not isinstance(operations, list) or not operations:
            raise bad_request("A batch must be a non-empty JSON array of operations.")
        if len(operations) > MAX_BATCH_OPERATIONS:
            raise bad_request(f"Batch request has more operations than allowed ({len(operations)} > {MAX_BATCH_OPERATIONS}).")
        if bulk.is_non_atomic(headers):
            return bulk.run(self, container, headers, operations)
        header_pk, epk, r = self._point_target(container, headers)
        rate = self.admit(container, [r])
        results: list[dict[str, Any]] = []
        failed_at: int | None = None
        self.store.begin()
        try:
            # Every write of a transactional batch commits at one LSN, as on Cosmos DB.
            writes = any(not (isinstance(op, dict) and str(op.get("operationType", "")).lower() == "read")
                         for op in operations)
            lsn = self.store.next_lsn(container.rid) if writes else None
            view = self.batch_view(container, epk, operations)
            for index, op in enumerate(operations):
                try:
                    results.append(self._batch_op(container, op, header_pk, epk, lsn, view))
                except CosmosError as exc:
                    results.append({"statusCode": exc.status, "requestCharge": 1.0,
                                    **({"subStatusCode": exc.substatus} if exc.substatus else {}),
                                    "message": exc.message})
                    failed_at = index
                    break
        except BaseException:
            # Anything unexpected must not leave the transaction open: the next BEGIN would fail and
            # every later write would answer 500 (a malformed operation such as `[1]` did exactly that).
            self.store.rollback()
            raise
        ru = round(sum(float(res.get("requestCharge", 0)) for res in results), 2)
        if failed_at is not None:
            self.store.rollback()
            failed = results[failed_at]
            shaped = [{"statusCode": 424, "requestCharge": 0.0} for _ in operations]
            shaped[failed_at] = failed
            self.charge(container, [r], rate, ru)
            return Reply(207, batch_body(shaped), ru, self._doc_headers(container, r, 0, None))
        self.store.commit()
        self.charge(container, [r], rate, ru)
        committed = self.store.current_lsn(container.rid)
        return Reply(200, batch_body(results), ru, self._doc_headers(container, r, committed, None))

    def batch_view(self, container: ContainerRecord, epk: str, operations: list[Any]) -> dict[str, StoredDoc | None]:
        """The stored documents a batch's operations address, read in one query; ``_batch_op``
        keeps the view current as the operations write and delete."""
        ids = [doc_id for op in operations if isinstance(doc_id := _operation_id(op), str)]
        return dict(self.store.get_docs(container.rid, epk, ids))

    def _batch_op(
        self, container: ContainerRecord, op: Any, header_pk: list[Any], epk: str, lsn: int | None,
        view: dict[str, StoredDoc | None],
    ) -> dict[str, Any]:
        """One operation of a transactional batch; raises :class:`CosmosError` to fail the batch.

        ``ifMatch`` is honoured on every operation kind and a patch's ``condition`` (the SDK's
        ``filter_predicate``) is evaluated, as for the single-item calls; both used to be ignored for
        delete and patch, so a stale-etag batch delete went through.
        """
        if not isinstance(op, dict):
            raise bad_request("Each batch operation must be a JSON object.")
        kind = str(op.get("operationType", "")).lower()
        if kind not in ("create", "upsert", "replace", "read", "delete", "patch"):
            raise bad_request(f"unsupported batch operationType {op.get('operationType')!r}")
        body = patch_request(op.get("resourceBody")) if kind == "patch" else op.get("resourceBody")
        doc_id = _operation_id(op)
        existing = view.get(doc_id) if isinstance(doc_id, str) else None
        if existing is not None:
            _, current_etag = self._existing_meta(existing.body)
            self._check_if_match({"if-match": op.get("ifMatch")}, current_etag)
        if kind in ("create", "upsert", "replace"):
            user = self._prepare(container, body, header_pk, epk)
            if kind == "create" and existing:
                raise CosmosError(409, "Entity with the specified id already exists in the system.")
            if kind == "replace" and not existing:
                raise not_found("Entity with the specified id")
            rid = self._existing_meta(existing.body)[0] if existing else None
            encoded, stored_lsn, etag, terms = self._store(container, epk, user, rid, lsn)
            view[user["id"]] = StoredDoc(epk, user["id"], stored_lsn, encoded)
            status = 200 if existing else 201
            return _written({"statusCode": status, "requestCharge": costs.write(len(encoded), terms), "eTag": etag},
                            op, encoded)
        if existing is None:
            raise not_found("Entity with the specified id")
        if kind == "read":
            return {"statusCode": 200, "requestCharge": costs.point_read(len(existing.body)),
                    "eTag": self._existing_meta(existing.body)[1], RAW_BODY: existing.body}
        if kind == "delete":
            self.store.delete_doc(container.rid, epk, existing.id, lsn)
            view[existing.id] = None
            return {"statusCode": 204, "requestCharge": costs.write(len(existing.body), 0)}
        assert isinstance(body, dict)  # patch: checked above
        current = loads(existing.body)
        self._check_condition(body.get("condition"), current)
        user = self._prepare(container, apply_patch(current, body["operations"]), header_pk, epk)
        encoded, stored_lsn, etag, terms = self._store(container, epk, user, current["_rid"], lsn)
        view[existing.id] = StoredDoc(epk, existing.id, stored_lsn, encoded)
        return _written({"statusCode": 200, "requestCharge": costs.write(len(encoded), terms), "eTag": etag}, op, encoded)

    # -- queries and feeds -------------------------------------------------------------------
    def query(self, container: ContainerRecord, headers: Any, raw: bytes) -> Reply:
        request = parse_body(raw)
        if not isinstance(request, dict) or not isinstance(request.get("query"), str):
            raise bad_request('A query body must be {"query": "...", "parameters": [...]}.')
        text = request["query"]
        try:
            compiled = compile_query(text, request.get("parameters") or [])
        except QueryError as exc:
            raise bad_request(f"Query is not supported or invalid: {exc}") from exc
        if partition_key_header(headers) == []:
            raise bad_request("The partition key of a query must not be an empty list; leave the header out for "
                              "a cross-partition query.")
        if flag(headers, "x-ms-cosmos-is-query-plan-request"):
            try:
                return Reply(200, jsoncodec.dumps(query_plan.plan(compiled)), 0.0)
            except QueryError as exc:
                raise bad_request(f"Query is not supported or invalid: {exc}") from exc
        ranges, low, high = self._scope(container, headers)
        query_plan.check_cross_partition(compiled, headers, len(ranges))
        rate = self.admit(container, ranges)
        started = time.perf_counter()
        limit = page_size(headers)
        continuation = headers.get("x-ms-continuation")
        if compiled.streamable:
            star = bool(_SELECT_STAR.match(text))
            match: Callable[[bytes], tuple[bool, bytes]]
            if _SELECT_ALL.match(text):
                match = _match_all
            else:
                def match(body: bytes) -> tuple[bool, bytes]:
                    ok, value = compiled.evaluate_one(loads(body))
                    return ok, (body if star else jsoncodec.dumps(value)) if ok else b""
            items, loaded, token = self._keyset_page(container, ranges, low, high, limit, continuation, match)
        else:
            items, loaded, token = self._offset_page(container, ranges, low, high, limit, continuation, compiled, text)
        ru = costs.query_page(loaded)
        self.charge(container, ranges, rate, ru)
        reply_headers = {"x-ms-item-count": str(len(items))}
        if token:
            reply_headers["x-ms-continuation"] = token
        if len(ranges) == 1:
            reply_headers["x-ms-documentdb-partitionkeyrangeid"] = ranges[0].id
        if flag(headers, "x-ms-documentdb-populatequerymetrics"):
            elapsed_ms = (time.perf_counter() - started) * 1000
            reply_headers[metrics.QUERY_METRICS] = metrics.query_metrics(
                retrieved=loaded, output=items, elapsed_ms=elapsed_ms)
        if flag(headers, "x-ms-cosmos-populateindexmetrics"):
            reply_headers[metrics.INDEX_UTILIZATION] = metrics.index_utilization(
                compiled.parsed, self._policy(container))
        return Reply(200, feed_body("Documents", container.rid, items), ru, reply_headers)

    def read_feed(self, container: ContainerRecord, headers: Any) -> Reply:
        ranges, low, high = self._scope(container, headers)
        rate = self.admit(container, ranges)
        items, loaded, token = self._keyset_page(
            container, ranges, low, high, page_size(headers), headers.get("x-ms-continuation"), _match_all
        )
        ru = costs.query_page(loaded)
        self.charge(container, ranges, rate, ru)
        reply_headers = {"x-ms-item-count": str(len(items))}
        if token:
            reply_headers["x-ms-continuation"] = token
        return Reply(200, feed_body("Documents", container.rid, items), ru, reply_headers)

    def _keyset_page(
        self, container: ContainerRecord, ranges: list[PhysicalRange], low: str, high: str, limit: int | None,
        continuation: str | None, match: Callable[[bytes], tuple[bool, bytes]],
    ) -> tuple[list[bytes], list[int], str | None]:
        """A page in (epk, id) order; the continuation is the last key, so it survives restarts."""
        after = None
        if continuation:
            try:
                key = jsoncodec.loads(continuation)["k"]
                after = (str(key[0]), str(key[1]))
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise bad_request(f"invalid continuation token {continuation!r}") from exc
        lo = max(low, min(r.min for r in ranges)) if ranges else low
        hi = min(high, max(r.max for r in ranges)) if ranges else high
        items: list[bytes] = []
        loaded: list[int] = []
        size = 0
        last: tuple[str, str] | None = None
        more = False
        for doc in self.store.scan(container.rid, lo, hi, after):
            if (limit is not None and len(items) >= limit) or size >= MAX_PAGE_BYTES or len(loaded) >= 10_000:
                more = True
                break
            last = (doc.epk, doc.id)
            loaded.append(len(doc.body))
            ok, value = match(doc.body)
            if ok:
                items.append(value)
                size += len(value)
        token = jsoncodec.dumps({"k": list(last)}).decode() if more and last else None
        return items, loaded, token

    def _offset_page(
        self, container: ContainerRecord, ranges: list[PhysicalRange], low: str, high: str, limit: int | None,
        continuation: str | None, compiled: Any, text: str,
    ) -> tuple[list[bytes], list[int], str | None]:
        """Queries that need every document first (ORDER BY, aggregates...): computed, then sliced."""
        lo = max(low, min(r.min for r in ranges)) if ranges else low
        hi = min(high, max(r.max for r in ranges)) if ranges else high
        bodies = [doc.body for doc in self.store.scan(container.rid, lo, hi)]
        results = compiled.run(loads(b) for b in bodies)
        start = 0
        if continuation:
            try:
                start = int(jsoncodec.loads(continuation)["o"])
            except (ValueError, KeyError, TypeError) as exc:
                raise bad_request(f"invalid continuation token {continuation!r}") from exc
        end = len(results) if limit is None else min(len(results), start + limit)
        items = [jsoncodec.dumps(v) for v in results[start:end]]
        token = jsoncodec.dumps({"o": end}).decode() if end < len(results) else None
        return items, [len(b) for b in bodies] if start == 0 else [], token

    def change_feed(self, container: ContainerRecord, headers: Any) -> Reply:
        ranges, low, high = self._scope(container, headers)
        rate = self.admit(container, ranges)
        current = self.store.current_lsn(container.rid)
        marker = headers.get("if-none-match")
        after, since = 0, None
        if marker == "*":
            self.charge(container, ranges, rate, costs.CHANGE_FEED_EMPTY_RU)
            return Reply(304, b"", costs.CHANGE_FEED_EMPTY_RU, {"etag": f'"{current}"'})
        if marker:
            try:
                after = int(marker.strip('"'))
            except ValueError as exc:
                raise bad_request(f"invalid change feed continuation {marker!r}") from exc
        elif headers.get("if-modified-since"):
            since = _parse_http_date(headers["if-modified-since"])
        limit = page_size(headers) or 1000
        lo = max(low, min(r.min for r in ranges))
        hi = min(high, max(r.max for r in ranges))
        changes = self.store.changes(container.rid, lo, hi, after, since, limit)
        if not changes:
            self.charge(container, ranges, rate, costs.CHANGE_FEED_EMPTY_RU)
            return Reply(304, b"", costs.CHANGE_FEED_EMPTY_RU, {"etag": f'"{current}"'})
        items = [doc.body[:-1] + b',"_lsn":' + str(doc.lsn).encode() + b"}" for doc in changes]
        ru = costs.query_page([len(doc.body) for doc in changes])
        self.charge(container, ranges, rate, ru)
        etag = changes[-1].lsn if len(changes) >= limit else current
        reply_headers = {"etag": f'"{etag}"', "x-ms-item-count": str(len(items)), "lsn": str(current)}
        if len(ranges) == 1:
            reply_headers["x-ms-documentdb-partitionkeyrangeid"] = ranges[0].id
        return Reply(200, feed_body("Documents", container.rid, items), ru, reply_headers)


def _written(result: dict[str, Any], op: dict[str, Any], encoded: bytes) -> dict[str, Any]:
    """A batch write's result, with the stored document unless the operation asked for a minimal
    reply (``minimalReturnPreference``, what the Java SDK's bulk mode sets when content on write is off)."""
    if op.get("minimalReturnPreference") is not True:
        result[RAW_BODY] = encoded
    return result


def _operation_id(op: Any) -> Any:
    """The id a batch operation addresses: its ``id``, else its body's."""
    if not isinstance(op, dict):
        return None
    body = op.get("resourceBody")
    return op.get("id") or (body.get("id") if isinstance(body, dict) else None)


def _check_size(size: int) -> None:
    """Cosmos DB's 2 MB item limit, measured on the JSON the client sent (system properties excluded)."""
    if size > MAX_DOCUMENT_BYTES:
        raise CosmosError(413, f"Request size is too large: the document is {size} bytes; "
                               f"the limit is {MAX_DOCUMENT_BYTES} bytes.")


def _unless_minimal(headers: Any, body: bytes) -> bytes:
    """``Prefer: return=minimal`` asks for the status and headers only, as the SDK's no_response does."""
    return b"" if headers.get("prefer", "").lower() == "return=minimal" else body


def _match_all(body: bytes) -> tuple[bool, bytes]:
    return True, body


def _parse_http_date(value: str) -> int:
    from email.utils import parsedate_to_datetime

    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError) as exc:
        raise bad_request(f"invalid If-Modified-Since {value!r}") from exc


def patch_request(body: Any) -> dict[str, Any]:
    """A patch body as ``{"operations": [...], "condition": ...}``; Cosmos also takes the bare array."""
    if isinstance(body, list):
        return {"operations": body}
    if isinstance(body, dict) and isinstance(body.get("operations"), list):
        return body
    raise bad_request('A patch body must be {"operations": [...]} or a JSON array of operations.')


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise bad_request(f"patch path {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(document: Any, parts: Iterable[str]) -> Any:
    node = document
    for part in parts:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def apply_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply Cosmos patch operations (add, set, replace, remove, incr, move) to a copy."""
    doc = jsoncodec.loads(jsoncodec.dumps(document))
    if not 0 < len(operations) <= 10:
        raise bad_request("A patch request needs between 1 and 10 operations.")
    for op in operations:
        if not isinstance(op, dict):
            raise bad_request(f"patch operation {op!r} is not a JSON object")
        kind = op.get("op")
        parts = _pointer(op.get("path", ""))
        try:
            parent = _parent(doc, parts[:-1])
            last = parts[-1]
            if kind in ("add", "set"):
                if isinstance(parent, list):
                    index = len(parent) if last == "-" else int(last)
                    if kind == "add":
                        parent.insert(index, op["value"])
                    else:
                        parent[index] = op["value"]
                else:
                    parent[last] = op["value"]
            elif kind == "replace":
                if isinstance(parent, list):
                    parent[int(last)] = op["value"]
                elif last not in parent:
                    raise bad_request(f"patch replace target {op['path']} does not exist")
                else:
                    parent[last] = op["value"]
            elif kind == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            elif kind == "incr":
                current = parent.get(last, 0) if isinstance(parent, dict) else parent[int(last)]
                if isinstance(current, bool) or not isinstance(current, int | float):
                    raise bad_request(f"patch incr target {op['path']} is not a number")
                value = current + op["value"]
                if isinstance(parent, dict):
                    parent[last] = value
                else:
                    parent[int(last)] = value
            elif kind == "move":
                source_parts = _pointer(op.get("from", ""))
                source_parent = _parent(doc, source_parts[:-1])
                value = source_parent.pop(source_parts[-1])
                parent[last] = value
            else:
                raise bad_request(f"unsupported patch operation {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise bad_request(f"patch operation {kind} at {op.get('path')} cannot be applied: {exc}") from exc
    return doc
