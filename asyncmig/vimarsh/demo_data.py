"""Deterministic demo data in the legacy Vimarsh layout, mess included.

The real data cannot be shipped, so this module reproduces its *shape*: the production counts by
default (6,514 vectors of 768 numbers, 18 users, 121 activity documents = 18 sessions + 103
interactions), the production mix of personalities (13 ids after slugging), and the mess the legacy data has:
bodies only in ``text``, missing and null embeddings, "Krishna" and "krishna", null and missing
``source``, long titles sharing their first 50 characters, explicit nulls, metadata with keywords,
tags and ``has_embedding`` flags, and fragile values (an integer above 2**53, the float
2100.607537417505, ``-0.0``, Devanagari and emoji) in fields no transform maps.

Design choices, and why:

* **Streaming.** Documents are generated on demand, one at a time, so 100,000 x 1,536 never sits in
  memory; :meth:`DemoDataSet.documents` returns a fresh iterator on every call.
* **Two layers of determinism.** *Which* document gets which mess is a pure function of its index
  (an exact, evenly spread selection), so :attr:`DemoDataSet.figures` is computed from the same
  shape function without generating a single embedding. The *values* come from a ``random.Random``
  seeded per document with a string (``"<seed>:<container>:<index>"``; string seeds are hashed with
  SHA-512, independent of ``PYTHONHASHSEED``), so every document is reproducible on its own.
* **Realistic numbers, fast.** Embedding values are float32-rounded Gaussian numbers printed as
  doubles (long shortest-repr decimals such as ``0.012299999594688416``, like a float32 model output
  stored as JSON). Drawing 150 million Gaussians in Python would take minutes, so each document
  picks its numbers from a seeded pool of 65,536 such values with indices from ``randbytes``; the
  values look and round-trip exactly like real ones.
"""

from __future__ import annotations

import bisect
import random
import sys
import uuid
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asyncmig.vimarsh.plan import (
    EXPECTED_USERS,
    EXPECTED_VECTORS,
    PRODUCTION_VECTOR_DIMENSIONS,
    SOURCE_ACTIVITY,
    SOURCE_USERS,
    SOURCE_VECTORS,
)
from asyncmig.vimarsh.transforms import personality_id_for

DEFAULT_SEED = 20250805
DEFAULT_SESSIONS = 18  # the split of the 121 activity documents was never recorded; 18 + 103 is an estimate
DEFAULT_INTERACTIONS = 103

# Fragile values placed in unmapped fields: they must come out of the migration bit for bit.
BIG_INT = 9007199254740993  # 2**53 + 1: not representable as a double
LONG_FLOAT = 2100.607537417505
NEGATIVE_ZERO = -0.0
DEVANAGARI = "धर्म"
EMOJI = "🕉️ शान्ति 🙏"

_POOL_SIZE = 65536
_BASE_TIME = datetime(2025, 7, 1)

# --------------------------------------------------------------------------------------------------
# Composition of production: (segment, personality, document count). Sums to 6,514.
# --------------------------------------------------------------------------------------------------

ORIGINAL, SOURCED, MANUAL, INTAKE = "original", "sourced", "manual", "intake"

_GROUPS: tuple[tuple[str, str, int], ...] = (
    (ORIGINAL, "krishna", 2025),  # written as "krishna" and "Krishna"
    (SOURCED, "Buddha", 286),
    (SOURCED, "Confucius", 2),
    (SOURCED, "Einstein", 109),
    (SOURCED, "Lao Tzu", 26),
    (SOURCED, "Lincoln", 3),
    (SOURCED, "Marcus Aurelius", 2),
    (SOURCED, "Newton", 745),
    (SOURCED, "Rumi", 361),
    (MANUAL, "Chanakya", 549),
    (MANUAL, "Jesus Christ", 1847),
    (MANUAL, "Tesla", 18),
    (INTAKE, "Muhammad", 311),
    (INTAKE, "Tesla", 100),
    (INTAKE, "Chanakya", 60),
    (INTAKE, "Jesus Christ", 70),
)

# Production proportions of the mess (per 6,514 vectors).
_NO_EMBEDDING_PER_6514 = 415  # status file: 6,514 chunks, 6,099 vectors
_NULL_SOURCE_PER_6514 = 26
_MISSING_SOURCE_PER_6514 = 26
_PLACEHOLDER_PER_6514 = 3  # old placeholder vectors [0.1] * dimensions
_FRAGILE_PER_6514 = 20
_TEXT_DIFFERS_PER_2025 = 40  # original docs whose `text` is not the same as `content`

