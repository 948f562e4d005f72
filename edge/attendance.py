"""The attendance state machine: confirmed sightings and clock ticks in, attendance events out (pure).

No I/O, no clock reads, no threads: time arrives as data (timezone-aware datetimes in the site's local timezone,
on each `Sighting` and on each `tick(now)`). Durations are measured in real elapsed seconds (POSIX timestamps),
so a DST change does not stretch a window; dates and session times use the local wall clock of the datetimes.

Per person and per local day: ABSENT -> PRESENT <-> OUTING -> LEFT -> PRESENT ...

    ABSENT  + in   -> entry (+ late)                     -> PRESENT
    LEFT    + in   -> entry (+ late only if first entry of that session) -> PRESENT
    PRESENT + out  -> outing_start                       -> OUTING
    OUTING  + in   -> outing_end                         -> PRESENT
    OUTING  + deadline passes -> exit (+ early_leave)    -> LEFT
    ABSENT/LEFT + out -> outing_start                    -> OUTING   (the entry was missed, see below)
    PRESENT + in, OUTING + out -> nothing (counted as "no_change")

Choices:

- An outing's deadline is the earliest of: out time + `outing_window_s`, the end of the session it went out in,
  local midnight. When it passes (on any tick or sighting later than it) the outing becomes an `exit` whose
  `at` is the out time and whose `decided_at` is the deadline itself, not the tick that noticed it, so a replay
  gives the same events whatever the tick rate.
- `early_leave` goes with an exit whose out time lies within [session start, session end - tolerance). Going
  out in a session's early window (before it starts) or after its end is never an early leave.
- `late` goes with the first entry of a session (entry, outing_start or outing_end of that session all count as
  "attended") when it is after start + grace. An entry with no current session carries session None, no late.
- An out sighting for someone ABSENT or LEFT means they were inside and their entry was missed: it opens an
  outing like PRESENT + out (the session counts as attended, no entry is invented, no late).
- People still PRESENT at a session's end stay PRESENT; nobody gets an invented exit. At the first input of a
  new local date, open outings are closed (their deadline is at most midnight) and then everyone is ABSENT.
- Each event carries the session current *for that person* at the event's `at` (None if none); unknown_face
  carries no session.
- A sighting's explicit direction wins; a presence-only sighting (direction None) counts as "in" on an
  entrance camera and "out" on an exit camera, and is ignored on a line camera.
- Known-person sightings pass through, in order: frames/score/margin/quality gates; known camera; stale (from
  an earlier day); direction; duplicate (another camera saw the person within `dedup_window_s` of the last
  counted sighting); no_change; out_of_order (older than the person's last transition); cooldown (within
  `cooldown_s` of the person's last sighting-driven transition). Each rejection is counted in `stats`.
- unknown_face: at most one per (camera, track) per day, after `unknown_min_frames` and the quality gate, and
  at most one per camera per `unknown_camera_cooldown_s`.
- Liveness (edge/liveness/): a sighting carries its track's verdict, and its events carry it on. With
  `liveness.policy: enforce` the pipeline hands a sighting called a spoof to `refuse` instead of `step`: time passes
  as for a step, and the transition the sighting would have caused (entry + late, outing_start, ...) becomes ONE
  `spoof_attempt` event of that person (with the session the transition would have had, `review` true); the
  person's state does not change, so the real person walking in later gets their entry. A spoof sighting that would
  have changed nothing (already present, cooldown, duplicate) emits nothing.
- `restore(events)` rebuilds the state from one day's stored events (in emission order) before any input, so
  nothing is emitted twice; an outing left open is closed by the next tick if its deadline has passed.
"""

from __future__ import annotations

import copy
import enum
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Callable, Dict, FrozenSet, List, Literal, Mapping, Optional, Sequence, Set, Tuple

from edge.faces import Verdict
from edge.schedule import (
    ScheduleConfig,
    SessionSpan,
    current_session,
    seconds_between,
    session_named,
    shift,
)

Direction = Literal["in", "out"]


class CameraRole(str, enum.Enum):
    """What a camera's sightings mean when they carry no direction of their own."""

    ENTRANCE = "entrance"
    EXIT = "exit"
    LINE = "line"


class PersonState(str, enum.Enum):
    ABSENT = "absent"
    PRESENT = "present"
    OUTING = "outing"
    LEFT = "left"


