"""What every phase receives: the account, the database, the work directory, the run's options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
from azure.cosmos.aio import CosmosClient, DatabaseProxy

from asyncmig.config import CosmosEndpoint
from asyncmig.core.engine.pipeline import PipelineOptions
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
