"""A container as the source and the sink address it: over the lean transport, or through the SDK.

A copy opens its containers from an :class:`Account` (:meth:`Account.container`): properties,
physical ranges and counts are requested through the transport
(:mod:`asyncmig.core.cosmos.metadata`), the change feed is read and the writes sent by the lean
reader and writer, and the SDK is not imported at all. It is brought in only for what only the SDK
path does (``ASYNCMIG_READ_PATH=sdk`` or ``ASYNCMIG_WRITE_PATH=sdk``, snapshot queries, the
all-versions passes of a live follow, deletes, the read-back of a resumed copy): :meth:`Container.sdk`
then opens one SDK client per account, closed with the account.

The other phases hold SDK proxies already; :meth:`Container.of` wraps one, and such a container
sends its metadata requests through the SDK as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Literal, cast

import aiohttp

from asyncmig.connection import CosmosEndpoint
from asyncmig.core.cosmos import metadata
from asyncmig.core.cosmos.links import normalized_bounds
from asyncmig.core.cosmos.metadata import PhysicalRange, Throughput
from asyncmig.core.cosmos.retry import Backoff, classify, wait_to_retry
from asyncmig.core.cosmos.transport import (
    Authorizer,
    CosmosHttpError,
    EntraAuthorizer,
    MasterKeyAuthorizer,
    Transport,
    entra_credential,
    priority_headers,
    token_scope,
)
from asyncmig.errors import ConnectionFailed, ResourceMissing
from asyncmig.redaction import redact

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.cosmos.aio import ContainerProxy, CosmosClient

__all__ = ["Access", "Account", "Container", "feed_range_of", "open_container", "unreachable"]

# The endpoint, authorizer and TLS choice the lean reader and writer sign with.
Access = tuple[CosmosEndpoint, Authorizer, bool]
_METADATA_CONNECTIONS = 4


def feed_range_of(physical: PhysicalRange) -> dict[str, Any]:
    """The feed range of one physical range, as ``ContainerProxy.read_feed_ranges`` gives it."""
    return {"Range": {"min": physical.low, "max": physical.high, "isMinInclusive": True, "isMaxInclusive": False}}


class Account:
    """One Cosmos DB account for a copy: how its requests are authorized (its key, or Microsoft Entra
    ID), a small connection pool for metadata requests, and an SDK client made on first need.

    Use it as an async context manager: closing it closes the pool, the SDK client and the Entra
    credential.
    """

    def __init__(self, endpoint: CosmosEndpoint, *, insecure: bool = False) -> None:
        self.endpoint = endpoint
        self.insecure = insecure
        self._credential: AsyncTokenCredential | None = None
        if endpoint.key:
            self.authorizer: Authorizer = MasterKeyAuthorizer(endpoint.key)
        else:
            scope, overridden = token_scope(endpoint.url)
            self._credential = entra_credential()
            # Not owned: the readers' transports close their authorizer, the account its credential.
            self.authorizer = EntraAuthorizer(self._credential, scope, owned=False, overridden=overridden,
                                              account=endpoint.host)
        self._transport: Transport | None = None
        self._client: CosmosClient | None = None
        self._resources = AsyncExitStack()

    async def __aenter__(self) -> Account:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def access(self) -> Access:
        return self.endpoint, self.authorizer, self.insecure

    @property
    def transport(self) -> Transport:
        """The metadata requests' transport (made on first use)."""
        if self._transport is None:
            self._transport = Transport(self.endpoint, connections=_METADATA_CONNECTIONS, insecure=self.insecure,
                                        authorizer=self.authorizer)
        return self._transport

    def container(self, database: str, name: str) -> Container:
        return Container(database, name, account=self)

    async def sdk_client(self) -> CosmosClient:
        """The account's SDK client, connected on first use.

        :raises AuthenticationFailed, ConnectionFailed: as :func:`~asyncmig.core.cosmos.connect.cosmos_client`.
        """
        if self._client is None:
            from asyncmig.core.cosmos.connect import cosmos_client  # noqa: PLC0415 - only SDK-path runs load the SDK

            self._client = await self._resources.enter_async_context(cosmos_client(self.endpoint,
                                                                                   insecure=self.insecure))
        return self._client

    async def read_database(self, database: str) -> dict[str, Any]:
        """The database's properties.

        :raises CosmosHttpError: 404 when it does not exist.
        """
        return await metadata.read_resource(self.transport, f"dbs/{database}")

    async def provisioned_throughput(self, container: dict[str, Any], database: str) -> Throughput | None:
        """The RU/s of a container (its properties), its database's when shared, or None on a
        serverless account (whose offer queries are refused with 400).

        :raises AsyncmigError: an offer could not be read for another reason.
        """
        for dedicated in (True, False):
            owner = container if dedicated else await self.read_database(database)
            try:
                offer = await metadata.read_offer(self.transport, str(owner["_self"]))
            except CosmosHttpError as exc:
                if exc.status == 400:
                    return None
                raise classify(exc).as_error(f"reading the throughput of {owner.get('id')!r}") from exc
            if offer is not None:
                ru = metadata.offer_ru(offer)
                return Throughput(ru, dedicated=dedicated) if ru else None
        return None

    async def aclose(self) -> None:
        try:
            await self._resources.aclose()
            if self._transport is not None:
                await self._transport.close()
        finally:
            if self._credential is not None:
                await self._credential.close()


