"""``asyncmig copy``: one container into another through the streaming core.

Backup, restore, validation and the Vimarsh phases are the same engine with a different source,
sink or transform; this module wires the Cosmos-to-Cosmos case and its dry run.

Live sources: :func:`follow` is the copy that keeps applying the source's changes (deletes too,
where the account offers the all-versions-and-deletes change feed) until ``stop`` is set, then ends
normally; :func:`catch_up` applies what changed since a finished copy once. Both resume the same
checkpoint as :func:`copy`, so a follow can start after a plain copy, and a plain copy after a follow.
"""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from asyncmig.connection import CosmosEndpoint
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos import rucost
from asyncmig.core.cosmos.container import Account, Container, open_container
from asyncmig.core.cosmos.sink import CosmosSink, Politeness
from asyncmig.core.cosmos.source import CosmosSource, scan_container
from asyncmig.core.engine.checkpoint import run_identity
from asyncmig.core.engine.governor import Governor, budget_from
from asyncmig.core.engine.pipeline import PipelineOptions, RunStatistics
from asyncmig.core.engine.transfer import Transfer, run_transfer
from asyncmig.core.engine.transform import DEFAULT_TARGET, IDENTITY, Transform

if TYPE_CHECKING:
    from azure.cosmos.aio import DatabaseProxy


@dataclass(frozen=True)
class ContainerRef:
    endpoint: CosmosEndpoint
    database: str
    container: str

    def describe(self) -> dict[str, str]:
        return {"host": self.endpoint.host, "database": self.database, "container": self.container}


@dataclass(frozen=True)
class CopySpec:
    source: ContainerRef
    target: ContainerRef
    checkpoint: Path
    dead_letter: Path
    transform: Transform = IDENTITY
    ru_budget: float | None = None
    ru_fraction: float | None = None
    restart: bool = False
    allow_dead_letters: bool = False
    insecure: bool = False
    progress: bool | None = None
    options: PipelineOptions = field(default_factory=PipelineOptions)
    politeness: Politeness = field(default_factory=Politeness)  # priority (reads and writes), throughput bucket (writes)


@dataclass
class CopyResult:
    stats: RunStatistics
    budget: float | None
    provisioned: float | None
    source_count: int | None
    deletes_followed: bool | None = None  # None: not asked (a plain copy reads no deletes)

    def count_mismatches(self) -> dict[str, dict[str, int | None]]:
        """Ranges whose bulk pass read another number of documents than their independent count."""
        return {k: v for k, v in self.stats.bulk.items() if v["count"] is not None and v["count"] != v["read"]}

    def report(self, spec: CopySpec, status: str) -> dict[str, Any]:
        s = self.stats
        return {
            "command": "copy", "status": status,
            "source": spec.source.describe(), "target": spec.target.describe(),
            "transform": {"name": spec.transform.name, "version": spec.transform.version},
            "ru_budget_per_s": self.budget, "target_provisioned_ru_per_s": self.provisioned,
            "documents": {"source_count": self.source_count, "read": s.read, "written": s.written,
                          "dead_lettered": s.dead_lettered, "skipped_as_written_before": s.skipped},
            "ru": {"total": round(s.ru, 2), "per_second": round(s.ru / s.elapsed, 1) if s.elapsed else 0.0},
            "requests": s.requests, "throttled": s.throttled,
            "throttled_share": round(s.throttled / s.requests, 4) if s.requests else 0.0,
            "retries": s.retries, "elapsed_s": round(s.elapsed, 3),
            "ranges": {"total": s.ranges, "done": s.ranges_done},
            "live": {"deleted": s.deleted, "superseded_versions": s.superseded, "deletes_followed": self.deletes_followed,
                     "lag": s.lag, "lag_seconds_max": _most(s.lag, "seconds"),
                     "lag_documents_max": _most(s.lag, "documents")},
            "count_check": self._count_check(spec),
            "memory": {"max_in_flight_documents": spec.options.max_in_flight, "peak_in_flight": s.peak_in_flight},
            "checkpoint": str(spec.checkpoint), "dead_letter_file": str(spec.dead_letter),
        }


    def _count_check(self, spec: CopySpec) -> dict[str, Any]:
        if spec.transform is not IDENTITY:
            return {"checked": False, "why": "a transform's outputs are not counted against the source"}
        mismatches = self.count_mismatches()
        return {
            "checked": bool(self.stats.bulk), "ranges": self.stats.bulk, "mismatches": sorted(mismatches),
            "explanation": COUNT_MISMATCH if mismatches else None,
        }


COUNT_MISMATCH = (
    "the bulk pass read another number of documents than the range held when the pass ended; on a source "
    "that is being written this is the changes made during the copy (--follow or --catch-up applies them); "
    "on a source nobody writes it means documents were missed: copy again with --restart"
)


def _most(lag: dict[str, dict[str, float | int | None]], what: str) -> float | int | None:
    values = [v[what] for v in lag.values() if v.get(what) is not None]
    return max(values) if values else None  # type: ignore[type-var]


def target_names(spec: CopySpec) -> list[str]:
    """The target containers' names, in the order of the transform's targets."""
    return [spec.target.container if t == DEFAULT_TARGET else t for t in spec.transform.targets]


def copy_identity(spec: CopySpec) -> dict[str, Any]:
    """What a checkpoint (or a lease container) of this copy is bound to: hosts and names, never keys."""
    return run_identity(
        source=spec.source.endpoint, source_database=spec.source.database,
        source_container=spec.source.container, target=spec.target.endpoint,
        target_database=spec.target.database, target_containers=target_names(spec), transform=spec.transform,
    )


