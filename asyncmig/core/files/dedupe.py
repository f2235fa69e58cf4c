"""One entry per document in a backup file: the newest version, however often the feed returned it.

A backup reads its container through the change feed. When the application updates a document
after the reader has passed it, the feed hands the document out again at its new position, and
the file sink appends it again: the file then holds two versions of one document, its count is
one too high, and nothing restored from it can ever match the container. :func:`keep_newest`
rewrites such a file keeping, for each ``(id, partition key)``, only the entry the feed returned
last (the feed returns each range in the order of its changes, so the last entry is the newest;
``_ts`` breaks the tie between entries from different ranges after a split).

The rewrite goes to a temporary file in the same directory that replaces the original atomically,
so a crash leaves either the raw file or the deduplicated one, and running it again is harmless.
Memory: one small key and an index per document, never the documents themselves.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.partition_keys import partition_key_values
from asyncmig.core.files.fsutil import fsync_dir
from asyncmig.core.files.jsonl import JsonlGzReader, JsonlGzWriter

__all__ = ["Deduplicated", "keep_newest"]

_PAGE = 500


@dataclass(frozen=True, slots=True)
class Deduplicated:
    """What :func:`keep_newest` found: documents kept, and older versions dropped."""

    kept: int
    dropped: int


def _key(document: Any, definition: Mapping[str, Any]) -> tuple[str, str]:
    values = partition_key_values(dict(definition), document) if isinstance(document, dict) else None
    doc_id = document.get("id") if isinstance(document, dict) else None
    return jsoncodec.canonical(doc_id).decode(), jsoncodec.canonical(values).decode()


def _timestamp(document: Any) -> int:
    stamp = document.get("_ts") if isinstance(document, dict) else None
    return stamp if isinstance(stamp, int) else 0


def keep_newest(path: Path, partition_key: Mapping[str, Any]) -> Deduplicated:
    """Rewrite ``path`` so that each document appears once, as its newest version (blocking I/O).

    A file without repeated documents is left untouched.

    :param partition_key: the container's partition key definition (``paths``, ``kind``).
    :raises BackupCorrupt: when the file is missing or damaged.
    """
    newest: dict[tuple[str, str], tuple[int, int]] = {}  # key -> (_ts, index) of the newest entry
    total = 0
    with JsonlGzReader(path) as reader:
        for index, document in enumerate(reader):
            total += 1
            key = _key(document, partition_key)
            seen = newest.get(key)
            stamp = _timestamp(document)
            if seen is None or stamp >= seen[0]:
                newest[key] = (stamp, index)
    if len(newest) == total:
        return Deduplicated(kept=total, dropped=0)
    keep = sorted(index for _, index in newest.values())
    temporary = path.with_name(f".{path.name}.dedupe.tmp")
    try:
        with JsonlGzReader(path) as reader, JsonlGzWriter.open(temporary) as writer:
            wanted = iter(keep)
            next_index = next(wanted, None)
            page: list[Any] = []
            for index, document in enumerate(reader):
                if index != next_index:
                    continue
                page.append(document)
                next_index = next(wanted, None)
                if len(page) == _PAGE:
                    writer.write(page)
                    page = []
            writer.write(page)
        os.replace(temporary, path)  # the writer's close committed (fsynced) the new file
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    fsync_dir(path.parent)
    return Deduplicated(kept=len(keep), dropped=total - len(keep))
