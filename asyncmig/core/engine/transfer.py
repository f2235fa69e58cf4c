"""One resumable transfer from any source to any sink: the piece every command and phase shares.

``asyncmig copy`` is Cosmos to Cosmos; a backup is Cosmos to files, a restore files to Cosmos, the
migration Cosmos to Cosmos through a transform. All of them load (or refuse) a checkpoint, run the
pipeline with a progress bar and a dead-letter file, and fail when documents were rejected unless
that was accepted knowingly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from asyncmig.core.engine.checkpoint import RESTART_HINT, load_checkpoint
from asyncmig.core.engine.deadletter import DeadLetterFile
from asyncmig.core.engine.pipeline import Pipeline, PipelineOptions, RunStatistics
from asyncmig.core.engine.progress import CopyProgress
from asyncmig.core.engine.sink import Sink
from asyncmig.core.engine.source import Source
from asyncmig.core.engine.transform import IDENTITY, Transform
from asyncmig.errors import DeadLettered


@dataclass(frozen=True)
class Transfer:
    """One source-to-sink run with its checkpoint and dead-letter file; :func:`run_transfer` owns
    (and closes) the sink."""

    source: Source
    sink: Sink
    identity: dict[str, Any]
    checkpoint: Path
    dead_letter: Path
    transform: Transform = IDENTITY
    restart: bool = False
    allow_dead_letters: bool = False
    label: str = "copy"
    total: int | None = None
    progress: bool | None = None
    options: PipelineOptions = field(default_factory=PipelineOptions)
    start_over: str = RESTART_HINT  # how the user starts over when the checkpoint cannot be used


async def run_transfer(job: Transfer, stop: anyio.Event | None = None) -> RunStatistics:
    """Run or resume ``job``; the job's sink is closed when it ends, however it ends.

    :raises Interrupted: after ``stop`` was set (the checkpoint is saved).
    :raises DeadLettered: documents were rejected and ``allow_dead_letters`` is off.
    :raises AsyncmigError: connection, resource, checkpoint and persistent-fault problems.
    """
    try:
        checkpoint = load_checkpoint(job.checkpoint, job.identity, restart=job.restart, start_over=job.start_over)
        progress = CopyProgress(job.label, job.total, enabled=job.progress)
        with DeadLetterFile(job.dead_letter) as dead_letters:
            pipeline = Pipeline(job.source, job.sink, checkpoint, job.checkpoint, dead_letters,
                                transform=job.transform, options=job.options, on_progress=progress)
            try:
                stats = await pipeline.run(stop)
            finally:
                progress(pipeline.stats)
                progress.close()
    finally:
        with anyio.CancelScope(shield=True):  # also on the way out of a cancelled run
            await job.sink.close()
    if stats.dead_lettered and not job.allow_dead_letters:
        raise DeadLettered(
            f"{stats.dead_lettered} document(s) could not be copied and are in {job.dead_letter} with the "
            "reason; fix them and re-run, or pass --allow-dead-letters to accept this knowingly"
        )
    return stats
