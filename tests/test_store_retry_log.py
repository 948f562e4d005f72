"""A store that keeps failing (disk full) is logged once per state change, not at every frame."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge.attendance import AttendanceConfig, AttendanceEvent, EventType
from edge.capture import CameraConfig
from edge.embed import Embedder
from edge.gallery.store import Gallery
from edge.match import MatcherConfig
from edge.pipeline import Pipeline, PipelineParts
from edge.quality import QualityConfig
from edge.store import EventStore, StoreError
from edge.track import TrackerConfig

KST = timezone(timedelta(hours=9))


class FullDisk(EventStore):
    full = True

    def append(self, events, context):  # type: ignore[no-untyped-def]
        if self.full:
            raise StoreError(f"{self.path}: disk full, storing {len(events)} event(s) failed")
        return super().append(events, context)


class NoFaces:
    def detect(self, image):  # type: ignore[no-untyped-def]
        return []


def test_a_full_disk_is_logged_once_until_it_recovers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = datetime(2026, 11, 23, 9, 0, tzinfo=KST)
    entry = AttendanceEvent(EventType.ENTRY, "ann", "door", now, now, None, "t", 0.7, 0.2, 9, 0.8)
    caplog.set_level(logging.INFO, logger="edge.pipeline")
    with Gallery(tmp_path / "edge.db") as gallery, FullDisk(tmp_path / "edge.db", "box") as store:
        parts = PipelineParts(detector=NoFaces(), embedder=Embedder(), gallery=gallery, store=store)
        cameras = [CameraConfig("door", "door.mp4")]
        config = AttendanceConfig()
        pipeline = Pipeline(parts, cameras, QualityConfig(), MatcherConfig(), TrackerConfig(), config, KST, now)
        pipeline._store([entry], 0.0, now.timestamp(), 0)
        for frame in range(300):  # ten frames a second for 30 s, and more events on the way
            pipeline._store([entry] if frame % 100 == 99 else [], frame / 10, now.timestamp(), 0)
        store.full = False
        stored = pipeline._store([], 31.0, now.timestamp(), 0)
        store.full = True
        pipeline._store([entry], 32.0, now.timestamp(), 0)
    warnings = [r.getMessage() for r in caplog.records if "batches kept in memory" in r.getMessage()]
    assert len(stored) == 4
    assert len(warnings) == 2, warnings  # once when the disk filled, once when it filled again
    assert "disk full" in warnings[0] and "1 event batches kept in memory" in warnings[0]
    assert sum("works again" in r.getMessage() for r in caplog.records) == 1
