"""``asyncmig run``: backup -> create -> migrate -> validate, resumable, one confirmation per phase.

``run --live`` puts a *follow* phase before validate: it keeps the new layout in step with a source
the application still writes, until the operator cuts over (:mod:`asyncmig.phases.cutover`).

Finished phases are recorded in the state file and skipped on a re-run; the unfinished phase
resumes from its checkpoints. A lock keeps a second run off the same state. Each phase writes its
JSON report; the run writes ``summary.json`` and prints the summary table.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable

from asyncmig.core.files.fsutil import PidLock
from asyncmig.errors import AsyncmigError
from asyncmig.phases.context import PhaseContext, PhaseResult
from asyncmig.phases.state import LIVE_PHASES, PHASES, save_state
from asyncmig.report import duration, table, write_json_report

QUESTIONS = {
    "backup": "Back up the 3 legacy containers to {backups}?",
    "create": "Create the 11 new containers in {database} (autoscale throughput unless serverless)?",
    "migrate": "Copy and transform the data into the new containers and enrich users in place?",
}

Confirm = Callable[[str], bool]
# Phases that change containers; run alone, they ask first (``--yes`` answers for the user).
CONFIRMED_ALONE = ("create", "migrate", "rollback")


class Declined(AsyncmigError):
    """The user answered no to a confirmation."""

    exit_code = 1


async def run_phase(name: str, ctx: PhaseContext, say: Callable[[str], None]) -> PhaseResult:
    """Run one phase (of :data:`PHASES`, or ``rollback``) and return its summary line."""
    if name == "rollback":
        from asyncmig.phases.rollback import rollback

        return await rollback(ctx)
    if name == "backup":
        from asyncmig.phases.backup import backup

        return await backup(ctx)
    if name == "create":
        from asyncmig.phases.create import create_containers

        return await create_containers(ctx)
    if name == "migrate":
        from asyncmig.phases.migrate import migrate

        return await migrate(ctx)
    if name == "follow":
        from asyncmig.phases.cutover import follow_until_cutover

        say("following the legacy containers into the new layout; stop the application's writes to them, "
            "then run `asyncmig cutover` (or press Ctrl-C here) to catch up, validate and cut over")
        return await follow_until_cutover(ctx)
    return await validate_and_show(ctx, say)


async def validate_and_show(ctx: PhaseContext, say: Callable[[str], None], *, following: bool = False) -> PhaseResult:
    """Validate and print the report table, also when validation fails (``following``: see
    :func:`asyncmig.phases.validate.live_source_of`)."""
    from asyncmig.phases.validate import live_source_of, validate
    from asyncmig.phases.validation_report import ValidationMismatch

    try:
        report = await validate(ctx, live_source_of(ctx, following=following))
    except ValidationMismatch as exc:
        say(exc.report.table())
        raise
    say(report.table())
    return report.phase_result()


async def run_single(
    name: str, ctx: PhaseContext, *, confirm: Confirm, say: Callable[[str], None] = print,
    action: Callable[[], Awaitable[PhaseResult]] | None = None,
) -> PhaseResult:
    """One phase as a command of its own, on the same terms as in ``asyncmig run``: under the work
    directory's lock, asking first when it changes containers, recorded in the state when it is
    one of the run's phases, with its JSON report.

    :param action: what to run instead of :func:`run_phase` (``restore`` takes arguments of its own).
    :raises LockHeld: another command holds this work directory.
    :raises Declined: the confirmation was answered no.
    """
    with PidLock(ctx.workdir.root):
        if name in CONFIRMED_ALONE and not confirm(
                f"Run {name} against {ctx.database_name} on {ctx.endpoint.host}?"):
            raise Declined(f"{name} not confirmed; nothing was changed")
        result = await (action() if action is not None else run_phase(name, ctx, say))
        if name in PHASES:
            ctx.state.finish(name)
        save_state(ctx.workdir.state, ctx.state)
        write_json_report(ctx.workdir.report(name), result.as_dict())
        say(summary_table([result]))
    return result


def summary_table(results: list[PhaseResult]) -> str:
    return table(["phase", "status", "documents", "RU", "time"],
                 [[r.phase, r.status, r.documents, round(r.ru, 1), duration(r.seconds)] for r in results])


async def run_migration(
    ctx: PhaseContext, *, confirm: Confirm, say: Callable[[str], None] = print,
    phase: Callable[[str, PhaseContext, Callable[[str], None]], Awaitable[PhaseResult]] = run_phase,
    live: bool = False,
) -> list[PhaseResult]:
    """Run every unfinished phase in order (with ``live``, following the source until the cutover).

    :raises LockHeld: another run holds this work directory.
    :raises Declined: a confirmation was answered no.
    :raises AsyncmigError: the phase's own failure (its checkpoint is saved; re-run to resume).
    """
    results: list[PhaseResult] = []
    phases = LIVE_PHASES if live else PHASES
    with PidLock(ctx.workdir.root):
        if live and not ctx.state.live:
            ctx.state.live = True  # read the sources' deletes too, and validate them as live sources
            save_state(ctx.workdir.state, ctx.state)
        try:
            for number, name in enumerate(phases, 1):
                if ctx.state.is_finished(name):
                    say(f"PHASE {number}/{len(phases)}: {name} - finished at {ctx.state.finished[name]}, skipped")
                    results.append(PhaseResult(name, "skipped"))
                    continue
                question = QUESTIONS.get(name)
                if question and not confirm(question.format(backups=ctx.workdir.backups, database=ctx.database_name)):
                    raise Declined(f"stopped before phase {name}: not confirmed; nothing was changed by it")
                say(f"PHASE {number}/{len(phases)}: {name}")
                started = time.monotonic()
                try:
                    result = await phase(name, ctx, say)
                except BaseException as exc:
                    status = "interrupted" if getattr(exc, "exit_code", None) == 130 else "failed"
                    results.append(PhaseResult(name, status, seconds=time.monotonic() - started,
                                               details={"error": str(exc)}))
                    raise
                ctx.state.finish(name)
                save_state(ctx.workdir.state, ctx.state)
                write_json_report(ctx.workdir.report(name), result.as_dict())
                results.append(result)
        finally:
            if results:
                say(summary_table(results))
                write_json_report(ctx.workdir.report("summary"), {
                    "database": ctx.database_name, "host": ctx.endpoint.host,
                    "phases": [r.as_dict() for r in results],
                })
    return results


def ask(question: str) -> bool:
    """Interactive yes/no on the terminal; refuses to guess when there is no terminal."""
    if not sys.stdin.isatty():
        raise Declined(f"{question} - no terminal to ask; pass --yes to run without confirmations")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")
