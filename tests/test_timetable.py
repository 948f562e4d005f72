"""The central's timetable on the box (issue 12): a signed `timetable` command is stored in the gallery database,
and from the next frame the box's `late` follows it instead of the YAML schedule; a null timetable hands the box
back to its YAML. Real gallery file, real signatures, the real pipeline (no faces: only its attendance machine is
driven) and the schedule model's closures and one-off changes."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, cast

import numpy as np
import pytest
from support import CentralKeys

from edge.attendance import AttendanceConfig, AttendanceEvent, EventType, Sighting
from edge.capture import CameraConfig, Frame
from edge.central.server import timetable_command
from edge.central.timetable import load_timetable
from edge.embed import Embedder
from edge.errors import ConfigError
from edge.gallery.store import Gallery
from edge.gallery.sync import GallerySync
from edge.match import MatcherConfig
from edge.mqtt.contract import validate
from edge.pipeline import Pipeline, PipelineParts
from edge.quality import QualityConfig
from edge.recognize import Recognizer
from edge.schedule import ScheduleConfig, SessionConfig, sessions_for
from edge.store import EventStore
from edge.timetable import central_schedule, schedule_from_document
from edge.track import TrackerConfig

KST = timezone(timedelta(hours=9))
BOX = "school-1/box-17"
IDS = itertools.count(1)
YAML_SCHEDULE = ScheduleConfig(sessions=(SessionConfig("morning", "09:00", "12:00"),), grace_min=5.0)
CENTRAL = """\
timezone: Asia/Seoul
grace_min: 5
sessions:
  - {name: morning, start: "08:00", end: "12:00"}
closures:
  - {start: "2026-11-26", reason: "sports day"}
changes:
  - {date: "2026-11-25", session: morning, start: "10:00"}
