"""The boundary to Cosmos DB: clients that leave retrying to us, and containers that must exist.

Every failure here becomes an asyncmig error whose message names the account host (never the key
or a token), the database or container, and what to do about it. The client authenticates as the
lean transport does: with the account key, or with Microsoft Entra ID when the endpoint has none
(:func:`asyncmig.core.cosmos.transport.sdk_credential`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from azure.core.exceptions import ClientAuthenticationError
from azure.cosmos import ThroughputProperties
from azure.cosmos._retry_options import RetryOptions
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy
from azure.cosmos.documents import ConnectionPolicy
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from asyncmig.connection import CosmosEndpoint, tls_verify
from asyncmig.core.cosmos.container import unreachable
from asyncmig.core.cosmos.metadata import Throughput
from asyncmig.core.cosmos.retry import classify
from asyncmig.core.cosmos.transport import sdk_credential, sign_in_failed
from asyncmig.errors import ResourceMissing


@asynccontextmanager
async def cosmos_client(endpoint: CosmosEndpoint, *, insecure: bool = False) -> AsyncIterator[CosmosClient]:
    """A connected client with the SDK's throttle retries off.

    :raises AuthenticationFailed: the account refused the key or token, or no token could be obtained.
    :raises ConnectionFailed: the endpoint cannot be reached.
    """
    credential = sdk_credential(endpoint)
    try:
        client = CosmosClient(endpoint.url, credential=credential, **cosmos_client_kwargs(endpoint, insecure=insecure))
        await _connect(client, endpoint)
        try:
            yield client
        finally:
            await client.close()
    finally:
        if not isinstance(credential, str):
            await credential.close()


def cosmos_client_kwargs(endpoint: CosmosEndpoint, *, insecure: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``azure.cosmos.aio.CosmosClient(endpoint.url, credential=endpoint.key, **kw)``.

    Throttle retries are disabled through a ``ConnectionPolicy`` whose ``RetryOptions`` allow 0
    attempts (``retry_total=0`` would not do it: the SDK treats 0 as "not given"), so every 429
    reaches :func:`~asyncmig.core.cosmos.retry.classify`. A new policy object is built per call because the SDK mutates it.
    """
    policy = ConnectionPolicy()
    policy.RetryOptions = RetryOptions(max_retry_attempt_count=0)
    return {"connection_policy": policy, "connection_verify": tls_verify(endpoint, insecure=insecure)}


async def _connect(client: CosmosClient, endpoint: CosmosEndpoint) -> None:
    try:
        await client.__aenter__()
    except Exception as exc:  # noqa: BLE001 - translated at this boundary
        await client.close()
        if isinstance(exc, ClientAuthenticationError):
            raise sign_in_failed(endpoint.host, exc) from None
        failure = classify(exc)
        if failure.status in (401, 403):
            raise failure.as_error(f"connecting to {endpoint.host}") from None
        raise unreachable(endpoint.host, failure.reason) from None


async def existing_container(client: CosmosClient, database: str, container: str, *, role: str) -> ContainerProxy:
    """A proxy for a container that exists, read once so its settings are cached.

    :raises ResourceMissing: naming whether the database or the container is missing.
    """
    db: DatabaseProxy = client.get_database_client(database)
    proxy = db.get_container_client(container)
    try:
        await proxy.read()
    except CosmosResourceNotFoundError:
        try:
            await db.read()
        except CosmosResourceNotFoundError:
            raise ResourceMissing(f"the {role} database {database!r} does not exist; check the name "
                                  "(AZURE_COSMOS_DATABASE_NAME or DB/CONTAINER) or create it") from None
        raise ResourceMissing(f"the {role} container {database}/{container} does not exist; check the name "
                              "or create it first (asyncmig does not guess partition keys)") from None
    except Exception as exc:  # noqa: BLE001 - translated at this boundary
        raise classify(exc).as_error(f"reading the {role} container {database}/{container}") from None
    return proxy


async def read_offer(owner: ContainerProxy | DatabaseProxy) -> tuple[bool, ThroughputProperties | None]:
    """``(offers supported, the owner's own offer or None)``; offers are unsupported on serverless.

    :raises AsyncmigError: when the offer cannot be read for another reason.
    """
    try:
        return True, await owner.get_throughput()
    except CosmosResourceNotFoundError:
        return True, None
    except AttributeError as exc:
        # azure-cosmos 4.17.1 raises 404/10004 itself for "no dedicated throughput", then mistakes
        # it for a recreated container and crashes refreshing a None link. Same meaning: no offer.
        context = exc.__context__
        if isinstance(context, CosmosResourceNotFoundError) and context.sub_status == 10004:
            return True, None
        raise
    except Exception as exc:  # noqa: BLE001 - serverless accounts answer 400 to offer reads
        failure = classify(exc)
        if failure.status == 400:
            return False, None
        raise failure.as_error(f"reading the throughput of {owner.id!r}") from exc


async def provisioned_throughput(container: ContainerProxy, database: DatabaseProxy) -> Throughput | None:
    """The container's RU/s, its database's when shared, or None on a serverless account (which has
    no provisioned throughput)."""
    for owner in (container, database):
        supported, offer = await read_offer(owner)
        if not supported:
            return None
        if offer is not None:
            ru = float(offer.auto_scale_max_throughput or offer.offer_throughput or 0)
            return Throughput(ru, dedicated=owner is container) if ru else None
    return None
