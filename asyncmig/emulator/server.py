"""The emulator's HTTP server: request dispatch, authentication, fault injection and metadata.

Documents are handled by :mod:`asyncmig.emulator.items`; this module owns everything around them:
the database account, databases, containers, offers, partition key ranges and the ``/_admin``
endpoints that tests and benchmarks use (split a range, change faults, read counters).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import random
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from asyncmig.core import jsoncodec
from asyncmig.emulator import auth, definitions, metrics, priority, rids, validation, versions
from asyncmig.emulator.items import Documents
from asyncmig.emulator.partitioning import PhysicalRange, partitions_for_throughput
from asyncmig.emulator.protocol import (
    CosmosError,
    Reply,
    bad_request,
    feed_body,
    flag,
    not_found,
    owner_missing,
    parse_body,
)
from asyncmig.emulator.query import QueryError, compile_query
from asyncmig.emulator.store import ContainerRecord, Store
from asyncmig.emulator.throttle import Stats, Throttle

# The official emulator's published key: not a secret, it is the same on every machine.
WELL_KNOWN_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
FAULT_KINDS = ("503", "408", "reset")
log = logging.getLogger(__name__)
_MAX_REQUEST_BYTES = 16 * 1024 * 1024  # documents and batches are refused at 2 MB by the handlers


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 8081
    data_dir: Path | None = None          # None: in memory
    partitions: int | None = None         # None: from the container's throughput, as Cosmos DB does
    key: str = WELL_KNOWN_KEY
    rate_limit: bool = True
    latency_ms: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULT_KINDS
    fault_seed: int | None = None
    entra_issuer_key: Path | None = None  # accept Entra ID tokens signed with this key (see auth.py)
    # Serve HTTPS with this certificate chain and key: the SDK sends Entra ID tokens over HTTPS only.
    tls: tuple[Path, Path] | None = None

    def __repr__(self) -> str:  # the key stays out of logs even though this one is public
        partitions = "from throughput" if self.partitions is None else self.partitions
        return f"EmulatorConfig(host={self.host!r}, port={self.port}, data_dir={self.data_dir}, partitions={partitions})"


@dataclass(slots=True)
class FaultPlan:
    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    latency_ms: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    injected: int = 0


class Emulator:
    """One emulator instance: state, handlers and the aiohttp application serving them."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        try:
            self.key = base64.b64decode(config.key, validate=True)
        except binascii.Error as exc:
            raise ValueError("--key must be base64, like an account key") from exc
        self.issuer = auth.EntraIssuer.from_file(config.entra_issuer_key) if config.entra_issuer_key else None
        if config.data_dir is not None:
            config.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(config.data_dir / "emulator.sqlite3" if config.data_dir else None)
        self.stats = Stats()
        self.throttle = Throttle(enabled=config.rate_limit)
        self.faults = FaultPlan(config.fault_rate, config.faults, config.latency_ms, random.Random(config.fault_seed))
        self.documents = Documents(self.store, self.throttle, self.stats)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_REQUEST_BYTES)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    # -- entry point -------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        activity = request.headers.get("x-ms-activity-id") or str(uuid.uuid4())
        segments = [unquote(s) for s in request.raw_path.split("?")[0].split("/") if s]
        if segments[:1] == ["_admin"]:  # not counted: tests poll the counters through here
            return await self._admin(request, segments[1:])
        self.stats.requests += 1
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            # aiohttp's own refusal is plain text with no request charge; answer as Cosmos does.
            return CosmosError(413, f"Request size is too large (over {_MAX_REQUEST_BYTES} bytes).").response(activity)
        try:
            self._authorize(request, segments)
        except CosmosError as exc:
            return exc.response(activity)
        fault = self._pick_fault(segments)
        if fault == "503" or (fault in ("408", "reset") and self.faults.rng.random() < 0.5):
            return await self._fault(request, fault, activity)  # before the operation ran
        try:
            with priority.classified(request.headers):
                reply = self._dispatch(request.method, segments, request.headers, raw, request)
        except CosmosError as exc:
            return exc.response(activity)
        except Exception as exc:  # a bug or an input we did not foresee: answer in Cosmos' shape
            # ... and never leave a transaction open, or every later write fails with "cannot start a
            # transaction within a transaction".
            if self.store.db.in_transaction:
                self.store.rollback()
            log.exception("emulator: unexpected error in %s /%s", request.method, "/".join(segments))
            return CosmosError(500, f"Internal emulator error: {type(exc).__name__}: {exc}").response(activity)
        if fault:
            return await self._fault(request, fault, activity)  # after it ran: the client cannot know
        return reply.response(activity)

    def _authorize(self, request: web.Request, segments: list[str]) -> None:
        """Refuse what the caller may not do, as Cosmos DB answers it.

        :raises CosmosError: 401 without a valid key signature or Entra ID token; 403 for an Entra ID
            token asking for a management operation.
        """
        try:
            caller = auth.authenticate(self.key, self.issuer, request.method, segments, request.headers,
                                       f"{request.url.scheme}://{request.url.host}")
        except auth.Refused as exc:
            raise CosmosError(401, str(exc)) from None
        if caller is auth.Caller.ENTRA and auth.is_management_write(request.method, segments, request.headers):
            raise CosmosError(403, f"Request blocked by Auth emulator : The given request [{request.method} "
                                   f"/{'/'.join(segments)}] cannot be authorized by AAD token in data plane. "
                                   "Learn more: https://aka.ms/cosmos-native-rbac.", substatus=5300)

    def _pick_fault(self, segments: list[str]) -> str | None:
        if self.faults.rate <= 0 or "docs" not in segments or self.faults.rng.random() >= self.faults.rate:
            return None
        self.faults.injected += 1
        return self.faults.rng.choice(self.faults.kinds)

    async def _fault(self, request: web.Request, fault: str, activity: str) -> web.StreamResponse:
        if fault == "reset":
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("fault injection: connection dropped")
        status = int(fault)
        return CosmosError(status, f"Injected fault {status} (emulator --fault-rate).").response(activity)

    # -- dispatch ----------------------------------------------------------------------------
    def _dispatch(self, method: str, s: list[str], headers: Any, raw: bytes, request: web.Request) -> Reply:
        n = len(s)
        if n == 0 and method == "GET":
            return self._account(request)
        if s[0] == "offers":
            return self._offers(method, s, headers, raw)
        if s[0] != "dbs":
            raise not_found(f"Resource /{'/'.join(s)}")
        s = rids.to_names(self.store, s, headers)
        if n == 1:
            return self._databases(method, headers, raw)
        for position in (2, 4, 6):  # /dbs/d/users, /dbs/d/colls/c/sprocs, /dbs/d/colls/c/docs/x/attachments
            if n > position and s[position] in validation.UNSUPPORTED_RESOURCES:
                raise validation.unsupported_resource(s[position])
        db = self.store.get_database(s[1])
        if n == 2:
            return self._database(method, s[1], db)
        if db is None:
            raise owner_missing(f"database {s[1]}")
        if n == 3 and s[2] == "colls":
            return self._containers(method, db, headers, raw)
        container = self.store.get_container(s[1], s[3]) if n >= 4 and s[2] == "colls" else None
        if n == 4:
            return self._container(method, s[1], s[3], container, headers, raw)
        if container is None:
            raise owner_missing(f"container {s[1]}/{s[3] if n > 3 else ''}")
        intended = headers.get("x-ms-cosmos-intended-collection-rid")
        if intended and intended != container.rid:
            raise bad_request("The container was deleted and re-created; refresh its cached RID.", 1024)
        docs = self.documents
        if n == 5 and s[4] == "pkranges":
            return self._pkranges(container, headers)
        if n == 6 and s[4] == "pkranges" and method == "GET":
            return self._pkrange(container, s[5])
        if n == 6 and s[4:] == ["operations", "partitionkeydelete"] and method == "POST":
            return docs.delete_partition(container, headers)
        if n == 5 and s[4] == "docs":
            if method == "POST":
                if flag(headers, "x-ms-cosmos-is-batch-request"):
                    return docs.batch(container, headers, raw)
                if flag(headers, "x-ms-documentdb-isquery") or flag(headers, "x-ms-cosmos-is-query-plan-request"):
                    return docs.query(container, headers, raw)
                return docs.write(container, headers, raw, upsert=flag(headers, "x-ms-documentdb-is-upsert"))
            if method == "GET":
                if versions.wants_all_versions(headers):
                    return versions.all_versions_feed(docs, container, headers)
                if headers.get("a-im"):
                    return docs.change_feed(container, headers)
                return docs.read_feed(container, headers)
        if n == 6 and s[4] == "docs":
            handlers: dict[str, Callable[[], Reply]] = {
                "GET": lambda: docs.read(container, headers, s[5]),
                "PUT": lambda: docs.replace(container, headers, s[5], raw),
                "PATCH": lambda: docs.patch(container, headers, s[5], raw),
                "DELETE": lambda: docs.delete(container, headers, s[5]),
            }
            if method in handlers:
                return handlers[method]()
        raise bad_request(f"{method} /{'/'.join(s)} is not supported by this emulator.")

    def _account(self, request: web.Request) -> Reply:
        endpoint = f"{request.scheme}://{request.host}/"
        location = [{"name": "Local", "databaseAccountEndpoint": endpoint}]
        body = {
            "id": "asyncmig-emulator", "_rid": request.host, "_self": "", "_dbs": "//dbs/", "media": "//media/",
            "addresses": "//addresses/", "writableLocations": location, "readableLocations": location,
            "enableMultipleWriteLocations": False,
            "userConsistencyPolicy": {"defaultConsistencyLevel": "Session"},
            "userReplicationPolicy": {"asyncReplication": False, "minReplicaSetSize": 1, "maxReplicasetSize": 4},
            "systemReplicationPolicy": {"minReplicaSetSize": 1, "maxReplicasetSize": 4},
            "readPolicy": {"primaryReadCoefficient": 1, "secondaryReadCoefficient": 1},
            "queryEngineConfiguration": "{}",
        }
        return Reply(200, jsoncodec.dumps(body))

    @staticmethod
    def _query_resources(resources: list[dict[str, Any]], raw: bytes) -> list[bytes]:
        request = parse_body(raw)
        try:
            compiled = compile_query(request["query"], request.get("parameters") or [])
        except (QueryError, KeyError, TypeError) as exc:
            raise bad_request(f"Query is not supported or invalid: {exc}") from exc
        return [jsoncodec.dumps(r) for r in compiled.run(resources)]

    def _databases(self, method: str, headers: Any, raw: bytes) -> Reply:
        databases = self.store.list_databases()
        if method == "GET" or (method == "POST" and flag(headers, "x-ms-documentdb-isquery")):
            items = ([jsoncodec.dumps(d) for d in databases] if method == "GET"
                     else self._query_resources(databases, raw))
            return Reply(200, feed_body("Databases", "", items))
        if method != "POST":
            raise bad_request(f"{method} /dbs is not supported")
        body = parse_body(raw)
        name = body.get("id") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            raise bad_request("A database needs an id.")
        _check_resource_id(name)
        validation.check_throughput_headers(headers)
        if self.store.get_database(name):
            raise CosmosError(409, "Entity with the specified id already exists in the system.")
        created = self.store.create_database(name)
        self._maybe_offer(created["_rid"], created["_self"], headers)
        return Reply(201, jsoncodec.dumps(created))

    def _database(self, method: str, name: str, db: dict[str, Any] | None) -> Reply:
        if db is None:
            raise not_found("Resource")
        if method == "GET":
            return Reply(200, jsoncodec.dumps(db))
        if method == "DELETE":
            for record in self.store.list_containers(name):
                self.throttle.forget(record.rid)
            self.store.delete_database(name)
            return Reply(204)
        raise bad_request(f"{method} on a database is not supported")

    def _maybe_offer(self, resource_rid: str, resource_self: str, headers: Any) -> None:
        manual = headers.get("x-ms-offer-throughput")
        autopilot = headers.get("x-ms-cosmos-offer-autopilot-settings")
        if autopilot:
            settings = jsoncodec.loads(autopilot)
            maximum = int(settings["maxThroughput"])
            self.store.put_offer(resource_rid, resource_self,
                                 {"offerThroughput": max(400, maximum // 10), "offerAutopilotSettings": settings})
        elif manual:
            self.store.put_offer(resource_rid, resource_self, {"offerThroughput": int(manual)})

    def _containers(self, method: str, db: dict[str, Any], headers: Any, raw: bytes) -> Reply:
        records = self.store.list_containers(db["id"])
        if method == "GET" or (method == "POST" and flag(headers, "x-ms-documentdb-isquery")):
            bodies = [r.body for r in records]
            items = ([jsoncodec.dumps(b) for b in bodies] if method == "GET"
                     else self._query_resources(bodies, raw))
            return Reply(200, feed_body("DocumentCollections", db["_rid"], items))
        if method != "POST":
            raise bad_request(f"{method} on containers is not supported")
        body = parse_body(raw)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
            raise bad_request("A container needs an id.")
        _check_resource_id(body["id"])
        validation.check_container(body)  # before the conflict check, as Cosmos DB orders them
        validation.check_throughput_headers(headers)
        if self.store.get_container(db["id"], body["id"]):
            raise CosmosError(409, "Entity with the specified id already exists in the system.")
        body["partitionKey"] = definitions.partition_key_definition(body["partitionKey"])
        body["indexingPolicy"] = definitions.indexing_policy(body.get("indexingPolicy"))
        body.setdefault("conflictResolutionPolicy", {"mode": "LastWriterWins", "conflictResolutionPath": "/_ts"})
        body.setdefault("geospatialConfig", {"type": "Geography"})
        partitions = self._initial_partitions(db, headers)
        record = self.store.create_container(db["_rid"], db["id"], body, partitions)
        self._maybe_offer(record.rid, record.body["_self"], headers)
        return Reply(201, jsoncodec.dumps(record.body), headers={"x-ms-alt-content-path": f"dbs/{db['id']}"})

    def _initial_partitions(self, db: dict[str, Any], headers: Any) -> int:
        """Physical ranges of a new container: a test override (the ``x-asyncmig-partition-count``
        header, then ``--partitions``), else from its own or its database's throughput."""
        override = headers.get("x-asyncmig-partition-count")
        if override is not None:
            try:
                return max(1, int(override))
            except ValueError as exc:
                raise bad_request(f"x-asyncmig-partition-count must be an integer, got {override!r}") from exc
        if self.config.partitions is not None:
            return self.config.partitions
        autopilot = headers.get("x-ms-cosmos-offer-autopilot-settings")
        if autopilot:
            return partitions_for_throughput(int(jsoncodec.loads(autopilot)["maxThroughput"]))
        if headers.get("x-ms-offer-throughput"):
            return partitions_for_throughput(int(headers["x-ms-offer-throughput"]))
        shared = self.store.offer_for(db["_rid"])
        if shared is None:
            return 1
        content = shared["content"]
        autoscale = content.get("offerAutopilotSettings")
        return partitions_for_throughput(autoscale["maxThroughput"] if autoscale else content.get("offerThroughput"))

    def _container(self, method: str, db: str, name: str, record: ContainerRecord | None, headers: Any,
                   raw: bytes) -> Reply:
        if record is None:
            raise not_found("Resource")
        alt = {"x-ms-alt-content-path": f"dbs/{db}"}
        if method == "GET":
            # Index changes apply at once here, so a transformation is always complete.
            extra = {metrics.INDEX_TRANSFORMATION_PROGRESS: "100"}
            if flag(headers, "x-ms-documentdb-populatequotainfo"):
                count, size = self.store.usage(record.rid)
                extra |= metrics.quota_headers(count, size, len(self.store.ranges(record.rid)))
            return Reply(200, jsoncodec.dumps(record.body), headers=alt | extra)
        if method == "DELETE":
            self.throttle.forget(record.rid)
            self.store.delete_container(db, name)
            return Reply(204)
        if method == "PUT":
            body = parse_body(raw)
            if not isinstance(body, dict):
                raise bad_request("A container definition must be a JSON object.")
            given = body.get("partitionKey")
            if given is not None and definitions.partition_key_definition(given) != record.partition_key:
                raise bad_request("The partition key of a container cannot be changed.")
            body["partitionKey"] = record.partition_key
            validation.check_container(body)
            body["indexingPolicy"] = definitions.indexing_policy(body.get("indexingPolicy"))
            return Reply(200, jsoncodec.dumps(self.store.replace_container(record, body)), headers=alt)
        raise bad_request(f"{method} on a container is not supported")

    @staticmethod
    def _pkrange_body(container: ContainerRecord, r: PhysicalRange) -> dict[str, Any]:
        return {
            "id": r.id, "minInclusive": r.min, "maxExclusive": r.max, "parents": list(r.parents),
            "status": "online", "ridPrefix": int(r.id), "throughputFraction": 1, "lsn": 0,
            "_rid": container.rid, "_etag": f'"{container.routing_version}"', "_ts": 0,
            "_self": f"{container.body['_self']}pkranges/{r.id}/",
        }

    def _pkrange(self, container: ContainerRecord, range_id: str) -> Reply:
        """One online range, as its ``_self`` link addresses it."""
        for r in self.store.ranges(container.rid):
            if r.id == range_id:
                return Reply(200, jsoncodec.dumps(self._pkrange_body(container, r)))
        raise not_found("Resource")

    def _pkranges(self, container: ContainerRecord, headers: Any) -> Reply:
        etag = f'"{container.routing_version}"'
        if headers.get("if-none-match") == etag:
            return Reply(304, headers={"etag": etag})
        ranges = [jsoncodec.dumps(self._pkrange_body(container, r)) for r in self.store.ranges(container.rid)]
        return Reply(200, feed_body("PartitionKeyRanges", container.rid, ranges),
                     headers={"etag": etag, "x-ms-item-count": str(len(ranges))})

    def _offers(self, method: str, s: list[str], headers: Any, raw: bytes) -> Reply:
        if len(s) == 1:
            offers = self.store.list_offers()
            items = (self._query_resources(offers, raw) if method == "POST"
                     else [jsoncodec.dumps(o) for o in offers])
            return Reply(200, feed_body("Offers", "", items))
        offer = self.store.get_offer(s[1])
        if offer is None:
            raise not_found("Offer")
        if method == "GET":
            return Reply(200, jsoncodec.dumps(offer))
        if method == "PUT":
            body = parse_body(raw)
            content = body.get("content") if isinstance(body, dict) else None
            priority.validate_offer_content(content)
            assert isinstance(content, dict)  # (validate_offer_content refuses anything else)
            if "offerAutopilotSettings" in content:
                validation.check_autoscale_maximum((content["offerAutopilotSettings"] or {}).get("maxThroughput"))
            elif content.get("offerThroughput") is not None and (
                    type(content["offerThroughput"]) is not int
                    or content["offerThroughput"] < validation.MIN_MANUAL_THROUGHPUT):
                raise bad_request(f"The offer throughput {content['offerThroughput']!r} is below the minimum of "
                                  f"{validation.MIN_MANUAL_THROUGHPUT} RU/s.")
            updated = self.store.put_offer(offer["offerResourceId"], offer["resource"], body["content"])
            return Reply(200, jsoncodec.dumps(updated))
        raise bad_request(f"{method} on an offer is not supported")

    # -- admin -------------------------------------------------------------------------------
    async def _admin(self, request: web.Request, s: list[str]) -> web.Response:
        given = request.headers.get("x-asyncmig-admin-key", "")
        if not hmac.compare_digest(given.encode(), self.config.key.encode()):
            return web.json_response({"error": "x-asyncmig-admin-key must carry the emulator's key"}, status=401)
        body = jsoncodec.loads(await request.read() or b"{}")
        action = s[0] if s else ""
        if action == "stats":
            return web.json_response({
                "requests": self.stats.requests, "throttled": self.stats.throttled,
                "charged_ru": self.stats.charged_ru or {}, "faults_injected": self.faults.injected,
            })
        if action == "faults":
            self.faults.rate = float(body.get("fault_rate", self.faults.rate))
            self.faults.kinds = tuple(body.get("faults", self.faults.kinds))
            self.faults.latency_ms = float(body.get("latency_ms", self.faults.latency_ms))
            return web.json_response({"fault_rate": self.faults.rate, "faults": list(self.faults.kinds)})
        if action == "throttle":
            self.throttle.enabled = bool(body.get("enabled", True))
            return web.json_response({"enabled": self.throttle.enabled})
        if action == "writes":  # how many document writes a container took (a batch shares one LSN)
            record = self.store.get_container(body.get("database", ""), body.get("container", ""))
            if record is None:
                return web.json_response({"error": "no such container"}, status=404)
            return web.json_response({"writes": self.store.count_writes(record.rid)})
        if action == "split":
            record = self.store.get_container(body.get("database", ""), body.get("container", ""))
            if record is None:
                return web.json_response({"error": "no such container"}, status=404)
            targets = [body["range"]] if body.get("range") is not None else [r.id for r in self.store.ranges(record.rid)]
            created = []
            for range_id in targets:
                left, right = self.store.split_range(record.rid, str(range_id))
                created += [left.id, right.id]
            self.throttle.forget(record.rid)
            return web.json_response({"split": targets, "created": created})
        return web.json_response({"error": f"unknown admin action {action!r}"}, status=404)


def _check_resource_id(name: str) -> None:
    if len(name) > 255 or any(c in name for c in "/\\?#"):
        raise bad_request(f"The input name {name[:40]!r} is invalid: use a non-empty string of at most 255 "
                          "characters without '/', '\\', '?' or '#'.")


class RunningEmulator:
    """An emulator serving on a real socket, in this process: ``async with RunningEmulator(cfg) as emu``."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.emulator: Emulator | None = None
        self._runner: web.AppRunner | None = None
        self.port = config.port

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.config.tls else "http"
        return f"{scheme}://{self.config.host}:{self.port}/"

    @property
    def connection_string(self) -> str:
        return f"AccountEndpoint={self.endpoint};AccountKey={self.config.key};"

    async def __aenter__(self) -> RunningEmulator:
        self.emulator = Emulator(self.config)
        self._runner = web.AppRunner(self.emulator.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True,
                           ssl_context=_tls_context(*self.config.tls) if self.config.tls else None)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self.emulator is not None:
            self.emulator.store.close()


def _tls_context(certificate: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context for ``--tls-cert``/``--tls-key``.

    :raises ValueError: the files cannot be read or do not match.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--tls-cert/--tls-key: cannot load {certificate} and {key}: {exc}") from exc
    return context
