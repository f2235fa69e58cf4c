"""Generate the ``personalities`` container from the migrated ``personality_vectors`` (one document per distinct ``personality_id``).

The accumulator consumes migrated vector documents one at a time (a streamed read of the target),
so memory is bounded by the number of distinct personalities, names and sources, never by the
number of vectors. Its output does not depend on the order the documents arrive in (cross-partition
reads have no fixed order): sources are sorted, ties between names are broken alphabetically, and
the output is sorted by ``personality_id``. There is no clock inside: ``created_at``/``updated_at``
are the caller's ``generated_at``, so regenerating after a resume gives identical documents.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from asyncmig.core import jsoncodec
from asyncmig.core.engine.transform import Document
from asyncmig.vimarsh.transforms import UNKNOWN

DOCUMENT_TYPE = "personality_config"

# The built-in domain table of the migration plan. Anything else is "general" (the original made every unknown figure
# "spiritual"/"hindu", which mislabelled every figure it did not know).
DOMAINS: dict[str, str] = {
    **dict.fromkeys(("krishna", "buddha", "jesus_christ", "muhammad", "rumi", "lao_tzu"), "spiritual"),
    **dict.fromkeys(("confucius", "marcus_aurelius", "chanakya"), "philosophical"),
    **dict.fromkeys(("einstein", "newton", "tesla"), "scientific"),
    "lincoln": "historical",
}
DEFAULT_DOMAIN = "general"

# Proper names for the known figures; other ids use the most common source spelling.
DISPLAY_NAMES: dict[str, str] = {
    "krishna": "Lord Krishna",
    "buddha": "Gautama Buddha",
    "jesus_christ": "Jesus Christ",
    "muhammad": "Prophet Muhammad",
    "rumi": "Rumi",
    "lao_tzu": "Lao Tzu",
    "confucius": "Confucius",
    "marcus_aurelius": "Marcus Aurelius",
    "chanakya": "Chanakya",
    "einstein": "Albert Einstein",
    "newton": "Isaac Newton",
    "tesla": "Nikola Tesla",
    "lincoln": "Abraham Lincoln",
}

DESCRIPTIONS: dict[str, str] = {
    "krishna": "Divine teacher of the Bhagavad Gita, guiding on dharma, devotion and selfless action.",
    "buddha": "Founder of Buddhism, teaching the Four Noble Truths and the Middle Way to end suffering.",
    "jesus_christ": "Teacher of love, forgiveness and compassion as recorded in the Gospels.",
    "muhammad": "Prophet of Islam, teaching mercy, justice and devotion to God.",
    "rumi": "Sufi poet and mystic of divine love and the soul's longing.",
    "lao_tzu": "Sage of the Tao Te Ching, teaching harmony with the Tao and effortless action.",
    "confucius": "Philosopher of virtue, propriety and right relationships.",
    "marcus_aurelius": "Roman emperor and Stoic philosopher of duty, reason and self-mastery.",
    "chanakya": "Strategist and author of the Arthashastra, on statecraft, ethics and practical wisdom.",
    "einstein": "Physicist reflecting on science, curiosity, imagination and the human condition.",
    "newton": "Natural philosopher of the laws of motion, gravitation and scientific method.",
    "tesla": "Inventor and visionary of electricity, innovation and the future of technology.",
    "lincoln": "Sixteenth U.S. president, speaking on liberty, unity, equality and leadership.",
}

_DOMAIN_DESCRIPTION = {
    "spiritual": "Spiritual guidance",
    "philosophical": "Philosophical guidance",
    "scientific": "Scientific insight",
    "historical": "Historical perspective",
    DEFAULT_DOMAIN: "Guidance",
}


def domain_of(personality_id: str) -> str:
    """The domain of a personality id ("general" when it is not in the built-in table)."""
    return DOMAINS.get(personality_id, DEFAULT_DOMAIN)


def _sort_key(value: Any) -> tuple[int, str]:
    # Sources are strings in practice; anything else sorts after them by its exact JSON text.
    if isinstance(value, str):
        return (0, value)
    return (1, jsoncodec.canonical(value).decode("utf-8"))


@dataclass(slots=True)
class _Tally:
    count: int = 0
    names: Counter[str] = field(default_factory=Counter)
    sources: dict[bytes, Any] = field(default_factory=dict)  # canonical JSON -> value (dicts are unhashable)


class PersonalityAccumulator:
    """Collects what the personality documents need from streamed ``personality_vectors`` documents."""

    def __init__(self) -> None:
        self._tallies: dict[str, _Tally] = {}

    def add(self, doc: Document) -> None:
        """Count one migrated vector document.

        :raises ValueError: for a document without ``personality_id`` (not a migrated vector).
        """
        personality_id = doc.get("personality_id")
        if not isinstance(personality_id, str) or not personality_id:
            raise ValueError(f"document {doc.get('id')!r} has no personality_id; is it a migrated vector?")
        tally = self._tallies.get(personality_id)
        if tally is None:
            tally = self._tallies[personality_id] = _Tally()
        tally.count += 1
        name = doc.get("personality_name")
        if isinstance(name, str) and name.strip():
            tally.names[name.strip()] += 1
        source = doc.get("source")
        if source is not None:
            tally.sources.setdefault(jsoncodec.canonical(source), source)

    def add_all(self, docs: Iterable[Document]) -> None:
        """Count every document of ``docs``."""
        for doc in docs:
            self.add(doc)

    def counts(self) -> dict[str, int]:
        """Vectors per personality id (what validation compares ``vector_count`` with)."""
        return {pid: tally.count for pid, tally in sorted(self._tallies.items())}

    def display_name(self, personality_id: str) -> str:
        """The proper name of a known figure, else the most common source spelling (ties broken
        alphabetically so the result does not depend on read order), else the title-cased id."""
        if personality_id in DISPLAY_NAMES:
            return DISPLAY_NAMES[personality_id]
        tally = self._tallies.get(personality_id)
        if tally and tally.names:
            return min(tally.names.items(), key=lambda item: (-item[1], item[0]))[0]
        return personality_id.replace("_", " ").title()

    def documents(self, generated_at: str) -> list[Document]:
        """One ``personality_config`` document per distinct ``personality_id``, sorted by id.

        The ``unknown`` personality (vectors whose source had none) gets a document too, so every
        vector's personality exists, but it is marked ``is_active`` False: it is not a persona anyone
        should be offered.
        """
        out: list[Document] = []
        for personality_id, tally in sorted(self._tallies.items()):
            display_name = self.display_name(personality_id)
            domain = domain_of(personality_id)
            description = DESCRIPTIONS.get(personality_id) or (
                f"{_DOMAIN_DESCRIPTION[domain]} drawn from the {display_name} texts in the Vimarsh library."
            )
            sources = sorted(tally.sources.values(), key=_sort_key)
            out.append(
                {
                    "id": personality_id,
                    "personality_id": personality_id,
                    "document_type": DOCUMENT_TYPE,
                    "display_name": display_name,
                    "domain": domain,
                    "description": description,
                    "associated_sources": sources,
                    "vector_count": tally.count,
                    "is_active": personality_id != UNKNOWN,
                    "created_at": generated_at,
                    "updated_at": generated_at,
                }
            )
        return out


def generate_personalities(docs: Iterable[Document], generated_at: str) -> list[Document]:
    """Convenience: accumulate ``docs`` and return the personality documents."""
    accumulator = PersonalityAccumulator()
    accumulator.add_all(docs)
    return accumulator.documents(generated_at)
