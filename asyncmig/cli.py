"""The ``asyncmig`` command line: parse, load settings, run a use case, print, exit meaningfully.

Exit codes: 0 success; 1 generic failure; 2 usage or configuration; 3 connection or authentication;
4 missing resource or plan mismatch; 5 checkpoint/state/lock; 6 corrupt backup; 7 dead-lettered
documents; 8 validation failed; 74 a local file could not be written; 75 persistent transient faults
(re-run to resume); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from asyncmig import __version__
from asyncmig.connection import AUTH_MODES, CosmosEndpoint, parse_connection_string
from asyncmig.core.cosmos.lease_defaults import DEFAULT_LEASE_CONTAINER, DEFAULT_TTL_SECONDS
from asyncmig.core.engine.pipeline import PipelineOptions
from asyncmig.core.engine.transform import IDENTITY, load_transform
from asyncmig.errors import (
    AsyncmigError,
    ConnectionFailed,
    DeadLettered,
    Interrupted,
    StorageError,
    UsageError,
    raise_first,
)
from asyncmig.redaction import install_redaction, redact, register_secret
from asyncmig.report import duration, table, write_json_report
from asyncmig.settings import ENV_AUTH, ENV_CONNECTION_STRING, Settings, load_settings

if TYPE_CHECKING:
    from asyncmig.copy import ContainerRef
    from asyncmig.core.cosmos.sink import Politeness

STATE_DIR = Path(".asyncmig")
log = logging.getLogger("asyncmig")


def _container_ref(text: str, default_database: str) -> tuple[str, str]:
    database, sep, container = text.rpartition("/")
    if not container or (sep and not database):
        raise UsageError(f"expected DATABASE/CONTAINER or CONTAINER, got {text!r}")
    return (database or default_database), container


def _endpoint(explicit: str | None, settings: Settings, role: str) -> CosmosEndpoint:
    configured = settings.endpoint
    if explicit:
        endpoint = parse_connection_string(explicit)
        register_secret(explicit)
        return endpoint.with_auth(settings.auth)
    if configured is None:
        raise UsageError(f"no {role} account: set {ENV_CONNECTION_STRING} in .env or the environment, "
                         f"or pass --{role}-connection")
    return configured


def _add_container_pair(p: argparse.ArgumentParser, *, target_help: str) -> None:
    """SOURCE and TARGET containers and their accounts, as ``copy`` and ``reconcile`` take them."""
    p.add_argument("source", help="SOURCE as DATABASE/CONTAINER")
    p.add_argument("target", help=target_help)
    p.add_argument("--source-connection", metavar="CONNSTR", help=f"source account (default: {ENV_CONNECTION_STRING})")
    p.add_argument("--target-connection", metavar="CONNSTR", help=f"target account (default: {ENV_CONNECTION_STRING})")


def _container_pair(args: argparse.Namespace) -> tuple[ContainerRef, ContainerRef]:
    """The source and target of ``copy``/``reconcile`` with their accounts (keys or Entra ID per ``--auth``)."""
    from asyncmig.copy import ContainerRef

    settings = load_settings(args.env_file, auth=args.auth)
    source_db, source_name = _container_ref(args.source, settings.database)
    target_db, target_name = _container_ref(args.target, settings.database)
    return (ContainerRef(_endpoint(args.source_connection, settings, "source"), source_db, source_name),
            ContainerRef(_endpoint(args.target_connection, settings, "target"), target_db, target_name))


def _add_copy(sub: Any) -> None:
    p = sub.add_parser(
        "copy", help="copy one container into another (resumable, RU-aware)",
        description="Copy every document of SOURCE into TARGET through the streaming core: the source is "
        "read by feed range through its change feed, documents are upserted in bulk batches per target "
        "physical range, paced to an RU budget, with a checkpoint so an interrupted copy resumes where it "
        "stopped. Containers are DATABASE/CONTAINER, or CONTAINER in AZURE_COSMOS_DATABASE_NAME.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_container_pair(p, target_help="TARGET as DATABASE/CONTAINER (must exist)")
    p.add_argument("--transform", metavar="MODULE:FUNCTION", help="transform each document (default: identity)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--ru-budget", type=float, metavar="RU_PER_S", help="write at most this many RU/s")
    budget.add_argument("--ru-fraction", type=float, metavar="F",
                        help="use this fraction (0-1] of the target's provisioned RU/s")
    p.add_argument("--checkpoint", type=Path, help="checkpoint file (default: .asyncmig/copy-<names>.checkpoint.json)")
    p.add_argument("--dead-letter", type=Path, help="rejected documents, JSON lines (default: beside the checkpoint)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    live = p.add_mutually_exclusive_group()
    live.add_argument("--catch-up", action="store_true",
                      help="after a finished copy: copy what changed in the source since (from the saved "
                           "change-feed positions), then exit")
    live.add_argument("--follow", action="store_true",
                      help="after the copy, keep applying the source's changes (deletes too, where the account "
                           "offers them) until SIGINT/SIGTERM; then finish the writes in flight, save and exit 0")
    p.add_argument("--poll-interval", type=float, default=PipelineOptions().poll_interval, metavar="SECONDS",
                   help="--follow: most seconds between reads of a caught-up range")
    p.add_argument("--dry-run", action="store_true", help="count and estimate RU and time; write nothing")
    p.add_argument("--report", type=Path, help="write a JSON report here")
    p.add_argument("--allow-dead-letters", action="store_true",
                   help="exit 0 even when documents were dead-lettered (they are still in the file)")
    p.add_argument("--page-size", type=int, default=PipelineOptions().page_size, help="documents per source page")
    p.add_argument("--max-in-flight", type=int, default=PipelineOptions().max_in_flight,
                   help="most source documents held in memory at once")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates (prints a warning)")
    polite = p.add_argument_group("sharing the containers with an application (docs/throughput.md)")
    polite.add_argument("--priority", choices=["low", "high"],
                        help="priority of the copy's requests (its reads of the source and its writes): low ones are "
                        "throttled first when a container is busy (needs priority-based execution enabled on the "
                        "account); default low with --follow, whose source an application is using")
    polite.add_argument("--throughput-bucket", type=int, metavar="N",
                        help="meter the copy's writes in throughput bucket N (1-5) of the target container")
    shared = p.add_argument_group("one copy shared by several workers (docs/scale-out.md)")
    shared.add_argument("--cluster", metavar="local[N]|auto|ray://HOST:PORT",
                        help="run the copy on Ray workers (pip install 'asyncmig[ray]'); progress lives in leases")
    shared.add_argument("--workers", type=int, help="workers for --cluster auto or ray://... (default: one per CPU)")
    shared.add_argument("--lease-container", metavar="NAME",
                        help="share the copy through leases in this target-database container (default with "
                        f"--cluster: {DEFAULT_LEASE_CONTAINER}); without --cluster this process is one worker")
    shared.add_argument("--lease-ttl", type=float, default=DEFAULT_TTL_SECONDS,
                        help="seconds without a commit after which another worker takes a range over")
    shared.add_argument("--max-leases", type=int, help="ranges one worker holds at a time (default: all it can get)")
    p.set_defaults(handler=_copy)


async def _copy(args: argparse.Namespace, stop: anyio.Event) -> int:
    from asyncmig.copy import CopySpec, copy, dry_run

    source, target = _container_pair(args)
    source_db, source_name, target_db, target_name = source.database, source.container, target.database, target.container
    if args.ru_fraction is not None and not 0 < args.ru_fraction <= 1:
        raise UsageError("--ru-fraction must be in (0, 1]")
    if not 0 < args.poll_interval <= 600:
        raise UsageError("--poll-interval must be in (0, 600] seconds")
    stem = f"copy-{source_db}.{source_name}--{target_db}.{target_name}"
    checkpoint = args.checkpoint or STATE_DIR / f"{stem}.checkpoint.json"
    spec = CopySpec(
        source=source, target=target, checkpoint=checkpoint,
        dead_letter=args.dead_letter or checkpoint.with_name(checkpoint.name.replace(".checkpoint.json", "") + ".deadletter.jsonl"),
        transform=load_transform(args.transform) if args.transform else IDENTITY,
        ru_budget=args.ru_budget, ru_fraction=args.ru_fraction, restart=args.restart,
        allow_dead_letters=args.allow_dead_letters, insecure=args.insecure,
        progress=False if args.no_progress else None,
        options=PipelineOptions(page_size=args.page_size, max_in_flight=args.max_in_flight, catch_up=args.catch_up,
                                follow=args.follow, poll_interval=args.poll_interval),
        politeness=_politeness(args),
    )
    if args.cluster or args.lease_container:
        return await _shared_copy(args, spec, stop)
    if args.dry_run:
        estimate = await dry_run(spec)
        print(table(["documents", "sampled", "mean size", "RU/write", "total RU", "budget RU/s", "estimated time"], [[
            estimate.documents, estimate.sampled, f"{estimate.mean_bytes / 1024:.1f} KB", estimate.ru_per_write,
            estimate.total_ru, estimate.budget or "none",
            duration(estimate.seconds) if estimate.seconds is not None else "unbounded (no budget)",
        ]]))
        return 0
    status, error = "succeeded", None
    result = None
    try:
        result = await copy(spec, stop)
        status = "stopped" if args.follow else status
    except AsyncmigError as exc:
        status, error = ("interrupted" if isinstance(exc, Interrupted) else "failed"), exc
        raise
    finally:
        if result is not None or error is not None:
            _finish_copy(args, spec, result, status, error)
    return 0


def _politeness(args: argparse.Namespace) -> Politeness:
    from asyncmig.core.cosmos.sink import MAX_THROUGHPUT_BUCKET, Politeness

    bucket = args.throughput_bucket
    if bucket is not None and not 1 <= bucket <= MAX_THROUGHPUT_BUCKET:
        raise UsageError(f"--throughput-bucket must be 1-{MAX_THROUGHPUT_BUCKET}, not {bucket}")
    level = args.priority or ("low" if getattr(args, "follow", False) else None)
    return Politeness(priority="Low" if level == "low" else "High" if level == "high" else None,
                      throughput_bucket=bucket)


async def _shared_copy(args: argparse.Namespace, spec: Any, stop: anyio.Event) -> int:
    from asyncmig.cluster.command import cluster_copy, cluster_report, leased_copy, parse_cluster
    from asyncmig.cluster.worker import LeaseOptions

    if args.dry_run or args.catch_up or args.restart or getattr(args, "follow", False):
        raise UsageError("--dry-run, --catch-up, --follow and --restart are not available with "
                         "--cluster/--lease-container (a shared copy is a bulk copy; follow it with one process)")
    options = LeaseOptions(container=args.lease_container or DEFAULT_LEASE_CONTAINER, ttl_seconds=args.lease_ttl,
                           max_leases=args.max_leases)
    if args.cluster:
        result = await cluster_copy(spec, parse_cluster(args.cluster, args.workers), options, stop)
        p = result.progress
        print(table(["documents", "written (incl. rewrites)", "dead-lettered", "RU", "RU/s", "429s", "workers replaced",
                     "time"], [[result.documents, p.written, p.dead_lettered, round(p.ru, 1),
                                round(p.ru / p.elapsed, 1) if p.elapsed else 0.0, p.throttled, p.workers_replaced,
                                duration(p.elapsed)]]))
        if args.report:
            write_json_report(args.report, cluster_report(spec, result, "succeeded"))
        dead = p.dead_lettered
    else:
        mine, (ranges, done, documents) = await leased_copy(spec, options, stop)
        print(table(["ranges done", "documents (all workers)", "written here", "dead-lettered here", "RU here"],
                    [[f"{done}/{ranges}", documents, mine.written, mine.dead_lettered, round(mine.ru, 1)]]))
        dead = mine.dead_lettered
    if dead and not args.allow_dead_letters:
        raise DeadLettered(f"{dead} document(s) could not be copied; they are in the dead-letter files beside "
                           f"{spec.dead_letter} (one per worker) with the reason")
    return 0


def _finish_copy(args: argparse.Namespace, spec: Any, result: Any, status: str, error: BaseException | None) -> None:
    if result is not None:
        s = result.stats
        print(table(
            ["documents read", "written", "dead-lettered", "skipped (written before)", "RU", "RU/s", "429s",
             "retries", "time"],
            [[s.read, s.written, s.dead_lettered, s.skipped, round(s.ru, 1), round(s.ru / s.elapsed, 1) if s.elapsed else 0.0,
              s.throttled, s.retries, duration(s.elapsed)]],
        ))
        if args.report:
            write_json_report(args.report, result.report(spec, status))
        _warn_live(result)
    elif args.report:
        write_json_report(args.report, {"command": "copy", "status": status, "error": redact(str(error))})
    if status == "stopped":
        print(f"stopped following; every change read is written and the positions are saved in {spec.checkpoint}. "
              "Continue with the same command.", file=sys.stderr)
    if isinstance(error, Interrupted):
        argv = [a for a in sys.argv[1:] if a != "--restart"]
        print(f"interrupted; progress is saved in {spec.checkpoint}. Resume with:\n  asyncmig {shlex.join(argv)}",
              file=sys.stderr)


def _warn_live(result: Any) -> None:
    """Say what a live copy must know: counts that differ after the bulk pass, deletes not followed."""
    from asyncmig.copy import COUNT_MISMATCH

    mismatches = result.count_mismatches()
    if mismatches:
        shown = ", ".join(f"{k}: read {v['read']}, counted {v['count']}" for k, v in sorted(mismatches.items()))
        print(f"note: {shown}: {COUNT_MISMATCH}", file=sys.stderr)
    if result.deletes_followed is False:
        print("note: the source does not offer the all-versions-and-deletes change feed, so documents deleted "
              "at the source during or after the copy stay in the target; `asyncmig reconcile SOURCE TARGET` "
              "removes them", file=sys.stderr)


def _phase_options(p: argparse.ArgumentParser, *, confirm: bool = True, strict: bool = False) -> None:
    p.add_argument("--database", help="database (default: AZURE_COSMOS_DATABASE_NAME or vimarsh-multi-personality)")
    p.add_argument("--workdir", type=Path, default=STATE_DIR, help="where state, checkpoints and reports live")
    p.add_argument("--backups", type=Path, default=Path("data/migration_backups"), help="where backups are written")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--ru-budget", type=float, metavar="RU_PER_S", help="write at most this many RU/s")
    budget.add_argument("--ru-fraction", type=float, metavar="F", help="fraction (0-1] of provisioned RU/s to use")
    p.add_argument("--serverless", action="store_true", default=None,
                   help="the account is serverless: create containers without throughput (detected otherwise)")
    p.add_argument("--allow-dead-letters", action="store_true", help="accept rejected documents knowingly")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates (prints a warning)")
    if confirm:
        p.add_argument("--yes", action="store_true", help="do not ask before phases that change data")
    if strict:
        p.add_argument("--strict", action="store_true",
                       help="validation fails on findings about the source data too (e.g. legacy embeddings "
                       "of another dimension), not only on migration differences")


def phase_options(args: argparse.Namespace) -> Any:
    """The :class:`~asyncmig.phases.context.PhaseOptions` the command line asks for."""
    from asyncmig.phases.context import PhaseOptions

    return PhaseOptions(ru_budget=args.ru_budget, ru_fraction=args.ru_fraction,
                        allow_dead_letters=args.allow_dead_letters, progress=False if args.no_progress else None,
                        serverless=args.serverless, insecure=args.insecure, strict=getattr(args, "strict", False))


@asynccontextmanager
async def _phase_context(args: argparse.Namespace, stop: anyio.Event) -> AsyncIterator[Any]:
    from asyncmig.core.cosmos.connect import cosmos_client
    from asyncmig.phases.context import PhaseContext
    from asyncmig.phases.state import load_state
    from asyncmig.phases.workdir import WorkDir

    settings = load_settings(args.env_file, auth=args.auth)
    endpoint = settings.require_endpoint()
    database = args.database or settings.database
    workdir = WorkDir.for_database(database, base=args.workdir, backups=args.backups).ensure()
    state = load_state(workdir.state, host=endpoint.host, database=database)
    options = phase_options(args)
    async with cosmos_client(endpoint, insecure=args.insecure) as client:
        yield PhaseContext(endpoint, client, database, workdir, state, options, stop)


# The phase each command runs (the command line says create-containers for the create phase).
_PHASE_OF_COMMAND = {"create-containers": "create"}


async def _run_phase(args: argparse.Namespace, stop: anyio.Event) -> int:
    from asyncmig.phases.run import ask, run_migration, run_single

    confirm = (lambda _question: True) if getattr(args, "yes", False) else ask
    async with _phase_context(args, stop) as ctx:
        if args.command == "run":
            await run_migration(ctx, confirm=confirm, live=args.live)
            if args.live:
                print(f"cutover complete at {ctx.state.cutover_at}: the new containers are caught up and validated; "
                      "it is safe to point the application at them now")
            else:
                print("migration complete: every phase finished and validation passed")
            return 0
        if args.command == "validate" and args.live:  # a look while `run --live` (holding the lock) follows
            from asyncmig.phases.run import validate_and_show

            await validate_and_show(ctx, print, following=True)
            return 0
        action = None
        if args.command == "restore":
            from asyncmig.phases.restore import restore

            def action() -> Any:
                return restore(ctx, args.backup_dir, args.container or None)
        if args.command == "rollback":
            from asyncmig.phases.rollback import rollback

            def action() -> Any:
                return rollback(ctx, force=args.force)

        await run_single(_PHASE_OF_COMMAND.get(args.command, args.command), ctx, confirm=confirm, action=action)
        return 0


async def _request_cutover(args: argparse.Namespace, stop: anyio.Event) -> int:
    from asyncmig.core.files.fsutil import PidLock
    from asyncmig.errors import LockHeld
    from asyncmig.phases.cutover import request_cutover
    from asyncmig.phases.workdir import WorkDir

    database = args.database or load_settings(args.env_file).database
    workdir = WorkDir.for_database(database, base=args.workdir)
    running = False
    if workdir.state.exists():
        try:
            with PidLock(workdir.root):  # taken: nobody holds it, so no run is waiting for a cutover
                pass
        except LockHeld:
            running = True
    if not running:
        raise UsageError(f"no `asyncmig run --live` is running on {workdir.root}; nothing to cut over")
    path = request_cutover(workdir)
    print(f"cutover requested ({path}): the running `run --live` now catches up, validates and reports")
    return 0


async def _verify_backup(args: argparse.Namespace, stop: anyio.Event) -> int:
    from asyncmig.core.files.manifest import latest_backup
    from asyncmig.phases.backup import verify

    backup_dir = args.backup_dir or latest_backup(args.backups)
    if backup_dir is None:
        raise UsageError(f"no complete backup under {args.backups}; pass the backup folder")
    report = await verify(backup_dir)  # raises BackupCorrupt (exit 6) naming the first problem
    print(f"{backup_dir}: every file matches its manifest")
    print(table(["container", "file", "documents", "ok"],
                [[c.name, c.file, c.actual_count if c.actual_count is not None else "-", c.ok] for c in report.containers]))
    return 0


async def _seed_demo(args: argparse.Namespace, stop: anyio.Event) -> int:
    from asyncmig.core.cosmos.connect import cosmos_client
    from asyncmig.vimarsh.demo_data import DemoDataSet
    from asyncmig.vimarsh.seed import seed_demo

    settings = load_settings(args.env_file, auth=args.auth)
    endpoint = settings.require_endpoint()
    dataset = DemoDataSet(args.seed, vectors=args.vectors, dimensions=args.dimensions)
    async with cosmos_client(endpoint, insecure=False) as client:
        seeded = await seed_demo(client, endpoint, args.database or settings.database, dataset, args.workdir,
                                 progress=False if args.no_progress else None, stop=stop)
    print("demo data seeded" if seeded else "demo data already seeded; nothing to do")
    return 0


def _add_phases(sub: Any) -> None:
    run = sub.add_parser("run", help="the whole migration: backup, create, migrate, validate (resumable)",
                         description="Run backup -> create-containers -> migrate -> validate. Finished phases are "
                         "skipped on a re-run and an interrupted phase resumes from its checkpoints; each phase that "
                         "changes data asks first unless --yes.")
    _phase_options(run, strict=True)
    run.add_argument("--live", action="store_true",
                     help="the application keeps writing: after migrate, follow the legacy containers until "
                     "`asyncmig cutover` (or Ctrl-C), then catch up and validate")
    cutover = sub.add_parser("cutover", help="ask a running `run --live` to catch up, validate and cut over",
                             description="Writes the cutover request the running `asyncmig run --live` of this "
                             "database watches for. Stop the application's writes to the legacy containers first.")
    cutover.add_argument("--database", help="database (default: AZURE_COSMOS_DATABASE_NAME or vimarsh-multi-personality)")
    cutover.add_argument("--workdir", type=Path, default=STATE_DIR, help="the work directory of the running run")
    cutover.set_defaults(handler=_request_cutover)
    backup = sub.add_parser("backup", help="back up the legacy containers (or: backup verify [DIR])",
                            description="Stream the 3 legacy containers into compressed JSON lines with a manifest "
                            "(counts, SHA-256, content digests, container settings) written last.")
    backup_sub = backup.add_subparsers(dest="backup_action")
    verify = backup_sub.add_parser("verify", help="recompute everything from a backup's files")
    verify.add_argument("backup_dir", nargs="?", type=Path, help="backup folder (default: the newest complete one)")
    verify.add_argument("--backups", type=Path, default=Path("data/migration_backups"))
    verify.set_defaults(handler=_verify_backup)
    _phase_options(backup, confirm=False)
    for name, text in (("create-containers", "create the 11 planned containers (idempotent)"),
                       ("migrate", "copy and transform the data into the new layout"),
                       ("validate", "compare source and target id by id; exit 8 on any difference"),
                       ("rollback", "restore the 3-container layout from the backup")):
        p = sub.add_parser(name, help=text, description=text)
        _phase_options(p, confirm=name != "validate", strict=name == "validate")
    sub.choices["validate"].add_argument(
        "--live", action="store_true",
        help="the source is still being written (run --live is following): name documents changed at the source "
        "after they were copied instead of failing on them")
    sub.choices["rollback"].add_argument(
        "--force", action="store_true",
        help="delete created containers even when the application wrote to them after the migration")
    restore = sub.add_parser("restore", help="restore containers from a backup folder")
    restore.add_argument("backup_dir", type=Path)
    restore.add_argument("--container", action="append", help="only this container (repeatable)")
    _phase_options(restore, confirm=False)
    seed = sub.add_parser("seed-demo", help="write the deterministic demo data set into the legacy layout")
    seed.add_argument("--database")
    seed.add_argument("--workdir", type=Path, default=STATE_DIR)
    seed.add_argument("--seed", type=int, default=20250805)
    seed.add_argument("--vectors", type=int, default=6514)
    seed.add_argument("--dimensions", type=int, default=768)
    seed.add_argument("--no-progress", action="store_true")
    seed.set_defaults(handler=_seed_demo)
    for p in (run, backup, restore, *[sub.choices[n] for n in ("create-containers", "migrate", "validate", "rollback")]):
        p.set_defaults(handler=p.get_default("handler") or _run_phase)
    backup.set_defaults(handler=_run_phase)


def _add_reconcile(sub: Any) -> None:
    p = sub.add_parser(
        "reconcile", help="delete target documents whose source document is gone (deletes a copy did not see)",
        description="For an identity copy from a source without the all-versions-and-deletes change feed: list the "
        "ids and partition keys of TARGET, then of SOURCE (by query, feed range by feed range), and delete each "
        "target document whose source document is gone (checked once more right before its delete). Asks first "
        "unless --yes; --dry-run only counts.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_container_pair(p, target_help="TARGET as DATABASE/CONTAINER")
    p.add_argument("--dry-run", action="store_true", help="count (and list the first) orphans; delete nothing")
    p.add_argument("--yes", action="store_true", help="do not ask before deleting")
    p.add_argument("--report", type=Path, help="write a JSON report here")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates (prints a warning)")
    p.set_defaults(handler=_reconcile)


async def _reconcile(args: argparse.Namespace, stop: anyio.Event) -> int:
    from asyncmig.phases.run import Declined, ask
    from asyncmig.reconcile import reconcile

    source, target = _container_pair(args)
    source_db, source_name, target_db, target_name = source.database, source.container, target.database, target.container
    if not args.dry_run and not args.yes and not ask(
        f"Delete from {target_db}/{target_name} every document that is not in {source_db}/{source_name}?"
    ):
        raise Declined("reconcile not confirmed; nothing was deleted")
    result = await reconcile(source, target, dry_run=args.dry_run, insecure=args.insecure)
    print(table(["target documents", "source documents", "orphans", "deleted", "kept (back at the source)"],
                [[result.target_documents, result.source_documents, result.orphans, result.deleted, result.kept]]))
    if args.report:
        write_json_report(args.report, result.report(source, target))
    return 0


def _add_status(sub: Any) -> None:
    p = sub.add_parser("status", help="what the migration and copies have done so far (reads local files only)",
                       description="Show each phase of the migration (from its state file), every checkpoint "
                       "and, per feed range, the saved position and the documents it covers. Works while a run "
                       "is going on; it does not connect to Cosmos DB.")
    p.add_argument("--workdir", type=Path, default=STATE_DIR, help="where state and checkpoints live")
    p.set_defaults(handler=_status)


async def _status(args: argparse.Namespace, stop: anyio.Event) -> int:
    from asyncmig.status import collect, render

    print(render(collect(args.workdir)))
    return 0


def _add_emulator(sub: Any) -> None:
    p = sub.add_parser("emulator", help="run the local Cosmos DB emulator (see python -m asyncmig.emulator --help)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(handler=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncmig",
        description="Fast, RU-aware, resumable and provably lossless moves between Azure Cosmos DB (NoSQL) "
        f"containers. The account comes from {ENV_CONNECTION_STRING} (environment or .env).",
        epilog="Exit codes: 0 ok, 2 usage, 3 connection/auth, 4 missing resource or plan mismatch, "
        "5 checkpoint/state, 6 corrupt backup, 7 dead letters, 8 validation failed, 9 source changed during a backup, 74 local disk, 75 transient faults "
        "persisted (re-run to resume), 130 interrupted (re-run to resume).",
    )
    parser.add_argument("--version", action="version", version=f"asyncmig {__version__}")
    parser.add_argument("--env-file", type=Path, help="read settings from this file (default: ./.env if present)")
    parser.add_argument("--auth", choices=AUTH_MODES, help=f"key: the connection string's AccountKey; entra: Microsoft "
                        "Entra ID (DefaultAzureCredential), data-plane rights only; auto (default): the key when the "
                        f"connection string has one, else Entra ID. Also {ENV_AUTH}. See docs/authentication.md")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail (secrets are redacted)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_copy(sub)
    _add_reconcile(sub)
    _add_phases(sub)
    _add_status(sub)
    _add_emulator(sub)
    return parser


async def _run(handler: Callable[[argparse.Namespace, anyio.Event], Awaitable[int]], args: argparse.Namespace) -> int:
    stop = anyio.Event()
    code = Interrupted.exit_code  # a second signal cancels the handler: stopped at once
    async with anyio.create_task_group() as tg:

        async def signals() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
                async for _ in received:
                    if stop.is_set():
                        tg.cancel_scope.cancel()  # a second Ctrl-C: stop now
                        return
                    print("\nstopping: finishing in-flight writes, then saving the checkpoint "
                          "(Ctrl-C again to stop at once)", file=sys.stderr)
                    stop.set()

        tg.start_soon(signals)
        code = await handler(args, stop)
        tg.cancel_scope.cancel()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["emulator"]:
        from asyncmig.emulator.__main__ import main as emulator_main

        return emulator_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction()
    try:
        try:
            return anyio.run(_run, args.handler, args, backend_options={"use_uvloop": _has_uvloop()})
        except BaseExceptionGroup as group:
            raise_first(group)
    except (AsyncmigError, OSError) as exc:
        message, code = failure_message(exc, verbose=args.verbose)
        print(message, file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return Interrupted.exit_code


# What the network raises is an OSError too; these never mean a local file could not be written.
_NETWORK_ERRORS = (ConnectionError, TimeoutError, socket.gaierror, socket.herror)


def failure_message(exc: AsyncmigError | OSError, *, verbose: bool) -> tuple[str, int]:
    """The ``error:`` line (after the redacted cause chain when ``verbose``) and the exit code."""
    if isinstance(exc, AsyncmigError):
        message, code = str(exc), exc.exit_code
    elif isinstance(exc, _NETWORK_ERRORS):
        message = (f"the connection to Cosmos DB failed: {exc.strerror or type(exc).__name__}; check the "
                   "endpoint and the network, then re-run the same command to resume")
        code = ConnectionFailed.exit_code
    else:  # a local file: disk full, read-only, permissions; progress up to the last checkpoint is kept
        where = f" ({exc.filename})" if exc.filename else ""
        message = (f"writing a local file failed: {exc.strerror or exc}{where}; free space or fix permissions, "
                   "then re-run the same command to resume")
        code = StorageError.exit_code
    causes: list[str] = []
    if verbose:  # innermost first, as Python prints a chain: the error line stays the last line
        seen = {id(exc)}
        cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        while cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            causes.insert(0, f"caused by: {type(cause).__name__}: {cause}")
            cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return redact("\n".join([*causes, f"error: {message}"])), code


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
