"""Durable emulator state in SQLite: databases, containers, offers, physical ranges and documents.

Everything runs on the server's single event-loop thread, so requests never interleave inside a
transaction; WAL mode with ``synchronous=NORMAL`` keeps a committed write across a process kill.
Documents are stored as the exact JSON bytes returned to clients (system properties included), so
reads and ``SELECT *`` pages are served without re-encoding.

Databases, containers, offers and online ranges are also cached in memory (the process owns the
file, and every change to them goes through this class, which drops the cache): re-reading and
re-parsing them from SQLite on every document request was a quarter of the server's time per upsert
(profiled with py-spy under bench/emulator_capacity.py). Cached objects are shared: treat them as
read-only.
"""

from __future__ import annotations

import base64
import functools
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.partition_keys import is_hash_v1
from asyncmig.emulator.partitioning import PhysicalRange, initial_boundaries, split_point

_SCHEMA = """
CREATE TABLE IF NOT EXISTS databases (id TEXT PRIMARY KEY, rid TEXT NOT NULL UNIQUE, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS containers (
    db TEXT NOT NULL, id TEXT NOT NULL, rid TEXT NOT NULL UNIQUE, body BLOB NOT NULL,
    lsn INTEGER NOT NULL DEFAULT 0, routing_version INTEGER NOT NULL DEFAULT 1, next_range INTEGER NOT NULL,
    PRIMARY KEY (db, id));
CREATE TABLE IF NOT EXISTS offers (rid TEXT PRIMARY KEY, resource_rid TEXT NOT NULL UNIQUE, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS ranges (
    coll TEXT NOT NULL, id TEXT NOT NULL, min TEXT NOT NULL, max TEXT NOT NULL, parents TEXT NOT NULL,
    online INTEGER NOT NULL, PRIMARY KEY (coll, id));
CREATE TABLE IF NOT EXISTS docs (
    coll TEXT NOT NULL, epk TEXT NOT NULL, id TEXT NOT NULL, lsn INTEGER NOT NULL, ts INTEGER NOT NULL,
    body BLOB NOT NULL, PRIMARY KEY (coll, epk, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS docs_by_lsn ON docs (coll, lsn);
CREATE TABLE IF NOT EXISTS versions (
    coll TEXT NOT NULL, lsn INTEGER NOT NULL, epk TEXT NOT NULL, id TEXT NOT NULL, op TEXT NOT NULL,
    previous_lsn INTEGER, ts INTEGER NOT NULL, body BLOB);
CREATE INDEX IF NOT EXISTS versions_by_lsn ON versions (coll, lsn);
"""


