"""The default unknown_camera_cooldown_s, measured: one unrecognised face looping in front of two cameras.

Issue 10 saw 140 unknown_face events in 11 minutes from one such face (a new track about every 9.4 s on each
camera) with the limit off. The attendance machine is fed the same pattern of sightings."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import List

from edge.attendance import AttendanceConfig, AttendanceMachine, CameraRole, EventType, Sighting

START = datetime(2026, 11, 23, 10, 0, tzinfo=timezone(timedelta(hours=9)))
CAMERAS = {"door-in": CameraRole.ENTRANCE, "door-out": CameraRole.EXIT}
LOOP_S = 660.0  # 11 minutes
TRACK_EVERY_S = 9.43  # a new track of the same face on each camera this often: 70 per camera in 11 minutes


def looping_face() -> List[Sighting]:
    sightings = []
    n = 0
    while n * TRACK_EVERY_S < LOOP_S:
        for offset, camera in ((0.0, "door-in"), (4.7, "door-out")):
            at = START + timedelta(seconds=n * TRACK_EVERY_S + offset)
            sightings.append(Sighting(None, f"{camera}-t{n}", camera, None, at, 0.0, 0.0, 12, 0.7))
        n += 1
    return sightings


def unknown_events(config: AttendanceConfig) -> int:
    machine = AttendanceMachine(config, CAMERAS, {})
    events = [e for s in looping_face() for e in machine.step(s)]
    assert {e.type for e in events} <= {EventType.UNKNOWN_FACE}
    return len(events)


def test_without_a_limit_the_loop_floods_as_in_the_issue() -> None:
    assert unknown_events(replace(AttendanceConfig(), unknown_camera_cooldown_s=0.0)) == 140


def test_the_default_limit_keeps_it_to_one_event_per_camera_per_five_minutes() -> None:
    config = AttendanceConfig()
    assert config.unknown_camera_cooldown_s == 300.0
    assert unknown_events(config) == 6  # at 0, 5 and 10 minutes on each camera
    measured = {s: unknown_events(replace(config, unknown_camera_cooldown_s=s)) for s in (60.0, 120.0, 300.0)}
    assert measured == {60.0: 20, 120.0: 12, 300.0: 6}
