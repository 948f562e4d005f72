"""The daily attendance report (pure): one row per person and session from the day's events, the timetable and
the staff's corrections. Nothing here reads a clock or a database.

A person's day is first turned into *stays* (inside from an in-mark to an out-mark):

- in-marks: `entry`, `outing_end`, a `manual_entry` correction;
- out-marks: `outing_start` (final when an `exit` at the same time follows it: the outing became a leave), a
  `manual_exit` correction (always final). An out-mark while already outside (the entry was missed) is a stay of
  no length at that moment: the person was seen, so they attended.
- a gap between two stays that began with a non-final out-mark is an *outing*.

Then, per session the person follows that day (edge.schedule: group sessions, closures, one-off changes):

- the stays that touch the session (from its early window to its end) decide it; none: **absent**;
- first_entry: the start of the first such stay (None when it began with an out-mark: the entry was missed, and
  such a stay is never late, as on the box); **late** when it is after start + grace (minutes_late counts whole
  minutes from the session's start: the box's `late` rule, edge/attendance.py);
- last_exit: the end of the last such stay when it is final (None: still inside, or out on an outing);
  **left_early** when a final exit of those stays lies in [start, end - tolerance) (the box's `early_leave`
  rule, which also holds for someone who left and came back later);
- outings: those that began within the session (early window included); minutes_out sums those that ended
  (an outing still open counts, without minutes).

Status, strongest first: excused (a correction for that person and date), absent, left_early, late, present.
A person with no session that day (a weekend, a holiday) who came anyway gets one row with session None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from edge.schedule import SessionSpan

STATUSES = ("present", "late", "absent", "left_early", "excused")
CORRECTION_KINDS = ("excused", "manual_entry", "manual_exit")
_IN = ("entry", "outing_end")
_OUT = ("outing_start",)


@dataclass(frozen=True)
class ReportRow:
    """One person's attendance in one session of one day."""

    date: date
    person_id: str
    name: str
    group: Optional[str]
    session: Optional[str]
    status: str
    """present | late | absent | left_early | excused"""
    first_entry: Optional[datetime]
    last_exit: Optional[datetime]
    minutes_late: int
    outings: int
    minutes_out: int
    device_id: Optional[str]
    camera_id: Optional[str]
    corrected: bool
    """A staff correction (excused, manual entry or exit) for this person and date was used."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")


@dataclass(frozen=True)
class Correction:
    """A staff correction, kept as its own audit row (events are never edited)."""

    date: date
    person_id: str
    kind: str
    """excused | manual_entry | manual_exit"""
    by: str
    why: str
    at: Optional[datetime] = None
    """When (aware) for manual_entry / manual_exit; None for excused."""
    id: Optional[int] = None
    created_at: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in CORRECTION_KINDS:
            raise ValueError(f"kind must be one of {', '.join(CORRECTION_KINDS)}, got {self.kind!r}")
        if not self.by.strip():
            raise ValueError("by must name who made the correction")
        if not self.why.strip():
            raise ValueError("why must say why the correction was made")
        if self.kind == "excused" and self.at is not None:
            raise ValueError("an excused day takes no time (at)")
        if self.kind != "excused" and (self.at is None or self.at.tzinfo is None):
            raise ValueError(f"{self.kind} needs the time it happened (an aware datetime)")


@dataclass(frozen=True)
class Member:
    """Who a row is for: the roster's name and group (a person seen but not on the roster: their id)."""

    person_id: str
    name: str
    group: Optional[str]
    expected: bool = True
    """On the roster and active: absent when they do not come. False: only rows for days they came."""


@dataclass(frozen=True)
class Mark:
    """One in/out moment of a person's day, from an event or a correction."""

    at: datetime
    inward: bool
    final: bool = False
    device_id: Optional[str] = None
    camera_id: Optional[str] = None
    corrected: bool = False


