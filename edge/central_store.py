"""The reference central server's own SQLite copy (events, statuses, gallery results) and its ack rule (pure).

See edge/central.py for the rule in words: per box, `up_to_seq` is the highest N such that every seq from the box's
floor + 1 to N is stored here, and `seqs` lists the stored seqs above it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple, Union

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from edge.errors import EdgeError
from edge.private import private_file

log = logging.getLogger("edge.central")
migrations = Migrations("edge.central")

ACK_MAX_SEQS = 1000
"""Most seqs listed in one ack beyond up_to_seq (the schema allows 10,000)."""


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


# the ack rule -------------------------------------------------------------------------------------------------------
class AckLedger:
    """Which seqs of one box are stored, as a contiguous watermark plus the stored seqs above it. Pure."""

    def __init__(self, up_to: int = 0) -> None:
        self.up_to = up_to
        self._above: Set[int] = set()
        self._skip: Dict[int, int] = {}  # prev_seq -> seq: the seqs in between were never used by the box

    def add(self, seq: int, prev_seq: Optional[int]) -> None:
        if seq > self.up_to:
            self._above.add(seq)
        previous = prev_seq if prev_seq is not None else 0
        if previous < seq - 1:
            self._skip[previous] = seq
        self._advance()

    def raise_floor(self, floor: int) -> None:
        """The box says every seq <= floor is done on its side."""
        if floor > self.up_to:
            self.up_to = floor
            self._advance()

    def _advance(self) -> None:
        while True:
            if self.up_to + 1 in self._above:
                self.up_to += 1
            elif self._skip.get(self.up_to, 0) > self.up_to:
                self.up_to = self._skip[self.up_to]
            else:
                break
        self._above = {s for s in self._above if s > self.up_to}
        self._skip = {p: s for p, s in self._skip.items() if s > self.up_to}

    def ack(self, latest: Optional[int] = None) -> Dict[str, Any]:
        """The edge.ack/1 payload; `latest` (the seq just received) is listed whenever it is above up_to_seq."""
        above = sorted(self._above)
        if len(above) > ACK_MAX_SEQS:
            keep = set(above[-(ACK_MAX_SEQS - 1) :])
            if latest is not None and latest in self._above:
                keep.add(latest)
            above = sorted(keep)
        payload: Dict[str, Any] = {"schema": "edge.ack/1", "up_to_seq": self.up_to}
        if above:
            payload["seqs"] = above
        return payload


# the SQLite copy ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stored:
    """How an incoming event was taken: new, or a redelivery (deliveries so far); conflict: same id, other facts."""

    new: bool
    deliveries: int
    conflict: bool = False


_SAME_FACTS = ("seq", "device_id", "type", "person_id", "camera_id", "at", "track_id")


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
            migrations.apply(self.db)
        except (sqlite3.Error, OSError) as exc:
            raise CentralError(f"{self.path}: cannot open the central database ({exc})") from exc
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def add_event(self, site: str, payload: Dict[str, Any]) -> Stored:
        now = _now()
        row = (
            payload["event_id"], site, payload["device_id"], payload["seq"], payload["prev_seq"], payload["type"],
            payload["person_id"], payload["at"], json.dumps(payload, ensure_ascii=False), now, now,
        )  # fmt: skip
        with self._lock, self.db.conn:
            cursor = self.db.conn.execute(
                "INSERT OR IGNORE INTO events (event_id, site, device_id, seq, prev_seq, type, person_id, at, payload, "
                "first_received_at, last_received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        where, args = [], []
        if device is not None:
            where.append("device_id = ?")
            args.append(device)
        if site is not None:
            where.append("site = ?")
            args.append(site)
        sql = (
            "SELECT event_id, site, device_id, seq, type, person_id, at, payload, first_received_at, deliveries "
            f"FROM events {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY site, device_id, seq"
        )
        with self._lock:
            rows = self.db.conn.execute(sql, args).fetchall()
        keys = ("event_id", "site", "device_id", "seq", "type", "person_id", "at", "payload", "first_received_at",
                "deliveries")  # fmt: skip
        out = [dict(zip(keys, r)) for r in rows]
        for item in out:
            item["payload"] = json.loads(item["payload"])
        return out

    def seqs_above(self, site: str, device: str, seq: int) -> List[Tuple[int, Optional[int]]]:
        with self._lock:
            rows = self.db.conn.execute(
                "SELECT seq, prev_seq FROM events WHERE site = ? AND device_id = ? AND seq > ? ORDER BY seq",
                [site, device, seq],
            ).fetchall()
        return [(int(r[0]), r[1]) for r in rows]

    def device_marks(self) -> Dict[Tuple[str, str], Tuple[int, int]]:
        with self._lock:
            rows = self.db.conn.execute("SELECT site, device_id, floor, acked_up_to FROM devices").fetchall()
        return {(r[0], r[1]): (int(r[2]), int(r[3])) for r in rows}

    def devices_with_events(self) -> List[Tuple[str, str]]:
        with self._lock:
            rows = self.db.conn.execute("SELECT DISTINCT site, device_id FROM events").fetchall()
        return [(r[0], r[1]) for r in rows]

    def save_marks(self, site: str, device: str, floor: int, acked_up_to: int) -> None:
        with self._lock, self.db.conn:
            self.db.conn.execute(
                "INSERT INTO devices (site, device_id, floor, acked_up_to) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (site, device_id) DO UPDATE SET floor = MAX(floor, excluded.floor), "
                "acked_up_to = MAX(acked_up_to, excluded.acked_up_to)",
                [site, device, floor, acked_up_to],
            )

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
