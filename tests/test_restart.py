"""A box that was down at midnight: outings left open on earlier days become exits when it starts again."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from edge.attendance import AttendanceConfig, AttendanceEvent, CameraRole, EventType
from edge.gallery.store import Gallery
from edge.pipeline import Pipeline, close_past_days
from edge.schedule import ScheduleConfig, SessionConfig
from edge.store import EventContext, EventStore, StoreError

KST = timezone(timedelta(hours=9))
ROLES = {"door": CameraRole.ENTRANCE, "out": CameraRole.EXIT}
CONFIG = AttendanceConfig(
    schedule=ScheduleConfig(
        sessions=(SessionConfig("day", "09:00", "17:00", days=("mon", "tue", "wed", "thu", "fri")),)
    )
)


def event(kind: EventType, person: str, at: datetime, camera: str = "door") -> AttendanceEvent:
    return AttendanceEvent(kind, person, camera, at, at, "day", "t", 0.7, 0.2, 9, 0.8)


def test_an_outing_left_open_yesterday_is_closed_once(tmp_path: Path) -> None:
    monday = datetime(2026, 11, 23, 9, 0, tzinfo=KST)
    context = EventContext(gallery_version=1, model_id="m", mono_time=0.0, wall_time=monday.timestamp())
    with EventStore(tmp_path / "edge.db", "box") as store:
        store.append([event(EventType.ENTRY, "ann", monday)], context)
        store.append([event(EventType.OUTING_START, "ann", monday + timedelta(hours=5), "out")], context)
        store.append([event(EventType.ENTRY, "bob", monday)], context)  # bob stays: no exit is invented
        tuesday = datetime(2026, 11, 24, 8, 30, tzinfo=KST)
        closing = close_past_days(store, CONFIG, ROLES, {}, tuesday, KST)
        assert [(e.type, e.person_id, e.at) for e in closing] == [
            (EventType.EXIT, "ann", monday + timedelta(hours=5)),
            (EventType.EARLY_LEAVE, "ann", monday + timedelta(hours=5)),
        ]
        store.append(closing, context)
        # started again later: the exits are stored, nothing is emitted twice
        assert close_past_days(store, CONFIG, ROLES, {}, tuesday + timedelta(hours=1), KST) == []


def test_an_outing_left_open_before_three_weeks_off_is_closed(tmp_path: Path) -> None:
    friday = datetime(2026, 12, 18, 9, 0, tzinfo=KST)
    context = EventContext(gallery_version=1, model_id="m", mono_time=0.0, wall_time=friday.timestamp())
    with EventStore(tmp_path / "edge.db", "box") as store:
        store.append([event(EventType.ENTRY, "ann", friday - timedelta(days=1))], context)  # thursday: closed
        store.append([event(EventType.EXIT, "ann", friday - timedelta(days=1, hours=-8), "out")], context)
        store.append([event(EventType.ENTRY, "ann", friday)], context)
        store.append([event(EventType.OUTING_START, "ann", friday + timedelta(hours=2), "out")], context)
        assert store.last_day_before(friday.date(), KST) == (friday - timedelta(days=1)).date()
        after_holidays = datetime(2027, 1, 11, 8, 0, tzinfo=KST)  # the box was off for 24 days
        assert store.last_day_before(after_holidays.date(), KST) == friday.date()
        closing = close_past_days(store, CONFIG, ROLES, {}, after_holidays, KST)
        assert [(e.type, e.person_id, e.at) for e in closing] == [
            (EventType.EXIT, "ann", friday + timedelta(hours=2)),
            (EventType.EARLY_LEAVE, "ann", friday + timedelta(hours=2)),
        ]
        store.append(closing, context)
        assert close_past_days(store, CONFIG, ROLES, {}, after_holidays, KST) == []


def test_events_refused_by_a_full_disk_are_kept_and_stored_later(tmp_path: Path) -> None:
    from edge.capture import CameraConfig
    from edge.embed import Embedder
    from edge.gallery.store import Gallery
    from edge.match import MatcherConfig
    from edge.pipeline import Pipeline, PipelineParts
    from edge.quality import QualityConfig
    from edge.store import StoreError
    from edge.track import TrackerConfig

    class FullDisk(EventStore):
        refuse = 2

        def append(self, events, context):  # type: ignore[no-untyped-def]
            if self.refuse:
                self.refuse -= 1
                raise StoreError(f"{self.path}: disk full, storing {len(events)} event(s) failed")
            return super().append(events, context)

    class NoFaces:
        def detect(self, image):  # type: ignore[no-untyped-def]
            return []

    now = datetime(2026, 11, 23, 9, 0, tzinfo=KST)
    with Gallery(tmp_path / "edge.db") as gallery, FullDisk(tmp_path / "edge.db", "box") as store:
        parts = PipelineParts(detector=NoFaces(), embedder=Embedder(), gallery=gallery, store=store)
        pipeline = Pipeline(
            parts,
            [CameraConfig("door", "door.mp4")],
            QualityConfig(),
            MatcherConfig(),
            TrackerConfig(),
            CONFIG,
            KST,
            now,
        )
        first = [event(EventType.ENTRY, "ann", now)]
        second = [event(EventType.ENTRY, "bob", now + timedelta(minutes=1))]
        assert pipeline._store(first, 1.0, now.timestamp(), 0) == []  # refused: kept in memory
        assert pipeline._store(second, 2.0, now.timestamp(), 0) == []  # still refused: both kept, in order
        stored = pipeline._store([], 3.0, now.timestamp(), 0)  # the disk has room again
        assert [(s.seq, s.event.person_id) for s in stored] == [(1, "ann"), (2, "bob")]
        assert pipeline._store([], 4.0, now.timestamp(), 0) == []  # nothing stored twice


def restart_pipeline(store: EventStore, gallery: Gallery, now: datetime) -> Pipeline:
    from edge.capture import CameraConfig
    from edge.embed import Embedder
    from edge.match import MatcherConfig
    from edge.pipeline import PipelineParts
    from edge.quality import QualityConfig
    from edge.track import TrackerConfig

    class NoFaces:
        def detect(self, image):  # type: ignore[no-untyped-def]
            return []

    parts = PipelineParts(detector=NoFaces(), embedder=Embedder(), gallery=gallery, store=store)
    cameras = [CameraConfig("door", "door.mp4")]
    return Pipeline(parts, cameras, QualityConfig(), MatcherConfig(), TrackerConfig(), CONFIG, KST, now)


def test_the_first_unknown_face_after_a_restart_is_announced(tmp_path: Path) -> None:
    """Track ids restart with the process: they must not collide with the tracks already announced today."""
    from edge.attendance import Sighting
    from edge.faces import Box, Detection

    now = datetime(2026, 11, 23, 9, 0, tzinfo=KST)
    face = Detection(Box(100, 100, 80, 80), 0.9, np.zeros((6, 2), np.float32))
    announced = []
    with Gallery(tmp_path / "edge.db") as gallery, EventStore(tmp_path / "edge.db", "box") as store:
        for restart in range(3):  # the process starts, sees an unknown face, stops; three times in one morning
            at = now + timedelta(minutes=10 * restart)  # beyond the per-camera unknown_face limit (5 min)
            pipeline = restart_pipeline(store, gallery, at)
            track_id = pipeline.trackers["door"].assign(0.0, [face])[0].track_id
            sighting = Sighting(None, track_id, "door", "in", at, 0.0, 0.0, 9, 0.8)
            events = pipeline.machine.step(sighting)
            assert [e.type for e in events] == [EventType.UNKNOWN_FACE], f"restart {restart}: {track_id} dropped"
            stored = pipeline._store(events, 1.0, at.timestamp(), 0)
            announced += [s.event.track_id for s in stored]
    assert len(set(announced)) == 3


class RefusingStore(EventStore):
    """An event store on a full disk: refuses `refuse` appends (every one when negative), then works again."""

    refuse = -1

    def append(self, events, context):  # type: ignore[no-untyped-def]
        if self.refuse:
            self.refuse -= 1
            raise StoreError(f"{self.path}: disk full, storing {len(events)} event(s) failed")
        return super().append(events, context)


def test_events_held_in_memory_are_flushed_at_stop(tmp_path: Path) -> None:
    now = datetime(2026, 11, 23, 9, 0, tzinfo=KST)
    with Gallery(tmp_path / "edge.db") as gallery, RefusingStore(tmp_path / "edge.db", "box") as store:
        pipeline = restart_pipeline(store, gallery, now)
        store.refuse = 1
        assert pipeline._store([event(EventType.ENTRY, "ann", now)], 1.0, now.timestamp(), 0) == []
        flushed = pipeline.flush()  # SIGTERM: the disk has room again
        assert [(s.seq, s.event.person_id) for s in flushed] == [(1, "ann")]
        assert pipeline.flush() == []


def test_events_that_cannot_be_stored_at_stop_are_counted_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime(2026, 11, 23, 9, 0, tzinfo=KST)
    with Gallery(tmp_path / "edge.db") as gallery, RefusingStore(tmp_path / "edge.db", "box") as store:
        pipeline = restart_pipeline(store, gallery, now)
        store.refuse = -1  # the disk stays full
        pipeline._store([event(EventType.ENTRY, "ann", now)], 1.0, now.timestamp(), 0)
        pipeline._store([event(EventType.ENTRY, "bob", now), event(EventType.ENTRY, "cid", now)], 2.0, 0.0, 0)
        caplog.set_level(logging.ERROR, logger="edge.pipeline")
        assert pipeline.flush() == []
    text = caplog.text
    assert "stopping with 3 decided events that could not be stored: they are lost (3 entry)" in text
    assert "lost event entry ann on door" in text and "lost event entry cid on door" in text


def test_a_face_in_view_when_edge_stops_gets_its_event(tmp_path: Path, data: Path) -> None:
    """SIGTERM while a face is in view: its track ends as when a file ends, so the face is not lost (here an
    undecided unknown face, which a running track only reports once its budget is spent or it leaves)."""
    import cv2

    from edge.capture import CameraConfig, Frame
    from edge.daemon import stop_pipeline
    from edge.detect import DetectorConfig, FaceDetector
    from edge.embed import Embedder
    from edge.match import MatcherConfig
    from edge.pipeline import PipelineParts
    from edge.quality import QualityConfig
    from edge.track import TrackerConfig

    image = cv2.imread(str(data / "hamilton" / "obama.jpg"))
    assert image is not None
    now = datetime(2026, 11, 23, 9, 0, tzinfo=KST)
    with Gallery(tmp_path / "edge.db") as gallery, EventStore(tmp_path / "edge.db", "box") as store, FaceDetector(
        DetectorConfig()
    ) as detector:
        parts = PipelineParts(detector=detector, embedder=Embedder(), gallery=gallery, store=store)
        pipeline = Pipeline(parts, [CameraConfig("door", "door.mp4")], QualityConfig(), MatcherConfig(),
                            TrackerConfig(), CONFIG, KST, now)  # fmt: skip
        produced = []
        for k in range(8):  # 0.8 s of one face: an unknown track, its embedding budget far from spent
            at = now.timestamp() + 0.1 * k
            produced += pipeline.process(Frame("door", k, image, at, 0.1 * k))
        assert produced == [] and pipeline.trackers["door"].stats["embeddings"] >= 5
        stop_pipeline(pipeline, None)
        assert [e.type for e in store.events_of_day(now.date(), KST)] == [EventType.UNKNOWN_FACE]
