"""The event store: attendance events in SQLite, the source of truth (and, later, the MQTT outbox over the same table).

    store = EventStore("/var/lib/edge/edge.db", device_id="box-17")
    stored = store.append(machine.step(sighting), EventContext(gallery_version, model_id, frame.mono, time.time()))

Choices:

- One row per event, all events of one machine step in ONE transaction (`BEGIN IMMEDIATE`): all or nothing.
  A failed append (full disk, locked database, I/O error) raises `StoreError`, rolls back, writes nothing and
  consumes no seq. The daemon keeps running: it must keep the events in memory and append them again later
  (they are values; appending them later stores the same facts with new seqs, in the same order).
- `seq` is `INTEGER PRIMARY KEY AUTOINCREMENT`: SQLite keeps the highest seq ever committed in `sqlite_sequence`,
  updated in the same transaction as the rows, so a seq is never handed out twice, even after the latest rows
  were deleted or the process crashed. A rolled-back append consumes nothing (its seqs were never visible, never
  published). `event_id` = f"{device_id}-{epoch}-{seq:010d}" is fixed at insert and never changes (the MQTT
  dedup key; the migration that brought epochs gave the events stored before it ids of this form).
- Epochs: the database gets a random epoch (16 hex digits) when it is created, so event ids never repeat across a
  database reset (a new database starts at seq 1 again). An epoch rotates when start-up finds committed rows lost
  (`edge run --init` after a lost WAL): table `epochs(epoch, first_seq)`, the epoch of a seq is the one with the
  largest first_seq <= seq. The marker file beside the database (edge/store_marker.py) lets a box refuse to start on
  a database that is missing, empty, replaced or behind, instead of silently starting a new one.
- `synchronous=FULL` (WAL mode): a commit returns only after the WAL is fsynced, so an event that may already have
  been published survives a power cut and its seq is never reissued. With NORMAL the last commits can vanish on
  power loss and their seqs would be handed out again to different events. Measured on the dev VM (ext4 on a
  virtio disk whose fsync is cheap, 500 single-event appends, median): FULL 0.26-0.30 ms, NORMAL 0.07-0.08 ms per
  append; a 3-event step with FULL 0.33 ms. A Pi's SD card fsyncs far slower (expect milliseconds to tens of
  milliseconds per append), which is still noise at a few events a minute, and append runs once per step.
- Times: `at` and `decided_at` are stored as ISO-8601 with the offset they came with (they read back equal and
  with the same offset). Range queries use `at_utc`, the same instant as fixed-width UTC text, because strings with
  different offsets (DST) do not sort in time order. `wall_time` (epoch seconds when stored) and `mono_time`
  (monotonic seconds of the deciding frame or tick) come from the caller: time is data.
- `events_of_day(day, tz)` selects events by the local date of `at` (an exit decided after midnight belongs to
  the day its person went out), in seq order = emission order, with times converted to `tz`: what
  `AttendanceMachine.restore` wants.
- The outbox: `pending`, `mark_published`, `ack_up_to`, `oldest_unacked` over `published_at`, `acked_at` and
  `publish_attempts` of the same table (write the event, then publish, then mark it delivered). The outbox calls
  `reserve_published(seq)` before it publishes a seq: the marker's hwm then covers it.
- Exports: CSV with a header row and JSON Lines (one object per line: streamable, appendable, and each line is
  the shape an MQTT payload will have). Both come from `event_to_dict`; times are ISO-8601, missing values are
  empty in CSV and null in JSON.
- The gallery ("edge.gallery.store") and the events ("edge.events") may share one file; both migration sets record
  themselves in the same `_sqlite_migrations` table. Migrations run inside `BEGIN IMMEDIATE`, so two stores
  opening the same new file do not race (a busy lock while the file is set up is retried). A database with
  migrations this version does not know was written by a newer edge: refused. A read-only database is refused at
  open (one write is tried). One EventStore per thread (the connection is not shared).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import re
import secrets
import sqlite3
import time as clock
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from pathlib import Path
from typing import IO, Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from edge.attendance import AttendanceEvent, EventType
from edge.errors import StoreError
from edge.faces import Verdict
from edge.private import private_file
from edge.store_marker import (
    EPOCH_PATTERN,
    MAX_SEQ,
    Marker,
    folder_unwritable,
    lost_database,
    new_marker,
    read_marker,
    refusal,
    set_aside,
    write_marker,
)

log = logging.getLogger("edge.store")
migrations = Migrations("edge.events")

DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
BUSY_TIMEOUT_S = 10.0
SQLITE_FULL = 13
_UTC_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


@migrations()
def m001_events(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            device_id TEXT NOT NULL,
            type TEXT NOT NULL,
            person_id TEXT,
            camera_id TEXT NOT NULL,
            at TEXT NOT NULL,
            at_utc TEXT NOT NULL,
            decided_at TEXT NOT NULL,
            wall_time REAL NOT NULL,
            mono_time REAL NOT NULL,
            session TEXT,
            track_id TEXT NOT NULL,
            score REAL NOT NULL,
            margin REAL NOT NULL,
            frames INTEGER NOT NULL,
            quality REAL NOT NULL,
            gallery_version INTEGER NOT NULL,
            model_id TEXT NOT NULL,
            published_at TEXT,
            acked_at TEXT,
            publish_attempts INTEGER NOT NULL DEFAULT 0 CHECK (publish_attempts >= 0)
        )
        """
    )
    db.execute("CREATE INDEX idx_events_at ON events (at_utc)")
    db.execute("CREATE INDEX idx_events_person_at ON events (person_id, at_utc)")
    db.execute("CREATE INDEX idx_events_outbox ON events (acked_at, seq)")


