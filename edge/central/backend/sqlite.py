"""The central's SQLite back-end: one file (WAL), one connection behind a re-entrant lock, migrations through
sqlite_utils (each part's Schema becomes Migrations of the same names).

Commits do not wait for the disk (synchronous=NORMAL); a durable transaction commits with synchronous=FULL, an
fsync of the WAL that makes every earlier commit durable too. Several processes may share one file (WAL): each
write waits for the file's write lock (busy timeout 10 s).
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from edge.central.backend.base import Backend, BackendError, Params, Row, Schema, Tx
from edge.private import private_file

MIGRATE_WAIT_S = 30.0
"""How long a process opening the file keeps trying to migrate it while others do the same."""


class _Ddl:
    kind = "sqlite"

    def __init__(self, db: Database) -> None:
        self._db = db

    def execute(self, sql: str) -> Any:
        return self._db.execute(sql)


class _SqliteTx(Tx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._conn.execute(sql, list(params)).rowcount

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        self._conn.executemany(sql, [list(r) for r in rows])

    def insert(self, sql: str, params: Params = ()) -> int:
        rowid = self._conn.execute(sql, list(params)).lastrowid
        assert rowid is not None
        return int(rowid)

    def query(self, sql: str, params: Params = ()) -> List[Row]:
        return [tuple(r) for r in self._conn.execute(sql, list(params)).fetchall()]


class SqliteBackend(Backend):
    """A SQLite file (or ":memory:"). `db`: its sqlite_utils Database, for the tools and tests that look inside."""

    kind = "sqlite"
    greatest = "MAX"

    def __init__(self, path: str) -> None:
        self.url = path
        try:
            if path != ":memory:":
                private_file(Path(path))
            conn = sqlite3.connect(path, timeout=10.0, check_same_thread=False)
            self.db = Database(conn)
            if path != ":memory:":
                self.db.enable_wal()
            conn.execute("PRAGMA synchronous=NORMAL")
        except (sqlite3.Error, OSError) as exc:
            raise BackendError(f"{path}: cannot open the central database ({exc})") from exc
        self.lock = threading.RLock()
        self._depth = 0  # transactions open on the connection (only the lock's holder touches it)
        self._migrations: Dict[str, Migrations] = {}

    @classmethod
    def over(cls, db: Database) -> SqliteBackend:
        """A back-end over an open sqlite_utils Database (its own lock)."""
        backend = cls.__new__(cls)
        backend.url, backend.db, backend.lock = str(db.conn.execute("PRAGMA database_list").fetchone()[2] or ":memory:"), db, threading.RLock()
        backend._depth, backend._migrations = 0, {}
        return backend

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    @contextmanager
    def transaction(self, durable: bool = False) -> Iterator[Tx]:
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield _SqliteTx(self.conn)
                finally:
                    self._depth -= 1
                return
            if durable:
                self.conn.execute("PRAGMA synchronous=FULL")
            self._depth = 1
            try:
                with self.conn:
                    yield _SqliteTx(self.conn)
            finally:
                self._depth = 0
                if durable:
                    self.conn.execute("PRAGMA synchronous=NORMAL")

    def query(self, sql: str, params: Params = ()) -> List[Row]:
        with self.lock:
            return [tuple(r) for r in self.conn.execute(sql, list(params)).fetchall()]

    def _sqlite_migrations(self, schema: Schema) -> Migrations:
        found = self._migrations.get(schema.name)
        if found is None:
            found = self._migrations[schema.name] = Migrations(schema.name)
            for step in schema.steps:

                def run(db: Database, fn: Any = step.fn) -> None:
                    fn(_Ddl(db))

                found(name=step.name)(run)
        return found

    def apply(self, schema: Schema) -> None:
        """Each step in a transaction with its record. Workers that open one file together race for it: the loser's
        step fails (the file is locked, or the table it creates is there now) and it tries again, finding the steps
        applied; for up to MIGRATE_WAIT_S."""
        deadline = time.monotonic() + MIGRATE_WAIT_S
        with self.lock:
            while True:
                try:
                    self._sqlite_migrations(schema).apply(self.db)
                    return
                except sqlite3.OperationalError as exc:
                    if time.monotonic() > deadline:
                        raise BackendError(f"{self.url}: cannot migrate {schema.name} ({exc})") from exc
                    time.sleep(random.uniform(0.02, 0.2))
                except sqlite3.Error as exc:
                    raise BackendError(f"{self.url}: cannot migrate {schema.name} ({exc})") from exc

    def applied(self, schema: Schema) -> List[str]:
        with self.lock:
            return [m.name for m in self._sqlite_migrations(schema).applied(self.db)]

    def close(self) -> None:
        with self.lock:
            self.db.close()
