"""The validation phase: prove that the 12 target containers hold exactly the transform of the source.

The original validator counted documents against hard-coded numbers and sampled
``TOP 10`` rows, so a lost vector, a truncated embedding or a wrong partition key passed. Here the
source is compared with the target, document by document:

1. **Expectations.** Every source container is streamed once; each document goes through its
   mapping's transform, and the :func:`~asyncmig.core.digest.document_digest` of every resulting
   target document is recorded under ``(id, partition key value)`` of its target container. Only the
   32-byte digests are kept, never documents, so memory is bounded by the number of documents times
   a few hundred bytes (key and digest), plus at most ``READ_CONCURRENCY`` pages in flight, whatever
   the size of the documents. Documents the transform rejects are counted apart and looked up in
   the migrate phase's dead-letter file: a rejection must be visible, never a silent loss. The expected ``personalities`` come from
   :class:`~asyncmig.vimarsh.personalities.PersonalityAccumulator` fed with the expected vector
   documents (bounded by the number of personalities and sources).
2. **users is migrated in place**, so after the migration its source is the backup
   (``<backup_dir>/users.jsonl.gz``), checked against the backup manifest when there is one. Without
   a backup the pre-migration bodies are gone; validation then checks that every current document
   is a fixed point of the (idempotent) users transform, and says so.
3. **Targets.** Each of the 12 containers must exist with the planned settings
   (:func:`~asyncmig.vimarsh.plan.compare_container`; every difference fails, critical ones are
   marked). Its documents are streamed and matched id by id against the expectations, consuming
   them: what is left is missing, what was not expected is extra, an unequal digest is differing.
   Digests cover the exact JSON of each number, so one changed bit of one embedding is caught; in
   addition every embedding in ``personality_vectors`` must be a list of numbers of the vector
   dimension (from the state, else the most common length in the source).
4. The seed's figures (:data:`~asyncmig.vimarsh.plan.EXPECTED`) are shown beside the actual source
   and target counts, for the reader only: pass or fail comes from the comparison alone.

Sources are read by query, one snapshot per feed range (``SELECT * FROM c`` with ``feed_range``),
never through the change feed the copier reads: a fault in that reader cannot hide itself from the
check that is meant to catch it. On a live source (the application keeps writing) a difference can
be a copy that is merely behind, so it is classified before it is called a failure:

* a target whose ``migrated_from._ts`` is older than its source document's ``_ts`` (or a missing
  target whose source was written after the copy started) is *changed at the source after it was
  copied*: named, and a failure only when validation requires the targets to be caught up (after a
  cutover's final catch-up, and for a migration of a quiet source);
* with ``live_source``, a ``users`` document that differs from the transform of its backed-up body
  (or is not in the backup) is *changed since the backup* when it is migrated (a fixed point of the
  users transform), and a backed-up user that is gone was deleted since: named, never failures.

The report (:mod:`asyncmig.phases.validation_report`: a readable table and ``reports/validate.json``) is written before
:class:`ValidationMismatch` (a :class:`~asyncmig.errors.ValidationFailed`, exit 8) is raised; its
message names the first failing container and its first differing ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.cosmos.aio import ContainerProxy
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.partition_keys import partition_key_values
from asyncmig.core.cosmos.retry import retrying
from asyncmig.core.cosmos.source import scan_container
from asyncmig.core.digest import ContainerDigest, document_digest
from asyncmig.core.engine.transform import Document, Rejected, Transform
from asyncmig.core.files.jsonl import AsyncJsonlGzReader
from asyncmig.core.files.manifest import MANIFEST_NAME, container_file_name, read_manifest
from asyncmig.errors import CorruptState, ResourceMissing
from asyncmig.phases.context import PhaseContext
from asyncmig.phases.validation_report import (
    PHASE,
    ContainerCheck,
    EmbeddingCheck,
    FigureRow,
    MappingCheck,
    ValidationMismatch,
    ValidationReport,
)
from asyncmig.report import write_json_report
from asyncmig.vimarsh import plan
from asyncmig.vimarsh.dimensions import DimensionTally, vector_length
from asyncmig.vimarsh.personalities import PersonalityAccumulator
from asyncmig.vimarsh.transforms import transform_user

# Feed ranges of one container read at once, and documents per page: together they bound the
# documents in memory at any moment (digests aside) to READ_CONCURRENCY * PAGE_SIZE.
READ_CONCURRENCY = 4
PAGE_SIZE = 200

# Fields of a personality document that depend on when it was generated.
_GENERATION_FIELDS = ("created_at", "updated_at")

# (id as text, canonical JSON of the partition key values). Text, not the bytes orjson returns: each
# of those keeps a ~4 KB allocation alive, which would multiply the memory per document by ~13.
_Key = tuple[str, str]


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------

PageHandler = Callable[[list[Document]], None]


def _definition(path: str) -> dict[str, Any]:
    return {"paths": [path], "kind": "Hash"}


def _canonical_text(value: Any) -> str:
    return jsoncodec.canonical(value).decode("utf-8")


def _id_text(doc_id: Any) -> str:
    """Cosmos ids are strings; anything else (a damaged document) is named by its exact JSON."""
    return doc_id if isinstance(doc_id, str) else _canonical_text(doc_id)


def _key(document: Document, definition: dict[str, Any]) -> _Key:
    return _id_text(document.get("id")), _canonical_text(partition_key_values(definition, document))


async def _read_properties(container: ContainerProxy) -> dict[str, Any] | None:
    """``container.read()``, waiting out throttling (the client's own retries are off); ``None`` when
    the container does not exist."""
    async def read() -> dict[str, Any] | None:
        try:
            return dict(await container.read())
        except CosmosResourceNotFoundError:
            return None

    return await retrying(read, what=f"reading the settings of {container.id}")


def _dead_lettered(path: Path) -> set[_Key]:
    """The source documents (id, partition key) recorded in a migrate dead-letter file.

    Read here rather than with :class:`~asyncmig.core.engine.deadletter.DeadLetterFile`, whose opening
    repairs a torn last line: validation changes nothing. A torn last line (a crash mid-append) is
    not a record; any other unreadable line is damage.

    :raises CorruptState: for a complete line that is not a dead-letter record.
    """
    keys: set[_Key] = set()
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        return keys
    with stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = jsoncodec.loads(line)
                source = record["source"]
                keys.add((_id_text(source["id"]), _canonical_text(source.get("partition_key"))))
            except (ValueError, KeyError, TypeError, AttributeError):
                if line.endswith(b"\n"):
                    raise CorruptState(
                        f"dead-letter file {path} line {number} is not a dead-letter record; repair the "
                        "line or move the file aside, then re-run validate"
                    ) from None
    return keys


# --------------------------------------------------------------------------------------------------
# Expectations: the transform of every source document, as digests
# --------------------------------------------------------------------------------------------------


def _without_generation(document: Document) -> Document:
    return {k: v for k, v in document.items() if k not in _GENERATION_FIELDS}


class _Expectations:
    """Per target container, the digest of every document it must hold, keyed by id and partition key.

    Also gathers what the vector documents imply: the personalities (accumulator) and the embedding
    lengths (to detect the dimension when the state does not record it).
    """

    def __init__(self) -> None:
        self.digests: dict[str, dict[_Key, bytes]] = {spec.name: {} for spec in plan.VALIDATED_CONTAINERS}
        # the source document's _ts behind each expected target document (when it had one)
        self.source_ts: dict[str, dict[_Key, int]] = {spec.name: {} for spec in plan.VALIDATED_CONTAINERS}
        self.definitions = {
            spec.name: _definition(spec.partition_key_path) for spec in plan.VALIDATED_CONTAINERS
        }
        self.personalities = PersonalityAccumulator()
        self.embedding_lengths = DimensionTally()

    def expect(self, target: str, document: Document, check: MappingCheck, source_ts: Any = None) -> None:
        key = _key(document, self.definitions[target])
        digests = self.digests[target]
        if key in digests:
            check.collisions.add(key[0])
            return
        digests[key] = document_digest(document)
        if isinstance(source_ts, int):
            self.source_ts[target][key] = source_ts
        check.routed[target] = check.routed.get(target, 0) + 1
        if target == plan.PERSONALITY_VECTORS:
            self.personalities.add(document)
            self.embedding_lengths.add(document.get("embedding"))

    def detected_dimensions(self) -> int | None:
        """The embedding dimension, by the rule of :mod:`asyncmig.vimarsh.dimensions`."""
        return self.embedding_lengths.most_common()


def _mapping_handler(
    transform: Transform,
    check: MappingCheck,
    expectations: _Expectations,
    source_definition: dict[str, Any],
    dead_letters: set[_Key],
    content: ContainerDigest | None = None,
) -> PageHandler:
    def handle(page: list[Document]) -> None:
        for document in page:
            check.source_count += 1
            if content is not None:
                content.add(document)
            try:
                routed = transform.apply(document)
            except Rejected:
                key = _key(document, source_definition)
                check.rejected.add(key[0])
                if key not in dead_letters:
                    check.not_dead_lettered.add(key[0])
                continue
            for target, target_document in routed:
                expectations.expect(target, target_document, check, document.get("_ts"))

    return handle


async def _expect_mapping(
    ctx: PhaseContext, mapping: plan.Mapping, expectations: _Expectations, notes: list[str]
) -> MappingCheck:
    """Stream one source, recording the expected target digests.

    A mapping into new containers reads its live source container, or the backup when the source
    container is gone (the original cleanup deleted sources after migrating). The in-place users
    mapping reads the backup (its live documents are already transformed), or, without a backup,
    the live documents as a fixed-point check.
    """
    dead_letter_path = ctx.workdir.dead_letter("migrate", mapping.source)
    dead_letters = _dead_lettered(dead_letter_path)
    check = MappingCheck(
        source=mapping.source,
        read_from="",
        targets=mapping.targets,
        dead_letter_file=str(dead_letter_path),
        allow_dead_letters=ctx.options.allow_dead_letters,
        dead_lettered=len(dead_letters),
    )
    transform = plan.transform_of(mapping)
    container = ctx.database.get_container_client(mapping.source)
    backup_file = (
        Path(ctx.state.backup_dir) / container_file_name(mapping.source) if ctx.state.backup_dir else None
    )

    live: dict[str, Any] | None = None
    if not mapping.in_place:
        live = await _read_properties(container)
    if live is not None or (mapping.in_place and backup_file is None):
        # In place without a backup: the live documents are both source and target, so the check
        # becomes "applying the (idempotent) transform changes nothing".
        definition = live["partitionKey"] if live is not None else _definition(
            plan.source_spec(mapping.source).partition_key_path
        )
        check.read_from = "container" if live is not None else "container (fixed point)"
        if live is None:
            notes.append(
                f"no backup is recorded: {mapping.source} was checked as a fixed point of its transform "
                "(every document already transformed); its pre-migration bodies could not be compared"
            )
        handle = _mapping_handler(transform, check, expectations, definition, dead_letters)
        check.ru += await scan_container(container, handle, what=mapping.source, page_size=PAGE_SIZE, snapshot=True,
                                         concurrency=READ_CONCURRENCY)
        return check

    if backup_file is None or (not mapping.in_place and not backup_file.exists()):
        where = f"and the backup has no {backup_file}" if backup_file else "and the state records no backup"
        raise ResourceMissing(
            f"the source container {ctx.database_name}/{mapping.source} does not exist {where}; "
            "validation cannot compare the target without its source"
        )
    check.read_from = f"backup {backup_file.parent.name}/{backup_file.name}"
    manifest_entry = None
    definition = _definition(plan.source_spec(mapping.source).partition_key_path)
    if (backup_file.parent / MANIFEST_NAME).exists():
        manifest_entry = read_manifest(backup_file.parent)["containers"].get(mapping.source)
        if manifest_entry is None:
            check.problems.append(f"the backup manifest in {backup_file.parent} has no entry for {mapping.source}")
        else:
            definition = manifest_entry["properties"].get("partitionKey", definition)
    else:
        notes.append(f"{backup_file.parent} has no {MANIFEST_NAME}: {backup_file.name} was read unverified")
    content = ContainerDigest()
    handle = _mapping_handler(transform, check, expectations, definition, dead_letters, content)
    async with await AsyncJsonlGzReader.open(backup_file) as reader:
        async for page in reader.pages(PAGE_SIZE):
            handle(page)
    if manifest_entry is not None and content.to_json() != manifest_entry["content_digest"]:
        check.problems.append(
            f"{backup_file} holds {content.count} documents with content digest {content}, but the manifest "
            f"records {manifest_entry['content_digest']}: the backup changed after it was written"
        )
    return check


def _expect_personalities(expectations: _Expectations, generated_at: str | None) -> dict[str, Document]:
    """Record the personality documents the expected vectors imply (one per distinct id, so no key
    can collide); returns them by id (few) so a differing one can be explained field by field."""
    digests = expectations.digests[plan.PERSONALITIES]
    definition = expectations.definitions[plan.PERSONALITIES]
    by_id: dict[str, Document] = {}
    for document in expectations.personalities.documents(generated_at or ""):
        comparable = document if generated_at is not None else _without_generation(document)
        digests[_key(document, definition)] = document_digest(comparable)
        by_id[document["id"]] = comparable
    return by_id


# --------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------


def _short(value: Any) -> str:
    text = _canonical_text(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_differences(expected: Document, actual: Document) -> list[str]:
    """Top-level fields that differ, with both values (abbreviated)."""
    out: list[str] = []
    for name in sorted(set(expected) | set(actual)):
        if name.startswith("_"):
            continue
        if name not in actual:
            out.append(f"{name} missing, expected {_short(expected[name])}")
        elif name not in expected:
            out.append(f"{name} unexpected ({_short(actual[name])})")
        elif jsoncodec.canonical(expected[name]) != jsoncodec.canonical(actual[name]):
            out.append(f"{name} is {_short(actual[name])}, expected {_short(expected[name])}")
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class LiveSource:
    """How to read differences on a source that may have changed since it was copied (module doc)."""

    source_changed_since_backup: bool = False  # users: a changed, migrated document is named, not failed
    require_caught_up: bool = True  # a copy older than its source fails
    copy_started: int | None = None  # epoch seconds: a source document newer than this may be uncopied yet


def _copied_before_change(target: Document, source_ts: int | None) -> bool:
    """The target was copied from an older version of its source document than the current one."""
    marker = target.get("migrated_from")
    copied = marker.get("_ts") if isinstance(marker, dict) else None
    return isinstance(copied, int) and source_ts is not None and copied < source_ts


def _migrated_user(document: Document) -> bool:
    """A users document the users transform leaves unchanged (already migrated)."""
    try:
        [(_, migrated)] = transform_user(document)
    except Rejected:
        return False
    return document_digest(migrated) == document_digest(document)


async def _check_container(
    ctx: PhaseContext,
    spec: plan.ContainerSpec,
    expected: dict[_Key, bytes],
    *,
    source: str | None,
    dimensions: int | None,
    embeddings: EmbeddingCheck,
    personalities: dict[str, Document],
    compare_generation: bool,
    source_ts: dict[_Key, int] | None = None,
    live: LiveSource = LiveSource(),
) -> ContainerCheck:
    """Settings, then every document against ``expected`` (consumed as documents are matched)."""
    check = ContainerCheck(container=spec.name, source=source, expected=len(expected),
                           require_caught_up=live.require_caught_up)
    source_ts = source_ts if source_ts is not None else {}
    users_live = spec.name == plan.USERS and live.source_changed_since_backup
    container = ctx.database.get_container_client(spec.name)
    properties = await _read_properties(container)
    if properties is None:
        check.exists = False
    else:
        differences = plan.compare_container(spec, properties, vector_dimensions=dimensions)
        prefix = f"{spec.name}: "  # the row already names the container
        check.differences = [d.removeprefix(prefix) for d in differences]
        check.critical = [d.removeprefix(prefix) for d in plan.critical_differences(differences)]

    if check.exists:
        definition = _definition(spec.partition_key_path)  # the planned key, whatever the container has
        is_vectors = spec.name == plan.PERSONALITY_VECTORS
        strip_generation = spec.name == plan.PERSONALITIES and not compare_generation

        def handle(page: list[Document]) -> None:
            for document in page:
                check.actual += 1
                key = _key(document, definition)
                comparable = _without_generation(document) if strip_generation else document
                want = expected.pop(key, None)
                written_at = source_ts.pop(key, None)
                if want is None:
                    if users_live and _migrated_user(document):
                        check.changed_since_backup.add(key[0])  # created since the backup
                    else:
                        check.extra.add(key[0])
                elif want != document_digest(comparable):
                    if _copied_before_change(document, written_at):
                        check.changed_at_source.add(key[0])
                    elif users_live and _migrated_user(document):
                        check.changed_since_backup.add(key[0])
                    else:
                        check.differing.add(key[0])
                    if spec.name == plan.PERSONALITIES:
                        fields = _field_differences(personalities[key[0]], comparable)
                        check.problems.append(f"{key[0]}: {'; '.join(fields)}")
                if is_vectors:
                    _inspect_embedding(document, key[0], dimensions, embeddings)

        check.ru += await scan_container(container, handle, what=spec.name, page_size=PAGE_SIZE, snapshot=True,
                                         concurrency=READ_CONCURRENCY)

    for key in expected:
        written_at = source_ts.get(key)
        if users_live:
            check.changed_since_backup.add(key[0])  # deleted since the backup
        elif live.copy_started is not None and written_at is not None and written_at >= live.copy_started:
            check.changed_at_source.add(key[0])  # written at the source after the copy started
        else:
            check.missing.add(key[0])
    expected.clear()
    source_ts.clear()
    if spec.name == plan.PERSONALITY_VECTORS and embeddings.malformed:
        check.problems.append(f"{embeddings.malformed.describe()} have an embedding that is not a list of numbers")
    return check


def _inspect_embedding(document: Document, doc_id: str, dimensions: int | None, check: EmbeddingCheck) -> None:
    embedding = document.get("embedding")
    if embedding is None:
        check.without_embedding += 1
        return
    check.with_embedding += 1
    length = vector_length(embedding)
    if length is None or not all(_is_number(x) for x in embedding):
        check.malformed.add(doc_id)
    elif dimensions is not None and length != dimensions:
        check.wrong_dimension.add(doc_id)


# --------------------------------------------------------------------------------------------------
# The phase
# --------------------------------------------------------------------------------------------------


def live_source_of(ctx: PhaseContext, *, following: bool = False) -> LiveSource:
    """How to classify differences: ``following`` (``validate --live`` while ``run --live`` follows)
    names copies that are behind without failing them; a migration recorded as live (``run --live``)
    names the users changed since the backup; otherwise the source is held to exact equality."""
    if not (following or ctx.state.live):
        return LiveSource()
    return LiveSource(source_changed_since_backup=True, require_caught_up=not following,
                      copy_started=ctx.state.copy_started_at)


async def validate(ctx: PhaseContext, live: LiveSource | None = None) -> ValidationReport:
    """Compare the migrated layout with the transform of its source; write the report.

    :param live: how to classify differences on a live source (default: the state's, see
        :func:`live_source_of`; a quiet source is held to exact equality).

    :returns: the report, when everything matches.
    :raises ValidationMismatch: (a ValidationFailed, exit 8) after the report is written, naming the
        first failing container and its first differing ids.
    :raises ResourceMissing: when a source can be read neither from its container nor a backup.
    :raises BackupCorrupt: when the recorded backup or its manifest is unreadable.
    :raises CorruptState: when a dead-letter file is damaged.
    """
    started = time.monotonic()
    live = live if live is not None else live_source_of(ctx)
    notes: list[str] = []
    expectations = _Expectations()
    mappings: list[MappingCheck] = []
    source_of: dict[str, str] = {}
    for mapping in plan.MAPPINGS:
        mappings.append(await _expect_mapping(ctx, mapping, expectations, notes))
        source_of.update(dict.fromkeys(mapping.targets, mapping.source))
    by_source = {m.source: m for m in mappings}

    generated_at = ctx.state.personalities_generated_at
    if generated_at is None:
        notes.append(
            "the state records no personalities_generated_at: personalities were compared without "
            "created_at/updated_at"
        )
    personalities = _expect_personalities(expectations, generated_at)
    source_of[plan.PERSONALITIES] = plan.PERSONALITY_VECTORS

    dimensions = ctx.state.vector_dimensions
    dimensions_from = "state"
    if dimensions is None:
        dimensions = expectations.detected_dimensions()
        dimensions_from = "data" if dimensions is not None else "unknown"
    if dimensions is None:
        notes.append("no embedding and no recorded dimension: the vector policy's dimensions were not checked")
    embeddings = EmbeddingCheck(dimensions=dimensions, dimensions_from=dimensions_from)

    rows: list[ContainerCheck] = []
    for spec in plan.VALIDATED_CONTAINERS:
        rows.append(await _check_container(
            ctx, spec, expectations.digests[spec.name],
            source=source_of.get(spec.name), dimensions=dimensions, embeddings=embeddings,
            personalities=personalities, compare_generation=generated_at is not None,
            source_ts=expectations.source_ts[spec.name], live=live,
        ))
    actual = {row.container: row.actual for row in rows}
    for mapping_check in mappings:
        mapping_check.target_count = sum(actual[t] for t in mapping_check.targets)
        if live.source_changed_since_backup and mapping_check.source == plan.SOURCE_USERS:
            mapping_check.count_checked = False  # compared document by document, changes named

    vectors, users, activity = (by_source[name] for name in (plan.SOURCE_VECTORS, plan.SOURCE_USERS,
                                                              plan.SOURCE_ACTIVITY))
    figures = [
        FigureRow("vectors", plan.EXPECTED.vectors, vectors.source_count, actual[plan.PERSONALITY_VECTORS]),
        FigureRow("users", plan.EXPECTED.users, users.source_count, actual[plan.USERS]),
        FigureRow("activity", plan.EXPECTED.activity, activity.source_count, activity.target_count),
        FigureRow("personalities", plan.EXPECTED.personalities, len(personalities), actual[plan.PERSONALITIES]),
    ]
    report = ValidationReport(
        database=ctx.database_name, containers=rows, mappings=mappings, figures=figures,
        embeddings=embeddings, notes=notes, seconds=time.monotonic() - started, strict=ctx.options.strict,
    )
    path = ctx.workdir.report(PHASE)
    write_json_report(path, report.to_json())
    if not report.ok:
        raise ValidationMismatch(report.failure_message(path), report)
    return report
