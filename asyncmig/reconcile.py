"""``asyncmig reconcile``: remove from a target the documents whose source document is gone.

For accounts without the all-versions-and-deletes change feed, where a copy (even ``--follow``)
never sees deletes. For identity copies: a target document matches the source document with the
same id and partition key value (read with the *target's* partition key paths on both sides).

Order matters on a source that is still written: the target's keys are read first, then every
source key is struck off, and each remaining candidate is read once more at the source right before
its delete. A document created at the source after the target was read is never a candidate, and
one re-created in between is left alone. Memory: one (id, partition key) pair per target document.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from azure.cosmos.aio import ContainerProxy
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from asyncmig.copy import ContainerRef
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.connect import cosmos_client, existing_container
from asyncmig.core.cosmos.partition_keys import sdk_partition_key
from asyncmig.core.cosmos.retry import classify, retrying

_Key = tuple[str, bytes]  # (id, the partition key values as canonical JSON)
_SAMPLE = 20


@dataclass
class ReconcileResult:
    target_documents: int = 0
    source_documents: int = 0
    orphans: int = 0  # target documents whose source document is gone
    deleted: int = 0
    kept: int = 0  # candidates that exist at the source again when checked before the delete
    sample: list[dict[str, Any]] = field(default_factory=list)  # the first orphans, for the report
    dry_run: bool = False

    def report(self, source: ContainerRef, target: ContainerRef) -> dict[str, Any]:
        return {
            "command": "reconcile", "status": "dry run" if self.dry_run else "succeeded",
            "source": source.describe(), "target": target.describe(),
            "documents": {"target": self.target_documents, "source": self.source_documents,
                          "orphans": self.orphans, "deleted": self.deleted, "kept": self.kept},
            "orphans_sample": self.sample,
        }


def _projection(paths: list[str]) -> str:
    """``SELECT c.id, c["a"]["b"] AS k0 ...``: the id and each partition key component."""
    parts = ["c.id"]
    for index, path in enumerate(paths):
        segments = "".join(f"[{jsoncodec.dumps(s).decode()}]" for s in path.strip("/").split("/"))
        parts.append(f"c{segments} AS k{index}")
    return "SELECT " + ", ".join(parts) + " FROM c"


async def _keys(container: ContainerProxy, paths: list[str]) -> AsyncIterator[tuple[_Key, list[Any]]]:
    """Every document's (id, partition key) of ``container``, feed range by feed range."""
    query = _projection(paths)
    async for feed_range in container.read_feed_ranges(force_refresh=True):
        async for row in container.query_items(query, feed_range=feed_range, max_item_count=1000):
            values = [row.get(f"k{i}", {}) for i in range(len(paths))]
            yield (str(row["id"]), jsoncodec.canonical(values)), values


async def _found(operation: Callable[[], Awaitable[Any]]) -> bool:
    """Run one point operation; False when it answered 404 (no such document)."""
    try:
        await operation()
    except CosmosResourceNotFoundError:
        return False
    return True


async def reconcile(
    source: ContainerRef, target: ContainerRef, *, dry_run: bool, insecure: bool = False
) -> ReconcileResult:
    """Delete (or with ``dry_run`` only count) the target documents whose source document is gone.

    :raises AsyncmigError: connection, resource and persistent-fault problems.
    """
    result = ReconcileResult(dry_run=dry_run)
    async with cosmos_client(source.endpoint, insecure=insecure) as source_client, \
            cosmos_client(target.endpoint, insecure=insecure) as target_client:
        source_container = await existing_container(source_client, source.database, source.container, role="source")
        target_container = await existing_container(target_client, target.database, target.container, role="target")
        try:
            paths = list((await target_container.read())["partitionKey"]["paths"])
            candidates: dict[_Key, list[Any]] = {}
            async for key, values in _keys(target_container, paths):
                candidates[key] = values
            result.target_documents = len(candidates)
            async for key, _ in _keys(source_container, paths):
                result.source_documents += 1
                candidates.pop(key, None)
        except Exception as exc:  # noqa: BLE001 - classified into an asyncmig error
            raise classify(exc).as_error(f"listing the ids of {source.container} and {target.container}") from exc
        result.orphans = len(candidates)
        for (doc_id, _), values in candidates.items():
            if len(result.sample) < _SAMPLE:
                result.sample.append({"id": doc_id, "partition_key": values})
            if dry_run:
                continue
            await _delete_orphan(source_container, target_container, doc_id, sdk_partition_key(values), result)
    return result


async def _delete_orphan(
    source: ContainerProxy, target: ContainerProxy, doc_id: str, key: Any, result: ReconcileResult
) -> None:
    """Delete one orphan unless its source document exists again (checked right before)."""
    if await retrying(lambda: _found(lambda: source.read_item(doc_id, partition_key=key)),
                      what=f"reading {doc_id!r} at the source"):
        result.kept += 1
        return
    # A 404 here: already gone, which is what was wanted.
    await retrying(lambda: _found(lambda: target.delete_item(doc_id, partition_key=key)),
                   what=f"deleting {doc_id!r} from the target")
    result.deleted += 1
