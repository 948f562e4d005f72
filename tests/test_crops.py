"""Face crops: only when asked for, one per unknown_face event, deleted after the retention limit."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from support import enroll_lin_manuel, run_edge, stored_events

from edge.crops import CropsConfig, CropStore


def test_retention_deletes_only_old_crops(tmp_path: Path) -> None:
    store = CropStore(CropsConfig(enabled=True, folder=tmp_path / "crops", retention_days=7))
    old = store.save("box-0000000001", np.zeros((112, 112, 3), np.uint8))
    new = store.save("box-0000000002", np.zeros((112, 112, 3), np.uint8))
    assert old is not None and new is not None
    eight_days_ago = time.time() - 8 * 86400
    os.utime(old, (eight_days_ago, eight_days_ago))
    assert store.purge() == 1
    assert not old.exists() and new.exists()
    assert store.purge() == 0  # at most hourly
    assert store.purge(force=True) == 0


def test_retention_must_be_positive() -> None:
    with pytest.raises(ValueError, match="retention_days"):
        CropsConfig(enabled=True, retention_days=0)


def test_replay_keeps_a_crop_per_unknown_face_only_when_asked(tmp_path: Path, data: Path) -> None:
    db = tmp_path / "edge.db"
    enroll_lin_manuel(db, data)
    clip = str(data / "hamilton" / "short_hamilton_clip.mp4")
    folder = tmp_path / "crops"
    for enabled in (False, True):
        config = tmp_path / "edge.yml"
        config.write_text(
            f"storage: {{database: {db}}}\ncrops: {{enabled: {str(enabled).lower()}, folder: {folder}}}\n"
        )
        start = "2026-11-23T09:00:00+00:00" if not enabled else "2026-11-25T09:00:00+00:00"
        done = run_edge("--config", str(config), "replay", clip, "--start", start)
        assert done.returncode == 0, done.stderr
        printed = [json.loads(line) for line in done.stdout.splitlines()]
        unknown = {e["event_id"] for e in printed if e["type"] == "unknown_face"}
        assert unknown, "the clip has unenrolled faces"
        files = {p.stem for p in folder.glob("*.jpg")} if folder.exists() else set()
        assert files == (unknown if enabled else set())
    assert len(stored_events(db)) >= 2 * len(unknown)
