"""Where the migration's writes end: change-feed marks of ``users`` and every created container.

Recorded when the migrate phase finishes, and again when a live run cuts over (after the final
catch-up, the follower's last write). Everything a container's change feed returns after its mark
was written by someone else afterwards: the application. Rollback uses that to leave such users
documents alone and to refuse deleting a created container the application has started to use.
"""

from __future__ import annotations

from datetime import UTC, datetime

from asyncmig.core.cosmos.changes import FeedMark, changed_since, feed_end
from asyncmig.core.engine.transform import Document
from asyncmig.phases.context import PhaseContext
from asyncmig.phases.state import save_state
from asyncmig.vimarsh.plan import USERS

__all__ = ["changed_after_migration", "record_marks"]


async def record_marks(ctx: PhaseContext) -> None:
    """Record, in the state, where the change feed of ``users`` and of each created container ends now."""
    marks: dict[str, FeedMark] = {}
    for name in dict.fromkeys([USERS, *ctx.state.created]):
        container = ctx.database.get_container_client(name)
        marks[name] = await feed_end(container, what=f"{ctx.database_name}/{name}")
    ctx.state.feed_marks = marks
    ctx.state.marked_at = datetime.now(UTC).isoformat(timespec="seconds")
    save_state(ctx.workdir.state, ctx.state)


async def changed_after_migration(ctx: PhaseContext, name: str) -> list[Document] | None:
    """The documents of ``name`` written after the migration's mark; None when no mark is recorded
    (a state from before marks existed, or a migration that never finished)."""
    mark = ctx.state.feed_marks.get(name)
    if mark is None:
        return None
    container = ctx.database.get_container_client(name)
    return [doc async for doc in changed_since(container, mark, what=f"{ctx.database_name}/{name}")]
