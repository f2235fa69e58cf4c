"""Per-document ordering: an older version of a document must never overwrite a newer one.

On a live source the same document can be read twice in one pass (version 1 on an early page, the
application's update as version 2 later). Writers run concurrently and a failed write is retried
after a jittered sleep, so without a rule version 2 could land first and version 1's retry then
overwrite it — and a later catch-up would start after version 2's position and never repair it.

The rule, enforced by :class:`VersionGate` before a write is sent:

* a newer version waits until the in-flight write of an older version of the same document has
  finished (retries included), so writes of one document reach the target in version order;
* a version not newer than the one in flight is superseded and dropped (it would only go back).

Versions are the source's change-feed ``_lsn`` (``_ts`` when there is none); they are compared only
between versions of one source document, where they are ordered. The gate keeps state only for
documents in flight, so its memory is bounded like the pipeline's.
"""

from __future__ import annotations

from typing import Any

import anyio

__all__ = ["VersionGate", "document_version"]


def document_version(document: Any) -> int | None:
    """The order of a source document's version: its ``_lsn``, else its ``_ts``; None when unknown."""
    if not isinstance(document, dict):
        return None
    for name in ("_lsn", "_ts"):
        value = document.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


class _Held:
    """The version of a document in flight, and the event its successors wait on (made only when
    one has to wait: almost every document has none, and an event per document was measurable)."""

    __slots__ = ("finished", "version")

    def __init__(self, version: int) -> None:
        self.version = version
        self.finished: anyio.Event | None = None


class VersionGate:
    """Admits at most one in-flight write per document key, in version order."""

    def __init__(self) -> None:
        self._in_flight: dict[Any, _Held] = {}

    @property
    def in_flight(self) -> int:
        """Documents with a write in flight."""
        return len(self._in_flight)

    async def admit(self, key: Any, version: int) -> bool:
        """Wait until no older version of ``key`` is in flight, then hold it for ``version``.

        :returns: False (and holds nothing) when a version at least as new is in flight or was
            admitted while waiting: this one is superseded and must not be written.
        """
        while (current := self._in_flight.get(key)) is not None:
            if version <= current.version:
                return False
            if current.finished is None:
                current.finished = anyio.Event()
            await current.finished.wait()
        self._in_flight[key] = _Held(version)
        return True

    def release(self, key: Any, version: int) -> None:
        """The write of ``version`` finished (written, dead-lettered or abandoned)."""
        current = self._in_flight.get(key)
        if current is not None and current.version == version:
            del self._in_flight[key]
            if current.finished is not None:
                current.finished.set()
