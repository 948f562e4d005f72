"""The console's own records in the central's store: the enrolment photos of each person (the central keeps
them, so enrolling one more face sends the person's whole set: a box's upsert replaces a person's embeddings), the
reviews of unknown faces, and the answers of each box to the gallery commands the console pushed.

Never an embedding: the boxes compute those from the photos.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Dict, List, Optional, Union

from sqlite_utils import Database

from edge.central.backend import Backend, Ddl, Schema
from edge.central.backend.sqlite import SqliteBackend

migrations = Schema("edge.central.console")

MAX_PHOTOS = 8
"""Photos kept per person (the oldest goes): an upsert carries them all, within a box's message limit."""


@migrations()
def m001_console(db: Ddl) -> None:
    db.execute(
        """
        CREATE TABLE console_photos (
            id INTEGER PRIMARY KEY, person_id TEXT NOT NULL, image BLOB NOT NULL, source TEXT NOT NULL,
            added_by TEXT NOT NULL, added_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX idx_console_photos_person ON console_photos (person_id)")
    db.execute(
        """
        CREATE TABLE console_reviews (
            event_id TEXT PRIMARY KEY, person_id TEXT NOT NULL, action TEXT NOT NULL, made_by TEXT NOT NULL,
            made_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE console_pushes (
            id INTEGER PRIMARY KEY, person_id TEXT NOT NULL, op TEXT NOT NULL, site TEXT NOT NULL,
            device_id TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL, made_by TEXT NOT NULL,
            made_at TEXT NOT NULL
        )
        """
    )


@dataclass(frozen=True)
class Review:
    event_id: str
    person_id: str
    action: str
    """labelled (this is <person>: a manual entry) or enrolled (the face was added to the person's photos)"""
    by: str
    at: str


@dataclass(frozen=True)
class Push:
    person_id: str
    op: str
    site: str
    device_id: str
    status: str
    reason: str
    by: str
    at: str


class Records:
    """The console's tables over the central's store (its back-end, or a sqlite_utils Database of a central file)."""

    def __init__(self, db: Union[Backend, Database]) -> None:
        self.db = db if isinstance(db, Backend) else SqliteBackend.over(db)

    # photos ------------------------------------------------------------------------------------------------------
    def add_photo(self, person_id: str, image: bytes, source: str, by: str, now: datetime) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO console_photos (person_id, image, source, added_by, added_at) VALUES (?, ?, ?, ?, ?)",
                [person_id, image, source, by, now.isoformat()],
            )
            tx.execute(
                "DELETE FROM console_photos WHERE person_id = ? AND id NOT IN "
                "(SELECT id FROM console_photos WHERE person_id = ? ORDER BY id DESC LIMIT ?)",
                [person_id, person_id, MAX_PHOTOS],
            )

    def photos(self, person_id: str) -> List[bytes]:
        rows = self.db.query("SELECT image FROM console_photos WHERE person_id = ? ORDER BY id", [person_id])
        return [bytes(r[0]) for r in rows]

    def photo_counts(self) -> Dict[str, int]:
        rows = self.db.query("SELECT person_id, COUNT(*) FROM console_photos GROUP BY person_id")
        return {r[0]: int(r[1]) for r in rows}

    def forget_photos(self, person_id: str) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM console_photos WHERE person_id = ?", [person_id])

    # reviews of unknown faces ------------------------------------------------------------------------------------
    def review(self, event_id: str, person_id: str, action: str, by: str, now: datetime) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO console_reviews (event_id, person_id, action, made_by, made_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (event_id) DO UPDATE SET person_id = excluded.person_id, action = excluded.action, "
                "made_by = excluded.made_by, made_at = excluded.made_at",
                [event_id, person_id, action, by, now.isoformat()],
            )

    def reviews(self, event_ids: List[str]) -> Dict[str, Review]:
        if not event_ids:
            return {}
        marks = ", ".join("?" for _ in event_ids)
        rows = self.db.query(
            f"SELECT event_id, person_id, action, made_by, made_at FROM console_reviews WHERE event_id IN ({marks})",
            event_ids,
        )
        return {r[0]: Review(*r) for r in rows}

    # pushes ------------------------------------------------------------------------------------------------------
    def add_push(self, push: Push) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO console_pushes (person_id, op, site, device_id, status, reason, made_by, made_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [push.person_id, push.op, push.site, push.device_id, push.status, push.reason, push.by, push.at],
            )

    def last_pushes(self, person_id: Optional[str] = None, limit: int = 20) -> List[Push]:
        where, args = ("WHERE person_id = ?", [person_id]) if person_id else ("", [])
        rows = self.db.query(
            "SELECT person_id, op, site, device_id, status, reason, made_by, made_at FROM console_pushes "
            f"{where} ORDER BY id DESC LIMIT ?",
            [*args, limit],
        )
        return [Push(*r) for r in rows]
