"""The whole daemon against real parts: `edge run` on a real RTSP stream of the Hamilton clip, `edge replay` on
recordings, a real SQLite file, the real models. Lin-Manuel Miranda is enrolled from his still."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from support import (
    CentralKeys,
    RtspServer,
    edge_command,
    enroll_lin_manuel,
    free_port,
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
    assert entry["camera_id"] == "door" and re.fullmatch(
        rf"door-box-[0-9a-f]{{16}}-{entry['seq']:010d}", entry["event_id"]
    )
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


class FakeLink:
    """The daemon's view of the MQTT link, without a broker: commands in, results out."""

    def __init__(self) -> None:
        self.commands: queue.Queue[Dict[str, Any]] = queue.Queue()
        self.results: List[Dict[str, Any]] = []
        self.versions: List[int] = []

    def publish_result(self, result: Dict[str, Any]) -> None:
        self.results.append(result)

    def failure(self) -> Optional[str]:
        return None  # the outbox thread is alive (Link.failure)

    def set_gallery_version(self, version: int) -> None:
        self.versions.append(version)

    def set_config_hash(self, config_hash: str) -> None:
        pass

    def notify_new_events(self) -> None:
        pass

    def publish_camera_status(self, *args: object) -> None:
        pass

    def publish_stats(self, payload: Dict[str, Any]) -> None:
        pass

    def outbox_stats(self) -> Dict[str, Any]:
        return {"depth": 0, "oldest_unacked_age_s": None, "last_seq": 0, "acked_up_to": 0}


