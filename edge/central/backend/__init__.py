"""Where the central keeps its tables: `open_backend(target)` picks the back-end from what it is given, a file path
(SQLite, the default: nothing to set up) or a postgresql:// URL (PostgreSQL, for a fleet and several workers).
base.py: the interface; sqlite.py and pg.py: the two back-ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import click

from edge.central.backend.base import Backend, BackendError, Ddl, Schema, Tx
from edge.central.backend.pg import is_pg_url

__all__ = ["Backend", "BackendError", "Ddl", "Schema", "StoreTarget", "Tx", "is_pg_url", "open_backend"]

TARGET_HELP = "a SQLite file, or a PostgreSQL database as postgresql://user[:password]@host[:port]/dbname"


def open_backend(target: Union[str, Path]) -> Backend:
    """A SQLite file (a path, or ":memory:") or a PostgreSQL database (postgresql://...)."""
    if is_pg_url(str(target)):
        from edge.central.backend.pg import PgBackend

        return PgBackend(str(target))
    from edge.central.backend.sqlite import SqliteBackend

    return SqliteBackend(str(target))


class StoreTarget(click.ParamType):
    """A command's --db: a postgresql:// URL as given, or a SQLite file's path (not a folder; `exists`: it must be
    there already). Either way a string for CentralStore."""

    name = "FILE|URL"

    def __init__(self, exists: bool = False) -> None:
        self._path = click.Path(dir_okay=False, exists=exists)

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> str:
        if is_pg_url(str(value)):
            return str(value)
        return str(self._path.convert(value, param, ctx))