class EventType(str, enum.Enum):
    ENTRY = "entry"
    EXIT = "exit"
    OUTING_START = "outing_start"
    OUTING_END = "outing_end"
    LATE = "late"
    EARLY_LEAVE = "early_leave"
    UNKNOWN_FACE = "unknown_face"
    SPOOF_ATTEMPT = "spoof_attempt"
    """liveness.policy enforce: a sighting whose track the liveness check called a spoof, in place of the entry (or
    other transition) it would have caused; the person's attendance state does not change."""


class Ignored(str, enum.Enum):
    """Why a sighting changed nothing (the keys of `AttendanceMachine.stats`)."""

    LOW_FRAMES = "low_frames"
    LOW_SCORE = "low_score"
    LOW_MARGIN = "low_margin"
    LOW_QUALITY = "low_quality"
    UNKNOWN_CAMERA = "unknown_camera"
    NO_DIRECTION = "no_direction"
    STALE = "stale"
    DUPLICATE = "duplicate"
    NO_CHANGE = "no_change"
    OUT_OF_ORDER = "out_of_order"
    COOLDOWN = "cooldown"
    REPEATED_TRACK = "repeated_track"
    UNKNOWN_COOLDOWN = "unknown_cooldown"
    SPOOF = "spoof"
    """Refused (liveness enforce): the track was called a spoof (its transition became a spoof_attempt event)."""


def _require_aware(name: str, moment: datetime) -> None:
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {moment!r}")


@dataclass(frozen=True)
class Sighting:
    """A confirmed identity decision for one tracked face (the tracker voted over `frames` frames)."""

    person_id: Optional[str]
    """None: an unknown face."""
    track_id: str
    camera_id: str
    direction: Optional[Direction]
    """"in"/"out" from the camera role or a line crossing; None: the camera only saw presence."""
    at: datetime
    """Aware local wall clock of the frame."""
    score: float
    margin: float
    frames: int
    quality: float
    liveness: Optional[Verdict] = None
    """The track's liveness evidence (None: not checked: policy off, or an unknown face)."""

    def __post_init__(self) -> None:
        _require_aware("at", self.at)
        if self.direction not in ("in", "out", None):
            raise ValueError(f"direction must be 'in', 'out' or None, got {self.direction!r}")
        if self.frames < 0:
            raise ValueError(f"frames must be >= 0, got {self.frames}")


@dataclass(frozen=True)
class AttendanceEvent:
    """One attendance fact with its evidence. For exit/early_leave `at` is when they went out."""

    type: EventType
    person_id: Optional[str]
    camera_id: str
    at: datetime
    decided_at: datetime
    session: Optional[str]
    track_id: str
    score: float
    margin: float
    frames: int
    quality: float
    liveness: Optional[Verdict] = None
    """The liveness evidence of the sighting that caused it (None: not checked). An exit carries its outing's."""
    review: bool = False
    """liveness.policy flag or enforce: the track was called a spoof; a person should look at it."""


@dataclass(frozen=True)
class AttendanceConfig:
    """Debouncing, windows and the timetable of the attendance machine."""

    min_frames: int = 3
    """Fewest confirmed frames for a known person's sighting to count."""
    min_score: float = 0.0
    """Smallest match score to count (on top of the matcher's own threshold)."""
    min_margin: float = 0.0
    """Smallest match margin to count (on top of the matcher's own margin)."""
    min_quality: float = 0.0
    """Smallest face quality (0..1) for any sighting, known or unknown, to count."""
    cooldown_s: float = 30.0
    """After a person's transition, their sightings that would cause another one are ignored this long."""
    dedup_window_s: float = 10.0
    """A person seen by another camera within this long of their last counted sighting counts once."""
    outing_window_s: float = 1800.0
    """How long someone who went out may stay out and still be back from an outing (not left)."""
    unknown_min_frames: int = 5
    """Fewest confirmed frames for an unknown face to be reported."""
    unknown_camera_cooldown_s: float = 300.0
    """Smallest gap between two unknown_face events of one camera (0: no limit). 300 s: one face looping in front
    of two cameras made 140 unknown_face events in 11 minutes with no limit, and makes 6 with this one (at most one
    per camera per 5 minutes: tests/test_unknown_cooldown.py); a second stranger at the same camera within those
    5 minutes is not announced separately (an unknown_face is a "someone unenrolled is here" alert, not a count)."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """The timetable: sessions, grace, early-leave tolerance, early window."""

    def __post_init__(self) -> None:
        for name in ("min_frames", "unknown_min_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not -1.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be within -1..1, got {self.min_score}")
        if not 0.0 <= self.min_margin <= 2.0:
            raise ValueError(f"min_margin must be within 0..2, got {self.min_margin}")
        if not 0.0 <= self.min_quality <= 1.0:
            raise ValueError(f"min_quality must be within 0..1, got {self.min_quality}")
        for name in ("cooldown_s", "dedup_window_s", "unknown_camera_cooldown_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.outing_window_s <= 0:
            raise ValueError(f"outing_window_s must be > 0, got {self.outing_window_s}")


@dataclass(frozen=True)
class Outing:
    """An open outing: its outing_start event, the session it went out in, and when it becomes an exit."""

    start: AttendanceEvent
    session: Optional[SessionSpan]
    deadline: datetime


@dataclass(frozen=True)
class PersonDay:
    """One person's attendance state for the current local day."""

    state: PersonState = PersonState.ABSENT
    attended: FrozenSet[str] = frozenset()
    outing: Optional[Outing] = None
    last_transition_at: Optional[datetime] = None
    last_seen_at: Optional[datetime] = None
    last_seen_camera: Optional[str] = None


