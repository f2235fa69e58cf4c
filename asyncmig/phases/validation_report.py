"""The validation report: what was compared and what differed, as a table and as JSON.

:mod:`asyncmig.phases.validate` fills it while it compares source with target; this module only
holds the results and says them.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncmig.errors import ValidationFailed
from asyncmig.phases.context import PhaseResult
from asyncmig.report import duration, table
from asyncmig.vimarsh import plan

PHASE = "validate"

# Ids named per category in the report and the error message ("the first few").
SAMPLE_SIZE = 5



@dataclass(slots=True)
class IdSample:
    """A count plus the alphabetically first :data:`SAMPLE_SIZE` ids.

    Keeping the smallest ids rather than the first seen makes the report independent of the order
    in which feed ranges answered, and bounds memory however many ids there are.
    """

    count: int = 0
    first: list[str] = field(default_factory=list)

    def add(self, doc_id: str) -> None:
        self.count += 1
        bisect.insort(self.first, doc_id)
        del self.first[SAMPLE_SIZE:]

    def __bool__(self) -> bool:
        return self.count > 0

    def describe(self) -> str:
        """``"3 (a, b, c)"``, with ``...`` when more ids exist than are named."""
        more = ", ..." if self.count > len(self.first) else ""
        return f"{self.count} ({', '.join(self.first)}{more})"

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "first": list(self.first)}


@dataclass
class ContainerCheck:
    """One validated container: settings, document counts and the id-by-id comparison."""

    container: str
    source: str | None  # the source container whose mapping fills it (None: expected to be empty)
    exists: bool = True
    expected: int = 0
    actual: int = 0
    missing: IdSample = field(default_factory=IdSample)
    extra: IdSample = field(default_factory=IdSample)
    differing: IdSample = field(default_factory=IdSample)
    changed_at_source: IdSample = field(default_factory=IdSample)  # copied, then changed at the source
    changed_since_backup: IdSample = field(default_factory=IdSample)  # users on a live source (named only)
    require_caught_up: bool = True
    differences: list[str] = field(default_factory=list)  # settings vs the plan
    critical: list[str] = field(default_factory=list)  # the subset that cannot be fixed in place
    problems: list[str] = field(default_factory=list)  # document-level findings beyond the digests
    ru: float = 0.0  # what reading the container cost

    @property
    def settings_ok(self) -> bool:
        return self.exists and not self.differences

    @property
    def ok(self) -> bool:
        behind = self.require_caught_up and self.changed_at_source
        return self.settings_ok and not (self.missing or self.extra or self.differing or self.problems or behind)

    def summary(self) -> str:
        """What is wrong, first ids included (empty when :attr:`ok`)."""
        parts: list[str] = []
        if not self.exists:
            parts.append("container does not exist")
        parts.extend(
            f"{d} (critical: cannot be changed in place)" if d in self.critical else d for d in self.differences
        )
        for label, sample in (("missing", self.missing), ("extra", self.extra), ("differing", self.differing)):
            if sample:
                parts.append(f"{label} {sample.describe()}")
        if self.changed_at_source and self.require_caught_up:
            parts.append(f"changed at the source after they were copied {self.changed_at_source.describe()}: "
                         "not caught up")
        parts.extend(self.problems)
        return "; ".join(parts)

    def first_ids(self) -> str:
        parts = [
            f"{label}: {', '.join(sample.first)}"
            for label, sample in (("missing", self.missing), ("extra", self.extra), ("differing", self.differing),
                                  ("changed at source", self.changed_at_source),
                                  ("changed since backup", self.changed_since_backup))
            if sample
        ]
        return "; ".join(parts) or "-"

    def to_json(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "source": self.source,
            "exists": self.exists,
            "expected": self.expected,
            "actual": self.actual,
            "missing": self.missing.to_json(),
            "extra": self.extra.to_json(),
            "differing": self.differing.to_json(),
            "changed_at_source": self.changed_at_source.to_json(),
            "changed_since_backup": self.changed_since_backup.to_json(),
            "settings_ok": self.settings_ok,
            "differences": self.differences,
            "critical_differences": self.critical,
            "problems": self.problems,
            "ok": self.ok,
        }


@dataclass
class MappingCheck:
    """One source container -> its targets: counts, rejections and where they went."""

    source: str
    read_from: str
    targets: tuple[str, ...]
    dead_letter_file: str
    allow_dead_letters: bool
    source_count: int = 0
    routed: dict[str, int] = field(default_factory=dict)
    rejected: IdSample = field(default_factory=IdSample)
    dead_lettered: int = 0  # records in the migrate phase's dead-letter file
    not_dead_lettered: IdSample = field(default_factory=IdSample)
    collisions: IdSample = field(default_factory=IdSample)
    target_count: int = 0
    problems: list[str] = field(default_factory=list)
    ru: float = 0.0  # what reading the source container cost (0 from a backup file)
    count_checked: bool = True  # False: users on a live source (created and deleted since the backup)

    @property
    def expected_count(self) -> int:
        return sum(self.routed.values())

    @property
    def ok(self) -> bool:
        return (
            (self.target_count == self.expected_count or not self.count_checked)
            and not self.not_dead_lettered
            and not self.collisions
            and not self.problems
            and (self.allow_dead_letters or not self.rejected)
        )

    def summary(self) -> str:
        parts: list[str] = []
        if self.target_count != self.expected_count and self.count_checked:
            parts.append(
                f"the targets hold {self.target_count} documents, the transform of the source gives "
                f"{self.expected_count}"
            )
        if self.not_dead_lettered:
            parts.append(
                f"{self.not_dead_lettered.describe()} rejected by the transform but not in the dead-letter "
                f"file {self.dead_letter_file}: lost silently"
            )
        elif self.rejected and not self.allow_dead_letters:
            parts.append(
                f"{self.rejected.describe()} rejected by the transform (see {self.dead_letter_file}); "
                "fix them, or accept them knowingly with --allow-dead-letters"
            )
        if self.collisions:
            parts.append(
                f"{self.collisions.describe()} map to the same target id and partition key as another "
                "source document: one overwrites the other"
            )
        parts.extend(self.problems)
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "read_from": self.read_from,
            "targets": list(self.targets),
            "source_count": self.source_count,
            "routed": dict(self.routed),
            "rejected": self.rejected.to_json(),
            "dead_letter_file": self.dead_letter_file,
            "dead_lettered": self.dead_lettered,
            "not_dead_lettered": self.not_dead_lettered.to_json(),
            "collisions": self.collisions.to_json(),
            "target_count": self.target_count,
            "problems": self.problems,
            "ok": self.ok,
        }


@dataclass(frozen=True, slots=True)
class FigureRow:
    """A seed figure (B1.4) beside the actual counts; informational only."""

    figure: str
    seed: int
    source: int
    target: int

    def to_json(self) -> dict[str, Any]:
        return {"figure": self.figure, "seed": self.seed, "source": self.source, "target": self.target}


@dataclass
class EmbeddingCheck:
    """The embeddings of ``personality_vectors`` as found in the target."""

    dimensions: int | None
    dimensions_from: str  # "state", "data" or "unknown"
    with_embedding: int = 0
    without_embedding: int = 0
    # Vectors of numbers of another length than the index's: a finding about the source data (legacy
    # vectors), not a migration failure; the digests still check they were copied exactly.
    wrong_dimension: IdSample = field(default_factory=IdSample)
    malformed: IdSample = field(default_factory=IdSample)  # not a non-empty list of numbers: a failure

    def finding(self) -> str | None:
        """What to tell the user about embeddings of another dimension (None when there are none)."""
        if not self.wrong_dimension:
            return None
        return (
            f"{self.wrong_dimension.describe()} in {plan.PERSONALITY_VECTORS} have an embedding of another "
            f"dimension than the vector index's {self.dimensions}: the source holds them so (legacy vectors), "
            "and vector search cannot use them; re-embed those documents with the current model and upsert "
            "them (validate --strict fails on this)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "dimensions": self.dimensions,
            "dimensions_from": self.dimensions_from,
            "with_embedding": self.with_embedding,
            "without_embedding": self.without_embedding,
            "wrong_dimension": self.wrong_dimension.to_json(),
            "malformed": self.malformed.to_json(),
        }


@dataclass
class ValidationReport:
    """Everything validation found; :attr:`ok` is the verdict."""

    database: str
    containers: list[ContainerCheck]
    mappings: list[MappingCheck]
    figures: list[FigureRow]
    embeddings: EmbeddingCheck
    notes: list[str]
    seconds: float = 0.0
    strict: bool = False  # findings about the source data fail validation too

    @property
    def ok(self) -> bool:
        return (all(c.ok for c in self.containers) and all(m.ok for m in self.mappings)
                and not (self.strict and self.findings()))

    def findings(self) -> list[str]:
        """What validation found about the source data itself (not failures unless :attr:`strict`)."""
        finding = self.embeddings.finding()
        return [finding] if finding else []

    @property
    def documents(self) -> int:
        """Target documents compared."""
        return sum(c.actual for c in self.containers)

    @property
    def ru(self) -> float:
        """What the reads of validation cost."""
        return sum(c.ru for c in self.containers) + sum(m.ru for m in self.mappings)

    def failures(self) -> list[tuple[str, str]]:
        """``(container, what is wrong)`` for each failing container, then each failing mapping."""
        found = [(c.container, c.summary()) for c in self.containers if not c.ok]
        found += [(m.source, m.summary()) for m in self.mappings if not m.ok]
        if self.strict:
            found += [(plan.PERSONALITY_VECTORS, finding) for finding in self.findings()]
        return found

    def failure_message(self, report_path: Path | None = None) -> str:
        """Names the first failing container and its first differing ids (empty when ok)."""
        failures = self.failures()
        if not failures:
            return ""
        name, what = failures[0]
        message = f"validation failed: {name}: {what}"
        others = [n for n, _ in failures[1:]]
        if others:
            message += f"; also failing: {', '.join(dict.fromkeys(others))}"
        if report_path is not None:
            message += f"; details in {report_path}"
        return message

    def table(self) -> str:
        """The readable report: containers, mappings, seed figures, embeddings, findings."""
        lines = [f"Validation of {self.database}: {'OK' if self.ok else 'FAILED'} ({duration(self.seconds)})", ""]
        lines.append(table(
            ["container", "source", "expected", "actual", "missing", "extra", "differing", "settings", "first ids"],
            [[c.container, c.source or "-", c.expected, c.actual, c.missing.count, c.extra.count,
              c.differing.count, "ok" if c.settings_ok else ("MISSING" if not c.exists else "DIFFER"),
              c.first_ids()] for c in self.containers],
        ))
        lines.append("")
        lines.append(table(
            ["source", "read from", "documents", "routed", "rejected", "dead-lettered", "in targets", "ok"],
            [[m.source, m.read_from, m.source_count,
              ", ".join(f"{t} {n:,}" for t, n in m.routed.items()) or "-",
              m.rejected.count, m.dead_lettered, m.target_count, m.ok] for m in self.mappings],
        ))
        lines.append("")
        lines.append(table(
            ["figure", "seed", "source", "target"],
            [[f.figure, f.seed, f.source, f.target] for f in self.figures],
        ))
        e = self.embeddings
        dims = f"{e.dimensions} numbers ({e.dimensions_from})" if e.dimensions else "dimension unknown"
        lines += ["", f"embeddings: {dims}; {e.with_embedding:,} with, {e.without_embedding:,} without, "
                      f"{e.wrong_dimension.count:,} of another size, {e.malformed.count:,} not a vector"]
        failures = self.failures()
        if failures:
            lines += ["", "failures:", *(f"  {name}: {what}" for name, what in failures)]
        if self.findings():
            lines += ["", "findings:", *(f"  {finding}" for finding in self.findings())]
        if self.notes:
            lines += ["", "notes:", *(f"  {note}" for note in self.notes)]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": PHASE,
            "database": self.database,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "ru": round(self.ru, 2),
            "containers": [c.to_json() for c in self.containers],
            "mappings": [m.to_json() for m in self.mappings],
            "figures": [f.to_json() for f in self.figures],
            "embeddings": self.embeddings.to_json(),
            "failures": [{"container": n, "problem": p} for n, p in self.failures()],
            "findings": self.findings(),
            "strict": self.strict,
            "notes": self.notes,
        }

    def phase_result(self) -> PhaseResult:
        """This report as the run summary's line for the validate phase.

        ``details`` carries the whole JSON report: the orchestrator writes each phase's
        ``PhaseResult`` to ``reports/<phase>.json``, the same file :func:`validate` writes, so
        nothing of the report may be lost when it does.
        """
        return PhaseResult(
            phase=PHASE,
            status="done" if self.ok else "failed",
            documents=self.documents,
            ru=self.ru,
            seconds=self.seconds,
            details=self.to_json(),
        )


class ValidationMismatch(ValidationFailed):
    """:class:`~asyncmig.errors.ValidationFailed` (exit 8) carrying the report, so the orchestrator
    can put the validate line in its summary without reading the JSON back."""

    def __init__(self, message: str, report: ValidationReport) -> None:
        super().__init__(message)
        self.report = report
