"""Resumable positions per feed range, and the rule that makes them safe to resume from.

A checkpoint is one small JSON file, replaced atomically and sealed with a SHA-256 of its canonical
content, so a truncated or hand-edited file is refused instead of silently skipping documents. It
also records the run identity (endpoints without keys, database, containers, transform name and
version): resuming someone else's positions would skip documents that were never copied.

The invariant — *a position is committed only after every document read before it is durably
written* — is the pipeline's, and :class:`CommitTracker` is the tested piece that enforces it for
one range: pages are registered in read order, completed in any order, and the committed position
only moves past a page once that page and all earlier ones are fully written. Resume then re-reads
at most the pages that were in flight; upserts of the same bodies make that replay harmless.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncmig.connection import CosmosEndpoint
from asyncmig.core import jsoncodec
from asyncmig.core.engine.transform import Transform
from asyncmig.core.files.fsutil import atomic_write, ensure_dir
from asyncmig.errors import CorruptState, ForeignState, StateError
from asyncmig.redaction import redact

__all__ = [
    "FORMAT",
    "VERSION",
    "Checkpoint",
    "CommitTracker",
    "RangeState",
    "Totals",
    "load_checkpoint",
    "resume_key",
    "run_identity",
    "save_checkpoint",
]

FORMAT = "asyncmig-checkpoint"
VERSION = 1

# What a command with a --restart option tells the user to do about a checkpoint it cannot use.
RESTART_HINT = "pass --restart to start over (the old file is kept as <name>.old), or use a different --checkpoint path"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class RangeState:
    """Progress of one feed range.

    ``feed_range`` is the SDK's opaque JSON for the range; ``position`` the continuation token
    after the last committed page (``None``: from the beginning); ``read``/``written`` count the
    documents covered by that position; ``done`` is set once the range is drained and committed.
    ``written_ahead`` names documents already written from pages *after* the committed position
    (out-of-order completions) by :func:`resume_key`, so a resume does not write them again.
    ``bulk_done`` is set once the range's first pass reached its end; ``bulk_read`` is what that
    pass had read by then and ``bulk_count`` an independent count of the range's documents at that
    moment (None: not counted), for the end-of-copy cross-check.
    """

    feed_range: Any
    position: str | None = None
    read: int = 0
    written: int = 0
    done: bool = False
    written_ahead: list[str] = field(default_factory=list)
    bulk_done: bool = False
    bulk_read: int | None = None
    bulk_count: int | None = None


def resume_key(target: str, source: Mapping[str, Any], output: Mapping[str, Any], partition_key: Any) -> str:
    """The key under which a written document is remembered for resume: target, output id, which
    source document (``_rid``, unique in its container; else its partition key and id) and which
    version of it (``_etag``, else ``_lsn``), so a document changed at the source since is copied
    again. Id and ``_lsn`` alone are not enough: after a split, two documents with the same id in
    different logical partitions can share an ``_lsn``. ``partition_key`` is only read without
    ``_rid``.
    """
    rid = source.get("_rid")
    which = str(rid) if rid else jsoncodec.canonical([partition_key, source.get("id")]).decode("utf-8")
    version = source.get("_etag") or source.get("_lsn") or ""
    return f"{target}\x1f{output.get('id')}\x1f{which}\x1f{version}"


@dataclass
class Totals:
    """Run-wide counters, carried across resumes."""

    read: int = 0
    written: int = 0
    dead_lettered: int = 0
    ru: float = 0.0
    throttled: int = 0
    retries: int = 0


@dataclass
class Checkpoint:
    """Everything needed to resume a run; the pipeline mutates it and calls :func:`save_checkpoint`."""

    identity: dict[str, Any]
    ranges: dict[str, RangeState] = field(default_factory=dict)
    sink_state: dict[str, Any] = field(default_factory=dict)
    totals: Totals = field(default_factory=Totals)
    journal: int = 0  # generation of the completion journal that continues this checkpoint
    started_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)


def run_identity(
    *,
    source: CosmosEndpoint,
    source_database: str,
    source_container: str,
    target: CosmosEndpoint | None,
    target_database: str | None,
    target_containers: Sequence[str],
    transform: Transform,
    **extra: str | int | float | bool | None,
) -> dict[str, Any]:
    """The identity a checkpoint is bound to, built from hosts (never keys) and names.

    ``extra`` adds run-specific fields (e.g. a query filter's hash) that must also match on resume.
    """
    return {
        "source_host": source.host,
        "source_database": source_database,
        "source_container": source_container,
        "target_host": target.host if target is not None else None,
        "target_database": target_database,
        "target_containers": list(target_containers),
        "transform": transform.name,
        "transform_version": transform.version,
        **extra,
    }


# --------------------------------------------------------------------------------------------
# File format


def _to_json(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "identity": checkpoint.identity,
        "ranges": {key: asdict(state) for key, state in checkpoint.ranges.items()},
        "sink_state": checkpoint.sink_state,
        "totals": asdict(checkpoint.totals),
        "journal": checkpoint.journal,
        "started_at": checkpoint.started_at,
        "updated_at": checkpoint.updated_at,
    }


def _digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(jsoncodec.canonical(body)).hexdigest()


class _Invalid(ValueError):
    """A structural problem in a checkpoint whose checksum was otherwise fine."""


def _expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    # bool is an int subclass; a counter that is True/False was not written by asyncmig.
    if isinstance(value, bool) and kind is not bool:
        raise _Invalid(f"{what} has the wrong type")
    if not isinstance(value, kind):
        raise _Invalid(f"{what} has the wrong type")
    return value


def _count(value: Any, what: str) -> int:
    number: int = _expect(value, int, what)
    if number < 0:
        raise _Invalid(f"{what} is negative")
    return number


def _optional_count(value: Any, what: str) -> int | None:
    return None if value is None else _count(value, what)


def _from_json(body: Mapping[str, Any]) -> Checkpoint:
    ranges: dict[str, RangeState] = {}
    for key, raw in _expect(body.get("ranges"), dict, "ranges").items():
        _expect(raw, dict, f"range {key!r}")
        if "feed_range" not in raw:
            raise _Invalid(f"range {key!r} has no feed_range")
        position = raw.get("position")
        if position is not None:
            _expect(position, str, f"range {key!r} position")
        ranges[key] = RangeState(
            feed_range=raw["feed_range"],
            position=position,
            read=_count(raw.get("read"), f"range {key!r} read"),
            written=_count(raw.get("written"), f"range {key!r} written"),
            done=_expect(raw.get("done"), bool, f"range {key!r} done"),
            written_ahead=[_expect(k, str, f"range {key!r} written_ahead") for k in
                           _expect(raw.get("written_ahead", []), list, f"range {key!r} written_ahead")],
            bulk_done=_expect(raw.get("bulk_done", False), bool, f"range {key!r} bulk_done"),
            bulk_read=_optional_count(raw.get("bulk_read"), f"range {key!r} bulk_read"),
            bulk_count=_optional_count(raw.get("bulk_count"), f"range {key!r} bulk_count"),
        )
    raw_totals = _expect(body.get("totals"), dict, "totals")
    totals = Totals(
        **{name: _count(raw_totals.get(name), f"totals.{name}")
           for name in ("read", "written", "dead_lettered", "throttled", "retries")},
        ru=float(_expect(raw_totals.get("ru"), (int, float), "totals.ru")),
    )
    return Checkpoint(
        identity=_expect(body.get("identity"), dict, "identity"),
        ranges=ranges,
        sink_state=_expect(body.get("sink_state"), dict, "sink_state"),
        totals=totals,
        journal=_count(body.get("journal", 0), "journal"),
        started_at=_expect(body.get("started_at"), str, "started_at"),
        updated_at=_expect(body.get("updated_at"), str, "updated_at"),
    )


def _normalise(identity: Mapping[str, Any]) -> dict[str, Any]:
    """``identity`` as it will read back from JSON (tuples become lists), so comparisons are fair."""
    normalised = jsoncodec.loads(jsoncodec.canonical(dict(identity)))
    assert isinstance(normalised, dict)
    return normalised


def _identity_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    absent = object()
    differences = []
    for name in sorted(set(stored) | set(current)):
        old, new = stored.get(name, absent), current.get(name, absent)
        if old != new:
            shown_new = "(absent)" if new is absent else repr(new)
            shown_old = "(absent)" if old is absent else repr(old)
            differences.append(f"{name} is {shown_new} now but {shown_old} in the file")
    return differences


def read_checkpoint(path: str | os.PathLike[str], *, start_over: str = RESTART_HINT) -> Checkpoint:
    """The checkpoint stored at ``path``, whichever run it belongs to (``asyncmig status`` shows it).

    :raises CorruptState: unreadable JSON, another format or version, a checksum mismatch
        (truncated or edited file) or a malformed structure.
    :raises FileNotFoundError: there is no checkpoint at ``path``.
    :raises StateError: the file cannot be read (permissions, I/O error).
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StateError(f"cannot read checkpoint {file}: {exc.strerror}; fix the permissions or "
                         f"{start_over}") from exc

    def corrupt(problem: str) -> CorruptState:
        return CorruptState(f"checkpoint {file} is damaged ({problem}); {start_over}")

    try:
        document = jsoncodec.loads(data)
    except ValueError:
        raise corrupt("not valid JSON: truncated or edited") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise corrupt(f"not an {FORMAT} file")
    if document.get("version") != VERSION:
        raise corrupt(f"format version {document.get('version')!r}, this asyncmig reads {VERSION}")
    checksum = document.pop("checksum", None)
    if checksum != _digest(document):
        raise corrupt("checksum mismatch: truncated or edited")
    try:
        checkpoint = _from_json(document)
    except _Invalid as exc:
        raise corrupt(str(exc)) from None
    return checkpoint


def load_checkpoint(
    path: str | os.PathLike[str], identity: Mapping[str, Any], *, restart: bool, start_over: str = RESTART_HINT
) -> Checkpoint:
    """The checkpoint at ``path`` for this run, or a fresh one.

    ``start_over`` ends the error messages: how the command at hand starts over.

    A missing file gives a fresh checkpoint. ``restart=True`` also gives a fresh one and keeps any
    existing file as ``<path>.old`` (evidence is never deleted).

    :raises CorruptState: unreadable JSON, another format or version, a checksum mismatch
        (truncated or edited file) or a malformed structure.
    :raises ForeignState: the file belongs to a different run identity; names each differing field.
    :raises StateError: the file exists but cannot be read (permissions, I/O error).
    :raises TypeError: when ``identity`` holds values that are not JSON.
    """
    file = Path(path)
    current = _normalise(identity)
    if restart:
        if file.exists():
            os.replace(file, file.with_name(file.name + ".old"))
        return Checkpoint(identity=current)
    try:
        checkpoint = read_checkpoint(file, start_over=start_over)
    except FileNotFoundError:
        return Checkpoint(identity=current)
    differences = _identity_differences(checkpoint.identity, current)
    if differences:
        raise ForeignState(redact(
            f"checkpoint {file} belongs to a different run: {'; '.join(differences)}; "
            f"{start_over}"
        ))
    return checkpoint


def save_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint) -> None:
    """Stamp ``updated_at`` and write ``checkpoint`` atomically (0600) with its checksum.

    Missing parent directories are created owner-only.

    :raises OSError: when the file cannot be written; the previous checkpoint is then intact.
    :raises ValueError: when ``sink_state`` or a ``feed_range`` is not finite JSON.
    """
    file = Path(path)
    checkpoint.updated_at = _now()
    body = _to_json(checkpoint)
    jsoncodec.ensure_finite(body)
    body["checksum"] = _digest(body)
    ensure_dir(file.parent)
    atomic_write(file, jsoncodec.dumps(body) + b"\n")


