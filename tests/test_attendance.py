"""Scripted days for the attendance machine: plain datetimes as the clock, exact event sequences expected."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, time
from typing import List, Optional, Sequence, Tuple, Union
from zoneinfo import ZoneInfo

import pytest

from edge.attendance import (
    AttendanceConfig,
    AttendanceEvent,
    AttendanceMachine,
    CameraRole,
    EventType,
    PersonState,
    Sighting,
)
from edge.config.tree import load_yaml_tree
from edge.errors import ConfigError
from edge.schedule import ScheduleConfig, SessionConfig, current_session

TZ = ZoneInfo("Europe/Berlin")
MONDAY = date(2024, 3, 4)

SCHEDULE = ScheduleConfig(
    sessions=(
        SessionConfig(name="day", start="08:00", end="16:00"),
        SessionConfig(name="3A", start="09:00", end="13:00", groups=("3A",)),
    ),
    grace_min=5,
    early_leave_tolerance_min=10,
    early_window_min=60,
)
CONFIG = AttendanceConfig(
    min_frames=3,
    min_score=0.5,
    min_margin=0.05,
    min_quality=0.3,
    cooldown_s=30,
    dedup_window_s=10,
    outing_window_s=1800,
    unknown_min_frames=5,
    unknown_camera_cooldown_s=0.0,  # the per-camera limit has its own test
    schedule=SCHEDULE,
)
CAMERAS = {"door-in": CameraRole.ENTRANCE, "door-out": CameraRole.EXIT, "hall": CameraRole.LINE}
GROUPS = {"bob": "3A", "carol": "3B"}

Row = Tuple[str, Optional[str], str, Optional[str]]


def at(hhmmss: str, day: date = MONDAY) -> datetime:
    return datetime.combine(day, time.fromisoformat(hhmmss), tzinfo=TZ)


def seen(
    person: Optional[str],
    hhmmss: str,
    camera: str = "door-in",
    direction: Optional[str] = None,
    track: str = "",
    day: date = MONDAY,
    **evidence: Union[int, float],
) -> Sighting:
    values = {"score": 0.8, "margin": 0.2, "frames": 6, "quality": 0.9, **evidence}
    return Sighting(
        person_id=person,
        track_id=track or f"{camera}-{person}-{hhmmss}",
        camera_id=camera,
        direction=direction,  # type: ignore[arg-type]
        at=at(hhmmss, day),
        score=float(values["score"]),
        margin=float(values["margin"]),
        frames=int(values["frames"]),
        quality=float(values["quality"]),
    )


def machine(config: AttendanceConfig = CONFIG) -> AttendanceMachine:
    return AttendanceMachine(config, CAMERAS, GROUPS)


def rows(events: Sequence[AttendanceEvent]) -> List[Row]:
    """(type, person, at as HH:MM:SS, session) of each event."""
    return [(e.type.value, e.person_id, e.at.strftime("%H:%M:%S"), e.session) for e in events]


def run(m: AttendanceMachine, inputs: Sequence[Union[Sighting, datetime]]) -> List[AttendanceEvent]:
    events: List[AttendanceEvent] = []
    for item in inputs:
        events.extend(m.step(item) if isinstance(item, Sighting) else m.tick(item))
    return events


# ---------------------------------------------------------------- arrivals


def test_on_time_entry() -> None:
    m = machine()
    assert rows(m.step(seen("alice", "07:50:00"))) == [("entry", "alice", "07:50:00", "day")]
    assert m.state_of("alice") is PersonState.PRESENT
    assert m.state_of("nobody") is PersonState.ABSENT


def test_late_entry_carries_the_entry_evidence() -> None:
    m = machine()
    events = m.step(seen("alice", "08:07:00", track="t7", score=0.71, frames=9))
    assert rows(events) == [("entry", "alice", "08:07:00", "day"), ("late", "alice", "08:07:00", "day")]
    late = events[1]
    assert (late.track_id, late.score, late.frames, late.camera_id) == ("t7", 0.71, 9, "door-in")
    assert late.decided_at == late.at


def test_within_grace_is_not_late() -> None:
    assert rows(machine().step(seen("alice", "08:05:00"))) == [("entry", "alice", "08:05:00", "day")]


def test_entry_outside_any_session_has_no_session_and_is_never_late() -> None:
    saturday = date(2024, 3, 9)
    assert rows(machine().step(seen("alice", "10:00:00", day=saturday))) == [("entry", "alice", "10:00:00", None)]
    assert rows(machine().step(seen("alice", "06:30:00"))) == [("entry", "alice", "06:30:00", None)]


# ---------------------------------------------------------------- outings and exits


def test_outing_and_return() -> None:
    m = machine()
    events = run(
        m,
        [
            seen("alice", "07:55:00"),
            seen("alice", "10:00:00", camera="door-out"),
            at("10:15:00"),
            seen("alice", "10:20:00"),
            at("11:00:00"),
        ],
    )
    assert rows(events) == [
        ("entry", "alice", "07:55:00", "day"),
        ("outing_start", "alice", "10:00:00", "day"),
        ("outing_end", "alice", "10:20:00", "day"),
    ]
    assert m.state_of("alice") is PersonState.PRESENT


def test_outing_that_never_returns_becomes_an_early_exit_at_window_expiry() -> None:
    m = machine()
    run(m, [seen("alice", "07:55:00"), seen("alice", "10:00:00", camera="door-out", track="t-out")])
    assert m.tick(at("10:29:59")) == []
    assert m.state_of("alice") is PersonState.OUTING
    events = m.tick(at("10:31:00"))
    assert rows(events) == [("exit", "alice", "10:00:00", "day"), ("early_leave", "alice", "10:00:00", "day")]
    assert all(e.decided_at == at("10:30:00") for e in events)
    assert events[0].track_id == "t-out" and events[0].camera_id == "door-out"
    assert m.state_of("alice") is PersonState.LEFT
    # Coming back later the same day: a new entry, not late again.
    assert rows(m.step(seen("alice", "11:00:00"))) == [("entry", "alice", "11:00:00", "day")]
    assert m.state_of("alice") is PersonState.PRESENT


def test_a_late_return_is_decided_by_the_sighting_itself_without_a_tick() -> None:
    m = machine()
    run(m, [seen("alice", "07:55:00"), seen("alice", "10:00:00", camera="door-out")])
    assert rows(m.step(seen("alice", "10:45:00"))) == [
        ("exit", "alice", "10:00:00", "day"),
        ("early_leave", "alice", "10:00:00", "day"),
        ("entry", "alice", "10:45:00", "day"),
    ]


def test_leaving_for_good_at_the_end_of_the_day_is_not_early() -> None:
    m = machine()
    events = run(
        m,
        [
            seen("alice", "07:55:00"),
            seen("dan", "07:56:00"),
            seen("erin", "07:57:00"),
            seen("alice", "15:40:00", camera="door-out"),  # before end - tolerance (15:50): early
            seen("dan", "15:55:00", camera="door-out"),  # within the tolerance: not early
            seen("erin", "16:10:00", camera="door-out"),  # after the end: no session
            at("16:00:00"),
            at("17:00:00"),
        ],
    )
    assert rows(events) == [
        ("entry", "alice", "07:55:00", "day"),
        ("entry", "dan", "07:56:00", "day"),
        ("entry", "erin", "07:57:00", "day"),
        ("outing_start", "alice", "15:40:00", "day"),
        ("outing_start", "dan", "15:55:00", "day"),
        ("exit", "alice", "15:40:00", "day"),  # the session ended while out: exit decided at 16:00
        ("early_leave", "alice", "15:40:00", "day"),
        ("exit", "dan", "15:55:00", "day"),
        ("outing_start", "erin", "16:10:00", None),
        ("exit", "erin", "16:10:00", None),  # window expiry, 16:40
    ]
    assert [e.decided_at.strftime("%H:%M") for e in events if e.type is EventType.EXIT] == ["16:00", "16:00", "16:40"]


def test_present_people_stay_present_at_day_end_and_start_absent_tomorrow() -> None:
    m = machine()
    m.step(seen("alice", "07:55:00"))
    assert m.tick(at("23:00:00")) == []
    assert m.state_of("alice") is PersonState.PRESENT
    tuesday = date(2024, 3, 5)
    assert m.tick(at("00:01:00", tuesday)) == []
    assert m.state_of("alice") is PersonState.ABSENT
    assert rows(m.step(seen("alice", "08:20:00", day=tuesday))) == [
        ("entry", "alice", "08:20:00", "day"),
        ("late", "alice", "08:20:00", "day"),
    ]


def test_an_outing_open_at_midnight_is_closed_at_midnight() -> None:
    m = machine()
    run(m, [seen("alice", "23:00:00"), seen("alice", "23:50:00", camera="door-out")])
    events = m.tick(at("00:05:00", date(2024, 3, 5)))
    assert rows(events) == [("exit", "alice", "23:50:00", None)]
    assert events[0].decided_at == at("00:00:00", date(2024, 3, 5))
    assert m.state_of("alice") is PersonState.ABSENT
    assert m.step(seen("alice", "23:59:00")) == [] and m.stats["stale"] == 1


def test_seen_leaving_without_being_seen_entering_opens_an_outing() -> None:
    m = machine()
    events = run(
        m,
        [seen("alice", "09:00:00", camera="door-out"), seen("alice", "09:10:00"), seen("bob", "09:30:00", "door-out")],
    )
    assert rows(events) == [
        ("outing_start", "alice", "09:00:00", "day"),
        ("outing_end", "alice", "09:10:00", "day"),  # no invented entry, and no late: she was inside
        ("outing_start", "bob", "09:30:00", "3A"),
    ]


def test_outing_before_a_session_starts_is_not_an_early_leave() -> None:
    m = machine(replace(CONFIG, schedule=replace(SCHEDULE, early_window_min=120)))
    run(m, [seen("alice", "06:00:00"), seen("alice", "06:30:00", camera="door-out")])  # "day" opens at 06:00
    assert rows(m.tick(at("07:10:00"))) == [("exit", "alice", "06:30:00", "day")]


# ---------------------------------------------------------------- debouncing


def test_two_cameras_seeing_the_same_person_within_the_dedup_window_count_once() -> None:
    m = machine(replace(CONFIG, cooldown_s=0))
    events = run(
        m,
        [
            seen("alice", "07:50:00", camera="door-in"),
            seen("alice", "07:50:05", camera="door-out"),  # standing in the doorway, seen by both
            seen("alice", "07:50:08", camera="hall", direction="in"),
        ],
    )
    assert rows(events) == [("entry", "alice", "07:50:00", "day")]
    assert m.stats == {"duplicate": 2}
    assert rows(m.step(seen("alice", "07:50:20", camera="door-out"))) == [("outing_start", "alice", "07:50:20", "day")]


def test_cooldown_blocks_re_triggering() -> None:
    m = machine(replace(CONFIG, dedup_window_s=0))
    events = run(
        m,
        [
            seen("alice", "07:50:00"),
            seen("alice", "07:50:20", camera="door-out"),  # 20 s after the entry
            seen("alice", "07:50:40", camera="door-out"),
            seen("alice", "07:50:50"),  # 10 s after the outing started
            seen("alice", "07:52:00"),
        ],
    )
    assert rows(events) == [
        ("entry", "alice", "07:50:00", "day"),
        ("outing_start", "alice", "07:50:40", "day"),
        ("outing_end", "alice", "07:52:00", "day"),
    ]
    assert m.stats == {"cooldown": 2}


def test_repeated_sightings_of_a_present_person_change_nothing() -> None:
    m = machine()
    run(m, [seen("alice", "07:50:00"), seen("alice", "09:00:00"), seen("alice", "10:00:00")])
    assert m.stats == {"no_change": 2}


def test_low_confidence_sightings_are_ignored_and_counted() -> None:
    m = machine()
    events = run(
        m,
        [
            seen("alice", "07:50:00", frames=2),
            seen("alice", "07:51:00", score=0.3),
            seen("alice", "07:52:00", margin=0.01),
            seen("alice", "07:53:00", quality=0.1),
            seen("alice", "07:54:00", camera="hall"),  # presence only on a line camera: no direction
            seen("alice", "07:55:00", camera="garage"),
        ],
    )
    assert events == []
    assert m.state_of("alice") is PersonState.ABSENT
    assert m.stats == {
        "low_frames": 1,
        "low_score": 1,
        "low_margin": 1,
        "low_quality": 1,
        "no_direction": 1,
        "unknown_camera": 1,
    }


def test_an_explicit_direction_wins_over_the_camera_role() -> None:
    m = machine()
    events = run(
        m, [seen("alice", "07:50:00", camera="hall", direction="in"), seen("alice", "09:00:00", direction="out")]
    )
    assert rows(events) == [("entry", "alice", "07:50:00", "day"), ("outing_start", "alice", "09:00:00", "day")]


def test_one_unknown_face_event_per_track() -> None:
    m = machine()
    events = run(
        m,
        [
            seen(None, "08:00:00", track="u1", score=0.2, margin=0.0),
            seen(None, "08:00:02", track="u1", score=0.2, margin=0.0),
            seen(None, "08:00:03", track="u2", frames=3),
            seen(None, "08:00:05", track="u2", frames=8),
            seen(None, "08:00:06", camera="door-out", track="u1"),  # same id on another camera: another face
        ],
    )
    assert [(e.type.value, e.person_id, e.track_id, e.camera_id, e.session) for e in events] == [
        ("unknown_face", None, "u1", "door-in", None),
        ("unknown_face", None, "u2", "door-in", None),
        ("unknown_face", None, "u1", "door-out", None),
    ]
    assert m.stats == {"repeated_track": 1, "low_frames": 1}


def test_unknown_faces_can_be_rate_limited_per_camera() -> None:
    m = machine(replace(CONFIG, unknown_camera_cooldown_s=60))
    events = run(
        m,
        [
            seen(None, "08:00:00", track="u1"),
            seen(None, "08:00:30", track="u2"),
            seen(None, "08:00:30", camera="door-out", track="u3"),
            seen(None, "08:01:10", track="u2"),
        ],
    )
    assert [(e.track_id, e.at.strftime("%H:%M:%S")) for e in events] == [
        ("u1", "08:00:00"),
        ("u3", "08:00:30"),
        ("u2", "08:01:10"),
    ]
    assert m.stats == {"unknown_cooldown": 1}


# ---------------------------------------------------------------- restart


def test_restart_in_the_middle_of_the_day_keeps_state_and_the_outing_window() -> None:
    before = machine()
    stored = run(before, [seen("alice", "08:10:00"), seen("bob", "08:30:00"), seen("alice", "10:00:00", "door-out")])
    assert [e.type.value for e in stored] == ["entry", "late", "entry", "outing_start"]

    after = machine()
    after.restore(stored)
    assert after.state_of("alice") is PersonState.OUTING and after.state_of("bob") is PersonState.PRESENT
    assert after.step(seen("bob", "10:05:00")) == []  # no duplicate entry
    assert rows(after.tick(at("10:31:00"))) == [
        ("exit", "alice", "10:00:00", "day"),
        ("early_leave", "alice", "10:00:00", "day"),
    ]
    assert rows(after.step(seen("alice", "11:00:00"))) == [("entry", "alice", "11:00:00", "day")]  # not late again


def test_restart_then_return_within_the_window() -> None:
    before = machine()
    stored = run(before, [seen("alice", "07:55:00"), seen("alice", "10:00:00", "door-out")])
    after = machine()
    after.restore(stored)
    assert after.tick(at("10:10:00")) == []
    assert rows(after.step(seen("alice", "10:20:00"))) == [("outing_end", "alice", "10:20:00", "day")]


INPUTS: List[Union[Sighting, datetime]] = [
    seen("alice", "07:55:00"),
    seen(None, "07:58:00", track="u1"),
    seen("bob", "09:12:00"),
    seen("alice", "09:30:00", camera="door-out"),
    at("09:45:00"),
    seen("bob", "10:00:00", camera="door-out"),
    seen("alice", "10:10:00"),
    at("10:31:00"),
    seen("bob", "10:40:00"),
    seen("carol", "12:00:00", camera="door-out"),
    seen(None, "12:30:00", track="u1"),
    at("13:00:00"),
    seen("alice", "15:58:00", camera="door-out"),
    at("17:00:00"),
]


@pytest.mark.parametrize("cut", range(len(INPUTS) + 1))
def test_a_restart_at_any_point_gives_the_same_day(cut: int) -> None:
    whole = run(machine(), INPUTS)
    stored = run(machine(), INPUTS[:cut])
    resumed = machine()
    resumed.restore(stored)
    assert stored + run(resumed, INPUTS[cut:]) == whole


def test_restore_refuses_to_mix_days_or_to_run_late() -> None:
    stored = run(machine(), [seen("alice", "07:55:00")]) + run(
        machine(), [seen("bob", "07:55:00", day=date(2024, 3, 5))]
    )
    with pytest.raises(ValueError, match="one local day"):
        machine().restore(stored)
    m = machine()
    m.tick(at("07:00:00"))
    with pytest.raises(RuntimeError):
        m.restore(stored[:1])


# ---------------------------------------------------------------- schedules


def test_group_schedules() -> None:
    m = machine()
    events = run(
        m,
        [
            seen("bob", "08:50:00"),  # 3A starts at 09:00: on time, even though "day" began at 08:00
            seen("carol", "08:50:00"),  # group 3B has no session: follows "day"
            seen("alice", "08:50:00"),
            seen("bob", "12:00:00", camera="door-out"),
            seen("carol", "12:00:00", camera="door-out"),
            at("12:31:00"),
        ],
    )
    assert rows(events) == [
        ("entry", "bob", "08:50:00", "3A"),
        ("entry", "carol", "08:50:00", "day"),
        ("late", "carol", "08:50:00", "day"),
        ("entry", "alice", "08:50:00", "day"),
        ("late", "alice", "08:50:00", "day"),
        ("outing_start", "bob", "12:00:00", "3A"),
        ("outing_start", "carol", "12:00:00", "day"),
        ("exit", "bob", "12:00:00", "3A"),
        ("early_leave", "bob", "12:00:00", "3A"),
        ("exit", "carol", "12:00:00", "day"),
        ("early_leave", "carol", "12:00:00", "day"),
    ]


def test_current_session_opens_early_and_closes_at_the_end() -> None:
    assert current_session(SCHEDULE, "3A", at("07:59:59")) is None
    assert current_session(SCHEDULE, "3A", at("08:00:00")).name == "3A"  # type: ignore[union-attr]
    assert current_session(SCHEDULE, "3A", at("13:00:00")) is None
    assert current_session(SCHEDULE, None, at("15:59:00")).name == "day"  # type: ignore[union-attr]
    assert current_session(SCHEDULE, None, at("10:00:00", date(2024, 3, 10))) is None  # Sunday


def test_outing_windows_are_real_time_across_a_dst_change() -> None:
    sunday = date(2024, 3, 31)  # clocks go from 02:00 to 03:00 in Berlin
    m = machine()
    run(m, [seen("alice", "01:00:00", day=sunday), seen("alice", "01:50:00", "door-out", day=sunday)])
    assert m.tick(at("03:15:00", sunday)) == []  # 25 minutes of real time
    events = m.tick(at("03:21:00", sunday))
    assert rows(events) == [("exit", "alice", "01:50:00", None)]
    assert events[0].decided_at == at("03:20:00", sunday)


# ---------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: AttendanceConfig(min_frames=0), "min_frames"),
        (lambda: AttendanceConfig(min_score=1.5), "min_score"),
        (lambda: AttendanceConfig(cooldown_s=-1), "cooldown_s"),
        (lambda: AttendanceConfig(outing_window_s=0), "outing_window_s"),
        (lambda: ScheduleConfig(grace_min=-1), "grace_min"),
        (lambda: ScheduleConfig(early_leave_tolerance_min=-5), "early_leave_tolerance_min"),
        (lambda: SessionConfig(name="a", start="8:00", end="12:00"), "start"),
        (lambda: SessionConfig(name="a", start="08:00", end="24:00"), "end"),
        (lambda: SessionConfig(name="a", start="12:00", end="08:00"), "end"),
        (lambda: SessionConfig(name="a", start="08:00", end="12:00", days=("monday",)), "days"),
        (lambda: SessionConfig(name="", start="08:00", end="12:00"), "name"),
        (lambda: ScheduleConfig(sessions=(SessionConfig("a", "08:00", "09:00"),) * 2), "sessions"),
        (
            lambda: ScheduleConfig(
                sessions=(SessionConfig("a", "08:00", "10:00"), SessionConfig("b", "09:00", "11:00"))
            ),
            "sessions",
        ),
    ],
)
def test_config_errors_name_the_field(build: object, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field} "):
        build()  # type: ignore[operator]


def test_yaml_config_errors_name_the_key_path() -> None:
    text = 'schedule:\n  sessions:\n    - {name: morning, start: "08:00", end: "07:00"}\n'
    with pytest.raises(ConfigError, match=r"schedule\.sessions\[0\]\.end \(line 3\): must be after start"):
        load_yaml_tree(AttendanceConfig, text, "edge.yaml")
    ok = 'outing_window_s: 900\nschedule:\n  grace_min: 2\n  sessions:\n    - {name: m, start: "08:00", end: "12:00", groups: [3A], days: [mon, sat]}\n'
    config = load_yaml_tree(AttendanceConfig, ok, "edge.yaml")
    assert config.outing_window_s == 900 and config.schedule.sessions[0].groups == ("3A",)
    assert config.schedule.sessions[0].days == ("mon", "sat")