Outcome = Tuple[PersonDay, List[AttendanceEvent]]
Handler = Callable[[PersonDay, Sighting, Optional[SessionSpan], AttendanceConfig], Outcome]

# ---------------------------------------------------------------- rules (small named predicates)


def gate_reason(s: Sighting, config: AttendanceConfig) -> Optional[Ignored]:
    """Why a sighting is too weak to count, or None."""
    if s.frames < (config.min_frames if s.person_id is not None else config.unknown_min_frames):
        return Ignored.LOW_FRAMES
    if s.quality < config.min_quality:
        return Ignored.LOW_QUALITY
    if s.person_id is None:
        return None
    if s.score < config.min_score:
        return Ignored.LOW_SCORE
    if s.margin < config.min_margin:
        return Ignored.LOW_MARGIN
    return None


def resolve_direction(s: Sighting, role: CameraRole) -> Optional[Direction]:
    """The sighting's own direction, else the camera role's (a line camera has none)."""
    if s.direction is not None:
        return s.direction
    if role is CameraRole.ENTRANCE:
        return "in"
    if role is CameraRole.EXIT:
        return "out"
    return None


def is_duplicate(day: PersonDay, s: Sighting, config: AttendanceConfig) -> bool:
    """Another camera counted this person within the dedup window."""
    if day.last_seen_at is None or day.last_seen_camera == s.camera_id:
        return False
    return abs(seconds_between(day.last_seen_at, s.at)) < config.dedup_window_s


def is_out_of_order(day: PersonDay, at: datetime) -> bool:
    return day.last_transition_at is not None and seconds_between(day.last_transition_at, at) < 0


def in_cooldown(day: PersonDay, at: datetime, config: AttendanceConfig) -> bool:
    return day.last_transition_at is not None and seconds_between(day.last_transition_at, at) < config.cooldown_s


def is_late(day: PersonDay, at: datetime, session: Optional[SessionSpan]) -> bool:
    """The first entry of a session, after its start + grace."""
    return session is not None and session.name not in day.attended and seconds_between(session.late_after, at) > 0


def is_early_leave(out_at: datetime, session: Optional[SessionSpan]) -> bool:
    """Went out for good after the session started and before its end - tolerance."""
    if session is None:
        return False
    return seconds_between(session.start, out_at) >= 0 and seconds_between(out_at, session.early_before) > 0


def has_expired(outing: Outing, now: datetime) -> bool:
    return seconds_between(outing.deadline, now) >= 0


def exit_deadline(out_at: datetime, session: Optional[SessionSpan], config: AttendanceConfig) -> datetime:
    """The earliest of: end of the outing window, end of the session gone out in, local midnight."""
    midnight = datetime.combine(out_at.date() + timedelta(days=1), time(0), tzinfo=out_at.tzinfo)
    candidates = [shift(out_at, config.outing_window_s), midnight]
    if session is not None:
        candidates.append(session.end)
    return min(candidates, key=lambda moment: moment.timestamp())


# ---------------------------------------------------------------- transitions (return the events they emit)


def _event(kind: EventType, s: Sighting, session: Optional[SessionSpan]) -> AttendanceEvent:
    return AttendanceEvent(
        type=kind,
        person_id=s.person_id,
        camera_id=s.camera_id,
        at=s.at,
        decided_at=s.at,
        session=session.name if session is not None else None,
        track_id=s.track_id,
        score=s.score,
        margin=s.margin,
        frames=s.frames,
        quality=s.quality,
        liveness=s.liveness,
    )


def _attend(day: PersonDay, session: Optional[SessionSpan]) -> FrozenSet[str]:
    return day.attended | {session.name} if session is not None else day.attended