def _rid(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").replace("/", "-")


def new_rid(parent_rid: str | None, size: int) -> str:
    """A resource id that embeds its parent's, as real RIDs do (db 4 bytes, container 8, doc 16)."""
    parent = _rid_bytes(parent_rid) if parent_rid else b""
    return _rid(parent + os.urandom(size - len(parent)))


@functools.lru_cache(maxsize=4096)
def _rid_bytes(rid: str) -> bytes:
    """A parent's RID decoded once, not once per document written under it."""
    return base64.b64decode(rid.replace("-", "/"))


@dataclass(slots=True)
class ContainerRecord:
    db: str
    id: str
    rid: str
    body: dict[str, Any]
    lsn: int                # as loaded; the live value is Store.current_lsn()
    routing_version: int

    @property
    def partition_key(self) -> dict[str, Any]:
        return self.body["partitionKey"]  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class StoredDoc:
    epk: str
    id: str
    lsn: int
    body: bytes


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One entry of the versions log; a delete's ``body`` is the version it removed."""

    lsn: int
    epk: str
    id: str
    operation: str          # "create", "replace" or "delete"
    previous_lsn: int | None
    ts: int
    body: bytes


class Store:
    """SQLite-backed state; ``path=None`` keeps everything in memory for throwaway runs."""

    def __init__(self, path: Path | None) -> None:
        target = ":memory:" if path is None else str(path)
        self.db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        # 16 KB pages (new files only; it must precede WAL): a 15 KB vector document then needs one
        # overflow page instead of four, and a 100-document batch writes ~35 % faster to disk.
        self.db.execute("PRAGMA page_size=16384")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._upgrade_versions_log()
        self._databases: dict[str, dict[str, Any]] = {}
        self._containers: dict[tuple[str, str], ContainerRecord] = {}
        self._offers: dict[str, dict[str, Any] | None] = {}
        self._ranges: dict[str, list[PhysicalRange]] = {}

    def _upgrade_versions_log(self) -> None:
        """Rebuild a versions log from an older data folder as the current one: no key (one LSN may
        have several entries: a transactional batch), and a body that may be NULL (the version is
        still the current document, whose body is not stored twice)."""
        (old_shape,) = self.db.execute(
            "SELECT count(*) FROM pragma_table_info('versions') WHERE pk > 0 OR (name = 'body' AND \"notnull\")"
        ).fetchone()
        if old_shape == 0:
            return
        self.db.executescript(
            "BEGIN; DROP INDEX IF EXISTS versions_by_lsn; ALTER TABLE versions RENAME TO versions_keyed_by_lsn;"
            + _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS versions"):]
            + "INSERT INTO versions SELECT * FROM versions_keyed_by_lsn ORDER BY coll, lsn;"
            + "DROP TABLE versions_keyed_by_lsn; COMMIT;")

    def _metadata_changed(self) -> None:
        """Drop every metadata cache; called by each method that changes a database, container,
        offer or range (rare, so precision is not worth the risk of a stale entry)."""
        self._databases.clear()
        self._containers.clear()
        self._offers.clear()
        self._ranges.clear()

    def close(self) -> None:
        self.db.close()

    def begin(self) -> None:
        self.db.execute("BEGIN")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        self.db.execute("ROLLBACK")

    # -- databases ---------------------------------------------------------------------------
    def list_databases(self) -> list[dict[str, Any]]:
        return [jsoncodec.loads(b) for (b,) in self.db.execute("SELECT body FROM databases ORDER BY rowid")]

    def get_database(self, name: str) -> dict[str, Any] | None:
        cached = self._databases.get(name)
        if cached is not None:
            return cached
        row = self.db.execute("SELECT body FROM databases WHERE id=?", (name,)).fetchone()
        if row is None:
            return None
        body: dict[str, Any] = jsoncodec.loads(row[0])
        self._databases[name] = body
        return body

    def database_name_by_rid(self, rid: str) -> str | None:
        row = self.db.execute("SELECT id FROM databases WHERE rid=?", (rid,)).fetchone()
        return str(row[0]) if row else None

    def create_database(self, name: str) -> dict[str, Any]:
        rid = new_rid(None, 4)
        body = {
            "id": name, "_rid": rid, "_self": f"dbs/{rid}/", "_etag": f'"{os.urandom(8).hex()}"',
            "_colls": "colls/", "_users": "users/", "_ts": int(time.time()),
        }
        self.db.execute("INSERT INTO databases VALUES (?,?,?)", (name, rid, jsoncodec.dumps(body)))
        self._metadata_changed()
        return body

    def delete_database(self, name: str) -> None:
        for (coll,) in self.db.execute("SELECT id FROM containers WHERE db=?", (name,)).fetchall():
            self.delete_container(name, coll)
        db = self.get_database(name)
        if db:
            self.db.execute("DELETE FROM offers WHERE resource_rid=?", (db["_rid"],))
        self.db.execute("DELETE FROM databases WHERE id=?", (name,))
        self._metadata_changed()

    # -- containers --------------------------------------------------------------------------
    def _container(self, row: tuple[Any, ...]) -> ContainerRecord:
        db, cid, rid, body, lsn, version = row
        return ContainerRecord(db, cid, rid, jsoncodec.loads(body), lsn, version)

    def list_containers(self, db: str) -> list[ContainerRecord]:
        rows = self.db.execute(
            "SELECT db,id,rid,body,lsn,routing_version FROM containers WHERE db=? ORDER BY rowid", (db,)
        )
        return [self._container(r) for r in rows]

    def get_container(self, db: str, cid: str) -> ContainerRecord | None:
        cached = self._containers.get((db, cid))
        if cached is not None:
            return cached
        row = self.db.execute(
            "SELECT db,id,rid,body,lsn,routing_version FROM containers WHERE db=? AND id=?", (db, cid)
        ).fetchone()
        if row is None:
            return None
        record = self._containers[(db, cid)] = self._container(row)
        return record

    def container_by_rid(self, rid: str) -> ContainerRecord | None:
        row = self.db.execute("SELECT db, id FROM containers WHERE rid=?", (rid,)).fetchone()
        return self.get_container(row[0], row[1]) if row else None

    def create_container(self, db_rid: str, db: str, body: dict[str, Any], partitions: int) -> ContainerRecord:
        rid = new_rid(db_rid, 8)
        body = {
            **body, "_rid": rid, "_self": f"dbs/{db_rid}/colls/{rid}/", "_etag": f'"{os.urandom(8).hex()}"',
            "_docs": "docs/", "_sprocs": "sprocs/", "_triggers": "triggers/", "_udfs": "udfs/",
            "_conflicts": "conflicts/", "_ts": int(time.time()),
        }
        bounds = initial_boundaries(partitions, hash_v1=is_hash_v1(body["partitionKey"]))
        self.db.execute(
            "INSERT INTO containers (db,id,rid,body,next_range) VALUES (?,?,?,?,?)",
            (db, body["id"], rid, jsoncodec.dumps(body), len(bounds)),
        )
        self.db.executemany(
            "INSERT INTO ranges VALUES (?,?,?,?,'[]',1)",
            [(rid, str(i), lo, hi) for i, (lo, hi) in enumerate(bounds)],
        )
        self._metadata_changed()
        return ContainerRecord(db, body["id"], rid, body, 0, 1)

    def replace_container(self, record: ContainerRecord, body: dict[str, Any]) -> dict[str, Any]:
        system = {k: v for k, v in record.body.items() if k.startswith("_")}
        merged = {**body, **system, "_etag": f'"{os.urandom(8).hex()}"', "_ts": int(time.time())}
        self.db.execute("UPDATE containers SET body=? WHERE rid=?", (jsoncodec.dumps(merged), record.rid))
        self._metadata_changed()
        return merged

    def delete_container(self, db: str, cid: str) -> None:
        record = self.get_container(db, cid)
        if record is None:
            return
        for table, column in (("docs", "coll"), ("versions", "coll"), ("ranges", "coll"), ("offers", "resource_rid")):
            self.db.execute(f"DELETE FROM {table} WHERE {column}=?", (record.rid,))
        self.db.execute("DELETE FROM containers WHERE rid=?", (record.rid,))
        self._metadata_changed()

    def next_lsn(self, coll: str) -> int:
        (lsn,) = self.db.execute(
            "UPDATE containers SET lsn=lsn+1 WHERE rid=? RETURNING lsn", (coll,)
        ).fetchone()
        return int(lsn)

    def current_lsn(self, coll: str) -> int:
        (lsn,) = self.db.execute("SELECT lsn FROM containers WHERE rid=?", (coll,)).fetchone()
        return int(lsn)

    # -- offers ------------------------------------------------------------------------------
    def list_offers(self) -> list[dict[str, Any]]:
        return [jsoncodec.loads(b) for (b,) in self.db.execute("SELECT body FROM offers ORDER BY rowid")]

    def offer_for(self, resource_rid: str) -> dict[str, Any] | None:
        if resource_rid in self._offers:
            return self._offers[resource_rid]
        row = self.db.execute("SELECT body FROM offers WHERE resource_rid=?", (resource_rid,)).fetchone()
        offer = self._offers[resource_rid] = jsoncodec.loads(row[0]) if row else None
        return offer

    def get_offer(self, rid: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT body FROM offers WHERE lower(rid)=lower(?)", (rid,)).fetchone()
        return jsoncodec.loads(row[0]) if row else None

    def put_offer(self, resource_rid: str, resource_self: str, content: dict[str, Any]) -> dict[str, Any]:
        existing = self.offer_for(resource_rid)
        rid = existing["_rid"] if existing else _rid(os.urandom(3))
        body = {
            "id": rid, "_rid": rid, "_self": f"offers/{rid}/", "resource": resource_self,
            "offerResourceId": resource_rid, "offerType": "Invalid", "offerVersion": "V2",
            "content": content, "_etag": f'"{os.urandom(8).hex()}"', "_ts": int(time.time()),
        }
        self.db.execute(
            "INSERT OR REPLACE INTO offers VALUES (?,?,?)", (rid, resource_rid, jsoncodec.dumps(body))
        )
        self._metadata_changed()
        return body

    # -- physical ranges ---------------------------------------------------------------------
    def ranges(self, coll: str, *, online_only: bool = True) -> list[PhysicalRange]:
        if online_only and coll in self._ranges:
            return self._ranges[coll]
        query = "SELECT id,min,max,parents FROM ranges WHERE coll=?" + (" AND online=1" if online_only else "")
        rows = self.db.execute(query + " ORDER BY min", (coll,))
        found = [PhysicalRange(i, lo, hi, tuple(jsoncodec.loads(p))) for i, lo, hi, p in rows]
        if online_only:
            self._ranges[coll] = found
        return found

    def range_state(self, coll: str, range_id: str) -> PhysicalRange | None | bool:
        """The online range, ``False`` when it existed but was split away, ``None`` when unknown."""
        row = self.db.execute(
            "SELECT id,min,max,parents,online FROM ranges WHERE coll=? AND id=?", (coll, range_id)
        ).fetchone()
        if row is None:
            return None
        if not row[4]:
            return False
        return PhysicalRange(row[0], row[1], row[2], tuple(jsoncodec.loads(row[3])))

    def split_range(self, coll: str, range_id: str) -> tuple[PhysicalRange, PhysicalRange]:
        parent = self.range_state(coll, range_id)
        if not isinstance(parent, PhysicalRange):
            raise KeyError(f"range {range_id} is not online")
        (body,) = self.db.execute("SELECT body FROM containers WHERE rid=?", (coll,)).fetchone()
        middle = split_point(parent.min, parent.max, hash_v1=is_hash_v1(jsoncodec.loads(body)["partitionKey"]))
        (next_id,) = self.db.execute(
            "UPDATE containers SET next_range=next_range+2, routing_version=routing_version+1 "
            "WHERE rid=? RETURNING next_range-2", (coll,)
        ).fetchone()
        parents = jsoncodec.dumps([*parent.parents, parent.id]).decode()
        left = PhysicalRange(str(next_id), parent.min, middle, (*parent.parents, parent.id))
        right = PhysicalRange(str(next_id + 1), middle, parent.max, (*parent.parents, parent.id))
        self.db.execute("UPDATE ranges SET online=0 WHERE coll=? AND id=?", (coll, range_id))
        self.db.executemany(
            "INSERT INTO ranges VALUES (?,?,?,?,?,1)",
            [(coll, r.id, r.min, r.max, parents) for r in (left, right)],
        )
        self._metadata_changed()
        return left, right

    # -- documents ---------------------------------------------------------------------------
    def get_doc(self, coll: str, epk: str, doc_id: str) -> StoredDoc | None:
        row = self.db.execute(
            "SELECT lsn, body FROM docs WHERE coll=? AND epk=? AND id=?", (coll, epk, doc_id)
        ).fetchone()
        return StoredDoc(epk, doc_id, row[0], row[1]) if row else None

    def get_docs(self, coll: str, epk: str, doc_ids: list[str]) -> dict[str, StoredDoc]:
        """The stored documents among ``doc_ids`` in one logical partition, in one query."""
        found: dict[str, StoredDoc] = {}
        for start in range(0, len(doc_ids), 500):  # well under SQLite's bound-parameter limit
            chunk = doc_ids[start:start + 500]
            rows = self.db.execute(
                f"SELECT id, lsn, body FROM docs WHERE coll=? AND epk=? AND id IN ({','.join('?' * len(chunk))})",
                (coll, epk, *chunk))
            found.update((i, StoredDoc(epk, i, lsn, body)) for i, lsn, body in rows)
        return found

    def find_docs_by_rid(self, coll: str, epk: str, rid: str) -> Iterator[tuple[str, bytes]]:
        """(id, body) of the documents of one logical partition whose bytes hold ``"_rid":"<rid>"``
        (the caller checks the top-level ``_rid``; documents have no RID index)."""
        needle = f'"_rid":"{rid}"'.encode()
        yield from self.db.execute("SELECT id, body FROM docs WHERE coll=? AND epk=? AND instr(body, ?) > 0",
                                   (coll, epk, needle))

    def put_doc(self, coll: str, epk: str, doc_id: str, lsn: int, ts: int, body: bytes) -> None:
        """Store the latest version and append it to the versions log (a create, or a replace of the
        version it supersedes), in the caller's transaction.

        The log entry of the current version has no body of its own (NULL: read it from ``docs``);
        the superseded version's body is copied into its entry first, so history stays complete
        while a fresh document is written once, not twice.
        """
        self._keep_superseded_body(coll, epk, doc_id)
        self.db.execute(
            "INSERT INTO versions SELECT ?1,?2,?3,?4,CASE WHEN p.lsn IS NULL THEN 'create' ELSE 'replace' END,"
            "p.lsn,?5,NULL FROM (SELECT (SELECT lsn FROM docs WHERE coll=?1 AND epk=?3 AND id=?4) AS lsn) AS p",
            (coll, lsn, epk, doc_id, ts),
        )
        self.db.execute("INSERT OR REPLACE INTO docs VALUES (?,?,?,?,?,?)", (coll, epk, doc_id, lsn, ts, body))

    def _keep_superseded_body(self, coll: str, epk: str, doc_id: str) -> None:
        """Copy the current document's body into its versions entry before it is replaced or deleted."""
        # (At most one entry per document has no body: its current version, at the document's LSN.)
        self.db.execute(
            "UPDATE versions SET body = (SELECT body FROM docs WHERE coll=?1 AND epk=?2 AND id=?3) "
            "WHERE coll=?1 AND lsn=(SELECT lsn FROM docs WHERE coll=?1 AND epk=?2 AND id=?3) AND epk=?2 AND id=?3 "
            "AND body IS NULL",
            (coll, epk, doc_id),
        )

    def delete_doc(self, coll: str, epk: str, doc_id: str, batch_lsn: int | None = None) -> int:
        """Delete a document; logs the delete under a new LSN (or a transactional batch's), which it
        returns (0: there was none)."""
        return self._delete_where(coll, "epk=? AND id=?", (epk, doc_id), batch_lsn)

    def delete_partition(self, coll: str, epk: str) -> int:
        """Delete every document of a logical partition, each logged as its own delete; returns how many."""
        before = self.current_lsn(coll)
        last = self._delete_where(coll, "epk=?", (epk,))
        return last - before if last else 0  # each delete took the next LSN

    def _delete_where(self, coll: str, condition: str, args: tuple[str, ...], batch_lsn: int | None = None) -> int:
        """Log and delete the matching documents atomically; returns the last delete's LSN (0: none)."""
        own = not self.db.in_transaction
        if own:
            self.begin()
        try:
            rows = self.db.execute(
                f"SELECT epk,id,lsn,body FROM docs WHERE coll=? AND {condition}", (coll, *args)
            ).fetchall()
            ts = int(time.time())
            lsn = 0
            for epk, doc_id, previous_lsn, body in rows:
                lsn = self.next_lsn(coll) if batch_lsn is None else batch_lsn
                self._keep_superseded_body(coll, epk, doc_id)
                self.db.execute(
                    "INSERT INTO versions VALUES (?,?,?,?,'delete',?,?,?)",
                    (coll, lsn, epk, doc_id, previous_lsn, ts, body),
                )
            self.db.execute(f"DELETE FROM docs WHERE coll=? AND {condition}", (coll, *args))
        except BaseException:
            if own:
                self.rollback()
            raise
        if own:
            self.commit()
        return lsn

    def scan(
        self, coll: str, low: str, high: str, after: tuple[str, str] | None = None
    ) -> Iterator[StoredDoc]:
        """Documents with ``low <= epk < high`` in (epk, id) order, resuming strictly after ``after``."""
        if after is None:
            rows = self.db.execute(
                "SELECT epk,id,lsn,body FROM docs WHERE coll=? AND epk>=? AND epk<? ORDER BY epk,id",
                (coll, low, high),
            )
        else:
            # The lower bound is raised to the continuation's EPK by hand: SQLite seeks the primary key
            # on ``epk>=?`` and only filters with the row value, so with ``low`` it walked the range
            # from its start on every page (21 ms instead of 0.3 ms per page 150 pages in; paging a
            # range was quadratic).
            rows = self.db.execute(
                "SELECT epk,id,lsn,body FROM docs WHERE coll=? AND epk>=? AND epk<? AND (epk,id)>(?,?) "
                "ORDER BY epk,id",
                (coll, max(low, after[0]), high, *after),
            )
        for epk, doc_id, lsn, body in rows:
            yield StoredDoc(epk, doc_id, lsn, body)

    def changes(
        self, coll: str, low: str, high: str, after_lsn: int, since_ts: int | None, limit: int
    ) -> list[StoredDoc]:
        """Latest versions changed after ``after_lsn`` (and at or after ``since_ts``), in LSN order.

        A page never ends inside one LSN: the writes of a transactional batch share theirs, and a
        continuation (the last LSN) would otherwise skip the rest of the batch.
        """
        query = ("SELECT epk,id,lsn,body FROM docs WHERE coll=? AND lsn>? AND ts>=? AND epk>=? AND epk<? "
                 "ORDER BY lsn LIMIT ?")
        found = [StoredDoc(epk, i, lsn, body)
                 for epk, i, lsn, body in self.db.execute(query, (coll, after_lsn, since_ts or 0, low, high, limit))]
        if len(found) == limit:
            last = found[-1].lsn
            seen = {(d.epk, d.id) for d in found if d.lsn == last}
            rest = self.db.execute(
                "SELECT epk,id,lsn,body FROM docs WHERE coll=? AND lsn=? AND ts>=? AND epk>=? AND epk<?",
                (coll, last, since_ts or 0, low, high))
            found += [StoredDoc(epk, i, lsn, body) for epk, i, lsn, body in rest if (epk, i) not in seen]
        return found

    def usage(self, coll: str) -> tuple[int, int]:
        """(documents, bytes of their stored JSON) in a container."""
        count, size = self.db.execute("SELECT count(*), coalesce(sum(length(body)), 0) FROM docs WHERE coll=?",
                                      (coll,)).fetchone()
        return int(count), int(size)

    def versions(self, coll: str, low: str, high: str, after_lsn: int, limit: int) -> list[StoredVersion]:
        """Every create, replace and delete after ``after_lsn`` with ``low <= epk < high``, in LSN order;
        like :meth:`changes`, a page never ends inside one (batch) LSN."""
        columns = (
            "SELECT v.rowid,v.lsn,v.epk,v.id,v.op,v.previous_lsn,v.ts,coalesce(v.body,d.body) FROM versions v "
            "LEFT JOIN docs d ON v.body IS NULL AND d.coll=v.coll AND d.epk=v.epk AND d.id=v.id "
            "WHERE v.coll=? AND v.epk>=? AND v.epk<? ")
        rows = self.db.execute(columns + "AND v.lsn>? ORDER BY v.lsn, v.rowid LIMIT ?",
                               (coll, low, high, after_lsn, limit)).fetchall()
        if len(rows) == limit:  # the rest of the last LSN, in the order its operations ran
            rows += self.db.execute(columns + "AND v.lsn=? AND v.rowid>? ORDER BY v.rowid",
                                    (coll, low, high, rows[-1][1], rows[-1][0])).fetchall()
        return [StoredVersion(*row[1:]) for row in rows]

    def count_writes(self, coll: str) -> int:
        """Creates and replaces the container took, from its versions log."""
        (n,) = self.db.execute("SELECT count(*) FROM versions WHERE coll=? AND op!='delete'", (coll,)).fetchone()
        return int(n)

    def count_docs(self, coll: str) -> int:
        (n,) = self.db.execute("SELECT count(*) FROM docs WHERE coll=?", (coll,)).fetchone()
        return int(n)
