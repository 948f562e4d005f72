"""The gallery of enrolled people in SQLite (sqlite-utils, migrations, a version that changes on every write)."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from edge.errors import GalleryError
from edge.match import GalleryIndex
from edge.private import private_file

log = logging.getLogger("edge.gallery.store")

migrations = Migrations("edge.gallery.store")

PERSON_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")

BUSY_TIMEOUT_S = 10.0
"""How long one statement waits for another connection's write lock (the event store shares the file)."""
WRITE_ATTEMPTS = 3
"""A write whose lock is still busy after BUSY_TIMEOUT_S is tried again, this many times in all."""


@migrations()
def m001_gallery(db: Database) -> None:
    db["people"].create(  # type: ignore[union-attr]
        {"person_id": str, "name": str, "metadata": str, "created_at": str, "updated_at": str}, pk="person_id"
    )
    db["embeddings"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "person_id": str,
            "model_id": str,
            "dim": int,
            "vector": bytes,
            "quality": float,
            "source": str,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("person_id", "people", "person_id")],
    )
    db["embeddings"].create_index(["model_id", "person_id"])  # type: ignore[union-attr]
    db["gallery_state"].create({"id": int, "version": int, "updated_at": str}, pk="id")  # type: ignore[union-attr]
    db["gallery_state"].insert({"id": 1, "version": 0, "updated_at": _now()})  # type: ignore[union-attr]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class NewEmbedding:
    """An embedding about to be stored: vector (unit length), model id, quality 0..1, and where it came from."""

    vector: np.ndarray
    model_id: str
    quality: float
    source: str


@dataclass(frozen=True)
class PersonRecord:
    """A person to be written with their embeddings (enrollment, import, sync)."""

    person_id: str
    name: str
    embeddings: Tuple[NewEmbedding, ...]
    metadata: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Person:
    person_id: str
    name: str
    metadata: Dict[str, Any] = field(default_factory=dict)
    embeddings: int = 0


def check_person_id(person_id: str) -> str:
    if not isinstance(person_id, str) or not PERSON_ID_PATTERN.match(person_id):
        raise GalleryError(
            f"invalid person id {person_id!r}: use 1-128 letters, digits, '_', '.', '@' or '-', starting with a "
            "letter or digit"
        )
    return person_id


