"""Rolling ``users`` back without destroying newer data: remove the migration's additions only.

The migration enriches ``users`` in place: it adds ``user_id``, ``subscription_tier`` and
``profile_version`` where a document lacks them and changes nothing else. The original rollback
upserted every backed-up body over the live container, which reverted every edit the application
made since the backup and brought deleted users back. Here each current document is compared with
its backed-up body and:

* equal to the backup, or already without any added field: nothing to do;
* written after the migration's mark (:mod:`asyncmig.phases.marks`): reported, left as it is;
* not in the backup (created after it): reported, left as it is (which of its fields the migration
  added cannot be known);
* otherwise the added fields the backup lacks are removed, by a replace conditional on the
  document's ``_etag``, so a write the application makes meanwhile wins and is reported instead.

A backed-up user that no longer exists was deleted after the backup: reported, not brought back.
Memory: the backup is indexed by key with a digest and the field names per document, never bodies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.cosmos.aio import ContainerProxy
from azure.cosmos.exceptions import CosmosAccessConditionFailedError, CosmosResourceNotFoundError

from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.partition_keys import partition_key_values
from asyncmig.core.cosmos.retry import retrying
from asyncmig.core.cosmos.source import CosmosSource
from asyncmig.core.digest import document_digest
from asyncmig.core.engine.transform import Document, strip_system
from asyncmig.core.files.jsonl import AsyncJsonlGzReader
from asyncmig.vimarsh.transforms import USER_ADDED_FIELDS, transform_user

__all__ = ["UsersRevert", "revert_users"]

_Key = tuple[str, str]
_SAMPLE = 5


@dataclass(frozen=True, slots=True)
class _Backed:
    fields: frozenset[str]
    digest: bytes


@dataclass
class UsersRevert:
    """What the users rollback did, by outcome; ``*_ids`` name the first few of each."""

    reverted: int = 0
    as_backed_up: int = 0
    changed_between_backup_and_migration: int = 0
    kept_changed_after_migration: list[str] = field(default_factory=list)
    kept_not_in_backup: list[str] = field(default_factory=list)
    deleted_since_backup: list[str] = field(default_factory=list)
    mark_recorded: bool = True

    def to_json(self) -> dict[str, Any]:
        def sample(ids: list[str]) -> dict[str, Any]:
            return {"count": len(ids), "first": sorted(ids)[:_SAMPLE]}

        return {
            "reverted": self.reverted,
            "as_backed_up": self.as_backed_up,
            "changed_between_backup_and_migration": self.changed_between_backup_and_migration,
            "kept_changed_after_migration": sample(self.kept_changed_after_migration),
            "kept_not_in_backup": sample(self.kept_not_in_backup),
            "deleted_since_backup": sample(self.deleted_since_backup),
            "mark_recorded": self.mark_recorded,
        }


def _key(document: Document, definition: Mapping[str, Any]) -> _Key:
    values = partition_key_values(dict(definition), document)
    return str(document.get("id")), jsoncodec.canonical(values).decode()


async def _index_backup(path: Path, definition: Mapping[str, Any]) -> dict[_Key, _Backed]:
    index: dict[_Key, _Backed] = {}
    async with await AsyncJsonlGzReader.open(path) as reader:
        async for page in reader.pages(500):
            for document in page:
                body = strip_system(document)
                index[_key(body, definition)] = _Backed(frozenset(body), document_digest(body))
    return index


async def _replace_if_unchanged(container: ContainerProxy, current: Document, body: Document) -> bool:
    """Replace ``current`` by ``body`` unless it changed since it was read; False when it did."""
    async def replace() -> bool:
        try:
            await container.replace_item(current["id"], body, etag=current["_etag"],
                                         match_condition=MatchConditions.IfNotModified)
        except (CosmosAccessConditionFailedError, CosmosResourceNotFoundError):
            return False  # written or deleted meanwhile: the newer data wins
        return True

    return await retrying(replace, what=f"rolling back users document {current['id']!r}")


async def revert_users(
    container: ContainerProxy,
    backup_file: Path,
    definition: Mapping[str, Any],
    changed_after: list[Document] | None,
) -> UsersRevert:
    """Remove from each ``users`` document the fields the migration added that its backed-up body
    lacks (see the module docstring for what is left alone).

    :param changed_after: documents written after the migration's mark; None when no mark was
        recorded, and then a document is treated as changed after the migration when it is not
        exactly the migration's result (backup body plus additions).
    :raises BackupCorrupt: when the backup file is unreadable.
    """
    backed_up = await _index_backup(backup_file, definition)
    changed = None if changed_after is None else {_key(doc, definition) for doc in changed_after}
    outcome = UsersRevert(mark_recorded=changed is not None)
    seen: set[_Key] = set()
    source = CosmosSource(container, what=container.id, snapshot=True)
    for feed_range in (await source.partitions()).values():
        async for page in source.pages(feed_range, None):
            for current in page.documents:
                key = _key(current, definition)
                seen.add(key)
                await _revert_one(container, current, key, backed_up.get(key), changed, outcome)
    outcome.deleted_since_backup = [key[0] for key in backed_up if key not in seen]
    return outcome


async def _revert_one(
    container: ContainerProxy, current: Document, key: _Key, backed: _Backed | None,
    changed: set[_Key] | None, outcome: UsersRevert,
) -> None:
    body = strip_system(current)
    if backed is None:
        outcome.kept_not_in_backup.append(key[0])
        return
    added = [name for name in USER_ADDED_FIELDS if name in body and name not in backed.fields]
    if document_digest(body) == backed.digest or not added:
        outcome.as_backed_up += 1
        return
    if changed is not None and key in changed:
        outcome.kept_changed_after_migration.append(key[0])
        return
    reverted = {name: value for name, value in body.items() if name not in added}
    if changed is None and not _is_migration_result(body, reverted, added):
        outcome.kept_changed_after_migration.append(key[0])
        return
    if not await _replace_if_unchanged(container, current, reverted):
        outcome.kept_changed_after_migration.append(key[0])
        return
    outcome.reverted += 1
    if document_digest(reverted) != backed.digest:
        outcome.changed_between_backup_and_migration += 1


def _is_migration_result(body: Document, reverted: Document, added: list[str]) -> bool:
    """Without a mark: the document is what the users transform makes of ``reverted``."""
    [(_, migrated)] = transform_user(reverted)
    return jsoncodec.canonical(migrated) == jsoncodec.canonical(body) and bool(added)