_KRISHNA_SOURCES = ("Bhagavad Gita As It Is", "Srimad Bhagavatam", "Mahabharata", "श्रीमद्भगवद्गीता")
_SOURCED_WORKS: dict[str, tuple[str, ...]] = {
    "Buddha": ("Dhammapada", "The Gospel of Buddha", "Sutta Pitaka: Selected Discourses"),
    "Confucius": ("The Analects",),
    "Einstein": ("The World As I See It", "Ideas and Opinions"),
    "Lao Tzu": ("Tao Te Ching",),
    "Lincoln": ("Gettysburg Address and Selected Speeches",),
    "Marcus Aurelius": ("Meditations",),
    "Newton": ("Philosophiae Naturalis Principia Mathematica", "Opticks"),
    "Rumi": ("The Masnavi", "Divan-e Shams-e Tabrizi"),
}
# Long titles that share their first 50 characters: the original's source[:50] partition key merged them.
_LONG_WORKS: dict[str, tuple[str, ...]] = {
    "Jesus Christ": tuple(
        f"The Holy Bible, Authorized King James Version (1611): The Gospel According to Saint {book}"
        for book in ("Matthew", "Mark", "Luke", "John")
    ),
    "Chanakya": tuple(
        f"Chanakya Niti and the Arthashastra of Kautilya, Translated with Commentary, Book {n}"
        for n in ("I", "II", "III")
    ),
    "Tesla": tuple(
        f"My Inventions: The Autobiography of Nikola Tesla, Electrical Experimenter Edition, Part {n}"
        for n in ("One", "Two")
    ),
    "Muhammad": tuple(
        f"Sahih al-Bukhari: The Collection of Authentic Hadith of the Prophet, Volume {n}"
        for n in ("1", "2", "3")
    ),
}
_THEMES = ("dharma", "karma", "devotion", "wisdom", "compassion", "duty", "peace", "truth", "love", "self")
_WORDS = (
    "the", "soul", "is", "never", "born", "nor", "does", "it", "die", "wisdom", "path", "mind", "heart",
    "truth", "light", "action", "without", "attachment", "peace", "within", "world", "nature", "law",
)  # fmt: skip
_INTERACTION_PERSONALITIES = (
    "krishna",
    "krishna",
    "Krishna",
    "buddha",
    "Lao Tzu",
    "rumi",
    "jesus_christ",
    "einstein",
)

_MISSING = object()


@dataclass(frozen=True, slots=True)
class DemoFigures:
    """What the generated data set contains, computed from the parameters (for validation)."""

    vectors: int
    users: int
    activity: int
    sessions: int
    interactions: int
    personalities: int
    vectors_without_embedding: int
    text_only_bodies: int
    dimensions: int
    personality_ids: tuple[str, ...]
    vectors_per_personality: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class _Shape:
    """Index-determined facts about one vector document (no randomness)."""

    index: int
    group: int  # index into _GROUPS
    segment: str
    group_index: int  # position inside its composition group
    personality: Any  # str, None (explicit null) or _MISSING
    source_state: str  # "ok" | "null" | "missing"
    embedding_state: str  # "ok" | "null" | "missing" | "placeholder"
    fragile: bool
    text_differs: bool
    content_null: bool


