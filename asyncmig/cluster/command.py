"""``asyncmig copy --cluster ...`` and ``--lease-container``: the shared copy as a command.

``--cluster local[N]`` starts a Ray cluster on this machine with N workers; ``--cluster auto``
joins the Ray cluster this machine belongs to; ``--cluster ray://HOST:PORT`` connects to a remote
one through the Ray client. ``--lease-container`` without ``--cluster`` makes this process one
worker of a copy that other processes (on other machines) share through the same lease container.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import anyio

from asyncmig.cluster.driver import ClusterProgress, ClusterResult, lease_totals, run_cluster
from asyncmig.cluster.worker import LeasedWorker, LeaseOptions, WorkerProgress
from asyncmig.copy import CopySpec
from asyncmig.core.cosmos.connect import cosmos_client, existing_container
from asyncmig.core.cosmos.source import CosmosSource
from asyncmig.core.engine.progress import ProgressBar
from asyncmig.errors import UsageError

_LOCAL = re.compile(r"^local\[(\d+)\]$")


@dataclass(frozen=True)
class ClusterChoice:
    address: str | None  # None: start a local Ray cluster
    workers: int | None  # None: one per CPU of the cluster


def parse_cluster(text: str, workers: int | None) -> ClusterChoice:
    """``local[N]``, ``auto`` or ``ray://HOST:PORT`` (``--workers`` sets N for the last two).

    :raises UsageError: for anything else, or a worker count below 1.
    """
    local = _LOCAL.match(text)
    if local:
        n = int(local.group(1))
        if n < 1:
            raise UsageError("--cluster local[N] needs N >= 1")
        return ClusterChoice(None, n)
    if text == "auto" or text.startswith("ray://"):
        if workers is not None and workers < 1:
            raise UsageError("--workers must be at least 1")
        return ClusterChoice(text, workers)
    raise UsageError(f"--cluster must be local[N], auto or ray://HOST:PORT, got {text!r}")


class ClusterBar(ProgressBar):
    """One progress bar for the whole cluster: documents, docs/s, RU/s, 429s, workers alive."""

    def __init__(self, total: int | None, *, enabled: bool | None) -> None:
        super().__init__("copy (cluster)", total, enabled=enabled)

    def __call__(self, progress: ClusterProgress) -> None:
        self.update(progress.written, progress.ru, f"429s {progress.throttled}, workers {progress.workers_alive}, "
                    f"replaced {progress.workers_replaced}")


async def _source_count(spec: CopySpec) -> int | None:
    async with cosmos_client(spec.source.endpoint, insecure=spec.insecure) as client:
        container = await existing_container(client, spec.source.database, spec.source.container, role="source")
        return await CosmosSource(container).count()


async def cluster_copy(spec: CopySpec, choice: ClusterChoice, options: LeaseOptions,
                       stop: anyio.Event) -> ClusterResult:
    """Run the copy on Ray with one progress bar; returns the cluster's result."""
    from asyncmig.cluster.ray_engine import RayEngine

    engine = RayEngine(choice.address, num_cpus=choice.workers if choice.address is None else None)
    workers = choice.workers or engine.cpus()
    bar = ClusterBar(await _source_count(spec), enabled=spec.progress)
    try:
        return await run_cluster(spec, engine, workers, options, stop=stop, on_progress=bar)
    finally:
        bar.close()
        engine.shutdown()


async def leased_copy(spec: CopySpec, options: LeaseOptions, stop: anyio.Event) -> tuple[WorkerProgress, tuple[int, int, int]]:
    """This process as one worker of a shared copy; returns its progress and the leases' totals."""
    import os
    import socket

    worker = LeasedWorker(spec, f"{socket.gethostname()}-{os.getpid()}", options)
    done = await worker.run(stop)
    return done, await lease_totals(spec, options)


def cluster_report(spec: CopySpec, result: ClusterResult, status: str) -> dict[str, Any]:
    p = result.progress
    return {
        "command": "copy", "mode": "cluster", "status": status,
        "source": spec.source.describe(), "target": spec.target.describe(),
        "ru_budget_per_s": result.budget,
        "documents": {"committed": result.documents, "written": p.written, "dead_lettered": p.dead_lettered},
        "ru": {"total": round(p.ru, 2), "per_second": round(p.ru / p.elapsed, 1) if p.elapsed else 0.0},
        "requests": p.requests, "throttled": p.throttled, "elapsed_s": round(p.elapsed, 3),
        "ranges": result.ranges, "workers_replaced": p.workers_replaced,
        "workers": {owner: {"written": w.written, "ru": round(w.ru, 2), "requests": w.requests,
                            "throttled": w.throttled, "cpu_s": round(w.cpu_s, 3), "leases_taken_over": w.leases_taken_over,
                            "leases_lost": w.leases_lost}
                    for owner, w in result.workers.items()},
    }
