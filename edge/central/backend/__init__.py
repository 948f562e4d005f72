"""Where the central keeps its tables: `open_backend(target)` picks the back-end from what it is given, a file path
(SQLite, the default: nothing to set up) or a postgresql:// URL (PostgreSQL, for a fleet and several workers).
base.py: the interface; sqlite.py and pg.py: the two back-ends."""

from __future__ import annotations

from pathlib import Path
from typing import Union

from edge.central.backend.base import Backend, BackendError, Ddl, Schema, Tx
from edge.central.backend.pg import is_pg_url

__all__ = ["Backend", "BackendError", "Ddl", "Schema", "Tx", "is_pg_url", "open_backend"]


def open_backend(target: Union[str, Path]) -> Backend:
    """A SQLite file (a path, or ":memory:") or a PostgreSQL database (postgresql://...)."""
    if is_pg_url(str(target)):
        from edge.central.backend.pg import PgBackend

        return PgBackend(str(target))
    from edge.central.backend.sqlite import SqliteBackend

    return SqliteBackend(str(target))