@dataclass(frozen=True)
class Stay:
    start: Mark
    end: Optional[Mark]

    @property
    def final(self) -> bool:
        return self.end is not None and self.end.final


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def marks_of(events: Iterable[Mapping[str, Any]], corrections: Iterable[Correction], tz: Optional[tzinfo]) -> List[Mark]:
    """One person's in/out marks of one day in time order (events are payload dicts of edge.event/1)."""
    events = list(events)
    exits = {_ts(_local(e["at"], tz)) for e in events if e.get("type") == "exit"}
    marks: List[Mark] = []
    for e in events:
        kind = e.get("type")
        if kind not in _IN and kind not in _OUT:
            continue
        at = _local(e["at"], tz)
        final = kind in _OUT and _ts(at) in exits
        marks.append(Mark(at, kind in _IN, final, e.get("device_id"), e.get("camera_id")))
    outs = {_ts(m.at) for m in marks if not m.inward}
    for stamp in sorted(exits - outs):  # an exit without its outing_start (never sent by a box; kept anyway)
        event = next(e for e in events if e.get("type") == "exit" and _ts(_local(e["at"], tz)) == stamp)
        marks.append(Mark(_local(event["at"], tz), False, True, event.get("device_id"), event.get("camera_id")))
    for c in corrections:
        if c.kind in ("manual_entry", "manual_exit") and c.at is not None:
            at = c.at.astimezone(tz) if tz is not None else c.at
            marks.append(Mark(at, c.kind == "manual_entry", c.kind == "manual_exit", corrected=True))
    return sorted(marks, key=lambda m: (_ts(m.at), not m.inward))


def stays_of(marks: Sequence[Mark]) -> List[Stay]:
    """Marks in time order -> stays; a repeated in (two boxes, a duplicate) changes nothing."""
    stays: List[Stay] = []
    open_start: Optional[Mark] = None
    for mark in marks:
        if mark.inward:
            if open_start is None:
                open_start = mark
        elif open_start is not None:
            stays.append(Stay(open_start, mark))
            open_start = None
        elif stays and stays[-1].end is not None and _ts(stays[-1].end.at) == _ts(mark.at):
            if mark.final and not stays[-1].final:  # the exit that closes an outing already counted
                stays[-1] = Stay(stays[-1].start, mark)
        else:  # out while outside: the entry was missed; they were there at that moment
            stays.append(Stay(mark, mark))
    if open_start is not None:
        stays.append(Stay(open_start, None))
    return stays


def _touches(stay: Stay, span: SessionSpan) -> bool:
    if _ts(stay.start.at) >= _ts(span.end):
        return False
    return stay.end is None or _ts(stay.end.at) > _ts(span.opens) or _ts(stay.start.at) >= _ts(span.opens)


def _outings(stays: Sequence[Stay], since: Optional[datetime], until: Optional[datetime]) -> Tuple[int, int]:
    """(count, minutes) of the outings that began in [since, until) (None: unbounded)."""
    count, seconds = 0, 0.0
    for i, stay in enumerate(stays):
        if stay.end is None or stay.final:
            continue
        out = _ts(stay.end.at)
        if (since is not None and out < _ts(since)) or (until is not None and out >= _ts(until)):
            continue
        count += 1
        if i + 1 < len(stays):
            seconds += _ts(stays[i + 1].start.at) - out
    return count, int(round(seconds / 60.0))


def session_row(day: date, who: Member, span: SessionSpan, stays: Sequence[Stay], excused: bool,
                corrected: bool) -> ReportRow:  # fmt: skip
    """The row of one person in one session."""
    touching = [s for s in stays if _touches(s, span)]
    count, minutes_out = _outings(stays, span.opens, span.end)
    base = dict(date=day, person_id=who.person_id, name=who.name, group=who.group, session=span.name)
    if not touching:
        status = "excused" if excused else "absent"
        return ReportRow(**base, status=status, first_entry=None, last_exit=None, minutes_late=0,  # type: ignore[arg-type]
                         outings=0, minutes_out=0, device_id=None, camera_id=None, corrected=corrected)  # fmt: skip
    first, last = touching[0], touching[-1]
    first_entry = first.start.at if first.start.inward else None  # None: the entry was missed (seen going out)
    late = first_entry is not None and _ts(first_entry) > _ts(span.late_after)
    minutes_late = math.floor((_ts(first.start.at) - _ts(span.start)) / 60.0) if late else 0
    last_exit = last.end.at if last.end is not None and last.final else None
    left_early = any(  # the box's early_leave: any leave of the session before its end, even if they came back
        s.end is not None and s.final and _ts(span.start) <= _ts(s.end.at) < _ts(span.early_before) for s in touching
    )
    status = "excused" if excused else "left_early" if left_early else "late" if late else "present"
    uses_correction = corrected or any(s.start.corrected or (s.end is not None and s.end.corrected) for s in touching)
    return ReportRow(**base, status=status, first_entry=first_entry, last_exit=last_exit,  # type: ignore[arg-type]
                     minutes_late=minutes_late, outings=count, minutes_out=minutes_out,
                     device_id=_where(touching)[0], camera_id=_where(touching)[1],
                     corrected=uses_correction)  # fmt: skip


