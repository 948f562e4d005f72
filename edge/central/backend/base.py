"""The one interface every part of the central keeps its tables through: portable SQL with `?` parameters, run in
transactions, and each part's migrations (`Schema`), on SQLite (sqlite.py, the zero set-up default) or PostgreSQL
(pg.py). The central's own methods (events, ledgers, flags, statuses) are written once over it in
edge/central/store.py; the office, users, crops, mail and console parts use it the same way.

    backend = open_backend("central.db")                    # or "postgresql://user@host/edge"
    backend.apply(schema)                                   # a part's migrations, each applied once
    with backend.transaction() as tx:                       # one commit (durable=True: waits for the disk)
        tx.execute("INSERT INTO t (a) VALUES (?) ON CONFLICT DO NOTHING", ["x"])
        new_id = tx.insert("INSERT INTO log (a) VALUES (?)", ["x"])   # the new row's `id`
    rows = backend.query("SELECT a FROM t WHERE a = ?", ["x"])       # a list of tuples

What stays portable: `INSERT ... ON CONFLICT (...) DO NOTHING / DO UPDATE SET col = excluded.col`, `?` parameters,
`NULLS FIRST/LAST`, `COALESCE`; the two-argument maximum is spelled by `backend.greatest` (MAX vs GREATEST). Table
definitions are written as for SQLite (TEXT, INTEGER, INTEGER PRIMARY KEY, BLOB); the PostgreSQL back-end maps
them (TEXT compares byte-wise there too, as in SQLite; INTEGER is 64-bit). `rowid` is SQLite's: a table that
needs insertion order has an `id INTEGER PRIMARY KEY`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Protocol, Sequence, Tuple

from edge.errors import EdgeError

Row = Tuple[Any, ...]
Params = Sequence[Any]


class BackendError(EdgeError):
    """The central's database cannot be opened or used: a bad URL, an unreachable server, a missing driver."""


class Ddl(Protocol):
    """What a migration step is given: `execute(sql)` of one statement, and which back-end it runs on (a step may
    add what only one of them needs)."""

    kind: str

    def execute(self, sql: str) -> Any: ...


@dataclass(frozen=True)
class Step:
    name: str
    fn: Callable[[Ddl], None]


@dataclass
class Schema:
    """A part's migrations, in order, each applied once per database and recorded under (name, step name):

        schema = Schema("edge.central.office")

        @schema()
        def m001_office(db: Ddl) -> None:
            db.execute("CREATE TABLE people (...)")

    On SQLite they are sqlite_utils Migrations of the same names (files made before this interface carry on)."""

    name: str
    steps: List[Step] = field(default_factory=list)

    def __call__(self) -> Callable[[Callable[[Ddl], None]], Callable[[Ddl], None]]:
        def register(fn: Callable[[Ddl], None]) -> Callable[[Ddl], None]:
            if any(s.name == fn.__name__ for s in self.steps):
                raise ValueError(f"migration {fn.__name__!r} is already in {self.name!r}")
            self.steps.append(Step(fn.__name__, fn))
            return fn

        return register


class Tx(ABC):
    """One open transaction: statements with `?` parameters."""

    @abstractmethod
    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""

    @abstractmethod
    def executemany(self, sql: str, rows: Sequence[Params]) -> None: ...

    @abstractmethod
    def insert(self, sql: str, params: Params = ()) -> int:
        """Run one INSERT into a table with an `id INTEGER PRIMARY KEY`; the new row's id."""

    @abstractmethod
    def query(self, sql: str, params: Params = ()) -> List[Row]: ...

    def one(self, sql: str, params: Params = ()) -> Optional[Row]:
        rows = self.query(sql, params)
        return rows[0] if rows else None


class Backend(ABC):
    """A database the central keeps its tables in. Thread-safe: any thread may run statements and transactions."""

    kind: str
    """sqlite or postgresql"""
    greatest: str
    """The SQL function of the larger of two values (SQLite's two-argument MAX, PostgreSQL's GREATEST)."""
    url: str
    """Where it is, as given (a file path, or the PostgreSQL URL without its password)."""
    lock: Any
    """A re-entrant lock for work that must not interleave within this process (SQLite: held around every
    statement on its one connection)."""

    @abstractmethod
    def transaction(self, durable: bool = False) -> AbstractContextManager[Tx]:
        """A transaction committed when the block ends (rolled back on an exception); durable: the commit waits
        until it, and every commit before it, is on disk. Without it a commit may be lost to a power cut (never
        half of it). Nested in the same thread: part of the outer one."""

    @abstractmethod
    def query(self, sql: str, params: Params = ()) -> List[Row]:
        """The rows of a read-only statement."""

    def one(self, sql: str, params: Params = ()) -> Optional[Row]:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    @abstractmethod
    def apply(self, schema: Schema) -> None:
        """Apply the schema's steps not yet applied to this database (safe when several processes start at once)."""

    @abstractmethod
    def applied(self, schema: Schema) -> List[str]:
        """The names of the schema's steps applied here, in order."""

    @abstractmethod
    def close(self) -> None: ...


def new_lock() -> Any:
    return threading.RLock()
