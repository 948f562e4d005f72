"""Faces are biometric data: the database that holds embeddings and events, and face crops, are created readable by
their owner only, whatever the umask (a daemon started by hand, not by the hardened unit, has umask 022)."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from edge.attendance import AttendanceEvent, EventType
from edge.crops import CropsConfig, CropStore
from edge.gallery.store import Gallery, NewEmbedding
from edge.store import EventContext, EventStore


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_database_and_its_wal_files_are_private(tmp_path: Path) -> None:
    db = tmp_path / "var" / "edge.db"
    vector = np.zeros(128, np.float32)
    vector[0] = 1.0
    with Gallery(db) as gallery, EventStore(db, "box-1") as store:
        gallery.put_person("ann", "Ann", [NewEmbedding(vector, "m", 0.9, "test")])
        at = datetime(2026, 3, 2, 9, 0, tzinfo=timezone(timedelta(hours=9)))
        event = AttendanceEvent(EventType.ENTRY, "ann", "door", at, at, "day", "t", 0.7, 0.2, 9, 0.8)
        store.append([event], EventContext(gallery_version=1, model_id="m", mono_time=0.0, wall_time=at.timestamp()))
        files = [db, db.with_name("edge.db-wal"), db.with_name("edge.db-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: oct(mode(f)) for f in files} == {f.name: "0o600" for f in files}


def test_an_existing_database_keeps_the_permissions_an_admin_gave_it(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    Gallery(db).close()
    os.chmod(db, 0o640)  # e.g. readable by a backup group
    with Gallery(db), EventStore(db, "box-1"):
        assert mode(db) == 0o640


def test_face_crops_are_private(tmp_path: Path) -> None:
    store = CropStore(CropsConfig(enabled=True, folder=tmp_path / "crops", retention_days=7))
    crop = store.save("box-1-0000000001", np.full((112, 112, 3), 128, np.uint8))
    assert crop is not None and crop.read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    assert mode(crop) == 0o600 and mode(tmp_path / "crops") == 0o700
