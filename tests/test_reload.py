"""SIGHUP: schedule, thresholds and cameras change in the running daemon; a broken file is refused and the running
config stays."""

from __future__ import annotations

import json
import signal
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict

from support import RtspServer, edge_command, enroll_lin_manuel, free_port, stored_events, wait_until

from edge.capture import CameraConfig
from edge.config import Config
from edge.match import MatcherConfig
from edge.mqtt.contract import MqttConfig
from edge.reload import plan_reload
from edge.schedule import ScheduleConfig, SessionConfig


def test_the_plan_takes_live_sections_and_keeps_the_rest() -> None:
    old = Config(cameras=(CameraConfig("door", "rtsp://192.0.2.1/a"), CameraConfig("hall", "rtsp://192.0.2.1/b")))
    schedule = ScheduleConfig(sessions=(SessionConfig("evening", "18:00", "21:00"),))
    new = replace(
        old,
        attendance=replace(old.attendance, schedule=schedule),
        matcher=MatcherConfig(threshold=0.5),
        mqtt=MqttConfig(host="broker.lan"),
        cameras=(CameraConfig("door", "rtsp://192.0.2.1/a"), CameraConfig("yard", "rtsp://192.0.2.1/c")),
    )
    plan = plan_reload(old, new)
    assert plan.applied == ("attendance", "matcher", "cameras")
    assert plan.needs_restart == ("mqtt",)
    assert plan.cameras_changed == ("hall", "yard")
    assert plan.config.attendance.schedule == schedule and plan.config.matcher.threshold == 0.5
    assert plan.config.mqtt == old.mqtt  # the broker only changes at the next start
    assert plan_reload(old, old).applied == () and plan_reload(old, old).config == old


def config_text(db: Path, camera_url: str, threshold: float, session: str, extra_camera: str = "") -> str:
    return (
        f"device: {{id: door-box, timezone: Asia/Seoul}}\nstorage: {{database: {db}}}\n"
        f"matcher: {{threshold: {threshold}, fused_threshold: {threshold}}}\n"
        "attendance:\n  schedule:\n    sessions:\n"
        f"      - {{name: {session}, start: '00:00', end: '23:59', days: [mon, tue, wed, thu, fri, sat, sun]}}\n"
        f"cameras:\n  - {{id: door, url: '{camera_url}', role: entrance, max_fps: 15, open_timeout_s: 5,"
        " read_timeout_s: 3}\n" + extra_camera
    )


def read_status(db: Path) -> Dict[str, Any]:
    try:
        return dict(json.loads(db.with_name(db.name + ".status.json").read_text()))
    except (OSError, ValueError):
        return {}


def test_sighup_reloads_schedule_threshold_and_cameras_and_refuses_a_broken_file(
    tmp_path: Path, data: Path, rtsp: RtspServer
) -> None:
    db = tmp_path / "edge.db"
    enroll_lin_manuel(db, data)
    config = tmp_path / "edge.yml"
    config.write_text(config_text(db, rtsp.url, 0.99, "before"))  # nobody can be named at 0.99
    log_path = tmp_path / "edge.log"
    with open(log_path, "w") as log:
        daemon = subprocess.Popen([*edge_command(), "--config", str(config), "run"], stdout=log, stderr=log, text=True)
    try:

        def door() -> Dict[str, Any]:
            cameras = read_status(db).get("cameras") or [{}]
            return dict(cameras[0])

        assert wait_until(lambda: door().get("frames_processed", 0) > 60, 60, 0.5), log_path.read_text()[-3000:]
        assert not [e for e in stored_events(db) if e["type"] == "entry"]
        before = door()
        # a schedule and a threshold change: the next sighting of Lin-Manuel is an entry in the new session
        config.write_text(config_text(db, rtsp.url, 0.45, "reloaded"))
        daemon.send_signal(signal.SIGHUP)

        def entry() -> Any:
            return next((e for e in stored_events(db) if e["type"] == "entry"), None)

        assert wait_until(lambda: entry() is not None, 60, 0.5), log_path.read_text()[-3000:]
        assert entry()["person_id"] == "lin-manuel" and entry()["session"] == "reloaded"
        text = log_path.read_text()
        assert "config reloaded: attendance, matcher" in text
        after = door()
        # the stream was never reopened: no reconnect, the frames kept coming
        assert after["reconnects"] == before["reconnects"] == 0 and after["frames_read"] > before["frames_read"]
        assert text.count("camera door: connecting -> online") <= 1 and "reconnecting" not in text
        # a broken file and an invalid one are refused; the daemon runs on with the config it had
        for broken in ("matcher: {threshold: [0.5\n", config_text(db, rtsp.url, 7.0, "broken")):
            config.write_text(broken)
            refusals = log_path.read_text().count("config reload refused")
            daemon.send_signal(signal.SIGHUP)
            assert wait_until(lambda n=refusals: log_path.read_text().count("config reload refused") > n, 10, 0.2)
        assert "matcher.threshold (line 3): must be within" in log_path.read_text()
        assert daemon.poll() is None and door()["state"] == "online"
        # a camera added: opened alone, the door camera keeps streaming
        dead = f"rtsp://127.0.0.1:{free_port()}/nobody"
        extra = f"  - {{id: dead, url: '{dead}', role: exit, open_timeout_s: 1}}\n"
        config.write_text(config_text(db, rtsp.url, 0.45, "reloaded", extra))
        daemon.send_signal(signal.SIGHUP)
        assert wait_until(lambda: len(read_status(db).get("cameras", [])) == 2, 20, 0.3), log_path.read_text()[-2000:]
        assert "cameras reopened: dead" in log_path.read_text()
        assert door()["state"] == "online" and door()["reconnects"] == 0
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert "Traceback" not in log_path.read_text()
