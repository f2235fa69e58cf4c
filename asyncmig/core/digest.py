"""Exact, order-independent content digests of documents and whole containers.

A backup, a copy and a restore must be provably the same data, whatever order the documents were
read in and whatever system properties Cosmos DB assigned on the way. So:

* :func:`document_digest` hashes the canonical JSON (sorted keys, compact, shortest round-trip
  floats) of the document *without* its system properties (``_rid``, ``_etag``, ``_ts``, ...),
  which the target assigns afresh. Everything else counts, bit for bit: ``0.1`` and
  ``0.1000000000000001`` differ, ``-0.0`` and ``0.0`` differ, and ``1`` and ``1.0`` differ
  (JSON text distinguishes them, so a tool that silently turned one into the other would be caught;
  that is the conservative choice for a tool whose job is to be lossless).
* :class:`ContainerDigest` combines the per-document digests as a multiset: their sum as 256-bit
  integers modulo 2**256, plus the count. Addition is commutative, so order does not matter, and
  unlike XOR a duplicated document changes the sum (XOR would cancel pairs out). Digests of parts
  read in parallel combine with :meth:`ContainerDigest.merge`. This detects accidents (lost,
  duplicated, altered documents), not a deliberate forger who can choose many documents.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from asyncmig.core import jsoncodec
from asyncmig.core.engine.transform import Document, strip_system

_MODULUS = 1 << 256
_TEXT_FORM = re.compile(r"(0|[1-9][0-9]*):([0-9a-f]{64})")


def document_digest(document: Document) -> bytes:
    """SHA-256 of the document's canonical JSON, system properties excluded (32 bytes)."""
    return hashlib.sha256(jsoncodec.canonical(strip_system(document))).digest()


@dataclass(slots=True)
class ContainerDigest:
    """The multiset digest of a set of documents: count and sum of digests mod 2**256.

    Its text form ``"<count>:<64 hex digits>"`` is what manifests and checkpoints store
    (:meth:`to_json` / :meth:`from_json`); two containers hold the same documents exactly when
    their digests are equal.
    """

    count: int = 0
    total: int = 0

    def add(self, document: Document) -> None:
        """Account for one more document."""
        self.add_digest(document_digest(document))

    def add_digest(self, digest: bytes) -> None:
        """Account for a document whose :func:`document_digest` the caller already computed
        (validation needs each digest for its id-by-id comparison anyway)."""
        self.count += 1
        self.total = (self.total + int.from_bytes(digest, "big")) % _MODULUS

    def merge(self, other: ContainerDigest) -> None:
        """Fold in the digest of a disjoint part (for example another partition key range)."""
        self.count += other.count
        self.total = (self.total + other.total) % _MODULUS

    @property
    def hexdigest(self) -> str:
        """``"<count>:<sum as 64 hex digits>"``."""
        return f"{self.count}:{self.total:064x}"

    def to_json(self) -> str:
        """The JSON-ready form (a string) for manifests and checkpoints."""
        return self.hexdigest

    @classmethod
    def from_json(cls, value: object) -> ContainerDigest:
        """Parse :meth:`to_json` output.

        :raises ValueError: when ``value`` is not ``"<count>:<64 lowercase hex digits>"``; callers
            turn it into the error of the file it came from (checkpoint or manifest).
        """
        match = _TEXT_FORM.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"not a content digest (expected '<count>:<64 hex digits>'): {value!r}")
        return cls(count=int(match.group(1)), total=int(match.group(2), 16))

    def __str__(self) -> str:
        return self.hexdigest