@dataclass
class OpenedContainers:
    """A copy's containers, checked to exist, and the RU budget its writes are paced to."""

    source: Container
    targets: dict[str, Container]  # by the transform's target name
    target_account: Account
    target_database_name: str
    provisioned: float | None
    budget: float | None
    # The single target's own RU/s, which sets each of its ranges' share of the budget (None: several
    # targets, or throughput shared by the database): see :func:`~asyncmig.core.engine.shared_budget.range_share`.
    container_ru: float | None

    async def target_database(self) -> DatabaseProxy:
        """The target database through the SDK (the lease store's requests are the SDK's)."""
        return (await self.target_account.sdk_client()).get_database_client(self.target_database_name)


@asynccontextmanager
async def open_containers(spec: CopySpec) -> AsyncIterator[OpenedContainers]:
    """Reach both accounts, check the containers and read the target's throughput; all over the
    lean transport (the SDK is loaded only if the copy needs a request that only it sends).

    :raises ResourceMissing: a database or container does not exist.
    :raises AsyncmigError: connection and authentication problems.
    """
    async with Account(spec.source.endpoint, insecure=spec.insecure) as source_account, \
            Account(spec.target.endpoint, insecure=spec.insecure) as target_account:
        source, _ = await open_container(source_account, spec.source.database, spec.source.container, role="source")
        targets: dict[str, Container] = {}
        first: dict[str, Any] | None = None
        for name, container in zip(spec.transform.targets, target_names(spec), strict=True):
            targets[name], properties = await open_container(target_account, spec.target.database, container,
                                                             role="target")
            first = first or properties
        assert first is not None  # a transform has at least one target
        throughput = await target_account.provisioned_throughput(first, spec.target.database)
        provisioned = throughput.ru if throughput else None
        container_ru = provisioned if throughput and throughput.dedicated and len(targets) == 1 else None
        yield OpenedContainers(source, targets, target_account, spec.target.database, provisioned,
                               budget_from(provisioned, spec.ru_budget, spec.ru_fraction), container_ru)


async def copy(spec: CopySpec, stop: anyio.Event | None = None) -> CopyResult:
    """Run (or resume) a copy.

    :raises Interrupted: after ``stop`` was set; the checkpoint is saved.
    :raises DeadLettered: when documents were rejected and ``allow_dead_letters`` is off.
    :raises AsyncmigError: for connection, resource, checkpoint and persistent-fault problems.
    """
    identity = copy_identity(spec)
    async with open_containers(spec) as opened:
        budget, provisioned = opened.budget, opened.provisioned
        source = CosmosSource(opened.source, page_size=spec.options.page_size,
                              what=f"{spec.source.database}/{spec.source.container}", deletes=True,
                              priority=spec.politeness.priority)
        count = await source.count()
        job = Transfer(
            source=source, sink=CosmosSink(opened.targets, Governor(budget, container_ru=opened.container_ru),
                                           endpoint=spec.target.endpoint,
                                           insecure=spec.insecure, politeness=spec.politeness),
            identity=identity, checkpoint=spec.checkpoint, dead_letter=spec.dead_letter, transform=spec.transform,
            restart=spec.restart, allow_dead_letters=spec.allow_dead_letters,
            label=f"copy {spec.source.container}", total=count, progress=spec.progress, options=spec.options,
        )
        stats = await run_transfer(job, stop)
    return CopyResult(stats, budget, provisioned, count, source.deletes_available)


async def follow(spec: CopySpec, stop: anyio.Event) -> CopyResult:
    """Copy (or resume), then keep applying the source's changes until ``stop`` is set.

    Ends normally once the writes in flight at the stop are done and the positions saved.

    :raises Interrupted: the writes in flight did not finish within the grace period.
    :raises DeadLettered, AsyncmigError: as :func:`copy`.
    """
    return await copy(replace(spec, options=replace(spec.options, follow=True, catch_up=False)), stop)


async def catch_up(spec: CopySpec, stop: anyio.Event | None = None) -> CopyResult:
    """Apply what changed at the source since a finished copy (one pass over every range), then return.

    :raises Interrupted, DeadLettered, AsyncmigError: as :func:`copy`.
    """
    return await copy(replace(spec, options=replace(spec.options, catch_up=True, follow=False)), stop)


@dataclass
class DryRun:
    documents: int
    sampled: int
    mean_bytes: float
    ru_per_write: float
    total_ru: float
    budget: float | None
    provisioned: float | None

    @property
    def seconds(self) -> float | None:
        return self.total_ru / self.budget if self.budget else None


async def dry_run(spec: CopySpec, sample_pages: int = 4) -> DryRun:
    """Count the source and estimate the write RU and time from sampled document sizes; writes nothing."""
    async with open_containers(spec) as opened:
        source = CosmosSource(opened.source, page_size=min(spec.options.page_size, 200))
        await source.open()
        documents = await source.count() or 0
        sizes: list[int] = []
        await scan_container(opened.source, lambda page: sizes.extend(len(jsoncodec.dumps(d)) for d in page),
                             what=spec.source.container, page_size=source.page_size, ranges=sample_pages,
                             pages_per_range=1)
    mean = statistics.fmean(sizes) if sizes else 0.0
    per_write = rucost.write(int(mean), 0) if sizes else 0.0
    return DryRun(documents, len(sizes), mean, per_write, per_write * documents, opened.budget, opened.provisioned)