"""


class NoFaces:
    def detect(self, image: Any) -> List[Any]:
        return []


@pytest.fixture()
def box(tmp_path: Path, central_keys: CentralKeys) -> Iterator[Dict[str, Any]]:
    now = datetime(2026, 11, 23, 7, 0, tzinfo=KST)  # a Monday
    with Gallery(tmp_path / "edge.db") as gallery, EventStore(tmp_path / "edge.db", "box-17") as store:
        parts = PipelineParts(detector=NoFaces(), embedder=Embedder(), gallery=gallery, store=store)
        config = AttendanceConfig(min_frames=1, schedule=YAML_SCHEDULE)
        pipeline = Pipeline(parts, [CameraConfig("door", "door.mp4")], QualityConfig(), MatcherConfig(),
                            TrackerConfig(), config, KST, now)  # fmt: skip
        sync = GallerySync(gallery, cast(Recognizer, None), central_keys.verifier(BOX))
        yield {"pipeline": pipeline, "sync": sync, "keys": central_keys, "gallery": gallery, "now": now}


def _frame(at: datetime) -> Frame:
    return Frame("door", next(IDS), np.zeros((48, 64, 3), np.uint8), at.timestamp(), float(next(IDS)))


def _push(box: Dict[str, Any], document: Any) -> Dict[str, Any]:
    command = timetable_command(document)
    signed = box["keys"].sign(command, BOX)
    validate("edge.gallery_command/1", signed)
    result: Dict[str, Any] = box["sync"].apply(signed)
    validate("edge.gallery_result/1", result)
    return result


def _entry(pipeline: Pipeline, who: str, at: datetime) -> List[AttendanceEvent]:
    pipeline.process(_frame(at - timedelta(seconds=1)))  # the frame before: the gallery version is checked here
    return pipeline.machine.step(Sighting(who, f"t-{who}", "door", "in", at, 0.8, 0.3, 5, 0.9))


def test_late_follows_the_central_timetable_once_stored_and_the_yaml_again_when_cleared(box: Dict[str, Any]) -> None:
    pipeline = box["pipeline"]
    day = box["now"].date()
    at = datetime.combine(day, datetime.strptime("08:30", "%H:%M").time(), tzinfo=KST)
    # YAML: morning at 09:00; 08:30 is early, not late
    assert [e.type for e in _entry(pipeline, "ann", at)] == [EventType.ENTRY]
    timetable = load_timetable(CENTRAL, "central.yml")
    result = _push(box, timetable.document()["schedule"])
    assert result["status"] == "ok", result
    assert "1 sessions, 1 closures, 1 changes" in result["reason"]
    # the central's morning starts at 08:00: 08:30 is 30 minutes late
    events = _entry(pipeline, "bob", at + timedelta(minutes=1))
    assert [(e.type, e.session) for e in events] == [(EventType.ENTRY, "morning"), (EventType.LATE, "morning")]
    assert central_schedule(box["gallery"]) == timetable.schedule
    # forgotten: the YAML's 09:00 again
    assert _push(box, None)["status"] == "ok"
    assert [e.type for e in _entry(pipeline, "cy", at + timedelta(minutes=2))] == [EventType.ENTRY]
    assert central_schedule(box["gallery"]) is None


def test_a_bad_or_unsigned_timetable_is_refused_and_changes_nothing(box: Dict[str, Any]) -> None:
    bad = {"sessions": [{"name": "morning", "start": "25:00", "end": "12:00"}]}
    result = _push(box, bad)
    assert result["status"] == "rejected" and "sessions[0].start" in result["reason"], result
    unsigned = box["sync"].apply(timetable_command({"sessions": []}))
    assert unsigned["status"] == "rejected" and "not signed" in unsigned["reason"], unsigned
    assert box["gallery"].timetable_document() is None


def test_closures_and_one_off_changes_shape_the_day() -> None:
    schedule = load_timetable(CENTRAL, "central.yml").schedule
    starts = {d: [s.start.strftime("%H:%M") for s in sessions_for(schedule, None, date(2026, 11, d), KST)]
              for d in (24, 25, 26, 28)}  # fmt: skip
    assert starts == {24: ["08:00"], 25: ["10:00"], 26: [], 28: []}  # Tue, moved Wed, closed Thu, Saturday


def test_group_closures_cancellations_and_added_sessions() -> None:
    schedule = schedule_from_document({
        "sessions": [{"name": "am", "start": "09:00", "end": "12:00"},
                     {"name": "3A-pm", "start": "13:00", "end": "15:00", "groups": ["3A"]}],
        "closures": [{"start": "2026-11-23", "end": "2026-11-24", "groups": ["3A"], "reason": "trip"}],
        "changes": [{"date": "2026-11-25", "session": "3A-pm", "cancelled": True},
                    {"date": "2026-11-27", "session": "exam", "start": "14:00", "end": "16:00"}],
    })  # fmt: skip

    def names(group: Any, d: int) -> List[str]:
        return [s.name for s in sessions_for(schedule, group, date(2026, 11, d), KST)]

    assert names("3A", 23) == [] and names(None, 23) == ["am"]  # the trip closes 3A only
    assert names("3A", 25) == []  # its own session cancelled: it does not fall back to the shared one
    assert names(None, 27) == ["am", "exam"] and names("3A", 27) == ["3A-pm"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"date": "2026-11-28", "session": "am", "start": "10:00"}, "does not run on a sat"),
        ({"date": "2026-11-25", "session": "new"}, "give a start, an end, or cancelled"),
        ({"date": "2026-11-25", "session": "new", "start": "10:00"}, "give its start and end"),
        ({"date": "2026-11-25", "session": "pm", "start": "11:00"}, "overlap"),
        ({"date": "2026-13-01", "session": "am", "start": "10:00"}, r"changes\[0\]\.date: must be a date"),
    ],
)
def test_a_bad_change_is_refused_naming_it(change: Dict[str, Any], message: str) -> None:
    document = {"sessions": [{"name": "am", "start": "09:00", "end": "12:00"},
                             {"name": "pm", "start": "13:00", "end": "15:00"}], "changes": [change]}  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        schedule_from_document(document)

