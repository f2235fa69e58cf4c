"""The Vimarsh per-document transforms , as pure functions wrapped in :class:`Transform`.

Each ``apply(doc)`` returns exactly one ``(target container, document)`` or raises
:class:`~asyncmig.core.engine.transform.Rejected`. The functions read no clock and no randomness and never
mutate their input, so a replay after resume produces equal documents (which is what makes the
upserts idempotent and lets validation recompute every target document from its source).

Rules shared by the vectors and activity transforms:

* Cosmos system properties are not copied; the source ``_ts`` goes to
  ``migrated_from = {"container": <source>, "_ts": <_ts>}`` (no ``_ts`` key when the source had none).
* A top-level ``null`` of the *source* is treated as absent, whether or not the field is mapped: it
  carries no value, and the plan drops top-level nulls. Nested nulls are never touched.
* Nothing else is silently discarded: every top-level source field the transform does not map is
  copied, untouched, under ``legacy`` (present only when non-empty). Where a mapped field is only
  *partly* represented in the target, the remainder goes to ``legacy`` too (e.g. ``text`` that differs
  from the chosen ``content``, a ``partition_key`` that differs from ``user_id``, an unusual
  ``document_type``, the unmapped rest of ``interaction_data``).
* Values are never converted: numbers (ints above 2**53, ``-0.0``, long floats) and strings are the
  same Python objects as in the input; embeddings are the very same list object. Output documents
  may therefore share nested objects with the input; neither side is mutated here.

The users transform is different on purpose: it is an in-place enrichment of the ``users``
container, so the user document keeps its whole body (explicit nulls included) and gains only the
three planned fields; it gets no ``migrated_from``/``legacy``, so a rollback or a diff against the backup
sees exactly the three additions.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

from asyncmig.core import jsoncodec
from asyncmig.core.engine.transform import (
    SYSTEM_PROPERTIES,
    Document,
    Rejected,
    Routed,
    Transform,
    strip_system,
)
from asyncmig.vimarsh.plan import (
    PERSONALITY_VECTORS,
    SOURCE_ACTIVITY,
    SOURCE_VECTORS,
    USER_ANALYTICS,
    USER_INTERACTIONS,
    USER_SESSIONS,
)
from asyncmig.vimarsh.plan import USERS as USERS_CONTAINER

UNKNOWN = "unknown"

# Cosmos DB limit for a (version 2, "large") partition key value; a longer key cannot be written, so
# it is dead-lettered with a reason rather than truncated (truncation merged partitions).
MAX_PARTITION_KEY_BYTES = 2048

NO_USER_ID_REASON = (
    "user_activity document has no user_id; cannot choose a partition in user_sessions/user_interactions"
)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _is_word_char(ch: str) -> bool:
    # Combining marks count as part of a word: Devanagari "धर्म" contains a virama (category Mn)
    # that str.isalnum() rejects, and splitting there would mangle non-Latin names.
    return ch.isalnum() or unicodedata.category(ch).startswith("M")


def slug(value: Any) -> str:
    """Normalised identifier: trimmed, lower case, runs of non-alphanumerics -> ``_``, no edge ``_``.

    Unicode letters and digits are kept (not folded to ASCII): folding would turn every non-Latin
    name into the empty string and merge distinct works. The text is NFKC-normalised first so that
    composed and decomposed spellings, or full-width forms, give the same slug. A non-string value is
    slugged from its exact JSON text. May return ``""`` (nothing alphanumeric); callers decide what
    that means.
    """
    text = value if isinstance(value, str) else jsoncodec.dumps(value).decode("utf-8")
    text = unicodedata.normalize("NFKC", text).strip().lower()
    out: list[str] = []
    pending_sep = False
    for ch in text:
        if _is_word_char(ch):
            if pending_sep and out:
                out.append("_")
            pending_sep = False
            out.append(ch)
        else:
            pending_sep = True
    return "".join(out)


def _present(doc: Document, key: str) -> bool:
    """A field counts as present when it exists and is not null (top-level nulls are dropped)."""
    return doc.get(key) is not None


def _non_empty(value: Any) -> bool:
    return value is not None and value != ""


def _migrated_from(container: str, doc: Document) -> dict[str, Any]:
    marker: dict[str, Any] = {"container": container}
    if "_ts" in doc:
        marker["_ts"] = doc["_ts"]
    return marker


def _finish(target: Document, legacy: dict[str, Any], container: str, source: Document) -> Document:
    """Drop top-level nulls, attach ``legacy`` (when non-empty) and ``migrated_from``."""
    out = {k: v for k, v in target.items() if v is not None}
    if legacy:
        out["legacy"] = legacy
    out["migrated_from"] = _migrated_from(container, source)
    return out


def _unmapped(source: Document, mapped: Iterable[str]) -> dict[str, Any]:
    """Every non-system, non-null top-level field that is not in ``mapped``, in source order."""
    skip = set(mapped) | set(SYSTEM_PROPERTIES)
    return {k: v for k, v in source.items() if k not in skip and v is not None}


def _require_id(doc: Document, container: str) -> Any:
    doc_id = doc.get("id")
    if doc_id is None or doc_id == "":
        raise Rejected(f"{container} document has no id")
    return doc_id


# --------------------------------------------------------------------------------------------------
# personality-vectors -> personality_vectors
# --------------------------------------------------------------------------------------------------

_VECTOR_COPIED = (
    "title",
    "chapter",
    "verse",
    "sanskrit",
    "translation",
    "citation",
    "created_at",
    "updated_at",
)

# Source fields the vectors transform reads. `metadata` is absent on purpose: only two of its
# sub-fields are read, so the whole dict is kept untouched under legacy (nothing lost, and the
# provenance of metadata.keywords/topic_tags survives the de-duplicated union).
_VECTOR_MAPPED = (
    "id",
    "personality",
    "source",
    "content",
    "text",
    "embedding",
    "tags",
    "keywords",
    "content_type",
    "category",
    "language",
    "embedding_model",
    *_VECTOR_COPIED,
)

# Defaults of the original script; here they apply when the field is missing *or* null (the original
# let a null through, which its null-stripping then removed, so the default never appeared).
_VECTOR_DEFAULTS = {
    "content_type": "verse",
    "category": "general",
    "language": "English",
    "embedding_model": "unknown",
}


def _with_default(doc: Document, field: str) -> Any:
    value = doc.get(field)
    return _VECTOR_DEFAULTS.get(field) if value is None else value


def _tag_values(value: Any) -> tuple[list[Any], bool]:
    """The tags held by ``value`` and whether it could be read as tags.

    A list contributes its items, a bare string is one tag; anything else (a dict, a number) is not a
    tag list and is kept under ``legacy`` instead.
    """
    if isinstance(value, list):
        return value, True
    if isinstance(value, str):
        return [value], True
    return [], False


def _union_tags(*lists: list[Any]) -> list[Any]:
    """De-duplicated union in first-seen order.

    Items are compared by their canonical JSON, so ``1``, ``1.0`` and ``True`` stay distinct (Python
    equality would merge them) and unhashable items (dicts) are handled.
    """
    seen: set[bytes] = set()
    out: list[Any] = []
    for items in lists:
        for item in items:
            key = jsoncodec.canonical(item)
            if key not in seen:
                seen.add(key)
                out.append(item)
    return out


def personality_id_for(personality: Any) -> str:
    """``personality_id`` for a source ``personality`` value: its slug, or ``"unknown"`` when the value
    is missing/null or has nothing alphanumeric."""
    if personality is None:
        return UNKNOWN
    return slug(personality) or UNKNOWN


def source_key_for(source: Any) -> str:
    """The source half of the synthetic partition key: slug of the whole title, or ``"unknown"``.

    Slugging removes ``:`` so the ``::`` separator stays unambiguous; nothing is truncated.
    """
    if source is None:
        return UNKNOWN
    return slug(source) or UNKNOWN


def transform_vector(doc: Document) -> Routed:
    """personality-vectors -> personality_vectors."""
    doc_id = _require_id(doc, SOURCE_VECTORS)
    personality = doc.get("personality")
    source = doc.get("source")
    personality_id = personality_id_for(personality)
    partition_key = f"{personality_id}::{source_key_for(source)}"
    if len(partition_key.encode("utf-8")) > MAX_PARTITION_KEY_BYTES:
        raise Rejected(
            f"partition_key for {doc_id!r} is longer than {MAX_PARTITION_KEY_BYTES} bytes; "
            "it cannot be written and is not truncated"
        )

    content_field, text_field = doc.get("content"), doc.get("text")
    if _non_empty(content_field):
        content = content_field
    elif _non_empty(text_field):
        content = text_field
    else:
        content = ""

    metadata = doc.get("metadata")
    meta = metadata if isinstance(metadata, dict) else {}
    legacy_extra: dict[str, Any] = {}
    tag_sources: list[list[Any]] = []
    for where, value in (
        ("metadata.topic_tags", meta.get("topic_tags")),
        ("tags", doc.get("tags")),
        ("keywords", doc.get("keywords")),
        ("metadata.keywords", meta.get("keywords")),
    ):
        if value is None:
            continue
        items, readable = _tag_values(value)
        tag_sources.append(items)
        if not readable and "." not in where:  # metadata is kept whole under legacy anyway
            legacy_extra[where] = value

    target: Document = {
        "id": doc_id,
        "partition_key": partition_key,
        "personality_id": personality_id,
        "personality_name": personality,
        "source": source,
        "content": content,
    }
    for field in ("content_type", *_VECTOR_COPIED[:6], "category", "language"):  # title .. citation
        target[field] = _with_default(doc, field)
    if _present(doc, "embedding"):
        target["embedding"] = doc["embedding"]  # the same list object: no conversion, no rounding
    target["embedding_model"] = _with_default(doc, "embedding_model")
    target["topic_tags"] = _union_tags(*tag_sources)
    target["foundational_text_ref"] = {
        "source": source,
        "chapter": doc.get("chapter"),
        "verse": doc.get("verse"),
    }
    for field in _VECTOR_COPIED[6:]:  # created_at, updated_at
        target[field] = doc.get(field)

    legacy = _unmapped(doc, _VECTOR_MAPPED)
    if _non_empty(text_field) and text_field != content:
        legacy["text"] = text_field  # both bodies present and different: keep the one not chosen
    legacy.update(legacy_extra)
    return [(PERSONALITY_VECTORS, _finish(target, legacy, SOURCE_VECTORS, doc))]


def has_embedding(target_doc: Document) -> bool:
    """Whether a migrated vector document carries an embedding (the report counts those without)."""
    return target_doc.get("embedding") is not None


def personality_unknown(target_doc: Document) -> bool:
    """Whether a migrated vector document could not be given a real personality.

    True when the source ``personality`` was missing/null (then ``personality_name`` is absent too),
    had nothing alphanumeric, or was literally "Unknown" (the original ingestion's fallback).
    """
    return target_doc.get("personality_id") == UNKNOWN


def personality_missing(target_doc: Document) -> bool:
    """Whether the source had no ``personality`` at all (narrower than :func:`personality_unknown`)."""
    return "personality_name" not in target_doc


# --------------------------------------------------------------------------------------------------
# user_activity -> user_sessions / user_interactions / user_analytics
# --------------------------------------------------------------------------------------------------

_ACTIVITY_ROUTING = ("session_data", "interaction_data", "analytics_data")

# Target keys of a session document; a session_data key with one of these names cannot be spread to
# the top level without overwriting a mapped field, so it is kept under legacy.session_data.
_SESSION_RESERVED = frozenset(
    {
        "id",
        "user_id",
        "document_type",
        "session_id",
        "start_time",
        "status",
        "created_at",
        "legacy",
        "migrated_from",
    }
)

_INTERACTION_FIELDS = (
    "user_query",
    "response_text",
    "personality_used",
    "response_time_ms",
    "model_used",
    "user_rating",
    "was_bookmarked",
    "content_themes",
)
_COST_FIELDS = ("input_tokens", "output_tokens", "cost_usd", "model_used")
_INTERACTION_READ = frozenset({"session_id", "sequence", *_INTERACTION_FIELDS, *_COST_FIELDS})


def _document_type(doc: Document) -> str:
    value = doc.get("document_type")
    return value.strip().lower() if isinstance(value, str) else ""


def activity_route(doc: Document) -> str:
    """Which target a user_activity document goes to.

    Sessions: ``document_type`` contains "session" or ``session_data`` is non-null. Analytics:
    ``document_type`` contains "analytics" (``analytics_snapshot``), or a document that is plainly
    neither (no "interaction" in its type, null ``interaction_data``) but carries ``analytics_data``.
    Everything else is an interaction.
    """
    dt = _document_type(doc)
    if "session" in dt or doc.get("session_data") is not None:
        return USER_SESSIONS
    if "analytics" in dt or (
        "interaction" not in dt
        and doc.get("interaction_data") is None
        and doc.get("analytics_data") is not None
    ):
        return USER_ANALYTICS
    return USER_INTERACTIONS


_CANONICAL_SOURCE_TYPE = {
    USER_SESSIONS: "session",
    USER_INTERACTIONS: "interaction",
    USER_ANALYTICS: "analytics_snapshot",
}


def _activity_legacy(doc: Document, route: str, consumed: Iterable[str]) -> dict[str, Any]:
    """Unmapped top-level fields, plus the mapped ones whose information the target does not hold."""
    mapped = {"id", "user_id", "partition_key", "document_type", "timestamp", *_ACTIVITY_ROUTING, *consumed}
    legacy = _unmapped(doc, mapped)
    if _present(doc, "partition_key") and doc["partition_key"] != doc.get("user_id"):
        legacy["partition_key"] = doc["partition_key"]
    if _present(doc, "document_type") and doc["document_type"] != _CANONICAL_SOURCE_TYPE[route]:
        legacy["document_type"] = doc["document_type"]
    for key in _ACTIVITY_ROUTING:  # a non-null *_data block the chosen route does not read
        if _present(doc, key) and key not in consumed:
            legacy[key] = doc[key]
    return legacy


def _session(doc: Document, user_id: Any) -> Document:
    raw = doc.get("session_data")
    data = raw if isinstance(raw, dict) else {}
    consumed = ["session_data"] if raw is None or isinstance(raw, dict) else []
    legacy = _activity_legacy(doc, USER_SESSIONS, consumed)
    session_id = data.get("session_id")
    start_time = data.get("start_time")
    target: Document = {
        "id": doc["id"],
        "user_id": user_id,
        "document_type": "user_session",
        "session_id": session_id if session_id is not None else doc["id"],
        "start_time": start_time if start_time is not None else doc.get("timestamp"),
        "status": data.get("status"),
    }
    clashes: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("session_id", "start_time", "status"):
            continue
        if key in _SESSION_RESERVED:
            clashes[key] = value
        else:
            target[key] = value
    if clashes:
        legacy["session_data"] = clashes
    target["created_at"] = doc.get("timestamp")
    return _finish(target, legacy, SOURCE_ACTIVITY, doc)


def _interaction(doc: Document, user_id: Any) -> Document:
    raw = doc.get("interaction_data")
    data = raw if isinstance(raw, dict) else {}
    consumed = ["interaction_data"] if raw is None or isinstance(raw, dict) else []
    # The top-level session_id is the fallback for interaction_data.session_id (as in the original).
    legacy = _activity_legacy(doc, USER_INTERACTIONS, [*consumed, "session_id"])
    session_id = data.get("session_id")
    if session_id is None:
        session_id = doc.get("session_id")
    elif _present(doc, "session_id") and doc["session_id"] != session_id:
        legacy["session_id"] = doc["session_id"]

    target: Document = {
        "id": doc["id"],
        "interaction_id": doc["id"],
        "user_id": user_id,
        "document_type": "user_interaction",
        "session_id": session_id,
        "sequence_number": data.get("sequence"),
        "timestamp": doc.get("timestamp"),
    }
    for field in _INTERACTION_FIELDS:
        target[field] = data.get(field)
    personality_used = data.get("personality_used")
    if personality_used is not None:
        target["personality_id"] = personality_id_for(personality_used)
    cost = {k: data[k] for k in _COST_FIELDS if data.get(k) is not None}
    target["cost_data"] = cost or None

    rest = {k: v for k, v in data.items() if k not in _INTERACTION_READ}
    if rest:
        legacy["interaction_data"] = rest
    return _finish(target, legacy, SOURCE_ACTIVITY, doc)


def _analytics(doc: Document, user_id: Any) -> Document:
    legacy = _activity_legacy(doc, USER_ANALYTICS, ["analytics_data"])
    target: Document = {
        "id": doc["id"],
        "user_id": user_id,
        "document_type": "user_analytics",
        "timestamp": doc.get("timestamp"),
        "analytics_data": doc.get("analytics_data"),
        "created_at": doc.get("timestamp"),
    }
    return _finish(target, legacy, SOURCE_ACTIVITY, doc)


def transform_activity(doc: Document) -> Routed:
    """user_activity -> user_sessions / user_interactions / user_analytics.

    :raises Rejected: when the document has no ``user_id`` (no partition to put it in) or no ``id``.
    """
    _require_id(doc, SOURCE_ACTIVITY)
    user_id = doc.get("user_id")
    if user_id is None or (isinstance(user_id, str) and not user_id.strip()):
        raise Rejected(NO_USER_ID_REASON)
    route = activity_route(doc)
    if route == USER_SESSIONS:
        return [(USER_SESSIONS, _session(doc, user_id))]
    if route == USER_ANALYTICS:
        return [(USER_ANALYTICS, _analytics(doc, user_id))]
    return [(USER_INTERACTIONS, _interaction(doc, user_id))]


# --------------------------------------------------------------------------------------------------
# users -> users (in place)
# --------------------------------------------------------------------------------------------------

USER_ADDITIONS = (("subscription_tier", "free"), ("profile_version", "1.0"))
# Every field transform_user may add; a rollback removes exactly these (where the backup lacks them).
USER_ADDED_FIELDS = ("user_id", *(key for key, _ in USER_ADDITIONS))


def transform_user(doc: Document) -> Routed:
    """users -> users, in place: add ``user_id`` = ``id``, ``subscription_tier`` "free" and
    ``profile_version`` "1.0" where the key is absent.

    "Absent" means the key does not exist: an existing value wins, an explicit ``null`` included (the
    plan's spread semantics, and it keeps the body identical to the backup apart from additions).
    Applying it twice gives the same document, so a resumed run is harmless.
    """
    doc_id = _require_id(doc, USERS_CONTAINER)
    out = strip_system(doc)
    if "user_id" not in out:
        out["user_id"] = doc_id
    for key, value in USER_ADDITIONS:
        if key not in out:
            out[key] = value
    return [(USERS_CONTAINER, out)]


VECTORS = Transform(name="vimarsh.personality_vectors", version="1", apply=transform_vector,
                    targets=(PERSONALITY_VECTORS,))
ACTIVITY = Transform(name="vimarsh.user_activity", version="1", apply=transform_activity,
                     targets=(USER_SESSIONS, USER_INTERACTIONS, USER_ANALYTICS))
USERS = Transform(name="vimarsh.users", version="1", apply=transform_user, targets=(USERS_CONTAINER,))
