"""Workers as Ray actors: one copy across the cores and machines of a Ray cluster.

Each worker is an async actor (an event loop of its own) running a
:class:`~asyncmig.cluster.worker.LeasedWorker`; the shared RU budget is one more actor holding the
:class:`~asyncmig.core.engine.shared_budget.BudgetBank`, restarted by Ray if its host is lost
(``max_restarts=-1``) and, being a new bank, restarted empty. Ray reports a dead actor to whoever
waits on it, which is how the driver learns that a worker must be replaced.

Needs the optional extra: ``pip install 'asyncmig[ray]'``. The copy spec (connection strings
included) travels to the actors through Ray's object store: run Ray clusters you trust.
"""

from __future__ import annotations

from typing import Any

from asyncmig.cluster.engine import WorkerDied
from asyncmig.cluster.worker import LeasedWorker, LeaseOptions, WorkerProgress
from asyncmig.copy import CopySpec
from asyncmig.core.engine.shared_budget import Bank, BudgetBank
from asyncmig.errors import UsageError

try:
    import ray
    from ray.exceptions import RayActorError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise UsageError("--cluster needs Ray: pip install 'asyncmig[ray]'") from exc


@ray.remote(max_restarts=-1, max_task_retries=0)
class _BankActor:
    def __init__(self, budget: float, container_ru: float | None) -> None:
        self._bank = BudgetBank(budget, container_ru=container_ru)

    async def grant(self, worker: str, lane: str, lanes: int, want: float) -> float:
        return await self._bank.grant(worker, lane, lanes, want)


class _RemoteBank:
    """The worker's view of the bank actor (one round trip per grant, ~75 ms of budget each)."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    async def grant(self, worker: str, lane: str, lanes: int, want: float) -> float:
        granted: float = await self._actor.grant.remote(worker, lane, lanes, want)
        return granted


@ray.remote(max_restarts=0)
class _WorkerActor:
    def __init__(self, spec: CopySpec, owner: str, options: LeaseOptions, bank: Any | None) -> None:
        import anyio

        self._worker = LeasedWorker(spec, owner, options, bank=_RemoteBank(bank) if bank is not None else None)
        self._stop = anyio.Event()

    async def run(self) -> WorkerProgress:
        return await self._worker.run(self._stop)

    async def progress(self) -> WorkerProgress:
        return self._worker.snapshot()

    async def stop(self) -> None:
        self._stop.set()


class _RayHandle:
    def __init__(self, actor: Any, owner: str) -> None:
        self.owner = owner
        self._actor = actor
        self._result = actor.run.remote()
        self._last = WorkerProgress(owner)

    async def wait(self) -> WorkerProgress:
        try:
            result: WorkerProgress = await self._result
        except RayActorError as exc:
            raise WorkerDied(f"worker {self.owner} died: {exc.__class__.__name__}") from exc
        except ray.exceptions.RayTaskError as exc:
            raise exc.as_instanceof_cause() from None
        finally:
            ray.kill(self._actor, no_restart=True)  # done either way: give its CPU back to the cluster
        self._last = result
        return result

    async def progress(self) -> WorkerProgress:
        try:
            self._last = await self._actor.progress.remote()
        except RayActorError:
            pass  # dead: its last known progress stands until the driver notices through wait()
        return self._last

    async def stop(self) -> None:
        try:
            await self._actor.stop.remote()
        except RayActorError:
            pass  # already gone: nothing to stop

    async def kill(self) -> None:
        ray.kill(self._actor, no_restart=True)


class RayEngine:
    """Workers as Ray actors in the cluster at ``address`` (``"local"`` starts one on this machine)."""

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        if not ray.is_initialized():
            ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        self._actors: list[Any] = []

    def cpus(self) -> int:
        """CPUs in the cluster: the default number of workers for ``auto`` and ``ray://``."""
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    async def bank(self, budget: float, container_ru: float | None) -> Bank:
        actor = _BankActor.options(num_cpus=0).remote(budget, container_ru)  # type: ignore[attr-defined]
        self._actors.append(actor)
        return _RemoteBank(actor)

    async def start_worker(self, spec: CopySpec, owner: str, options: LeaseOptions, bank: Bank | None):  # type: ignore[no-untyped-def]
        actor_of_bank = bank._actor if isinstance(bank, _RemoteBank) else None
        actor = _WorkerActor.options(num_cpus=1, name=None).remote(  # type: ignore[attr-defined]
            spec, owner, options, actor_of_bank)
        self._actors.append(actor)
        return _RayHandle(actor, owner)

    def shutdown(self) -> None:
        """Kill the actors this engine started (the Ray cluster itself keeps running)."""
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors.clear()
