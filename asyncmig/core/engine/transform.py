"""Transforms: one source document in, zero or more ``(target, document)`` pairs out.

A transform rejects a document it cannot place by raising :class:`Rejected`; the pipeline sends
it to the dead-letter file with the reason instead of guessing. Transforms are pure functions of
the document, so a replay after resume produces the same output (which is what makes upserts
idempotent).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asyncmig.errors import UsageError

Document = dict[str, Any]
Routed = list[tuple[str, Document]]

# Target name the identity transform routes to: the sink's default container.
DEFAULT_TARGET = ""


class Rejected(Exception):
    """Raised by a transform for a document that must go to the dead-letter file."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Transform:
    """A named, versioned transform; name and version are part of a checkpoint's run identity."""

    name: str
    version: str
    apply: Callable[[Document], Routed]
    # The target names ``apply`` may route to; the sink opens each before the first page.
    targets: tuple[str, ...] = (DEFAULT_TARGET,)


SYSTEM_PROPERTIES = ("_rid", "_self", "_etag", "_attachments", "_ts", "_lsn")


def strip_system(document: Document) -> Document:
    """The document without Cosmos system properties (the target assigns its own); a shallow copy,
    in the document's key order (copy and pop: a sixth of the CPU of a filtering comprehension)."""
    stripped = document.copy()
    for name in SYSTEM_PROPERTIES:
        stripped.pop(name, None)
    return stripped


def _identity(document: Document) -> Routed:
    return [(DEFAULT_TARGET, strip_system(document))]


IDENTITY = Transform(name="identity", version="1", apply=_identity)


def load_transform(spec: str) -> Transform:
    """Load ``module:function`` (a function or a :class:`Transform`).

    :raises UsageError: when the module or attribute cannot be found or is not callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--transform must look like 'package.module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import transform module {module_name!r}: {exc}") from exc
    obj = getattr(module, attr, None)
    if isinstance(obj, Transform):
        return obj
    if not callable(obj):
        raise UsageError(f"{spec!r} is not a callable transform")
    version = str(getattr(obj, "version", getattr(module, "__version__", "0")))
    return Transform(name=spec, version=version, apply=obj)