def _enter(day: PersonDay, s: Sighting, session: Optional[SessionSpan], config: AttendanceConfig) -> Outcome:
    entry = _event(EventType.ENTRY, s, session)
    events = [entry, replace(entry, type=EventType.LATE)] if is_late(day, s.at, session) else [entry]
    return replace(day, state=PersonState.PRESENT, attended=_attend(day, session), outing=None), events


def _go_out(day: PersonDay, s: Sighting, session: Optional[SessionSpan], config: AttendanceConfig) -> Outcome:
    start = _event(EventType.OUTING_START, s, session)
    outing = Outing(start=start, session=session, deadline=exit_deadline(s.at, session, config))
    return replace(day, state=PersonState.OUTING, attended=_attend(day, session), outing=outing), [start]


def _come_back(day: PersonDay, s: Sighting, session: Optional[SessionSpan], config: AttendanceConfig) -> Outcome:
    end = _event(EventType.OUTING_END, s, session)
    return replace(day, state=PersonState.PRESENT, attended=_attend(day, session), outing=None), [end]


TRANSITIONS: Dict[Tuple[PersonState, Direction], Handler] = {
    (PersonState.ABSENT, "in"): _enter,
    (PersonState.LEFT, "in"): _enter,
    (PersonState.OUTING, "in"): _come_back,
    (PersonState.PRESENT, "out"): _go_out,
    (PersonState.ABSENT, "out"): _go_out,
    (PersonState.LEFT, "out"): _go_out,
}
"""(state, direction) -> transition; a pair not listed changes nothing."""


def expire(day: PersonDay, outing: Outing) -> Outcome:
    """An outing whose deadline passed becomes an exit at the out time (+ early_leave)."""
    leave = replace(outing.start, type=EventType.EXIT, decided_at=outing.deadline)
    events = (
        [leave, replace(leave, type=EventType.EARLY_LEAVE)] if is_early_leave(leave.at, outing.session) else [leave]
    )
    return replace(day, state=PersonState.LEFT, outing=None), events


def replay(
    day: PersonDay, event: AttendanceEvent, session: Optional[SessionSpan], config: AttendanceConfig
) -> PersonDay:
    """The state after a stored event (used to restore after a restart; late/early_leave/spoof_attempt change
    nothing)."""
    if event.type is EventType.EXIT:
        return replace(day, state=PersonState.LEFT, outing=None)
    if event.type not in (EventType.ENTRY, EventType.OUTING_START, EventType.OUTING_END):
        return day
    seen = replace(
        day,
        attended=_attend(day, session),
        last_transition_at=event.at,
        last_seen_at=event.at,
        last_seen_camera=event.camera_id,
        outing=None,
        state=PersonState.PRESENT,
    )
    if event.type is EventType.OUTING_START:
        outing = Outing(start=event, session=session, deadline=exit_deadline(event.at, session, config))
        return replace(seen, state=PersonState.OUTING, outing=outing)
    return seen


# ---------------------------------------------------------------- the machine


