"""The attendance office's data at the central: the roster (people: name, group, active), the timetable, the
staff's corrections, and the reports built from them and the stored events.

    office = Office(store)                        # store: edge.central.store.CentralStore (tables migrated)
    office.put_person(Person("p-17", "Lin-Manuel", "3A", True))
    office.correct(date(2025, 3, 4), "p-17", "excused", by="office", why="doctor's note")
    rows = office.report(date(2025, 3, 4), group="3A")     # List[ReportRow] (edge.central.report)

Tables (own migrations, "edge.central.office", applied by CentralStore on either back-end): `people`, `timetable` (one row: the
JSON document of edge.central.timetable.Timetable), `corrections` (audit rows, never edited or deleted: a
correction is undone by another one... or not at all; events are never edited). All SQL of the office is here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

from edge.central.backend import Ddl, Schema
from edge.central.report import Correction, Member, ReportRow, daily, local_date
from edge.central.timetable import Timetable, timetable_from_document
from edge.errors import EdgeError
from edge.gallery.store import check_person_id

if TYPE_CHECKING:
    from edge.central.store import CentralStore

migrations = Schema("edge.central.office")

MAX_RANGE_DAYS = 366
"""A report over a date range covers at most this many days."""


class OfficeError(EdgeError):
    """The office refused a change or a query: an unknown person, a bad correction, a range too long."""


@migrations()
def m001_office(db: Ddl) -> None:
    db.execute(
        """
        CREATE TABLE people (
            person_id TEXT PRIMARY KEY, name TEXT NOT NULL, group_name TEXT, active INTEGER NOT NULL DEFAULT 1,
            updated_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE TABLE timetable (id INTEGER PRIMARY KEY, document TEXT NOT NULL, updated_at TEXT NOT NULL)")
    db.execute(
        """
        CREATE TABLE corrections (
            id INTEGER PRIMARY KEY, day TEXT NOT NULL, person_id TEXT NOT NULL, kind TEXT NOT NULL, at TEXT,
            made_by TEXT NOT NULL, why TEXT NOT NULL, created_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX idx_corrections_day ON corrections (day, person_id)")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Person:
    """One person of the roster: the id the boxes' galleries use, the name the office reads, the group whose
    sessions they follow (None: the shared sessions), and whether they are expected (inactive: never absent)."""

    person_id: str
    name: str
    group: Optional[str] = None
    active: bool = True

    def __post_init__(self) -> None:
        try:
            check_person_id(self.person_id)
        except EdgeError as exc:
            raise ValueError(str(exc)) from None
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"person {self.person_id!r}: name must be a non-empty string")
        if self.group is not None and (not isinstance(self.group, str) or not self.group.strip()):
            raise ValueError(f"person {self.person_id!r}: group must be a non-empty string or None")


class Office:
    """The roster, timetable, corrections and reports over a CentralStore (thread-safe, on either back-end)."""

    def __init__(self, store: CentralStore) -> None:
        self.store = store

    # the roster ----------------------------------------------------------------------------------------------
    def people(self) -> List[Person]:
        rows = self.store.backend.query(
            "SELECT person_id, name, group_name, active FROM people ORDER BY group_name NULLS FIRST, name, person_id"
        )
        return [Person(r[0], r[1], r[2], bool(r[3])) for r in rows]

    def person(self, person_id: str) -> Optional[Person]:
        r = self.store.backend.one(
            "SELECT person_id, name, group_name, active FROM people WHERE person_id = ?", [person_id]
        )
        return Person(r[0], r[1], r[2], bool(r[3])) if r else None

    def put_person(self, person: Person) -> None:
        """Add a person or change their name, group and active flag."""
        with self.store.backend.transaction() as tx:
            tx.execute(
                "INSERT INTO people (person_id, name, group_name, active, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (person_id) DO UPDATE SET name = excluded.name, group_name = excluded.group_name, "
                "active = excluded.active, updated_at = excluded.updated_at",
                [person.person_id, person.name, person.group, int(person.active), _now()],
            )

    def set_active(self, person_id: str, active: bool) -> None:
        with self.store.backend.transaction() as tx:
            changed = tx.execute(
                "UPDATE people SET active = ?, updated_at = ? WHERE person_id = ?", [int(active), _now(), person_id]
            )
        if changed == 0:
            raise OfficeError(f"no person {person_id!r} on the roster")

    def named(self, event: Mapping[str, Any]) -> Dict[str, Any]:
        """The event with the person's `name` and `group` added (None for an unknown face or someone not on the
        roster), for consumers that show events to people."""
        out = dict(event)
        who = self.person(event["person_id"]) if event.get("person_id") else None
        out["name"] = who.name if who is not None else None
        out["group"] = who.group if who is not None else None
        return out

    # the timetable -------------------------------------------------------------------------------------------
    def timetable(self) -> Timetable:
        """The stored timetable (none stored: no sessions, the central's local zone)."""
        row = self.store.backend.one("SELECT document FROM timetable WHERE id = 1")
        return timetable_from_document(json.loads(row[0])) if row else Timetable()

    def put_timetable(self, timetable: Timetable) -> None:
        document = json.dumps(timetable.document(), ensure_ascii=False, sort_keys=True)
        with self.store.backend.transaction() as tx:
            tx.execute(
                "INSERT INTO timetable (id, document, updated_at) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at",
                [document, _now()],
            )

    # corrections ---------------------------------------------------------------------------------------------
    def correct(self, day: date, person_id: str, kind: str, by: str, why: str,
                at: Optional[datetime] = None) -> Correction:  # fmt: skip
        """Record a correction (excused, manual_entry, manual_exit) with who made it and why; `at` (manual kinds):
        an aware datetime, or a naive one in the site's zone. Returns it as stored."""
        if self.person(person_id) is None:
            raise OfficeError(f"no person {person_id!r} on the roster")
        if at is not None and at.tzinfo is None:
            tz = self.timetable().tz
            at = at.replace(tzinfo=tz) if tz is not None else at.astimezone()
        try:
            Correction(day, person_id, kind, by, why, at)  # its checks
        except ValueError as exc:
            raise OfficeError(str(exc)) from None
        if at is not None and local_date(at.isoformat(), self.timetable().tz) != day:
            raise OfficeError(f"{kind} at {at.isoformat()} is not on {day.isoformat()}")
        created = _now()
        with self.store.backend.transaction() as tx:
            new_id = tx.insert(
                "INSERT INTO corrections (day, person_id, kind, at, made_by, why, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [day.isoformat(), person_id, kind, at.isoformat() if at else None, by, why, created],
            )
        return Correction(day, person_id, kind, by, why, at, new_id, created)

    def corrections(self, day: date, until: Optional[date] = None) -> List[Correction]:
        """The corrections of `day` (or of day..until, inclusive), oldest first."""
        last = until or day
        rows = self.store.backend.query(
            "SELECT day, person_id, kind, at, made_by, why, id, created_at FROM corrections "
            "WHERE day >= ? AND day <= ? ORDER BY id",
            [day.isoformat(), last.isoformat()],
        )
        return [
            Correction(date.fromisoformat(r[0]), r[1], r[2], r[4], r[5],
                       datetime.fromisoformat(r[3]) if r[3] else None, r[6], r[7])
            for r in rows
        ]  # fmt: skip

    # reports -------------------------------------------------------------------------------------------------
    def report(self, day: date, group: Optional[str] = None) -> List[ReportRow]:
        """One day: a row per person and session (absent computed), of one group or everyone."""
        return self.report_range(day, day, group=group)

    def report_range(self, start: date, end: date, group: Optional[str] = None,
                     person_id: Optional[str] = None) -> List[ReportRow]:  # fmt: skip
        """Every day from start to end (inclusive), optionally of one group or one person."""
        if end < start:
            raise OfficeError(f"the range ends ({end}) before it starts ({start})")
        if (end - start).days >= MAX_RANGE_DAYS:
            raise OfficeError(f"a report covers at most {MAX_RANGE_DAYS} days, asked for {(end - start).days + 1}")
        timetable = self.timetable()
        tz = timetable.tz
        events = self._events(start, end)
        fixes = self.corrections(start, end)
        members = self._members(events)
        if group is not None:
            members = [m for m in members if m.group == group]
        if person_id is not None:
            members = [m for m in members if m.person_id == person_id]
        by_day: Dict[date, List[Dict[str, Any]]] = {}
        for event in events:  # each event on its local date once (not every day scanning the whole range)
            by_day.setdefault(local_date(event["at"], tz), []).append(event)
        rows: List[ReportRow] = []
        day = start
        while day <= end:
            todays = [c for c in fixes if c.date == day]
            rows.extend(daily(day, members, timetable.sessions, by_day.get(day, []), todays, tz))
            day += timedelta(days=1)
        return rows

    def history(self, person_id: str, start: date, end: date) -> List[ReportRow]:
        """One person's rows over a date range."""
        return self.report_range(start, end, person_id=person_id)

    def _members(self, events: List[Dict[str, Any]]) -> List[Member]:
        members = [Member(p.person_id, p.name, p.group, p.active) for p in self.people()]
        known = {m.person_id for m in members}
        seen = sorted({e["person_id"] for e in events if e.get("person_id")} - known)
        return members + [Member(pid, pid, None, expected=False) for pid in seen]

    def _events(self, start: date, end: date) -> List[Dict[str, Any]]:
        """The attendance events whose local date may fall in start..end (a day of margin each side for the UTC
        offsets; `daily` keeps each event on its own local date)."""
        since = (start - timedelta(days=1)).isoformat()
        until = (end + timedelta(days=2)).isoformat()
        return self.store.events_between(since, until, types=("entry", "exit", "outing_start", "outing_end"))
