"""Phase 2, create-containers: the 11 planned containers, idempotently, checked before any data moves.

Every planned container is inspected first. A container whose partition key or vector policy
differs from the plan stops the run (those settings cannot change on an existing container); TTL
and indexing differences are corrected with ``replace_container``. Missing containers are recorded
in the state file *before* they are created, so a rollback knows it may delete them even if the
run dies right after the create. Throughput is autoscale with the planned maximum, or none on a
serverless account (detected from the service's refusal, or forced with ``--serverless``).
"""

from __future__ import annotations

import time
from typing import Any, cast

from azure.cosmos import ThroughputProperties
from azure.cosmos.aio import DatabaseProxy
from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceNotFoundError

from asyncmig.core.cosmos.retry import classify
from asyncmig.errors import ControlPlaneRequired, PlanMismatch, ResourceMissing
from asyncmig.phases.context import PhaseContext, PhaseResult
from asyncmig.phases.state import save_state
from asyncmig.vimarsh import plan
from asyncmig.vimarsh.dimensions import DimensionTally


async def detect_vector_dimensions(database: DatabaseProxy) -> int:
    """The embedding dimension of the legacy vectors (768 in production), by the rule of
    :mod:`asyncmig.vimarsh.dimensions`; the production value when there are none."""
    container = database.get_container_client(plan.SOURCE_VECTORS)
    tally = DimensionTally()
    query = "SELECT VALUE ARRAY_LENGTH(c.embedding) FROM c WHERE IS_ARRAY(c.embedding)"
    try:
        async for length in container.query_items(query, max_item_count=1000):
            tally.add_length(int(cast(int, length)))
    except Exception as exc:  # noqa: BLE001 - translated at this boundary
        raise classify(exc).as_error(f"reading embedding sizes from {plan.SOURCE_VECTORS}") from exc
    detected = tally.most_common()
    return plan.PRODUCTION_VECTOR_DIMENSIONS if detected is None else detected


async def create_containers(ctx: PhaseContext) -> PhaseResult:
    """Create what is missing, correct what may be corrected, refuse what cannot be.

    :raises PlanMismatch: an existing container's partition key or vector policy differs.
    :raises ResourceMissing: the database or the in-place ``users`` container does not exist.
    """
    started = time.monotonic()
    database = ctx.database
    try:
        await database.read()
    except CosmosResourceNotFoundError:
        raise ResourceMissing(f"database {ctx.database_name!r} does not exist on {ctx.endpoint.host}") from None
    if ctx.state.vector_dimensions is None:
        ctx.state.vector_dimensions = await detect_vector_dimensions(database)
        save_state(ctx.workdir.state, ctx.state)
    dimensions = ctx.state.vector_dimensions
    existing = {c["id"]: c async for c in database.list_containers()}
    if plan.USERS not in existing:
        raise ResourceMissing(f"the users container {ctx.database_name}/{plan.USERS} does not exist; "
                              "the migration enriches it in place")
    problems: list[str] = []
    to_correct = []
    for spec in plan.VALIDATED_CONTAINERS:
        if spec.name not in existing:
            continue
        differences = plan.compare_container(spec, existing[spec.name], vector_dimensions=dimensions)
        critical = plan.critical_differences(differences)
        if critical:
            owner = "created by this migration" if spec.name in ctx.state.created else "not created by asyncmig"
            problems += [f"{spec.name} ({owner}): {d}" for d in critical]
        elif differences and spec.managed:
            to_correct.append((spec, differences))
    if problems:
        raise PlanMismatch(
            "existing containers differ from the plan in settings that cannot be changed, so no data was "
            "moved: " + "; ".join(problems) + ". Delete or rename those containers, then re-run."
        )
    missing = [spec.name for spec in plan.NEW_CONTAINERS if spec.name not in existing]
    if ctx.endpoint.uses_entra and (missing or to_correct):
        raise ControlPlaneRequired(_needs_control_plane(missing, [spec.name for spec, _ in to_correct]))
    created, corrected = [], []
    for spec, differences in to_correct:
        properties = plan.container_properties(spec, vector_dimensions=dimensions)
        await database.replace_container(
            spec.name, partition_key=properties["partition_key"], default_ttl=properties.get("default_ttl"),
            indexing_policy=properties.get("indexing_policy"),
        )
        corrected.append({"container": spec.name, "changes": [str(d) for d in differences]})
    serverless = ctx.options.serverless
    for spec in plan.NEW_CONTAINERS:
        if spec.name in existing:
            continue
        if spec.name not in ctx.state.created:
            ctx.state.created.append(spec.name)  # intent first: a rollback may delete it from now on
            save_state(ctx.workdir.state, ctx.state)
        properties = plan.container_properties(spec, vector_dimensions=dimensions)
        serverless = await _create(database, properties, spec.autoscale_max, serverless)
        created.append(spec.name)
    return PhaseResult("create", "done", seconds=time.monotonic() - started, details={
        "created": created, "corrected": corrected, "already_matching": sorted(set(existing) & {
            s.name for s in plan.NEW_CONTAINERS}), "serverless": bool(serverless), "vector_dimensions": dimensions,
    })


def _needs_control_plane(missing: list[str], to_correct: list[str]) -> str:
    """Why an Entra ID sign-in cannot do this phase, and the two ways out."""
    work = []
    if missing:
        work.append("create " + ", ".join(missing))
    if to_correct:
        work.append("correct the settings of " + ", ".join(to_correct))
    return ("create-containers would " + " and ".join(work) + ", but a Microsoft Entra ID sign-in has data-plane "
            "rights only: Cosmos DB lets no token create or change containers or throughput. Run this phase once "
            "with the account key (AccountKey in the connection string, --auth key), or create the containers in "
            "advance (Azure portal, az cosmosdb sql container create, Bicep) as docs/authentication.md describes; "
            "the other phases then run with Entra ID.")


async def _create(database: DatabaseProxy, properties: dict[str, Any], autoscale_max: int | None,
                  serverless: bool | None) -> bool | None:
    """Create one container; returns what was learned about the account being serverless."""
    if not serverless and autoscale_max:
        try:
            await database.create_container(
                **properties, offer_throughput=ThroughputProperties(auto_scale_max_throughput=autoscale_max))
            return False
        except CosmosHttpResponseError as exc:
            if exc.status_code == 409:
                return serverless
            if not (exc.status_code == 400 and "serverless" in str(exc.message).lower()):
                raise classify(exc).as_error(f"creating container {properties['id']!r}") from exc
            # A serverless account refuses throughput: create without it, and remember.
    try:
        await database.create_container(**properties)
    except CosmosHttpResponseError as exc:
        if exc.status_code != 409:  # a previous run created it just before dying
            raise classify(exc).as_error(f"creating container {properties['id']!r}") from exc
    return True if serverless is None and autoscale_max else serverless