class Gallery:
    """People and their embeddings in one SQLite file. Every write bumps the gallery version in one transaction."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                self.db = self._open(path)
                break
            except (sqlite3.DatabaseError, OSError) as exc:
                if attempt < WRITE_ATTEMPTS and _is_busy(exc):
                    log.warning("%s: the database is busy while opening the gallery; trying again", path)
                    continue
                raise GalleryError(f"{path}: cannot open the gallery database ({exc})") from exc
        self._index: Optional[Tuple[str, GalleryIndex]] = None

    def _open(self, path: Union[str, Path]) -> Database:
        """Autocommit connection (transactions are explicit, BEGIN IMMEDIATE), WAL, migrations applied."""
        if str(path) != ":memory:":
            private_file(self.path)
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            db = Database(conn)
            if str(path) != ":memory:":
                db.enable_wal()
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA secure_delete = ON")  # deleted rows are overwritten with zeros, not left in free pages
            check_not_newer(db, path)
            if migrations.pending(db):  # a current database opens without a write (also read-only)
                conn.execute("BEGIN IMMEDIATE")  # two processes creating the file at once: one migrates, one waits
                try:
                    migrations.apply(db)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.rollback()
                    raise
        except BaseException:
            conn.close()
            raise
        return db

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # reading -------------------------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        row = self.db.execute("SELECT version FROM gallery_state WHERE id = 1").fetchone()
        return int(row[0])

    def people(self) -> List[Person]:
        rows = self.db.execute(
            "SELECT p.person_id, p.name, p.metadata, COUNT(e.id) FROM people p "
            "LEFT JOIN embeddings e ON e.person_id = p.person_id GROUP BY p.person_id ORDER BY p.person_id"
        ).fetchall()
        return [Person(r[0], r[1], json.loads(r[2] or "{}"), int(r[3])) for r in rows]

    def person(self, person_id: str) -> Person:
        rows = [p for p in self.people() if p.person_id == person_id]
        if not rows:
            raise GalleryError(f"no person with id {person_id!r} in the gallery")
        return rows[0]

    def embeddings_of(self, person_id: str) -> List[Dict[str, Any]]:
        self.person(person_id)
        rows = self.db.execute(
            "SELECT id, model_id, dim, vector, quality, source, created_at FROM embeddings WHERE person_id = ? "
            "ORDER BY id",
            [person_id],
        ).fetchall()
        return [
            {
                "id": r[0],
                "model_id": r[1],
                "vector": np.frombuffer(r[3], dtype=np.float32, count=r[2]).copy(),
                "quality": r[4],
                "source": r[5],
                "created_at": r[6],
            }
            for r in rows
        ]

    def index(self, model_id: str) -> GalleryIndex:
        """The matching index for one model, rebuilt only when the gallery version changed."""
        version = self.version
        if self._index and self._index[0] == model_id and self._index[1].version == version:
            return self._index[1]
        rows = self.db.execute(
            "SELECT person_id, dim, vector FROM embeddings WHERE model_id = ?", [model_id]
        ).fetchall()
        dims = {r[1] for r in rows}
        if len(dims) > 1:
            raise GalleryError(f"embeddings of model {model_id} have mixed sizes {sorted(dims)}")
        dim = dims.pop() if dims else 0
        vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        index = GalleryIndex([r[0] for r in rows], vectors, version=version)
        self._index = (model_id, index)
        return index

    # writing -------------------------------------------------------------------------------------------------
    @contextmanager
    def _writing(self, action: str) -> Iterator[None]:
        """One write transaction that takes the write lock up front (BEGIN IMMEDIATE: a deferred transaction that
        read first cannot wait for the lock and fails at once with `database is locked`). A lock still busy after
        the busy timeout is tried again; any SQLite failure becomes a GalleryError, and nothing is changed."""
        conn = self.db.conn
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if attempt == WRITE_ATTEMPTS or not _is_busy(exc):
                    raise GalleryError(f"{self.path}: {action} failed, nothing was changed ({exc})") from exc
                log.warning("%s: the database stayed busy for %g s; %s tried again", self.path, BUSY_TIMEOUT_S, action)
                time.sleep(0.1 * attempt)
        try:
            yield
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.rollback()
            if isinstance(exc, sqlite3.Error):
                raise GalleryError(f"{self.path}: {action} failed, nothing was changed ({exc})") from exc
            raise

    def _bump(self) -> None:
        self.db.execute("UPDATE gallery_state SET version = version + 1, updated_at = ? WHERE id = 1", [_now()])

    def put_person(
        self,
        person_id: str,
        name: str,
        embeddings: Sequence[NewEmbedding],
        metadata: Optional[Dict[str, Any]] = None,
        replace: bool = False,
    ) -> int:
        """Add a person (or add to / replace one) with their embeddings, all at once. Returns the new version."""
        with self._writing(f"storing person {person_id!r}"):
            self._write_person(person_id, name, embeddings, metadata, replace)
            self._bump()
        if replace:
            self._scrub_wal()
        return self.version

    def put_people(self, people: Sequence[PersonRecord], replace_all: bool = False) -> int:
        """Write many people in one transaction (an import); with `replace_all` the gallery becomes exactly them."""
        with self._writing(f"writing {len(people)} people"):
            if replace_all:
                self.db.execute("DELETE FROM embeddings")
                self.db.execute("DELETE FROM people")
            for rec in people:
                self._write_person(rec.person_id, rec.name, rec.embeddings, rec.metadata, replace=True)
            self._bump()
        self._scrub_wal()
        return self.version

    def _write_person(
        self,
        person_id: str,
        name: str,
        embeddings: Sequence[NewEmbedding],
        metadata: Optional[Dict[str, Any]],
        replace: bool,
    ) -> None:
        check_person_id(person_id)
        if not embeddings:
            raise GalleryError(f"person {person_id!r}: no embeddings to store; nothing was written")
        for emb in embeddings:
            vec = np.asarray(emb.vector, dtype=np.float32)
            if vec.ndim != 1 or not np.all(np.isfinite(vec)) or not 0.5 < float(np.linalg.norm(vec)) < 1.5:
                raise GalleryError(f"person {person_id!r}: an embedding is not a finite unit-length vector")
        now = _now()
        existing = self.db.execute("SELECT metadata FROM people WHERE person_id = ?", [person_id]).fetchone()
        if existing and replace:
            self.db.execute("DELETE FROM embeddings WHERE person_id = ?", [person_id])
        merged = dict(json.loads(existing[0] or "{}")) if existing and not replace else {}
        merged.update(metadata or {})
        meta_json = json.dumps(merged, ensure_ascii=False)
        if existing:
            self.db.execute(
                "UPDATE people SET name = ?, metadata = ?, updated_at = ? WHERE person_id = ?",
                [name, meta_json, now, person_id],
            )
        else:
            self.db.execute(
                "INSERT INTO people (person_id, name, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                [person_id, name, meta_json, now, now],
            )
        self.db.conn.executemany(
            "INSERT INTO embeddings (person_id, model_id, dim, vector, quality, source, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    person_id,
                    e.model_id,
                    int(np.asarray(e.vector).size),
                    np.asarray(e.vector, dtype=np.float32).tobytes(),
                    float(e.quality),
                    e.source,
                    now,
                )
                for e in embeddings
            ],
        )

    def remove_person(self, person_id: str) -> int:
        """Erase a person and every embedding of theirs. Returns the new version."""
        with self._writing(f"removing person {person_id!r}"):
            if not self.db.execute("SELECT 1 FROM people WHERE person_id = ?", [person_id]).fetchone():
                raise GalleryError(f"no person with id {person_id!r} in the gallery")
            self.db.execute("DELETE FROM embeddings WHERE person_id = ?", [person_id])
            self.db.execute("DELETE FROM people WHERE person_id = ?", [person_id])
            self._bump()
        self._scrub_wal()
        return self.version

    # the central's timetable (edge/timetable.py) ----------------------------------------------------------------
    def timetable_document(self) -> Optional[Dict[str, Any]]:
        """The timetable document the central sent (op `timetable`), or None: the box follows its YAML schedule."""
        try:
            row = self.db.execute("SELECT document FROM central_timetable WHERE id = 1").fetchone()
        except sqlite3.OperationalError:  # never sent one: the table is made by the first
            return None
        return json.loads(row[0]) if row and row[0] is not None else None

    def put_timetable(self, document: Optional[Dict[str, Any]]) -> int:
        """Store the central's timetable document (None: forget it, back to the YAML schedule); bumps the version,
        so the pipeline picks it up between two frames as it picks up new groups. The table is created here, not by
        a migration: a box rolled back to a release without timetables still opens its gallery."""
        with self._writing("storing the central's timetable"):
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS central_timetable "
                "(id INTEGER PRIMARY KEY, document TEXT, updated_at TEXT NOT NULL)"
            )
            self.db.execute(
                "INSERT OR REPLACE INTO central_timetable (id, document, updated_at) VALUES (1, ?, ?)",
                [json.dumps(document, sort_keys=True) if document is not None else None, _now()],
            )
            self._bump()
        return self.version

    def _scrub_wal(self) -> None:
        """After biometric data was deleted or replaced: copy the WAL into the database and empty it, so the old page
        images that still hold it are gone from disk too (secure_delete zeroes them in the database itself)."""
        if str(self.path) == ":memory:":
            return
        try:
            busy, _, _ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError as exc:  # the erasure itself is committed: a busy checkpoint must not fail it
            log.warning(
                "%s: the write-ahead log could not be emptied now (%s); it is at the next checkpoint", self.path, exc
            )
            return
        if busy:
            log.warning(
                "%s: a reader kept the write-ahead log busy; removed data leaves it at the next checkpoint", self.path
            )

    def iter_export(self) -> Iterator[Dict[str, Any]]:
        for person in self.people():
            yield {
                "person_id": person.person_id,
                "name": person.name,
                "metadata": person.metadata,
                "embeddings": [
                    {
                        "model_id": e["model_id"],
                        "vector": [round(float(x), 7) for x in e["vector"]],
                        "quality": e["quality"],
                        "source": e["source"],
                    }
                    for e in self.embeddings_of(person.person_id)
                ],
            }


def check_not_newer(db: Database, path: Union[str, Path]) -> None:
    """GalleryError when the file holds gallery migrations this version does not know (a newer edge wrote it)."""
    known = {m.name for m in migrations._migrations}
    unknown = sorted({m.name for m in migrations.applied(db)} - known)
    if unknown:
        raise GalleryError(
            f"{path}: the gallery was written by a newer edge (unknown migrations {', '.join(unknown)}); "
            "install that version again, or restore a backup"
        )


def _is_busy(exc: BaseException) -> bool:
    """SQLite's `database is locked` / `database is busy` (another connection holds the lock)."""
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))