class WatchdogListener:
    """A NOTIFY_SOCKET as systemd offers it: counts the WATCHDOG=1 datagrams the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.ticks = 0
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._count, daemon=True)
        self.thread.start()

    def _count(self) -> None:
        while not self.closed.is_set():
            try:
                message = self.sock.recv(256)
            except TimeoutError:
                continue
            if message == b"WATCHDOG=1":
                self.ticks += 1

    def close(self) -> None:
        self.closed.set()
        self.thread.join(5)
        self.sock.close()


def test_a_long_gallery_sync_does_not_stop_the_watchdog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A big sync (hundreds of photos) takes many seconds to apply: the pipeline loop must keep ticking (and feeding
    the watchdog) meanwhile. The sync here is slow on purpose: it returns only after the loop ticked 5 times."""
    import edge.daemon
    from edge.config import load_config
    from edge.mqtt.contract import gallery_result_payload

    listener = WatchdogListener(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setattr(edge.daemon, "TICK_INTERVAL_S", 0.05)
    link = FakeLink()
    monkeypatch.setattr(edge.daemon, "open_link", lambda *args: link)

    class SlowSync:
        def __init__(self, *args: object) -> None:
            pass

        def apply(self, command: Dict[str, Any]) -> Dict[str, Any]:
            start = listener.ticks
            wait_until(lambda: listener.ticks >= start + 5, timeout=15)
            reason = f"{listener.ticks - start} watchdog ticks while applying"
            return gallery_result_payload(command["request_id"], "sync", "ok", reason, 7)

    monkeypatch.setattr(edge.daemon, "GallerySync", SlowSync)
    db = tmp_path / "edge.db"
    config = load_config(write_config(tmp_path / "edge.yml", db, "  []\nmqtt:\n  host: 127.0.0.1\n"))
    stop = threading.Event()
    daemon = threading.Thread(target=edge.daemon.run, args=(config, stop, db), daemon=True)
    daemon.start()
    try:
        link.commands.put({"request_id": "big-sync", "op": "sync", "people": []})
        assert wait_until(lambda: bool(link.results), timeout=40, poll=0.1)
    finally:
        stop.set()
        daemon.join(30)
        listener.close()
    assert not daemon.is_alive()
    result = link.results[0]
    assert result["request_id"] == "big-sync" and result["status"] == "ok", result
    ticked = int(str(result["reason"]).split()[0])
    assert ticked >= 5, f"the watchdog was fed {ticked} times during the sync"
    assert link.versions == [7]


def test_the_gallery_worker_applies_signed_commands_on_its_own_connection(
    tmp_path: Path, central_keys: CentralKeys
) -> None:
    """The real sync pieces on the worker thread; the pipeline's own gallery connection sees the new version."""
    import numpy as np

    from edge.config import load_config
    from edge.daemon import gallery_sync_factory
    from edge.embed import Embedder
    from edge.gallery.store import Gallery
    from edge.gallery.worker import GalleryWorker
    from edge.mqtt.signing import box_verifier

    db = tmp_path / "edge.db"
    text = f"  []\nmqtt:\n  host: 127.0.0.1\n  central_key_file: {central_keys.public_file}\n"
    config = load_config(write_config(tmp_path / "edge.yml", db, text))
    embedder = Embedder(config.embedder.models_path)
    rng = np.random.default_rng(1)

    def person(i: int) -> Dict[str, Any]:
        vector = rng.normal(size=embedder.manifest.embedding_size)
        vector /= np.linalg.norm(vector)
        embedding = {"model_id": embedder.model_id, "vector": [float(x) for x in vector], "quality": 0.8}
        return {"person_id": f"p{i}", "name": f"Person {i}", "embeddings": [embedding]}

    command = {"schema": "edge.gallery_command/1", "request_id": "s-1", "op": "sync"}
    command["people"] = [person(i) for i in range(30)]
    link = FakeLink()
    verifier = box_verifier(str(central_keys.public_file), "default", "door-box")
    with Gallery(db) as pipeline_gallery:
        before = pipeline_gallery.index(embedder.model_id)
        worker = GalleryWorker(link.commands, link, gallery_sync_factory(config, db, verifier)).start()
        try:
            link.commands.put(central_keys.sign(command, "default/door-box"))
            link.commands.put(central_keys.sign(command, "default/door-box"))  # a replay: refused
            assert wait_until(lambda: len(link.results) == 2, timeout=60, poll=0.05)
        finally:
            worker.close()
        assert worker.alive, "closed on request: not a dead worker"
        after = pipeline_gallery.index(embedder.model_id)
    assert [r["status"] for r in link.results] == ["ok", "rejected"], link.results
    assert after.version > before.version and len(after.people) == 30
    assert link.versions == [after.version, after.version]


def test_a_dead_gallery_worker_stops_the_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker thread that dies must not leave a daemon that feeds the watchdog but applies no command."""
    import edge.daemon
    from edge.config import load_config
    from edge.errors import EdgeError

    class BrokenLink(FakeLink):
        def publish_result(self, result: Dict[str, Any]) -> None:
            raise RuntimeError("a bug in the link")

    link = BrokenLink()
    monkeypatch.setattr(edge.daemon, "open_link", lambda *args: link)
    db = tmp_path / "edge.db"
    config = load_config(write_config(tmp_path / "edge.yml", db, "  []\nmqtt:\n  host: 127.0.0.1\n"))
    link.commands.put({"request_id": "r-1", "op": "remove", "person_id": "nobody"})  # refused: no central key
    with pytest.raises(EdgeError, match="gallery worker thread has died"):
        edge.daemon.run(config, threading.Event(), db)


def test_a_real_photo_sync_is_applied_while_the_loop_keeps_ticking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: Path, central_keys: CentralKeys
) -> None:
    """The issue's case, scaled down: a signed sync of LFW photos (each decoded, detected and embedded) goes through
    the real worker while the loop keeps feeding the watchdog; the pipeline's gallery then has everyone."""
    import base64

    import edge.daemon
    from edge.config import load_config

    folders = sorted((data / "lfw-view1" / "lfw-deepfunneled").glob("*/*_0003.jpg"))[:40]
    people = [
        {
            "person_id": f"lfw-{i}",
            "name": path.parent.name,
            "photos": [base64.b64encode(p.read_bytes()).decode() for p in sorted(path.parent.glob("*.jpg"))[:3]],
        }
        for i, path in enumerate(folders)
    ]
    command = {"schema": "edge.gallery_command/1", "request_id": "lfw-sync", "op": "sync", "people": people}
    listener = WatchdogListener(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setattr(edge.daemon, "TICK_INTERVAL_S", 0.05)
    link = FakeLink()
    monkeypatch.setattr(edge.daemon, "open_link", lambda *args: link)
    db = tmp_path / "edge.db"
    text = f"  []\nmqtt:\n  host: 127.0.0.1\n  central_key_file: {central_keys.public_file}\n"
    config = load_config(write_config(tmp_path / "edge.yml", db, text))
    stop = threading.Event()
    daemon = threading.Thread(target=edge.daemon.run, args=(config, stop, db), daemon=True)
    daemon.start()
    try:
        assert wait_until(lambda: listener.ticks > 0, timeout=30)
        before = listener.ticks
        link.commands.put(central_keys.sign(command, "default/door-box"))
        assert wait_until(lambda: bool(link.results), timeout=120, poll=0.05)
        during = listener.ticks - before
    finally:
        stop.set()
        daemon.join(30)
        listener.close()
    result = link.results[0]
    assert result["status"] == "ok" and result["people"] == 40, result["reason"]
    assert during >= 5, f"the watchdog was fed {during} times while 40 photos were enrolled"


def test_events_held_in_memory_are_stored_when_the_daemon_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decided events the store refused (disk full) are still in memory at stop: they get one last try."""
    from datetime import datetime

    import edge.daemon
    from edge.attendance import AttendanceEvent, EventType
    from edge.config import load_config
    from edge.store import EventStore, StoreError

    stop = threading.Event()
    real_append = EventStore.append

    def append(self: EventStore, events: Any, context: Any) -> Any:
        if not stop.is_set():  # the disk is full until the daemon is asked to stop
            raise StoreError(f"{self.path}: disk full, storing {len(events)} event(s) failed")
        return real_append(self, events, context)

    def make_pipeline(*args: Any) -> Any:
        pipeline = real_make_pipeline(*args)
        at = datetime.now(config.device.tz)
        held = AttendanceEvent(EventType.ENTRY, "ann", "door", at, at, None, "door-x-1", 0.7, 0.2, 9, 0.8)
        pipeline._store([held], time.monotonic(), time.time(), 0)  # refused: kept in memory
        made.append(pipeline)
        return pipeline

    made: List[Any] = []
    real_make_pipeline = edge.daemon.make_pipeline
    monkeypatch.setattr(EventStore, "append", append)
    monkeypatch.setattr(edge.daemon, "make_pipeline", make_pipeline)
    monkeypatch.setattr(edge.daemon, "TICK_INTERVAL_S", 3600.0)  # no retry from the loop: only the one at stop
    db = tmp_path / "edge.db"
    config = load_config(write_config(tmp_path / "edge.yml", db, "  - {id: door, url: none.mp4, enabled: false}\n"))
    daemon = threading.Thread(target=edge.daemon.run, args=(config, stop, db), daemon=True)
    daemon.start()
    assert wait_until(lambda: bool(made), timeout=30)
    assert stored_events(db) == []
    stop.set()
    daemon.join(30)
    assert not daemon.is_alive()
    assert [(e["type"], e["person_id"]) for e in stored_events(db)] == [("entry", "ann")]
