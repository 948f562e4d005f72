"""Request ids of the gallery commands a box has handled, kept in the gallery database until the command expires:
a command seen again (a replay, a QoS 1 duplicate, a retained copy) is refused instead of applied twice.

    log = CommandLog(gallery.db.conn)
    if not log.record("r-17", expires_at):     # False: this request id was handled before
        ...

A row is kept until KEEP_AFTER_EXPIRY_S after the command's expiry (a command that old is refused for its age anyway;
the margin covers a box clock that jumps forward and back). Only commands whose signature verified are recorded, so
nobody but the central can fill the log.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Optional

KEEP_AFTER_EXPIRY_S = 24 * 3600.0


class CommandLog:
    """The `gallery_requests` table (request_id, expires_at, handled_at as Unix times) of a gallery database."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        with conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS gallery_requests "
                "(request_id TEXT PRIMARY KEY, expires_at REAL NOT NULL, handled_at REAL NOT NULL)"
            )

    def record(self, request_id: str, expires_at: datetime, now: Optional[datetime] = None) -> bool:
        """Note that `request_id` is handled now; False when it was handled before (nothing is changed then).
        Entries long past their expiry are dropped first."""
        moment = (now or datetime.now(timezone.utc)).timestamp()
        with self.conn:
            self.conn.execute("DELETE FROM gallery_requests WHERE expires_at < ?", [moment - KEEP_AFTER_EXPIRY_S])
            cursor = self.conn.execute(
                "INSERT OR IGNORE INTO gallery_requests (request_id, expires_at, handled_at) VALUES (?, ?, ?)",
                [request_id, expires_at.timestamp(), moment],
            )
        return cursor.rowcount == 1

    def __len__(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM gallery_requests").fetchone()[0])