def _allocate(total: int) -> list[int]:
    """Split ``total`` over the composition groups by largest remainder (exact at 6,514), then make
    sure every group gets at least one document when there are enough to go round."""
    weight = EXPECTED_VECTORS
    raw = [count * total for _, _, count in _GROUPS]
    sizes = [r // weight for r in raw]
    order = sorted(range(len(_GROUPS)), key=lambda g: (-(raw[g] % weight), g))
    for g in order[: total - sum(sizes)]:
        sizes[g] += 1
    if total >= len(_GROUPS):
        for g, size in enumerate(sizes):
            if size == 0:
                donor = max(range(len(sizes)), key=lambda d: (sizes[d], -d))
                sizes[donor] -= 1
                sizes[g] = 1
    return sizes


def _scaled(n: int, per_6514: int) -> int:
    return (n * per_6514 + EXPECTED_VECTORS // 2) // EXPECTED_VECTORS


_MULTIPLIERS = (7919, 104729, 1299709, 15485863, 32452843, 49979687, 67867967, 86028121)


def _pick_rank(i: int, n: int, k: int, salt: int) -> int | None:
    """The ordinal (0..k-1) of index ``i`` among exactly ``k`` evenly spread picks of ``range(n)``, or
    ``None`` when ``i`` is not picked.

    ``i`` is mapped through a bijection of ``range(n)`` (multiply by a prime not dividing ``n``, add
    the salt), then Bresenham's rule picks exactly ``k`` of the images. Different salts give
    (mostly) different selections, so the kinds of mess overlap only by chance; the ordinal lets a
    selection be split exactly (e.g. half missing, half null).
    """
    if k <= 0 or n <= 0:
        return None
    if k >= n:
        return i
    mult = next(p for p in _MULTIPLIERS if n % p != 0)
    j = (i * mult + salt * 2654435761) % n
    before, upto = j * k // n, (j + 1) * k // n
    return before if upto != before else None


def _picked(i: int, n: int, k: int, salt: int) -> bool:
    """Whether index ``i`` is one of exactly ``k`` evenly spread picks of ``range(n)``."""
    return _pick_rank(i, n, k, salt) is not None


class DemoDataSet:
    """The legacy layout as streams of documents, plus the figures they add up to."""

    def __init__(
        self,
        seed: int = DEFAULT_SEED,
        *,
        vectors: int = EXPECTED_VECTORS,
        dimensions: int = PRODUCTION_VECTOR_DIMENSIONS,
        users: int = EXPECTED_USERS,
        sessions: int = DEFAULT_SESSIONS,
        interactions: int = DEFAULT_INTERACTIONS,
        missing_personality: int = 0,
    ) -> None:
        """:param missing_personality: vectors written without a ``personality`` (half missing, half
            null); 0 by default because production has 13 personalities and no ``unknown``.
        :raises ValueError: for negative sizes, zero dimensions, or activity without users.
        """
        for name, value in (
            ("vectors", vectors),
            ("users", users),
            ("sessions", sessions),
            ("interactions", interactions),
            ("missing_personality", missing_personality),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if dimensions < 1:
            raise ValueError(f"dimensions must be >= 1, got {dimensions}")
        if users == 0 and sessions + interactions > 0:
            raise ValueError("activity documents need at least one user")
        if missing_personality > vectors:
            raise ValueError("missing_personality cannot exceed vectors")
        self.seed = seed
        self.vectors = vectors
        self.dimensions = dimensions
        self.users = users
        self.sessions = sessions
        self.interactions = interactions
        self.missing_personality = missing_personality
        self._sizes = _allocate(vectors)
        self._starts = [sum(self._sizes[:g]) for g in range(len(self._sizes))]
        self._pool: list[float] | None = None
        self._figures: DemoFigures | None = None

    # ---------------------------------------------------------------------------------------------
    # Public
    # ---------------------------------------------------------------------------------------------

    def documents(self, container: str) -> Iterator[dict[str, Any]]:
        """A fresh iterator over one legacy container's documents.

        :raises KeyError: for a container that is not part of the legacy layout.
        """
        if container == SOURCE_VECTORS:
            return self._vector_docs()
        if container == SOURCE_USERS:
            return self._user_docs()
        if container == SOURCE_ACTIVITY:
            return self._activity_docs()
        raise KeyError(container)

    def containers(self) -> dict[str, Iterator[dict[str, Any]]]:
        """Fresh iterators for all three legacy containers."""
        return {name: self.documents(name) for name in (SOURCE_VECTORS, SOURCE_USERS, SOURCE_ACTIVITY)}

    @property
    def figures(self) -> DemoFigures:
        """Counts of what :meth:`documents` yields, derived from the same per-index shapes."""
        if self._figures is None:
            self._figures = self._compute_figures()
        return self._figures

    # ---------------------------------------------------------------------------------------------
    # Vectors
    # ---------------------------------------------------------------------------------------------

    def _shape(self, i: int) -> _Shape:
        n = self.vectors
        g = bisect.bisect_right(self._starts, i) - 1
        while self._sizes[g] == 0:  # empty groups share a start with the next one
            g += 1
        segment, personality, _ = _GROUPS[g]
        j = i - self._starts[g]
        size = self._sizes[g]
        value: Any = personality
        if segment == ORIGINAL and size >= 2 and _picked(j, size, max(1, size // 3), 1):
            value = "Krishna"
        elif personality == "Lao Tzu" and j % 5 == 4:
            value = " Lao  Tzu "  # stray spaces: still lao_tzu
        missing_rank = _pick_rank(i, n, self.missing_personality, 2)
        if missing_rank is not None:
            value = _MISSING if missing_rank % 2 == 0 else None

        if _picked(i, n, _scaled(n, _NULL_SOURCE_PER_6514), 3):
            source_state = "null"
        elif _picked(i, n, _scaled(n, _MISSING_SOURCE_PER_6514), 4):
            source_state = "missing"
        else:
            source_state = "ok"

        no_embedding = _scaled(n, _NO_EMBEDDING_PER_6514)
        no_embedding_rank = _pick_rank(i, n, no_embedding, 5)
        if no_embedding_rank is not None:
            embedding_state = "missing" if no_embedding_rank % 2 == 0 else "null"
        elif _picked(i, n, _scaled(n, _PLACEHOLDER_PER_6514), 6):
            embedding_state = "placeholder"
        else:
            embedding_state = "ok"

        fragile = i == 0 or _picked(i, n, _scaled(n, _FRAGILE_PER_6514), 7)
        text_differs = segment == ORIGINAL and _picked(
            j, size, (size * _TEXT_DIFFERS_PER_2025 + 1012) // 2025, 8
        )
        content_null = segment == INTAKE and j % 2 == 1
        return _Shape(
            i, g, segment, j, value, source_state, embedding_state, fragile, text_differs, content_null
        )

    def _embedding_pool(self) -> list[float]:
        if self._pool is None:
            rng = random.Random(f"{self.seed}:embedding-pool")
            # array('f') rounds each double to float32; tolist() gives the float32 values back as
            # Python doubles, exactly what a float32 model output looks like once stored as JSON.
            self._pool = array("f", [rng.gauss(0.0, 0.05) for _ in range(_POOL_SIZE)]).tolist()
        return self._pool

    def _embedding(self, rng: random.Random) -> list[float]:
        pool = self._embedding_pool()
        indices = array("H")
        indices.frombytes(rng.randbytes(2 * self.dimensions))
        if sys.byteorder == "big":  # the bytes are read as little-endian everywhere
            indices.byteswap()
        return [pool[k] for k in indices]

    def _vector_docs(self) -> Iterator[dict[str, Any]]:
        for i in range(self.vectors):
            yield self._vector_doc(self._shape(i))

    def _vector_doc(self, shape: _Shape) -> dict[str, Any]:
        rng = random.Random(f"{self.seed}:{SOURCE_VECTORS}:{shape.index}")
        segment, j, i = shape.segment, shape.group_index, shape.index
        name = _GROUPS[shape.group][1]
        pid = personality_id_for(name)
        body = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(12, 40))).capitalize() + "."
        stamp = _timestamp(rng, days=40)
        doc: dict[str, Any]

        if segment == ORIGINAL:
            source = _KRISHNA_SOURCES[j % len(_KRISHNA_SOURCES)]
            chapter = rng.randint(1, 18)
            verse_no = rng.randint(1, 78)
            content = f"Sanskrit: ... Translation: {body}"
            doc = {
                "id": f"krishna_bg__{chapter}_{verse_no}_complete_{i:06d}",
                "personality": shape.personality,
                "content": content,
                "text": f"{content} Purport: {body}" if shape.text_differs else content,
                "source": source,
                "chapter": chapter,
                "verse": f"Bg. {chapter}.{verse_no}",
                "citation": f"Bhagavad Gita Bg. {chapter}.{verse_no}",
                "sanskrit": "कर्मण्येवाधिकारस्ते मा फलेषु कदाचन" if j % 7 == 0 else None,
                "translation": body,
                "content_type": "complete" if j % 3 else "verse",
                "category": None,
                "language": "English",
                "tags": [rng.choice(_THEMES), rng.choice(_THEMES)],
                "metadata": {"original_id": f"bg_Bg__{chapter}_{verse_no}_complete", "spiritual_theme": None},
                "created_at": None,
            }
        elif segment == SOURCED:
            works = _SOURCED_WORKS[name]
            source = works[j % len(works)]
            doc = {
                "id": f"{pid}_{j:05d}_{i:06d}",
                "personality": shape.personality,
                "content": body,
                "source": source,
                "title": source,
                "chapter": rng.choice((rng.randint(1, 40), "II", None)),
                "verse": None,
                "category": rng.choice(("philosophy", "teachings", "science", None)),
                "language": "English",
                "domain": rng.choice(("spiritual", "philosophical", "scientific")),
                "keywords": [pid, rng.choice(_THEMES)],
                "authority_level": rng.choice(("primary", "secondary")),
                "source_type": "sourced",
                "metadata": {
                    "keywords": [rng.choice(_THEMES), pid],
                    "source_file": f"{pid}_corpus.txt",
                    "chunk_index": j,
                    "processing_method": "semantic_chunking",
                },
                "created_at": stamp,
                "updated_at": None,
            }
            if j % 50 == 0:
                doc["metadata"]["topic_tags"] = [rng.choice(_THEMES)]  # rare; no real writer set it
        else:
            works = _LONG_WORKS[name]
            source = works[j % len(works)]
            doc = {
                "id": f"{segment}_{rng.getrandbits(32):08x}_{i}",
                "text": body,
                "personality": shape.personality,
                "source": source,
                "title": source,
                "content_type": "manual_download" if segment == MANUAL else "intake_download",
                "created_at": stamp,
                "tags": None,
                "metadata": {"keywords": [pid], "source_file": f"{pid}/{j // 40:04d}.txt", "chunk_index": j},
            }
            if shape.content_null:
                doc["content"] = None
            if segment == INTAKE:
                doc["integration_date"] = stamp[:10]
                doc["source_type"] = "public_domain"
                doc["source_metadata"] = {"url": f"https://example.org/{pid}/{j}", "license": None}

        if shape.source_state == "null":
            doc["source"] = None
        elif shape.source_state == "missing":
            del doc["source"]
        if shape.personality is _MISSING:
            del doc["personality"]

        if shape.embedding_state == "ok":
            doc["embedding"] = self._embedding(rng)
        elif shape.embedding_state == "placeholder":
            doc["embedding"] = [0.1] * self.dimensions
        elif shape.embedding_state == "null":
            doc["embedding"] = None
        with_embedding = shape.embedding_state in ("ok", "placeholder")
        doc["embedding_model"] = "text-embedding-004" if segment == ORIGINAL else "gemini-text-embedding-004"
        doc["has_embedding"] = with_embedding
        if with_embedding and segment != ORIGINAL:
            doc["embedding_dimensions"] = self.dimensions
            doc["embedding_generated_at"] = stamp

        if shape.fragile:
            doc["catalog_number"] = BIG_INT
            doc["relevance_score"] = LONG_FLOAT
            doc["score_offset"] = NEGATIVE_ZERO
            doc["sanskrit_term"] = DEVANAGARI
            doc["note"] = EMOJI
            doc["metadata"]["fragile"] = {"big": BIG_INT, "float": LONG_FLOAT, "zero": NEGATIVE_ZERO}
        return doc

    # ---------------------------------------------------------------------------------------------
    # Users and activity
    # ---------------------------------------------------------------------------------------------

    def _user_id(self, u: int) -> str:
        return str(uuid.UUID(int=random.Random(f"{self.seed}:user-id:{u}").getrandbits(128), version=4))

    def _session_id(self, s: int) -> str:
        return str(uuid.UUID(int=random.Random(f"{self.seed}:session-id:{s}").getrandbits(128), version=4))

    def _user_docs(self) -> Iterator[dict[str, Any]]:
        for u in range(self.users):
            rng = random.Random(f"{self.seed}:{SOURCE_USERS}:{u}")
            user_id = self._user_id(u)
            given = rng.choice(("Asha", "Ravi", "Maya", "Arjun", "Lena", "Omar", "Priya", "Tom", "Mei"))
            family = rng.choice(("Sharma", "Iyer", "Khan", "Nguyen", "Smith", None))
            created = _timestamp(rng, days=30)
            yield {
                "id": user_id,
                "partition_key": user_id,
                "auth_id": f"{rng.getrandbits(64):016x}",
                "email": f"{given.lower()}.{u}@example.com",
                "name": f"{given} {family}" if family else given,
                "document_type": "user_profile",
                "given_name": given,
                "family_name": family,
                "auth_provider": "microsoft",
                "tenant_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "profile_picture_url": None,
                "job_title": None,
                "company_name": rng.choice((None, "Contoso")),
                "preferred_language": "en",
                "timezone": rng.choice((None, "Asia/Kolkata", "America/Los_Angeles")),
                "user_preferences": {},
                "account_status": "active",
                "created_at": created,
                "last_login": _timestamp(rng, days=40, start=35),
                "last_activity": rng.choice((None, _timestamp(rng, days=40, start=35))),
                "last_consent_update": None,
                "usage_stats": {
                    "total_sessions": 1,
                    "total_queries": 0,
                    "total_tokens": 0,
                    "total_cost_usd": 0.0,
                    "avg_session_duration": 0.0,
                    "favorite_personalities": [],
                    "common_topics": [],
                    "monthly_usage": {},
                },
                "recent_activity": [],
                "bookmarks": [],
                "risk_score": 0.0,
                "abuse_flags": [],
                "is_admin": u == 0,
                "admin_notes": None,
                "data_retention_consent": True,
                "analytics_consent": rng.random() < 0.7,
            }

    def _activity_docs(self) -> Iterator[dict[str, Any]]:
        for s in range(self.sessions):
            rng = random.Random(f"{self.seed}:{SOURCE_ACTIVITY}:session:{s}")
            user_id = self._user_id(s % self.users)
            stamp = _timestamp(rng, days=35)
            yield {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "partition_key": user_id,
                "user_id": user_id,
                "document_type": "session",
                "timestamp": stamp,
                "session_data": {"session_id": self._session_id(s), "start_time": stamp, "status": "active"},
                "interaction_data": None,
                "analytics_data": None,
            }
        for t in range(self.interactions):
            rng = random.Random(f"{self.seed}:{SOURCE_ACTIVITY}:interaction:{t}")
            if self.sessions:
                s = t % self.sessions
                user_id = self._user_id(s % self.users)
                session_id = self._session_id(s)
                sequence = t // self.sessions + 1
            else:
                user_id = self._user_id(t % self.users)
                session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                sequence = 1
            input_tokens = rng.randint(5, 400)
            output_tokens = rng.randint(50, 1200)
            yield {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "partition_key": user_id,
                "user_id": user_id,
                "document_type": "interaction",
                "timestamp": _timestamp(rng, days=40, start=35),
                "session_data": None,
                "interaction_data": {
                    "session_id": session_id,
                    "sequence": sequence,
                    "user_query": rng.choice(("What is dharma?", "How do I find peace?", "What is the Tao?")),
                    "personality_used": rng.choice(_INTERACTION_PERSONALITIES),
                    "response_text": " ".join(rng.choice(_WORDS) for _ in range(30)),
                    "response_time_ms": rng.randint(300, 9000),
                    "model_used": "gemini-2.5-flash",
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "cost_usd": (input_tokens * 0.075 + output_tokens * 0.3) / 1_000_000,
                    "user_rating": rng.choice((None, None, None, 4, 5)),
                    "was_bookmarked": rng.random() < 0.1,
                    "content_themes": [rng.choice(_THEMES)],
                },
                "analytics_data": None,
            }

    # ---------------------------------------------------------------------------------------------
    # Figures
    # ---------------------------------------------------------------------------------------------

    def _compute_figures(self) -> DemoFigures:
        per_personality: dict[str, int] = {}
        without_embedding = 0
        text_only = 0
        for i in range(self.vectors):
            shape = self._shape(i)
            pid = personality_id_for(None if shape.personality is _MISSING else shape.personality)
            per_personality[pid] = per_personality.get(pid, 0) + 1
            if shape.embedding_state in ("missing", "null"):
                without_embedding += 1
            if shape.segment in (MANUAL, INTAKE):  # body only in `text` (content absent or null)
                text_only += 1
        ids = tuple(sorted(per_personality))
        return DemoFigures(
            vectors=self.vectors,
            users=self.users,
            activity=self.sessions + self.interactions,
            sessions=self.sessions,
            interactions=self.interactions,
            personalities=len(ids),
            vectors_without_embedding=without_embedding,
            text_only_bodies=text_only,
            dimensions=self.dimensions,
            personality_ids=ids,
            vectors_per_personality=tuple((pid, per_personality[pid]) for pid in ids),
        )


def _timestamp(rng: random.Random, *, days: int, start: int = 0) -> str:
    """An ISO timestamp (naive UTC with microseconds, like the original ``utcnow().isoformat()``)."""
    offset = timedelta(days=start, microseconds=rng.randrange(days * 86_400_000_000))
    return (_BASE_TIME + offset).isoformat()