class AttendanceMachine:
    """Feed it `step(sighting)` and `tick(now)`; it returns the attendance events each input causes."""

    def __init__(self, config: AttendanceConfig, cameras: Mapping[str, CameraRole], groups: Mapping[str, str]) -> None:
        self.config = config
        self.cameras = dict(cameras)
        self.groups = dict(groups)
        self._people: Dict[str, PersonDay] = {}
        self._announced: Set[Tuple[str, str]] = set()
        self._unknown_at: Dict[str, datetime] = {}
        self._date: Optional[date] = None
        self._now: Optional[datetime] = None
        self._stats: Counter[str] = Counter()

    @property
    def stats(self) -> Dict[str, int]:
        """How many sightings were ignored since start, by `Ignored` reason value (not reset at midnight)."""
        return dict(self._stats)

    def state_of(self, person_id: str) -> PersonState:
        return self._people.get(person_id, PersonDay()).state

    def session_of(self, person_id: str, at: datetime) -> Optional[SessionSpan]:
        return current_session(self.config.schedule, self.groups.get(person_id), at)

    def tick(self, now: datetime) -> List[AttendanceEvent]:
        """Let time pass: close expired outings, roll over to a new local day."""
        _require_aware("now", now)
        return self._advance(now)

    def step(self, sighting: Sighting) -> List[AttendanceEvent]:
        """Time passes up to the sighting, then the sighting is applied (or ignored and counted)."""
        events = self._advance(sighting.at)
        reason = gate_reason(sighting, self.config) or self._placement_reason(sighting)
        if reason is None:
            if sighting.person_id is None:
                reason, emitted = self._unknown(sighting)
            else:
                reason, emitted = self._known(sighting, sighting.person_id)
            events.extend(emitted)
        if reason is not None:
            self._stats[reason.value] += 1
        return events

    def refuse(self, sighting: Sighting) -> List[AttendanceEvent]:
        """liveness enforce, for a sighting whose track was called a spoof: time passes up to it (expired outings
        are emitted as by `step`), then the events the sighting would have caused become one `spoof_attempt` of
        the person, and nothing else changes (none when it would have caused nothing)."""
        events = self._advance(sighting.at)
        caused = copy.deepcopy(self).step(sighting)  # a trial on a copy: this machine's state stays as it was
        if caused and sighting.person_id is not None:
            self._stats[Ignored.SPOOF.value] += 1
            events.append(replace(caused[0], type=EventType.SPOOF_ATTEMPT, review=True))
        return events

    def restore(self, events: Sequence[AttendanceEvent]) -> None:
        """Rebuild the day's state from its stored events (emission order), before any step or tick."""
        if self._now is not None:
            raise RuntimeError("restore must be called before the first step or tick")
        if not events:
            return
        days = {e.at.date() for e in events}
        if len(days) > 1:
            raise ValueError(f"events must all be of one local day, got {sorted(str(d) for d in days)}")
        for event in events:
            self._restore_one(event)
        self._date = days.pop()
        self._now = max((e.decided_at for e in events), key=lambda moment: moment.timestamp())

    # ------------------------------------------------------------ internals

    def _restore_one(self, event: AttendanceEvent) -> None:
        if event.person_id is None:
            self._announced.add((event.camera_id, event.track_id))
            self._unknown_at[event.camera_id] = event.at
            return
        span = None
        if event.session is not None:
            span = session_named(self.config.schedule, event.session, event.at.date(), event.at.tzinfo)
        day = self._people.get(event.person_id, PersonDay())
        self._people[event.person_id] = replay(day, event, span, self.config)

    def _advance(self, now: datetime) -> List[AttendanceEvent]:
        if self._now is not None and seconds_between(self._now, now) <= 0:
            return []
        due = [(day.outing.deadline.timestamp(), pid, day.outing) for pid, day in self._people.items() if day.outing]
        events: List[AttendanceEvent] = []
        for _, pid, outing in sorted(due, key=lambda item: item[:2]):
            if has_expired(outing, now):
                self._people[pid], emitted = expire(self._people[pid], outing)
                events.extend(emitted)
        if self._date is not None and now.date() > self._date:
            self._people.clear()
            self._announced.clear()
            self._unknown_at.clear()
        self._date = now.date()
        self._now = now
        return events

    def _placement_reason(self, s: Sighting) -> Optional[Ignored]:
        if s.camera_id not in self.cameras:
            return Ignored.UNKNOWN_CAMERA
        if self._date is not None and s.at.date() < self._date:
            return Ignored.STALE
        return None

    def _unknown(self, s: Sighting) -> Tuple[Optional[Ignored], List[AttendanceEvent]]:
        if (s.camera_id, s.track_id) in self._announced:
            return Ignored.REPEATED_TRACK, []
        last = self._unknown_at.get(s.camera_id)
        if last is not None and abs(seconds_between(last, s.at)) < self.config.unknown_camera_cooldown_s:
            return Ignored.UNKNOWN_COOLDOWN, []
        self._announced.add((s.camera_id, s.track_id))
        self._unknown_at[s.camera_id] = s.at
        return None, [_event(EventType.UNKNOWN_FACE, s, None)]

    def _known(self, s: Sighting, person_id: str) -> Tuple[Optional[Ignored], List[AttendanceEvent]]:
        direction = resolve_direction(s, self.cameras[s.camera_id])
        if direction is None:
            return Ignored.NO_DIRECTION, []
        day = self._people.get(person_id, PersonDay())
        if is_duplicate(day, s, self.config):
            return Ignored.DUPLICATE, []
        day = replace(day, last_seen_at=s.at, last_seen_camera=s.camera_id)
        self._people[person_id] = day
        handler = TRANSITIONS.get((day.state, direction))
        if handler is None:
            return Ignored.NO_CHANGE, []
        if is_out_of_order(day, s.at):
            return Ignored.OUT_OF_ORDER, []
        if in_cooldown(day, s.at, self.config):
            return Ignored.COOLDOWN, []
        day, events = handler(day, s, self.session_of(person_id, s.at), self.config)
        self._people[person_id] = replace(day, last_transition_at=s.at)
        return None, events