class Container:
    """One container: its names, and the requests the source and the sink make of it besides
    reading and writing documents.

    Made by :meth:`Account.container` (lean) or :meth:`of` (an SDK proxy the caller holds and closes).
    """

    def __init__(self, database: str, name: str, *, account: Account | None = None,
                 proxy: ContainerProxy | None = None) -> None:
        self.database = database
        self.id = name
        self.link = f"dbs/{database}/colls/{name}"
        self.account = account
        self._proxy = proxy

    @classmethod
    def of(cls, container: Container | ContainerProxy) -> Container:
        """``container`` as a :class:`Container` (an SDK proxy is wrapped; its client stays the caller's)."""
        if isinstance(container, Container):
            return container
        database, name = container.container_link.split("/")[1::2]
        return cls(database, name, proxy=container)

    async def sdk(self) -> ContainerProxy:
        """The SDK's proxy for this container (opening the account's SDK client if need be)."""
        if self._proxy is None:
            assert self.account is not None  # one of the two is always given
            client = await self.account.sdk_client()
            self._proxy = client.get_database_client(self.database).get_container_client(self.id)
        return self._proxy

    def access(self) -> Access | None:
        """How the lean reader and writer reach this container; None for an SDK client signed with
        resource tokens, which only the SDK can send requests for."""
        if self.account is not None:
            return self.account.access
        from asyncmig.core.cosmos.lean_reader import sdk_client_authorizer  # noqa: PLC0415 - avoids an import cycle

        assert self._proxy is not None
        return sdk_client_authorizer(self._proxy.client_connection)

    async def read(self) -> dict[str, Any]:
        """The container's properties, read now (a re-created container has a new ``_rid``).

        :raises CosmosHttpError: on the lean path (404: no such container); the SDK's errors otherwise.
        """
        if self.account is None:
            return dict(await (await self.sdk()).read())
        return await metadata.read_resource(self.account.transport, self.link)

    async def physical_ranges(self, rid: str | None = None) -> list[PhysicalRange]:
        """The container's current physical ranges (lean containers only)."""
        assert self.account is not None
        return await metadata.read_physical_ranges(self.account.transport, self.link, rid)

    async def feed_ranges(self) -> list[dict[str, Any]]:
        """One feed range per physical range, in ``ContainerProxy.read_feed_ranges`` form."""
        if self.account is None:
            return [fr async for fr in (await self.sdk()).read_feed_ranges(force_refresh=True)]
        return [feed_range_of(r) for r in await self.physical_ranges()]

    async def count(self, feed_range: dict[str, Any] | None, *, rid: str | None = None,
                    priority: Literal["High", "Low"] | None = None, on_charge: Callable[[float], None]) -> int:
        """``SELECT VALUE COUNT(1) FROM c`` over ``feed_range`` (None: the whole container).

        :param rid: the container's ``_rid`` when known (else it is read first).

        :raises Exception: the SDK's or the transport's error, for the caller to classify.
        """
        if self.account is None:
            proxy = await self.sdk()
            options: dict[str, Any] = {"priority": priority} if priority else {}
            if feed_range is not None:
                options["feed_range"] = feed_range

            def charged(headers: Any, _result: Any) -> None:
                charge = headers.get("x-ms-request-charge")
                if charge is not None:
                    on_charge(float(charge))

            counts = [n async for n in proxy.query_items("SELECT VALUE COUNT(1) FROM c", response_hook=charged,
                                                         **options)]
            return sum(int(cast(int, n)) for n in counts)
        low, high = normalized_bounds(feed_range["Range"]) if feed_range else ("", "FF")
        headers = priority_headers(priority)
        rid = rid or str((await self.read())["_rid"])
        return await metadata.count_documents(self.account.transport, self.link, rid, await self.physical_ranges(rid),
                                              low, high, headers=headers, on_charge=on_charge)


async def open_container(account: Account, database: str, name: str, *, role: str) -> tuple[Container, dict[str, Any]]:
    """A container that exists, and its properties (throttling and transient replies retried).

    :raises ResourceMissing: naming whether the database or the container is missing.
    :raises ConnectionFailed: the account cannot be reached (at once: nothing to wait for).
    :raises AsyncmigError: any other refusal, classified (a bad key or role: authentication).
    """
    container = account.container(database, name)
    try:
        return container, await _read(container.read, account, f"reading the {role} container {database}/{name}")
    except CosmosHttpError as exc:
        if exc.status != 404:
            raise classify(exc).as_error(f"reading the {role} container {database}/{name}") from exc
    try:
        await _read(lambda: account.read_database(database), account, f"reading the {role} database {database}")
    except CosmosHttpError as exc:
        if exc.status != 404:
            raise classify(exc).as_error(f"reading the {role} database {database}") from exc
        raise ResourceMissing(f"the {role} database {database!r} does not exist; check the name "
                              "(AZURE_COSMOS_DATABASE_NAME or DB/CONTAINER) or create it") from None
    raise ResourceMissing(f"the {role} container {database}/{name} does not exist; check the name "
                          "or create it first (asyncmig does not guess partition keys)") from None


async def _read(request: Callable[[], Awaitable[dict[str, Any]]], account: Account, what: str) -> dict[str, Any]:
    """``request()``, retried while throttled or transient; a 404 is raised for the caller."""
    backoff = Backoff()
    while True:
        try:
            return await request()
        except CosmosHttpError as exc:
            failure = classify(exc)
            if exc.status == 404 or not failure.retryable:
                raise
            await wait_to_retry(backoff, failure, what=what, cause=exc)
        except (aiohttp.ClientConnectionError, OSError, TimeoutError) as exc:
            raise unreachable(account.endpoint.host, classify(exc).reason) from exc


def unreachable(host: str, reason: str) -> ConnectionFailed:
    """The error for an account that cannot be reached."""
    return ConnectionFailed(redact(
        f"cannot reach the Cosmos DB account at {host}: {reason}; check AccountEndpoint in the connection "
        "string, the network, and (for the local emulator) that it is running"
    ))
