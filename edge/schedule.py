"""Timetables: which session applies to a person at a given moment (pure; times are local wall-clock).

A session is a named span of a day ("08:00".."12:00") on some weekdays, optionally for some groups only.
Who follows which session:

- a person whose group has sessions of its own that day follows those;
- everyone else (no group, or a group with no session that day) follows the sessions that name no group.

Closures (holidays, a school trip) take every session of their dates away, for everyone or for some groups; a
one-off change moves a session on one date (other start or end), cancels it, or adds a session for that date only
(a name the weekly sessions do not have). Who follows which session is decided on the weekly sessions plus the added
ones, before cancellations: a group whose own session is cancelled has no session then (it does not fall back to
the shared ones).

A session is *current* from `start - early_window_min` until `end` (end excluded). When two current sessions
overlap in that early window, the one that started first (the one in progress) wins. Sessions do not cross
midnight (end must be after start).

In YAML, quote the times: YAML 1.1 reads an unquoted `12:30` as the number 750 (sexagesimal), which the
loader rejects as "expected a string".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import List, Optional, Tuple

WEEKDAYS: Tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_hhmm(text: str) -> time:
    """'08:30' -> time(8, 30); raises ValueError for anything but 00:00..23:59 with two-digit fields."""
    found = _HHMM.match(text) if isinstance(text, str) else None
    if found is None:
        raise ValueError(f"expected HH:MM within 00:00..23:59, got {text!r}")
    return time(int(found.group(1)), int(found.group(2)))


def shift(moment: datetime, seconds: float) -> datetime:
    """`moment` plus elapsed seconds, measured in real time (UTC), so a DST change does not bend durations."""
    tz = moment.tzinfo
    return (moment.astimezone(timezone.utc) + timedelta(seconds=seconds)).astimezone(tz)


def seconds_between(earlier: datetime, later: datetime) -> float:
    """Real elapsed seconds from `earlier` to `later` (negative when `later` is before `earlier`)."""
    return later.timestamp() - earlier.timestamp()


@dataclass(frozen=True)
class SessionConfig:
    """One recurring session of the timetable."""

    name: str
    """Unique name; events carry it (e.g. "morning", "3A-maths")."""
    start: str
    """Local start time, "HH:MM" (quote it in YAML)."""
    end: str
    """Local end time, "HH:MM", after `start` (sessions do not cross midnight)."""
    days: Tuple[str, ...] = WEEKDAYS[:5]
    """Weekdays it runs on, among mon tue wed thu fri sat sun."""
    groups: Tuple[str, ...] = ()
    """Groups it is for; empty means people with no group (and groups with no session of their own that day)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        for field_name in ("start", "end"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not _HHMM.match(value):
                raise ValueError(f"{field_name} must be HH:MM within 00:00..23:59, got {value!r}")
        if parse_hhmm(self.end) <= parse_hhmm(self.start):
            raise ValueError(f"end must be after start ({self.start}), got {self.end}")
        if not self.days:
            raise ValueError("days must name at least one weekday")
        for day in self.days:
            if day not in WEEKDAYS:
                raise ValueError(f"days must be among {', '.join(WEEKDAYS)}, got {day!r}")
        if len(set(self.days)) != len(self.days):
            raise ValueError(f"days must not repeat a weekday, got {list(self.days)}")
        for group in self.groups:
            if not isinstance(group, str) or not group.strip():
                raise ValueError(f"groups must be non-empty strings, got {group!r}")

    def runs_on(self, day: date) -> bool:
        return WEEKDAYS[day.weekday()] in self.days

    def is_for(self, group: Optional[str]) -> bool:
        """True when the session names `group` (None: when it names no group)."""
        return group in self.groups if group is not None else not self.groups


def _overlap(a: SessionConfig, b: SessionConfig) -> bool:
    same_audience = (not a.groups and not b.groups) or bool(set(a.groups) & set(b.groups))
    same_day = bool(set(a.days) & set(b.days))
    return (
        same_audience
        and same_day
        and parse_hhmm(a.start) < parse_hhmm(b.end)
        and parse_hhmm(b.start) < parse_hhmm(a.end)
    )


def parse_date(text: str) -> date:
    """'2025-03-05' -> date; raises ValueError for anything else."""
    if not isinstance(text, str) or not _DATE.match(text):
        raise ValueError(f"expected a date YYYY-MM-DD, got {text!r}")
    return date.fromisoformat(text)


def _check_groups(groups: Tuple[str, ...]) -> None:
    for group in groups:
        if not isinstance(group, str) or not group.strip():
            raise ValueError(f"groups must be non-empty strings, got {group!r}")


@dataclass(frozen=True)
class Closure:
    """Days without sessions: a holiday, a closure, a trip (for everyone or for some groups)."""

    start: str
    """First day, "YYYY-MM-DD" (quote it in YAML)."""
    end: Optional[str] = None
    """Last day, inclusive; None: the start day only."""
    groups: Tuple[str, ...] = ()
    """Groups it closes; empty means everyone."""
    reason: str = ""
    """What it is (shown to the office)."""

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not _DATE.match(value)):
                raise ValueError(f"{name} must be a date YYYY-MM-DD, got {value!r}")
            if value is not None:
                try:
                    parse_date(value)
                except ValueError:
                    raise ValueError(f"{name} must be a real date, got {value!r}") from None
        if self.end is not None and parse_date(self.end) < parse_date(self.start):
            raise ValueError(f"end must not be before start ({self.start}), got {self.end}")
        _check_groups(self.groups)

    def closes(self, day: date, group: Optional[str]) -> bool:
        last = parse_date(self.end) if self.end is not None else parse_date(self.start)
        in_range = parse_date(self.start) <= day <= last
        return in_range and (not self.groups or group in self.groups)