def _where(stays: Sequence[Stay]) -> Tuple[Optional[str], Optional[str]]:
    """The box and camera of the first mark a door made (a staff correction, the first, has none)."""
    for stay in stays:
        for mark in (stay.start, stay.end):
            if mark is not None and mark.device_id is not None:
                return mark.device_id, mark.camera_id
    return None, None


def person_rows(day: date, who: Member, spans: Sequence[SessionSpan], events: Sequence[Mapping[str, Any]],
                corrections: Sequence[Correction], tz: Optional[tzinfo]) -> List[ReportRow]:  # fmt: skip
    """One person's rows of one day: one per session (none on a day without sessions, unless they came)."""
    stays = stays_of(marks_of(events, corrections, tz))
    excused = any(c.kind == "excused" for c in corrections)
    corrected = bool(corrections)
    if spans:
        return [session_row(day, who, span, stays, excused, corrected) for span in spans]
    if not stays:
        return []
    first, last = stays[0], stays[-1]
    count, minutes_out = _outings(stays, None, None)
    return [
        ReportRow(
            date=day, person_id=who.person_id, name=who.name, group=who.group, session=None,
            status="excused" if excused else "present", first_entry=first.start.at if first.start.inward else None,
            last_exit=last.end.at if last.end is not None and last.final else None, minutes_late=0, outings=count,
            minutes_out=minutes_out, device_id=_where(stays)[0], camera_id=_where(stays)[1],
            corrected=corrected or any(s.start.corrected or (s.end is not None and s.end.corrected) for s in stays),
        )
    ]  # fmt: skip


def _local(text: str, tz: Optional[tzinfo]) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"event time {text!r} has no UTC offset")
    return moment.astimezone(tz) if tz is not None else moment


def local_date(text: str, tz: Optional[tzinfo]) -> date:
    return _local(text, tz).date()


def daily(
    day: date,
    members: Sequence[Member],
    sessions_of: Any,
    events: Sequence[Mapping[str, Any]],
    corrections: Sequence[Correction],
    tz: Optional[tzinfo],
) -> List[ReportRow]:
    """The report of one day. members: the roster (and anyone else seen); sessions_of(group, day) -> spans;
    events: that day's event payloads (any order, any box); corrections: that day's."""
    by_person: Dict[str, List[Mapping[str, Any]]] = {}
    for e in events:
        if e.get("person_id") and local_date(e["at"], tz) == day:
            by_person.setdefault(e["person_id"], []).append(e)
    fixes: Dict[str, List[Correction]] = {}
    for c in corrections:
        if c.date == day:
            fixes.setdefault(c.person_id, []).append(c)
    rows: List[ReportRow] = []
    for who in members:
        mine, fixed = by_person.get(who.person_id, []), fixes.get(who.person_id, [])
        if not who.expected and not mine and not fixed:
            continue
        rows.extend(person_rows(day, who, sessions_of(who.group, day), mine, fixed, tz))
    return sorted(rows, key=_order)


def _order(row: ReportRow) -> Tuple[Any, ...]:
    """By date, group, name; a person's sessions stay in start order (the sort is stable)."""
    return (row.date, row.group or "", row.name.casefold(), row.person_id)
