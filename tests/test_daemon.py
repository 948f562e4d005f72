"""The whole daemon against real parts: `edge run` on a real RTSP stream of the Hamilton clip, `edge replay` on
recordings, a real SQLite file, the real models. Lin-Manuel Miranda is enrolled from his still."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from support import (
    RtspServer,
    edge_command,
    enroll_lin_manuel,
    free_port,
    rtsp_unavailable,
    run_edge,
    stored_events,
    wait_until,
)

START = "2026-11-23T09:00:00+09:00"


@pytest.fixture(scope="module")
def enrolled_db(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    db = tmp_path_factory.mktemp("gallery") / "edge.db"
    enroll_lin_manuel(db, data)
    return db


def copy_db(src: Path, dst: Path) -> Path:
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return dst


def write_config(path: Path, db: Path, cameras: str) -> Path:
    path.write_text(f"device:\n  id: door-box\n  timezone: Asia/Seoul\nstorage:\n  database: {db}\ncameras:\n{cameras}")
    return path


def check_hamilton_events(events: List[Dict[str, object]]) -> None:
    named = [e for e in events if e["person_id"] is not None]
    assert [(e["type"], e["person_id"]) for e in named] == [("entry", "lin-manuel")], events
    unknown = [e for e in events if e["type"] == "unknown_face"]
    assert len(unknown) == len({e["track_id"] for e in unknown}), "one unknown_face per unknown track at most"
    assert {e["type"] for e in events} <= {"entry", "unknown_face"}


def test_replay_names_lin_manuel_once(tmp_path: Path, data: Path, enrolled_db: Path) -> None:
    db = copy_db(enrolled_db, tmp_path / "edge.db")
    config = write_config(tmp_path / "edge.yml", db, "  - {id: door, url: unused.mp4, role: entrance}\n")
    done = run_edge(
        "--config", str(config), "replay", str(data / "hamilton" / "short_hamilton_clip.mp4"), "--start", START
    )
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    stored = stored_events(db)
    assert [p["event_id"] for p in printed] == [s["event_id"] for s in stored]
    check_hamilton_events(stored)
    entry = next(e for e in stored if e["type"] == "entry")
    assert entry["camera_id"] == "door" and entry["event_id"] == f"door-box-{entry['seq']:010d}"
    assert str(entry["at"]).startswith("2026-11-23T09:00:0")  # on the clip's own timeline
    assert entry["model_id"] and entry["gallery_version"] == 1 and int(entry["frames"]) >= 3  # type: ignore[call-overload]
    # the same recording again: same decisions, new (never repeated) sequence numbers
    again = run_edge(
        "--config",
        str(config),
        "replay",
        str(data / "hamilton" / "short_hamilton_clip.mp4"),
        "--start",
        "2026-11-24T09:00:00+09:00",
    )
    assert again.returncode == 0, again.stderr
    second = [json.loads(line) for line in again.stdout.splitlines()]
    assert [e["type"] for e in second] == [e["type"] for e in printed]
    assert min(e["seq"] for e in second) > max(e["seq"] for e in printed)
    # a restart later the same day: the state is rebuilt from SQLite, so Lin-Manuel is already present
    later = run_edge(
        "--config",
        str(config),
        "replay",
        str(data / "hamilton" / "short_hamilton_clip.mp4"),
        "--start",
        "2026-11-24T11:00:00+09:00",
    )
    assert later.returncode == 0, later.stderr
    assert "entry" not in [json.loads(line)["type"] for line in later.stdout.splitlines()]


def test_replay_of_people_walking_away_is_silent(tmp_path: Path, data: Path, enrolled_db: Path) -> None:
    db = copy_db(enrolled_db, tmp_path / "edge.db")
    done = run_edge(
        "--db", str(db), "replay", str(data / "negatives" / "one-by-one-person-detection.mp4"), "--start", START
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert stored_events(db) == []
    assert "Traceback" not in done.stderr and "ERROR" not in done.stderr


@pytest.fixture
def rtsp(data: Path) -> Iterator[RtspServer]:
    reason = rtsp_unavailable()
    if reason:
        pytest.skip(reason)
    server = RtspServer(data / "hamilton" / "short_hamilton_clip.mp4", free_port(), loop=True)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_run_on_a_real_rtsp_stream_survives_a_server_restart(
    tmp_path: Path, enrolled_db: Path, rtsp: RtspServer
) -> None:
    db = copy_db(enrolled_db, tmp_path / "edge.db")
    dead = f"rtsp://127.0.0.1:{free_port()}/nobody"
    cameras = (
        f"  - {{id: door, url: '{rtsp.url}', role: entrance, max_fps: 15, open_timeout_s: 5, read_timeout_s: 2,"
        " backoff: {initial_s: 0.2, max_s: 1.0}}\n"
        f"  - {{id: dead, url: '{dead}', role: exit, open_timeout_s: 1, backoff: {{initial_s: 0.5, max_s: 2.0}}}}\n"
    )
    config = write_config(tmp_path / "edge.yml", db, cameras)
    log_path = tmp_path / "edge.log"
    with open(log_path, "w") as log:
        daemon = subprocess.Popen(
            [*edge_command(), "--config", str(config), "run"], stdout=log, stderr=subprocess.STDOUT, text=True
        )
    try:

        def has_entry() -> bool:
            return any(e["type"] == "entry" for e in stored_events(db))

        assert wait_until(has_entry, timeout=90, poll=0.5), log_path.read_text()[-3000:]
        # the RTSP server dies and comes back on the same port: the camera reconnects by itself
        back = "camera door: reconnecting -> online"
        rtsp.kill()
        assert wait_until(lambda: "camera door: online -> reconnecting" in log_path.read_text(), 20, 0.2)
        time.sleep(1.0)
        assert back not in log_path.read_text()
        rtsp.start()
        assert wait_until(lambda: back in log_path.read_text(), 30, 0.2), log_path.read_text()[-3000:]
        processed_before = len(stored_events(db))
        time.sleep(3.0)  # frames flow again; the person is already present: no second entry
        assert daemon.poll() is None, "the daemon must keep running"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    text = log_path.read_text()
    assert "edge stopping" in text and "Traceback" not in text
    assert "camera dead:" in text and "reconnecting" in text  # the dead camera only warned and backed off
    events = stored_events(db)
    assert len(events) >= processed_before
    check_hamilton_events(events)
    assert os.path.getsize(db) > 0
