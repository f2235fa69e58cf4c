"""What every phase receives: the account, the database, the work directory, the run's options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy

from asyncmig.connection import CosmosEndpoint
from asyncmig.core.cosmos.connect import provisioned_throughput
from asyncmig.core.cosmos.sink import CosmosSink
from asyncmig.core.engine.governor import Governor, budget_from
from asyncmig.core.engine.pipeline import PipelineOptions, RunStatistics
from asyncmig.core.engine.sink import Sink
from asyncmig.core.engine.source import Source
from asyncmig.core.engine.transfer import Transfer, run_transfer
from asyncmig.core.engine.transform import IDENTITY, Transform
from asyncmig.phases.state import MigrationState
from asyncmig.phases.workdir import WorkDir


@dataclass(frozen=True)
class PhaseOptions:
    ru_budget: float | None = None
    ru_fraction: float | None = None
    allow_dead_letters: bool = False
    progress: bool | None = None
    serverless: bool | None = None  # None: detect from the account
    insecure: bool = False
    strict: bool = False  # validate: findings about the source data (e.g. legacy embeddings) fail too
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)


@dataclass
class PhaseContext:
    endpoint: CosmosEndpoint
    client: CosmosClient
    database_name: str
    workdir: WorkDir
    state: MigrationState
    options: PhaseOptions = field(default_factory=PhaseOptions)
    stop: anyio.Event | None = None

    @property
    def database(self) -> DatabaseProxy:
        return self.client.get_database_client(self.database_name)

    async def cosmos_sink(self, targets: dict[str, ContainerProxy]) -> CosmosSink:
        """A sink into ``targets`` paced to the budget the options allow of the first target's throughput."""
        throughput = await provisioned_throughput(next(iter(targets.values())), self.database)
        budget = budget_from(throughput.ru if throughput else None, self.options.ru_budget, self.options.ru_fraction)
        return CosmosSink(targets, Governor(budget), endpoint=self.endpoint, insecure=self.options.insecure)

    async def transfer(
        self, phase: str, key: str, source: Source, sink: Sink, identity: dict[str, Any], *,
        transform: Transform = IDENTITY, restart: bool = False, allow_dead_letters: bool | None = None,
    ) -> RunStatistics:
        """Run (or resume) one transfer of ``phase`` with its checkpoint and dead-letter file named
        after ``key``, the run's options and stop event; closes ``sink``.

        :param allow_dead_letters: overrides the option (a backup never accepts them).
        """
        job = Transfer(
            source=source, sink=sink, identity=identity, transform=transform, restart=restart,
            checkpoint=self.workdir.checkpoint(phase, key), dead_letter=self.workdir.dead_letter(phase, key),
            allow_dead_letters=self.options.allow_dead_letters if allow_dead_letters is None else allow_dead_letters,
            label=f"{phase} {key.partition('@')[0]}", total=await source.count(), progress=self.options.progress,
            options=self.options.pipeline,
            start_over=f"move it aside to start this step of {phase} over",
        )
        return await run_transfer(job, self.stop)


@dataclass
class PhaseResult:
    """One phase's line in the run summary (and its JSON report)."""

    phase: str
    status: str  # "done", "skipped", "failed", "interrupted"
    documents: int = 0
    ru: float = 0.0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "status": self.status, "documents": self.documents,
                "ru": round(self.ru, 2), "seconds": round(self.seconds, 3), "details": self.details}