# --------------------------------------------------------------------------------------------
# Commit tracking


@dataclass(slots=True)
class _Page:
    position: str | None
    count: int
    remaining: int


class CommitTracker:
    """Commit order for one feed range: positions advance only over fully written pages.

    The producer calls :meth:`register` for each page in read order; consumers call
    :meth:`complete` as documents are durably written (or dead-lettered and synced) in any order.
    :attr:`committed_position` is the position after the last page k such that every page <= k
    is complete; out-of-order completions are held back until the gap before them closes.

    Counts start from the checkpoint's values on resume (``committed``): ``read`` and ``written``
    include them, so they are comparable with the totals of an uninterrupted run.
    """

    def __init__(self, position: str | None = None, *, committed: int = 0) -> None:
        self._committed_position = position
        self._committed = committed
        self._read = committed
        self._written = committed
        self._next_id = 0
        self._first_pending = 0  # page id at the head of _pages
        self._pages: deque[_Page] = deque()
        self._finished = False

    def register(self, position_after_page: str | None, doc_count: int) -> int:
        """Record a page just read, in read order; returns its id for :meth:`complete`.

        An empty page (``doc_count == 0``) is complete at once: its position commits as soon as
        every earlier page has.

        :raises ValueError: for a negative count.
        :raises RuntimeError: after :meth:`finish`.
        """
        if doc_count < 0:
            raise ValueError(f"a page cannot hold {doc_count} documents")
        if self._finished:
            raise RuntimeError("register() after finish(): the range was already drained")
        page_id = self._next_id
        self._next_id += 1
        self._pages.append(_Page(position_after_page, doc_count, doc_count))
        self._read += doc_count
        self._advance()
        return page_id

    def complete(self, page_id: int, n: int = 1) -> None:
        """Record that ``n`` more documents of page ``page_id`` are durably written.

        :raises ValueError: for an unknown or already committed page (unless ``n == 0``), or when
            the page would be completed more times than it holds documents.
        """
        if n == 0:
            return
        index = page_id - self._first_pending
        if n < 0 or not 0 <= index < len(self._pages):
            raise ValueError(f"page {page_id} is not pending (or n={n} is negative)")
        page = self._pages[index]
        if n > page.remaining:
            raise ValueError(
                f"page {page_id} holds {page.count} documents; completing {n} more than its "
                f"{page.remaining} outstanding ones would commit documents never written"
            )
        page.remaining -= n
        self._written += n
        self._advance()

    def finish(self) -> None:
        """Mark that the producer has registered the range's last page."""
        self._finished = True

    def _advance(self) -> None:
        while self._pages and self._pages[0].remaining == 0:
            page = self._pages.popleft()
            self._first_pending += 1
            self._committed_position = page.position
            self._committed += page.count

    @property
    def committed_position(self) -> str | None:
        """Position after the last page that, with every page before it, is fully written."""
        return self._committed_position

    @property
    def committed(self) -> int:
        """Documents covered by :attr:`committed_position`."""
        return self._committed

    @property
    def read(self) -> int:
        """Documents registered (read from the source)."""
        return self._read

    @property
    def written(self) -> int:
        """Documents reported complete."""
        return self._written

    @property
    def in_flight(self) -> int:
        """Documents read but not yet written."""
        return self._read - self._written

    @property
    def done(self) -> bool:
        """The range is drained (:meth:`finish`) and every page is committed."""
        return self._finished and not self._pages