@migrations()
def m002_epochs(db: Database) -> None:
    """The database's epoch. Events stored before belong to it and get ids that carry it, like every later one
    (the central server checks the form; one still in flight at the upgrade may then be stored twice)."""
    epoch = new_epoch()
    db.execute("CREATE TABLE box_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("CREATE TABLE epochs (epoch TEXT PRIMARY KEY, first_seq INTEGER NOT NULL UNIQUE)")
    db.execute("INSERT INTO epochs (epoch, first_seq) VALUES (?, 1)", [epoch])
    db.execute("UPDATE events SET event_id = device_id || '-' || ? || '-' || printf('%010d', seq)", [epoch])


@migrations()
def m003_liveness(db: Database) -> None:
    """The liveness evidence of each event (edge/liveness/): the track's p_real (median of its scored frames), how
    many frames were scored, the verdict, and whether the event is marked for review. Events stored before carry
    NULLs (never checked) and review 0."""
    db.execute("ALTER TABLE events ADD COLUMN liveness_p_real REAL")
    db.execute("ALTER TABLE events ADD COLUMN liveness_frames INTEGER")
    db.execute("ALTER TABLE events ADD COLUMN liveness_verdict TEXT")
    db.execute("ALTER TABLE events ADD COLUMN review INTEGER NOT NULL DEFAULT 0 CHECK (review IN (0, 1))")


def new_epoch() -> str:
    return secrets.token_hex(8)


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class EventContext:
    """What was true when one machine step's events were decided and stored."""

    gallery_version: int
    """Version of the gallery the identities were matched against."""
    model_id: str
    """The embedding model that produced the matches."""
    mono_time: float
    """Monotonic seconds of the deciding frame or tick (the frame's own stamp)."""
    wall_time: float
    """Epoch seconds when the events are stored."""

    def __post_init__(self) -> None:
        if isinstance(self.gallery_version, bool) or not isinstance(self.gallery_version, int):
            raise ValueError(f"gallery_version must be an int, got {self.gallery_version!r}")
        if self.gallery_version < 0:
            raise ValueError(f"gallery_version must be >= 0, got {self.gallery_version}")
        if not isinstance(self.model_id, str) or not self.model_id:
            raise ValueError(f"model_id must be a non-empty string, got {self.model_id!r}")
        for name in ("mono_time", "wall_time"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")


@dataclass(frozen=True)
class StoredEvent:
    """An attendance event as stored: its seq and stable id, the event, its context, and its delivery state."""

    seq: int
    event_id: str
    device_id: str
    event: AttendanceEvent
    context: EventContext
    published_at: Optional[datetime] = None
    acked_at: Optional[datetime] = None
    publish_attempts: int = 0
    epoch: str = ""
    """The database epoch the seq belongs to (part of event_id)."""
    first_of_epoch: bool = False
    """The first seq of its epoch (published with prev_seq null)."""


def make_event_id(device_id: str, epoch: str, seq: int) -> str:
    return f"{device_id}-{epoch}-{seq:010d}"


def check_event(event: AttendanceEvent) -> None:
    """Raise ValueError when an event cannot be stored faithfully (SQLite would turn NaN into NULL)."""
    if not isinstance(event, AttendanceEvent):
        raise ValueError(f"expected an AttendanceEvent, got {type(event).__name__}")
    if not isinstance(event.type, EventType):
        raise ValueError(f"event type must be an EventType, got {event.type!r}")
    for name in ("at", "decided_at"):
        moment = getattr(event, name)
        if not isinstance(moment, datetime) or moment.utcoffset() is None:
            raise ValueError(f"event {name} must be a timezone-aware datetime, got {moment!r}")
    for name in ("score", "margin", "quality"):
        value = getattr(event, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"event {name} must be a finite number, got {value!r}")
    if isinstance(event.frames, bool) or not isinstance(event.frames, int) or event.frames < 0:
        raise ValueError(f"event frames must be an int >= 0, got {event.frames!r}")
    for name in ("camera_id", "track_id"):
        if not isinstance(getattr(event, name), str):
            raise ValueError(f"event {name} must be a string, got {getattr(event, name)!r}")
    if event.liveness is not None and not isinstance(event.liveness, Verdict):
        raise ValueError(f"event liveness must be a Verdict or None, got {event.liveness!r}")
    if not isinstance(event.review, bool):
        raise ValueError(f"event review must be true/false, got {event.review!r}")


def _utc_text(moment: datetime) -> str:
    if moment.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {moment!r}")
    return moment.astimezone(timezone.utc).strftime(_UTC_FORMAT)


def _parse(text: Optional[str]) -> Optional[datetime]:
    return datetime.fromisoformat(text) if text is not None else None


_EPOCH_OF_SEQ = "(SELECT e.{0} FROM epochs e WHERE e.first_seq <= events.seq ORDER BY e.first_seq DESC LIMIT 1)"
_COLUMNS = (
    "seq, event_id, device_id, type, person_id, camera_id, at, decided_at, session, track_id, score, margin, "
    "frames, quality, gallery_version, model_id, mono_time, wall_time, published_at, acked_at, publish_attempts, "
    f"{_EPOCH_OF_SEQ.format('epoch')}, {_EPOCH_OF_SEQ.format('first_seq')} = seq, "
    "liveness_p_real, liveness_frames, liveness_verdict, review"
)
_INSERT = (
    "INSERT INTO events (seq, event_id, device_id, type, person_id, camera_id, at, at_utc, decided_at, session, "
    "track_id, score, margin, frames, quality, gallery_version, model_id, mono_time, wall_time, liveness_p_real, "
    "liveness_frames, liveness_verdict, review) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _row_values(seq: int, device_id: str, epoch: str, e: AttendanceEvent, c: EventContext) -> tuple:
    return (
        seq,
        make_event_id(device_id, epoch, seq),
        device_id,
        e.type.value,
        e.person_id,
        e.camera_id,
        e.at.isoformat(),
        _utc_text(e.at),
        e.decided_at.isoformat(),
        e.session,
        e.track_id,
        float(e.score),
        float(e.margin),
        int(e.frames),
        float(e.quality),
        int(c.gallery_version),
        c.model_id,
        float(c.mono_time),
        float(c.wall_time),
        *_liveness_values(e.liveness),
        int(e.review),
    )


def _liveness_values(verdict: Optional[Verdict]) -> Tuple[Optional[float], Optional[int], Optional[str]]:
    if verdict is None:
        return None, None, None
    return verdict.p_real, verdict.frames, verdict.verdict


def _liveness_of(p_real: Optional[float], frames: Optional[int], verdict: Optional[str]) -> Optional[Verdict]:
    return None if verdict is None else Verdict(p_real=p_real, frames=int(frames or 0), verdict=verdict)


def _from_row(r: Sequence[Any]) -> StoredEvent:
    event = AttendanceEvent(
        type=EventType(r[3]),
        person_id=r[4],
        camera_id=r[5],
        at=datetime.fromisoformat(r[6]),
        decided_at=datetime.fromisoformat(r[7]),
        session=r[8],
        track_id=r[9],
        score=r[10],
        margin=r[11],
        frames=r[12],
        quality=r[13],
        liveness=_liveness_of(r[23], r[24], r[25]),
        review=bool(r[26]),
    )
    context = EventContext(gallery_version=r[14], model_id=r[15], mono_time=r[16], wall_time=r[17])
    return StoredEvent(r[0], r[1], r[2], event, context, _parse(r[18]), _parse(r[19]), r[20], r[21] or "", bool(r[22]))


# ---------------------------------------------------------------- the store


class EventStore:
    """Attendance events of one device in one SQLite file (WAL, synchronous=FULL)."""

    def __init__(self, path: Union[str, Path], device_id: str, init: bool = False) -> None:
        """Open (creating it when new) the event database. Refuses (StoreError) a database that is missing, empty,
        replaced or behind its marker unless `init` (`edge run --init`: a new database, or a new epoch on this one),
        one written by a newer edge, and one that is read-only."""
        if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.match(device_id):
            raise StoreError(
                f"invalid device id {device_id!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a "
                "letter or digit"
            )
        self.path = Path(path)
        self.device_id = device_id
        marker = read_marker(self.path)
        lost = lost_database(self.path, marker)
        if lost is not None and marker is not None:
            if not init:
                raise refusal(self.path, marker, f"is {lost}")
            set_aside(self.path)
        try:
            private_file(self.path)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create the event store or its folder ({exc})") from exc
        self._epochs: List[Tuple[int, str]] = []
        self._open(marker, init)

    def _open(self, marker: Optional[Marker], init: bool) -> None:
        """Connect and set the file up; a busy lock while another process creates the same file is retried."""
        deadline = clock.monotonic() + BUSY_TIMEOUT_S
        while True:
            conn: Optional[sqlite3.Connection] = None
            try:
                conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
                self.db = Database(conn)
                self._set_up(marker, init)
                return
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                busy = "locked" in str(exc) or "busy" in str(exc)
                if busy and clock.monotonic() < deadline:
                    clock.sleep(random.uniform(0.02, 0.1))
                    continue
                if "readonly" in str(exc) or "read-only" in str(exc) or folder_unwritable(self.path):
                    raise StoreError(
                        f"{self.path}: the event database or its folder is read-only ({exc}); the box cannot store "
                        "or deliver events: make both writable by the service user"
                    ) from exc
                raise StoreError(f"{self.path}: cannot open the event store ({exc})") from exc
            except BaseException:
                if conn is not None:
                    conn.close()
                raise

    def _set_up(self, marker: Optional[Marker], init: bool) -> None:
        conn = self.db.conn
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self.db.enable_wal()
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        with self._transaction():
            known = self._applied_migrations()
            newer = sorted(known - {m.name for m in migrations._migrations})
            if newer:
                raise StoreError(
                    f"{self.path}: the event database was written by a newer edge (unknown migrations: "
                    f"{', '.join(newer)[:200]}); run that version, or restore a database this version wrote"
                )
            ours = "m001_events" in known
            migrations.apply(self.db)
            stamp = datetime.now(timezone.utc).isoformat()  # one write now: a read-only file fails here, not later
            conn.execute("INSERT OR REPLACE INTO box_meta (key, value) VALUES ('opened_at', ?)", [stamp])
        self._load_epochs()
        high = self._high_water()
        problem = None if marker is None else _mismatch(marker, ours, {e for _, e in self._epochs}, high)
        if problem is not None and marker is not None:
            if not init:
                raise refusal(self.path, marker, problem)
            self._rotate_epoch()
            log.warning("%s: the event database %s; --init: new epoch %s from seq %d", self.path, problem,
                        self.epoch, self._epochs[-1][0])  # fmt: skip
        if marker is None or problem is not None:
            marker = new_marker(self.device_id, self.epoch, high)
            write_marker(self.path, marker)
        self._marker = marker

    def _applied_migrations(self) -> Set[str]:
        conn = self.db.conn
        table = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlite_migrations'")
        if table.fetchone() is None:
            return set()
        rows = conn.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = ?", [migrations.name])
        return {str(r[0]) for r in rows}

    def _load_epochs(self) -> None:
        rows = self.db.conn.execute("SELECT first_seq, epoch FROM epochs ORDER BY first_seq").fetchall()
        if not rows or not all(EPOCH_PATTERN.match(str(r[1])) for r in rows):
            raise StoreError(f"{self.path}: the epochs table is empty or damaged")
        self._epochs = [(int(r[0]), str(r[1])) for r in rows]

    def _rotate_epoch(self) -> None:
        """A new epoch from the next seq on: ids of seqs that may be handed out again never repeat."""
        first = self._high_water() + 1
        with self._transaction():
            self.db.conn.execute("DELETE FROM epochs WHERE first_seq >= ?", [first])
            self.db.conn.execute("INSERT INTO epochs (epoch, first_seq) VALUES (?, ?)", [new_epoch(), first])
        self._load_epochs()

    @property
    def epoch(self) -> str:
        """The current epoch: new events' ids carry it."""
        return self._epochs[-1][1]

    def epoch_span(self, epoch: str) -> Optional[Tuple[int, int]]:
        """The first and last seq an epoch of this database can hold (the current one: up to MAX_SEQ); None when
        the epoch is not this database's."""
        for i, (first, name) in enumerate(self._epochs):
            if name == epoch:
                last = self._epochs[i + 1][0] - 1 if i + 1 < len(self._epochs) else MAX_SEQ
                return first, last
        return None

    def reserve_published(self, seq: int) -> None:
        """Call before publishing `seq`: the marker's hwm must cover every seq that may have left the box, so a
        database that later comes back behind it is noticed. Written rarely: up to the whole high water at once."""
        if seq <= self._marker.hwm:
            return
        with self._guard("reading the last seq"):
            high = self._high_water()
        marker = replace(self._marker, hwm=max(high, int(seq)))
        write_marker(self.path, marker)
        self._marker = marker

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (the write lock is taken up front)."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Turn SQLite's errors into one StoreError naming the file and what was being done."""
        try:
            yield
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or "disk is full" in str(exc):
                raise StoreError(f"{self.path}: disk full, {action} failed and nothing was written") from exc
            raise StoreError(f"{self.path}: {action} failed ({exc})") from exc

    # writing -------------------------------------------------------------------------------------------------
    def append(self, events: Sequence[AttendanceEvent], context: EventContext) -> List[StoredEvent]:
        """Store one step's events in one transaction, in order; all or nothing.

        Raises ValueError for an event that cannot be stored (nothing written), and StoreError when SQLite
        refuses the write (disk full, locked, I/O error): nothing is written and no seq is consumed; the caller
        keeps the events and appends them again later.
        """
        if not isinstance(context, EventContext):
            raise ValueError(f"context must be an EventContext, got {type(context).__name__}")
        for event in events:
            check_event(event)
        if not events:
            return []
        epoch_first, epoch = self._epochs[-1]
        with self._guard(f"storing {len(events)} event(s)"), self._transaction():
            first = self._high_water() + 1
            rows = [_row_values(first + i, self.device_id, epoch, e, context) for i, e in enumerate(events)]
            self.db.conn.executemany(_INSERT, rows)
        return [
            StoredEvent(
                first + i,
                make_event_id(self.device_id, epoch, first + i),
                self.device_id,
                e,
                context,
                epoch=epoch,
                first_of_epoch=first + i == epoch_first,
            )
            for i, e in enumerate(events)
        ]

    def _high_water(self) -> int:
        """The largest seq ever committed (kept by AUTOINCREMENT even when rows are deleted)."""
        row = self.db.conn.execute(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0), "
            "coalesce((SELECT max(seq) FROM events), 0))"
        ).fetchone()
        return int(row[0])

    # reading -------------------------------------------------------------------------------------------------
    def _select(self, where: str = "1", params: Sequence[Any] = (), tail: str = "") -> List[StoredEvent]:
        with self._guard("reading events"):
            rows = self.db.conn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE {where} ORDER BY seq {tail}", list(params)
            ).fetchall()
            try:
                return [_from_row(r) for r in rows]
            except ValueError as exc:
                raise StoreError(f"{self.path}: a stored event cannot be read ({exc})") from exc

    def last_seq(self) -> int:
        """The largest seq ever assigned (0 before the first event); the next event gets a larger one."""
        with self._guard("reading the last seq"):
            return self._high_water()

    def count(self) -> int:
        with self._guard("counting events"):
            return int(self.db.conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def events_between(
        self,
        start: datetime,
        end: datetime,
        person_id: Optional[str] = None,
        types: Optional[Iterable[EventType]] = None,
    ) -> List[StoredEvent]:
        """Events with start <= at < end (aware datetimes), optionally of one person and some types, by seq."""
        where = ["at_utc >= ?", "at_utc < ?"]
        params: List[Any] = [_utc_text(start), _utc_text(end)]
        if person_id is not None:
            where.append("person_id = ?")
            params.append(person_id)
        if types is not None:
            values = [EventType(t).value for t in types]
            if not values:
                return []
            where.append(f"type IN ({', '.join('?' for _ in values)})")
            params.extend(values)
        return self._select(" AND ".join(where), params)

    def last_day_before(self, day: date, tz: tzinfo) -> Optional[date]:
        """The local date of the latest event before `day` (None when there is none)."""
        start = datetime.combine(day, time(0), tzinfo=tz)
        with self._guard("reading the last day"):
            row = self.db.conn.execute("SELECT max(at_utc) FROM events WHERE at_utc < ?", [_utc_text(start)]).fetchone()
        if row[0] is None:
            return None
        return datetime.strptime(row[0], _UTC_FORMAT).replace(tzinfo=timezone.utc).astimezone(tz).date()

    def events_of_day(self, day: date, tz: tzinfo) -> List[AttendanceEvent]:
        """One local day's events for `AttendanceMachine.restore`: by the local date of `at`, in emission order."""
        start = datetime.combine(day, time(0), tzinfo=tz)
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
        stored = self.events_between(start, end)
        return [_in_zone(s.event, tz) for s in stored if s.event.at.astimezone(tz).date() == day]

    # the outbox ----------------------------------------------------------------------------------------------
    def pending(self, limit: int = 100) -> List[StoredEvent]:
        """The oldest events not yet acknowledged by the broker, by seq."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        return self._select("acked_at IS NULL", (), f"LIMIT {int(limit)}")

    def oldest_unacked(self) -> Optional[StoredEvent]:
        found = self.pending(1)
        return found[0] if found else None

    def mark_published(self, seqs: Iterable[int], when: datetime) -> int:
        """Record a publish attempt of these events at `when`; returns how many rows were marked."""
        chosen = sorted({int(s) for s in seqs})
        stamp = _checked_iso(when)
        marked = 0
        with self._guard("marking events published"), self._transaction():
            for i in range(0, len(chosen), 500):
                chunk = chosen[i : i + 500]
                cursor = self.db.conn.execute(
                    "UPDATE events SET published_at = ?, publish_attempts = publish_attempts + 1 "
                    f"WHERE seq IN ({', '.join('?' for _ in chunk)})",
                    [stamp, *chunk],
                )
                marked += cursor.rowcount
        return marked

    def unacked_after(self, seq: int, limit: int) -> List[StoredEvent]:
        """Unacknowledged events with seq > `seq`, by seq (`pending` always starts at the oldest)."""
        return self._select("acked_at IS NULL AND seq > ?", [int(seq)], f"LIMIT {int(limit)}")

    def ack_seqs(self, seqs: Iterable[int], when: datetime) -> int:
        """Mark these events acknowledged at `when` (an ack's extra seqs); returns how many were newly acked."""
        chosen, stamp, marked = sorted({int(s) for s in seqs}), _checked_iso(when), 0
        with self._guard("acknowledging events"), self._transaction():
            for i in range(0, len(chosen), 500):
                chunk = chosen[i : i + 500]
                marks = ", ".join("?" for _ in chunk)
                marked += self.db.conn.execute(
                    f"UPDATE events SET acked_at = ? WHERE seq IN ({marks}) AND acked_at IS NULL", [stamp, *chunk]
                ).rowcount
        return marked

    def ack_up_to(self, seq: int, when: datetime, since: int = 1) -> int:
        """Mark every unacknowledged event with since <= seq' <= `seq` (one epoch's span) as acknowledged at `when`;
        returns how many."""
        stamp = _checked_iso(when)
        with self._guard("acknowledging events"), self._transaction():
            cursor = self.db.conn.execute(
                "UPDATE events SET acked_at = ? WHERE seq BETWEEN ? AND ? AND acked_at IS NULL",
                [stamp, int(since), int(seq)],
            )
            return int(cursor.rowcount)

    def never_published(self, first: int, last: int, limit: int) -> List[int]:
        """Up to `limit` unacknowledged seqs within first..last that no run has recorded as published."""
        with self._guard("reading the outbox"):
            rows = self.db.conn.execute(
                "SELECT seq FROM events WHERE seq BETWEEN ? AND ? AND acked_at IS NULL AND published_at IS NULL "
                f"ORDER BY seq LIMIT {int(limit)}",
                [int(first), int(last)],
            ).fetchall()
        return [int(r[0]) for r in rows]

    def never_published_among(self, seqs: Iterable[int]) -> List[int]:
        """Those of `seqs` that are unacknowledged and not recorded as published."""
        chosen = sorted({int(s) for s in seqs})
        found: List[int] = []
        with self._guard("reading the outbox"):
            for i in range(0, len(chosen), 500):
                chunk = chosen[i : i + 500]
                rows = self.db.conn.execute(
                    f"SELECT seq FROM events WHERE seq IN ({', '.join('?' for _ in chunk)}) "
                    "AND acked_at IS NULL AND published_at IS NULL",
                    chunk,
                ).fetchall()
                found.extend(int(r[0]) for r in rows)
        return found

    def has_unacked(self, first: int, last: int) -> bool:
        with self._guard("reading the outbox"):
            row = self.db.conn.execute(
                "SELECT 1 FROM events WHERE seq BETWEEN ? AND ? AND acked_at IS NULL LIMIT 1", [int(first), int(last)]
            ).fetchone()
        return row is not None

    def unacknowledge(self, first: int, last: int, limit: int) -> List[int]:
        """The central server lost its copies: make up to `limit` acknowledged events with first <= seq <= last
        unacknowledged and unpublished again (they go out once more); returns their seqs."""
        with self._guard("re-queueing events"), self._transaction():
            rows = self.db.conn.execute(
                "SELECT seq FROM events WHERE seq BETWEEN ? AND ? AND acked_at IS NOT NULL "
                f"ORDER BY seq LIMIT {int(limit)}",
                [int(first), int(last)],
            ).fetchall()
            seqs = [int(r[0]) for r in rows]
            if seqs:
                self.db.conn.execute(
                    "UPDATE events SET acked_at = NULL, published_at = NULL WHERE seq BETWEEN ? AND ? "
                    "AND acked_at IS NOT NULL",
                    [seqs[0], seqs[-1]],
                )
        return seqs


def _mismatch(marker: Marker, ours: bool, epochs: Set[str], high: int) -> Optional[str]:
    """How the database found at start differs from what its marker says, or None."""
    if not ours:
        return "was replaced by a new one (created by another command after the old one was lost?)"
    if marker.epoch not in epochs:
        return "is not the one its marker describes (another box's database, or an older copy?)"
    if high < marker.hwm:
        return (
            f"lost committed events: its last seq is {high}, below {marker.hwm} (a lost or damaged write-ahead "
            "log after a crash?)"
        )
    return None


def _checked_iso(moment: datetime) -> str:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {moment!r}")
    return moment.isoformat()


def _in_zone(event: AttendanceEvent, tz: tzinfo) -> AttendanceEvent:
    return AttendanceEvent(
        type=event.type,
        person_id=event.person_id,
        camera_id=event.camera_id,
        at=event.at.astimezone(tz),
        decided_at=event.decided_at.astimezone(tz),
        session=event.session,
        track_id=event.track_id,
        score=event.score,
        margin=event.margin,
        frames=event.frames,
        quality=event.quality,
        liveness=event.liveness,
        review=event.review,
    )


# ---------------------------------------------------------------- exports

EXPORT_FIELDS = (
    "event_id",
    "seq",
    "device_id",
    "type",
    "person_id",
    "camera_id",
    "at",
    "decided_at",
    "session",
    "track_id",
    "score",
    "margin",
    "frames",
    "quality",
    "gallery_version",
    "model_id",
    "mono_time",
    "stored_at",
    "liveness_p_real",
    "liveness_frames",
    "liveness_verdict",
    "review",
)
"""Columns of both exports, in order. `stored_at` is `wall_time` as ISO-8601 UTC; delivery state is left out. The
liveness columns are empty (null) for an event whose track was not checked (policy off, unknown faces)."""


def event_to_dict(stored: StoredEvent) -> Dict[str, Any]:
    """One stored event as a flat JSON-ready dict (the exports' row; the MQTT payload later)."""
    e, c = stored.event, stored.context
    return {
        "event_id": stored.event_id,
        "seq": stored.seq,
        "device_id": stored.device_id,
        "type": e.type.value,
        "person_id": e.person_id,
        "camera_id": e.camera_id,
        "at": e.at.isoformat(),
        "decided_at": e.decided_at.isoformat(),
        "session": e.session,
        "track_id": e.track_id,
        "score": e.score,
        "margin": e.margin,
        "frames": e.frames,
        "quality": e.quality,
        "gallery_version": c.gallery_version,
        "model_id": c.model_id,
        "mono_time": c.mono_time,
        "stored_at": datetime.fromtimestamp(c.wall_time, timezone.utc).isoformat(),
        "liveness_p_real": e.liveness.p_real if e.liveness is not None else None,
        "liveness_frames": e.liveness.frames if e.liveness is not None else None,
        "liveness_verdict": e.liveness.verdict if e.liveness is not None else None,
        "review": e.review,
    }


def export_csv(events: Iterable[StoredEvent], file: IO[str]) -> int:
    """Write a header and one row per event (None as an empty cell); returns the number of rows.

    Open the file with newline="" as the csv module asks."""
    writer = csv.DictWriter(file, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    written = 0
    for stored in events:
        writer.writerow({k: "" if v is None else v for k, v in event_to_dict(stored).items()})
        written += 1
    return written


def export_json(events: Iterable[StoredEvent], file: IO[str]) -> int:
    """Write JSON Lines: one object per event and line (None as null); returns the number of lines."""
    written = 0
    for stored in events:
        file.write(json.dumps(event_to_dict(stored), ensure_ascii=False) + "\n")
        written += 1
    return written
