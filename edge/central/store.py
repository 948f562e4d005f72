"""The reference central server's own SQLite copy: events (per box epoch), statuses, gallery results, the ack marks
of each box epoch (edge/central_ledger.py) and the flags it raised (a new epoch, a seq regression, a resend).

Events are committed without waiting for the disk (synchronous=NORMAL); `save_ledgers(..., durable=True)` commits
with an fsync of the WAL, which makes every earlier commit durable too: the central calls it before each ack, so
one fsync covers a whole batch and nothing is acknowledged that a power cut could take back.
"""

from __future__ import annotations

import importlib
import json
import logging
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from edge.central.ledger import Marks
from edge.errors import EdgeError
from edge.private import private_file

log = logging.getLogger("edge.central")
migrations = Migrations("edge.central")

PARTS = (
    "edge.central.office",
    "edge.central.users",
    "edge.central.crops",
    "edge.central.mail",
    "edge.central.web.records",
)
"""The modules that keep tables of their own in the central's file, each with its own Migrations
("edge.central.<part>") and an `apply_migrations(db)`; all are applied when the store opens."""

class CentralError(EdgeError):
    """The central cannot do what was asked: broker unreachable, no answer in time, a bad command or file."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@migrations()
def m001_central(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE events (
            event_id TEXT PRIMARY KEY,
            site TEXT NOT NULL,
            device_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            prev_seq INTEGER,
            type TEXT NOT NULL,
            person_id TEXT,
            at TEXT NOT NULL,
            payload TEXT NOT NULL,
            first_received_at TEXT NOT NULL,
            last_received_at TEXT NOT NULL,
            deliveries INTEGER NOT NULL DEFAULT 1
        )
        """
    )
    db.execute("CREATE INDEX idx_events_device_seq ON events (site, device_id, seq)")
    db.execute(
        """
        CREATE TABLE status (
            site TEXT NOT NULL, device_id TEXT NOT NULL, kind TEXT NOT NULL, camera_id TEXT NOT NULL,
            state TEXT NOT NULL, payload TEXT NOT NULL, at TEXT NOT NULL, received_at TEXT NOT NULL,
            PRIMARY KEY (site, device_id, kind, camera_id)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE devices (
            site TEXT NOT NULL, device_id TEXT NOT NULL,
            floor INTEGER NOT NULL DEFAULT 0, acked_up_to INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (site, device_id)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE gallery_results (
            id INTEGER PRIMARY KEY, request_id TEXT, site TEXT NOT NULL, device_id TEXT NOT NULL,
            status TEXT NOT NULL, payload TEXT NOT NULL, received_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX idx_results_request ON gallery_results (request_id)")


@migrations()
def m002_epochs(db: Database) -> None:
    # Event ids carry the box's epoch (<device>-<epoch>-<seq>); ledgers are kept per box epoch. The per-box marks
    # of m001 belonged to ids without an epoch, which no box sends any more.
    db.execute("ALTER TABLE events ADD COLUMN epoch TEXT")
    db.execute("CREATE INDEX idx_events_epoch_seq ON events (site, device_id, epoch, seq)")
    db.execute("DROP TABLE devices")
    db.execute(
        """
        CREATE TABLE ledgers (
            site TEXT NOT NULL, device_id TEXT NOT NULL, epoch TEXT NOT NULL,
            floor INTEGER NOT NULL DEFAULT 0, acked_up_to INTEGER NOT NULL DEFAULT 0,
            stored_up_to INTEGER NOT NULL DEFAULT 0, halted TEXT, reported INTEGER NOT NULL DEFAULT 0,
            first_seen_at TEXT NOT NULL,
            PRIMARY KEY (site, device_id, epoch)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE flags (
            id INTEGER PRIMARY KEY, site TEXT NOT NULL, device_id TEXT NOT NULL, epoch TEXT NOT NULL,
            kind TEXT NOT NULL, detail TEXT NOT NULL, at TEXT NOT NULL
        )
        """
    )


def apply_parts(db: Database) -> None:
    """Apply the migrations of every part (PARTS) present in this install."""
    for name in PARTS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the part is there but one of its own imports is missing: say so
                raise
            continue
        module.apply_migrations(db)


# the SQLite copy ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stored:
    """How an incoming event was taken: new, or a redelivery (deliveries so far); conflict: same id, other facts."""

    new: bool
    deliveries: int
    conflict: bool = False


_SAME_FACTS = ("seq", "epoch", "device_id", "type", "person_id", "camera_id", "at", "track_id")


class CentralStore:
    """The central's SQLite file: events (each event_id once, with a delivery count), statuses, gallery results.
    Thread-safe (one connection behind a lock): the MQTT thread writes while the caller reads."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = str(path)
        try:
            if self.path != ":memory:":
                private_file(Path(self.path))
            conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False)
            self.db = Database(conn)
            if self.path != ":memory:":
                self.db.enable_wal()
            conn.execute("PRAGMA synchronous=NORMAL")
            migrations.apply(self.db)
            apply_parts(self.db)
        except (sqlite3.Error, OSError) as exc:
            raise CentralError(f"{self.path}: cannot open the central database ({exc})") from exc
        self._lock = threading.RLock()

    @property
    def lock(self) -> threading.RLock:
        """Held around every statement on the shared connection (the parts' modules take it too)."""
        return self._lock

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def add_event(self, site: str, payload: Dict[str, Any]) -> Stored:
        now = _now()
        row = (
            payload["event_id"], site, payload["device_id"], payload["epoch"], payload["seq"], payload["prev_seq"],
            payload["type"], payload["person_id"], payload["at"], json.dumps(payload, ensure_ascii=False), now, now,
        )  # fmt: skip
        with self._lock, self.db.conn:
            cursor = self.db.conn.execute(
                "INSERT OR IGNORE INTO events (event_id, site, device_id, epoch, seq, prev_seq, type, person_id, at, "
                "payload, first_received_at, last_received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            if cursor.rowcount == 1:
                return Stored(new=True, deliveries=1)
            self.db.conn.execute(
                "UPDATE events SET deliveries = deliveries + 1, last_received_at = ? WHERE event_id = ?",
                [now, payload["event_id"]],
            )
            stored_payload, deliveries = self.db.conn.execute(
                "SELECT payload, deliveries FROM events WHERE event_id = ?", [payload["event_id"]]
            ).fetchone()
        first = json.loads(stored_payload)
        conflict = any(first.get(k) != payload.get(k) for k in _SAME_FACTS)
        return Stored(new=False, deliveries=int(deliveries), conflict=conflict)

    def events(self, device: Optional[str] = None, site: Optional[str] = None) -> List[Dict[str, Any]]:
        """Stored events by box, its epochs in the order first seen, and seq."""
        where, args = [], []
        if device is not None:
            where.append("e.device_id = ?")
            args.append(device)
        if site is not None:
            where.append("e.site = ?")
            args.append(site)
        sql = (
            "SELECT e.event_id, e.site, e.device_id, e.epoch, e.seq, e.type, e.person_id, e.at, e.payload, "
            "e.first_received_at, e.deliveries FROM events e LEFT JOIN ledgers l USING (site, device_id, epoch) "
            f"{'WHERE ' + ' AND '.join(where) if where else ''} "
            "ORDER BY e.site, e.device_id, l.first_seen_at, e.epoch, e.seq"
        )
        with self._lock:
            rows = self.db.conn.execute(sql, args).fetchall()
        keys = ("event_id", "site", "device_id", "epoch", "seq", "type", "person_id", "at", "payload",
                "first_received_at", "deliveries")  # fmt: skip
        out = [dict(zip(keys, r)) for r in rows]
        for item in out:
            item["payload"] = json.loads(item["payload"])
        return out

    def events_between(self, since: str, until: str, types: Sequence[str] = ()) -> List[Dict[str, Any]]:
        """The payloads of events whose `at` text sorts within [since, until) (ISO dates or times; `at` carries
        its box's UTC offset, so callers widen the range and keep what they need), optionally of some types."""
        sql = "SELECT payload FROM events WHERE at >= ? AND at < ?"
        args: List[Any] = [since, until]
        if types:
            sql += f" AND type IN ({', '.join('?' for _ in types)})"
            args.extend(types)
        with self._lock:
            rows = self.db.conn.execute(sql + " ORDER BY at, seq", args).fetchall()
        return [json.loads(r[0]) for r in rows]

    def seqs_above(self, site: str, device: str, epoch: str, seq: int) -> List[Tuple[int, Optional[int]]]:
        with self._lock:
            rows = self.db.conn.execute(
                "SELECT seq, prev_seq FROM events WHERE site = ? AND device_id = ? AND epoch = ? AND seq > ? "
                "ORDER BY seq",
                [site, device, epoch, seq],
            ).fetchall()
        return [(int(r[0]), r[1]) for r in rows]

    def ledger_marks(self) -> Dict[Tuple[str, str, str], Marks]:
        with self._lock:
            rows = self.db.conn.execute(
                "SELECT site, device_id, epoch, floor, acked_up_to, stored_up_to, halted, reported FROM ledgers"
            ).fetchall()
        return {(r[0], r[1], r[2]): Marks(int(r[3]), int(r[4]), int(r[5]), r[6], int(r[7])) for r in rows}

    def save_ledgers(self, marks: Iterable[Tuple[Tuple[str, str, str], Marks]], durable: bool = False) -> None:
        """Record ledger marks (they only rise; a halt stays); durable: fsync, with every commit before it."""
        rows = [[*key, m.floor, m.acked_up_to, m.stored_up_to, m.halted, m.reported, _now()] for key, m in marks]
        with self._lock:
            if durable:
                self.db.conn.execute("PRAGMA synchronous=FULL")
            try:
                with self.db.conn:
                    self.db.conn.executemany(
                        "INSERT INTO ledgers (site, device_id, epoch, floor, acked_up_to, stored_up_to, halted, "
                        "reported, first_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (site, device_id, epoch) DO UPDATE "
                        "SET floor = MAX(floor, excluded.floor), acked_up_to = MAX(acked_up_to, excluded.acked_up_to), "
                        "stored_up_to = MAX(stored_up_to, excluded.stored_up_to), "
                        "halted = COALESCE(halted, excluded.halted), reported = MAX(reported, excluded.reported)",
                        rows,
                    )
            finally:
                if durable:
                    self.db.conn.execute("PRAGMA synchronous=NORMAL")

    def epochs(self, site: str, device: str) -> List[str]:
        """The epochs of a box seen here, the most recently first seen first."""
        with self._lock:
            rows = self.db.conn.execute(
                "SELECT epoch FROM ledgers WHERE site = ? AND device_id = ? ORDER BY first_seen_at DESC, rowid DESC",
                [site, device],
            ).fetchall()
        return [r[0] for r in rows]

    def add_flag(self, site: str, device: str, epoch: str, kind: str, detail: str) -> None:
        with self._lock, self.db.conn:
            self.db.conn.execute(
                "INSERT INTO flags (site, device_id, epoch, kind, detail, at) VALUES (?, ?, ?, ?, ?, ?)",
                [site, device, epoch, kind, detail, _now()],
            )

    def flags(self) -> List[Dict[str, Any]]:
        with self._lock:
            rows = self.db.conn.execute("SELECT site, device_id, epoch, kind, detail, at FROM flags ORDER BY id").fetchall()
        return [dict(zip(("site", "device_id", "epoch", "kind", "detail", "at"), r)) for r in rows]

    def put_status(self, site: str, device: str, camera_id: Optional[str], payload: Optional[Dict[str, Any]]) -> None:
        """Store the latest (retained) status of a box or camera; None: the retained status was cleared."""
        kind, camera = ("camera", camera_id) if camera_id is not None else ("box", "")
        with self._lock, self.db.conn:
            if payload is None:
                self.db.conn.execute(
                    "DELETE FROM status WHERE site = ? AND device_id = ? AND kind = ? AND camera_id = ?",
                    [site, device, kind, camera],
                )
                return
            self.db.conn.execute(
                "INSERT OR REPLACE INTO status (site, device_id, kind, camera_id, state, payload, at, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [site, device, kind, camera, payload["state"], json.dumps(payload, ensure_ascii=False),
                 payload["at"], _now()],
            )  # fmt: skip

    def status(self, site: str, device: str, camera_id: Optional[str] = None) -> Optional[Dict[str, Any]]:
        kind, camera = ("camera", camera_id) if camera_id is not None else ("box", "")
        with self._lock:
            row = self.db.conn.execute(
                "SELECT payload FROM status WHERE site = ? AND device_id = ? AND kind = ? AND camera_id = ?",
                [site, device, kind, camera],
            ).fetchone()
        return json.loads(row[0]) if row else None

    def add_result(self, site: str, device: str, payload: Dict[str, Any]) -> None:
        with self._lock, self.db.conn:
            self.db.conn.execute(
                "INSERT INTO gallery_results (request_id, site, device_id, status, payload, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [payload["request_id"], site, device, payload["status"], json.dumps(payload, ensure_ascii=False),
                 _now()],
            )  # fmt: skip