@dataclass(frozen=True)
class SessionChange:
    """A one-off change on one date: a weekly session moved or cancelled, or a session added for that date."""

    date: str
    """The day, "YYYY-MM-DD" (quote it in YAML)."""
    session: str
    """A weekly session's name (moved or cancelled), or a new name (added: needs start, end, maybe groups)."""
    start: Optional[str] = None
    """New local start "HH:MM"; None keeps the session's."""
    end: Optional[str] = None
    """New local end "HH:MM"; None keeps the session's."""
    cancelled: bool = False
    """True: the session does not take place that day."""
    groups: Tuple[str, ...] = ()
    """Only for an added session: the groups it is for (empty: people with no group)."""

    def __post_init__(self) -> None:
        try:
            parse_date(self.date)
        except ValueError:
            raise ValueError(f"date must be a date YYYY-MM-DD, got {self.date!r}") from None
        if not isinstance(self.session, str) or not self.session.strip():
            raise ValueError(f"session must be a non-empty string, got {self.session!r}")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not _HHMM.match(value)):
                raise ValueError(f"{name} must be HH:MM within 00:00..23:59, got {value!r}")
        if self.cancelled and (self.start is not None or self.end is not None or self.groups):
            raise ValueError("a cancelled session takes no start, end or groups")
        if not self.cancelled and self.start is None and self.end is None:
            raise ValueError("a change must give a start, an end, or cancelled: true")
        _check_groups(self.groups)


