"""Where a shared copy's workers run: the small interface the driver needs, and its in-process engine.

The driver (:mod:`asyncmig.cluster.driver`) starts workers, polls their progress, notices one
that died and starts a replacement. It does that through :class:`Engine`, which has two
implementations: :class:`LocalEngine` runs the workers as tasks of this event loop (tests, and a
single machine), :class:`~asyncmig.cluster.ray_engine.RayEngine` runs each worker as a Ray actor
with an event loop of its own, anywhere in a Ray cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from asyncmig.cluster.worker import LeasedWorker, LeaseOptions, WorkerProgress
from asyncmig.copy import CopySpec
from asyncmig.core.engine.shared_budget import Bank, BudgetBank


class WorkerDied(Exception):
    """A worker ended without finishing or failing on its own (killed, or its host was lost)."""


class WorkerHandle(Protocol):
    owner: str

    async def wait(self) -> WorkerProgress:
        """The worker's final progress once it finishes.

        :raises WorkerDied: the worker was killed or lost.
        :raises AsyncmigError: the worker failed (or was interrupted) with this error.
        """
        ...

    async def progress(self) -> WorkerProgress:
        """What the worker has done so far."""
        ...

    async def stop(self) -> None:
        """Ask the worker to stop: it commits its progress, releases its leases and ends with Interrupted."""
        ...

    async def kill(self) -> None:
        """End the worker at once, as a crash would (its leases expire and are taken over)."""
        ...


class Engine(Protocol):
    async def bank(self, budget: float, container_ru: float | None) -> Bank:
        """The one RU budget the workers share (started empty); ``container_ru`` sets each target
        range's share (see :func:`~asyncmig.core.engine.shared_budget.range_share`)."""
        ...

    async def start_worker(self, spec: CopySpec, owner: str, options: LeaseOptions, bank: Bank | None) -> WorkerHandle:
        ...


class _LocalHandle:
    def __init__(self, worker: LeasedWorker, group: TaskGroup) -> None:
        self.owner = worker.owner
        self._worker = worker
        self._stop = anyio.Event()
        self._ended = anyio.Event()
        self._scope = anyio.CancelScope()
        self._result: WorkerProgress | None = None
        self._error: BaseException | None = None
        group.start_soon(self._run)

    async def _run(self) -> None:
        try:
            with self._scope:
                self._result = await self._worker.run(self._stop)
        except Exception as exc:  # noqa: BLE001 - handed to whoever waits on this worker
            self._error = exc
        finally:
            self._ended.set()

    async def wait(self) -> WorkerProgress:
        await self._ended.wait()
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise WorkerDied(f"worker {self.owner} was killed")
        return self._result

    async def progress(self) -> WorkerProgress:
        return self._worker.snapshot()

    async def stop(self) -> None:
        self._stop.set()

    async def kill(self) -> None:
        self._scope.cancel()


class LocalEngine:
    """Workers as tasks of the current event loop; use as ``async with LocalEngine() as engine``."""

    def __init__(self, *, on_commit: Callable[[WorkerProgress], None] | None = None) -> None:
        """``on_commit`` is passed to every worker (tests wait on progress with it)."""
        self._group: TaskGroup | None = None
        self._on_commit = on_commit

    async def __aenter__(self) -> LocalEngine:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> bool | None:
        assert self._group is not None
        return await self._group.__aexit__(*exc)  # type: ignore[arg-type]

    async def bank(self, budget: float, container_ru: float | None) -> Bank:
        return BudgetBank(budget, container_ru=container_ru)

    async def start_worker(self, spec: CopySpec, owner: str, options: LeaseOptions, bank: Bank | None) -> WorkerHandle:
        assert self._group is not None, "use LocalEngine as an async context manager"
        return _LocalHandle(LeasedWorker(spec, owner, options, bank=bank, on_commit=self._on_commit), self._group)