@dataclass(frozen=True)
class ScheduleConfig:
    """The timetable and the tolerances applied to every session."""

    sessions: Tuple[SessionConfig, ...] = ()
    """The sessions; none means no late/early_leave events and no session on events."""
    grace_min: float = 5.0
    """A first entry later than start + grace is `late`."""
    early_leave_tolerance_min: float = 0.0
    """Going out for good later than end - tolerance is not an `early_leave`."""
    early_window_min: float = 60.0
    """How long before its start a session is already current (early arrivals are counted for it)."""
    closures: Tuple[Closure, ...] = ()
    """Holidays and closures: days (for everyone or some groups) without sessions."""
    changes: Tuple[SessionChange, ...] = ()
    """One-off changes: a session moved, cancelled or added on one date."""

    def __post_init__(self) -> None:
        for name in ("grace_min", "early_leave_tolerance_min", "early_window_min"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        seen = set()
        for session in self.sessions:
            if session.name in seen:
                raise ValueError(f"sessions must have unique names, got {session.name!r} twice")
            seen.add(session.name)
        for i, a in enumerate(self.sessions):
            for b in self.sessions[i + 1 :]:
                if _overlap(a, b):
                    raise ValueError(f"sessions {a.name!r} and {b.name!r} overlap for the same people on the same day")
        self._check_changes()

    def _check_changes(self) -> None:
        names = {s.name: s for s in self.sessions}
        changed = set()
        for change in self.changes:
            key = (change.date, change.session)
            if key in changed:
                raise ValueError(f"changes name session {change.session!r} on {change.date} twice")
            changed.add(key)
            day = parse_date(change.date)
            weekly = names.get(change.session)
            if weekly is not None and not weekly.runs_on(day):
                raise ValueError(
                    f"change of {change.session!r} on {change.date}: that session does not run on a "
                    f"{WEEKDAYS[day.weekday()]}"
                )
            if weekly is not None and change.groups:
                raise ValueError(f"change of {change.session!r} on {change.date}: groups only for an added session")
            if weekly is None and (change.cancelled or change.start is None or change.end is None):
                raise ValueError(
                    f"change on {change.date}: {change.session!r} is no weekly session, so it adds one: "
                    "give its start and end"
                )
        for day in sorted({parse_date(c.date) for c in self.changes}):
            today = [s for s, cancelled in day_sessions(self, day) if not cancelled]
            for i, a in enumerate(today):
                for b in today[i + 1 :]:
                    if _overlap(a, b):
                        raise ValueError(f"on {day}, sessions {a.name!r} and {b.name!r} overlap for the same people")


@dataclass(frozen=True)
class SessionSpan:
    """One session on one date, as aware local datetimes, with the moments its rules turn on."""

    name: str
    start: datetime
    end: datetime
    opens: datetime
    """start - early window: from here the session is current."""
    late_after: datetime
    """start + grace: a first entry after this is late."""
    early_before: datetime
    """end - tolerance: going out for good before this (and after start) is an early leave."""


def span_of(session: SessionConfig, day: date, tz: Optional[tzinfo], schedule: ScheduleConfig) -> SessionSpan:
    start = datetime.combine(day, parse_hhmm(session.start), tzinfo=tz)
    end = datetime.combine(day, parse_hhmm(session.end), tzinfo=tz)
    return SessionSpan(
        name=session.name,
        start=start,
        end=end,
        opens=shift(start, -60.0 * schedule.early_window_min),
        late_after=shift(start, 60.0 * schedule.grace_min),
        early_before=shift(end, -60.0 * schedule.early_leave_tolerance_min),
    )


def day_sessions(schedule: ScheduleConfig, day: date) -> List[Tuple[SessionConfig, bool]]:
    """The sessions of `day` after its one-off changes, each with whether it is cancelled (closures not applied)."""
    changes = {c.session: c for c in schedule.changes if c.date == day.isoformat()}
    out: List[Tuple[SessionConfig, bool]] = []
    for session in schedule.sessions:
        if not session.runs_on(day):
            continue
        change = changes.pop(session.name, None)
        if change is None:
            out.append((session, False))
        elif change.cancelled:
            out.append((session, True))
        else:
            moved = replace(session, start=change.start or session.start, end=change.end or session.end)
            out.append((moved, False))
    for change in changes.values():  # the rest add sessions (checked when the schedule was built)
        weekday = (WEEKDAYS[day.weekday()],)
        added = SessionConfig(change.session, change.start or "", change.end or "", weekday, change.groups)
        out.append((added, change.cancelled))
    return out


def is_closed(schedule: ScheduleConfig, group: Optional[str], day: date) -> Optional[Closure]:
    """The closure that takes `day` away from people of `group`, or None."""
    return next((c for c in schedule.closures if c.closes(day, group)), None)


def sessions_for(schedule: ScheduleConfig, group: Optional[str], day: date, tz: Optional[tzinfo]) -> List[SessionSpan]:
    """The sessions a person of `group` follows on `day`, in start order (none on a closure)."""
    if is_closed(schedule, group, day) is not None:
        return []
    today = day_sessions(schedule, day)
    own = [(s, cancelled) for s, cancelled in today if group is not None and s.is_for(group)]
    chosen = own or [(s, cancelled) for s, cancelled in today if s.is_for(None)]
    spans = [span_of(s, day, tz, schedule) for s, cancelled in chosen if not cancelled]
    return sorted(spans, key=lambda span: span.start.timestamp())


def is_current(span: SessionSpan, at: datetime) -> bool:
    return seconds_between(span.opens, at) >= 0 and seconds_between(at, span.end) > 0


def current_session(schedule: ScheduleConfig, group: Optional[str], at: datetime) -> Optional[SessionSpan]:
    """The session that applies to a person of `group` at local time `at`, or None (the earliest-started wins)."""
    for span in sessions_for(schedule, group, at.date(), at.tzinfo):
        if is_current(span, at):
            return span
    return None


def session_named(schedule: ScheduleConfig, name: str, day: date, tz: Optional[tzinfo]) -> Optional[SessionSpan]:
    """The span of session `name` on `day`, one-off changes applied (None when no such session runs that day)."""
    for session, cancelled in day_sessions(schedule, day):
        if session.name == name and not cancelled:
            return span_of(session, day, tz, schedule)
    return None
