"""`edge status` and `edge doctor`: against a running daemon (a real RTSP camera, a real mosquitto), healthy, with
the disk nearly full (a config threshold), with the broker down and with the camera down; and their checks one by
one (clock, database permissions, OpenCV without GStreamer, the broker's login and ACL)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from support import (
    Mosquitto,
    RtspServer,
    edge_command,
    free_port,
    mosquitto_unavailable,
    run_edge,
    wait_until,
)
from test_broker_acl import PREFIX, SITE, AclBroker, acl_broker  # noqa: F401 - the fixture

from edge.capture import CameraConfig
from edge.config import Config, DeviceConfig
from edge.mqtt.contract import MqttConfig
from edge.ops import doctor
from edge.ops.status import SCHEMA, problems

NOW = 1_800_000_000.0


# ---- the status file's problems, one by one --------------------------------------------------------------------
def status_doc(**changes: Any) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        "schema": SCHEMA,
        "state": "running",
        "updated_at": NOW - 0.5,
        "cameras": [{"camera_id": "door", "state": "online", "reason": ""}],
        "broker": {"host": "broker.lan", "port": 1883, "connected": True, "state": "connected"},
        "outbox": {"depth": 0, "oldest_unacked_age_s": None},
        "disk": {"path": "/var/lib/edge", "free_bytes": 5e9},
    }
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    "changes, what, detail",
    [
        ({"updated_at": NOW - 60}, "daemon", "not running: the status file was last written 60 s ago"),
        ({"state": "stopped"}, "daemon", "stopped"),
        ({"cameras": [{"camera_id": "door", "state": "reconnecting", "reason": "stall"}]}, "camera:door", "stall"),
        ({"broker": {"host": "b", "port": 1883, "connected": False, "state": "disconnected"}}, "broker", "b:1883"),
        ({"outbox": {"depth": 9, "oldest_unacked_age_s": 7200.0}}, "outbox", "7200 s"),
        ({"disk": {"path": "/var/lib/edge", "free_bytes": 50e6}}, "disk", "50 MB free"),
    ],
)
def test_each_problem_of_a_status(changes: Dict[str, Any], what: str, detail: str) -> None:
    assert problems(status_doc(), NOW, 200.0, 3600.0) == []
    found = problems(status_doc(**changes), NOW, 200.0, 3600.0)
    assert [p.what for p in found] == [what] and detail in found[0].detail


# ---- doctor's checks, one by one -------------------------------------------------------------------------------
def test_clock_check_reads_timedatectl_then_chrony_else_says_unknown() -> None:
    def answers(**replies: Optional[str]) -> Any:
        return lambda command: replies.get(command[0])

    assert doctor.check_clock(answers(timedatectl="yes\n")).status == doctor.OK
    assert doctor.check_clock(answers(timedatectl="no\n")).status == doctor.FAIL
    assert doctor.check_clock(answers(chronyc="Reference ID : x\nLeap status     : Normal\n")).status == doctor.OK
    assert doctor.check_clock(answers(chronyc="Leap status     : Not synchronised\n")).status == doctor.FAIL
    unknown = doctor.check_clock(answers())
    assert unknown.status == doctor.UNKNOWN and "unknown" in unknown.detail


def test_database_check_wants_an_owner_only_intact_file(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "edge.db"
    assert doctor.check_database(db).status == doctor.FAIL
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
    db.chmod(0o644)
    assert "must be owner-only" in doctor.check_database(db).detail
    db.chmod(0o600)
    assert doctor.check_database(db).status == doctor.OK
    db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    assert doctor.check_database(db).status == doctor.FAIL


def test_doctor_says_when_this_opencv_cannot_open_a_pipeline() -> None:
    from edge.capture.live import opencv_has_gstreamer

    if opencv_has_gstreamer():
        pytest.skip("this OpenCV has GStreamer (the system's): nothing to refuse")
    camera = CameraConfig("door", "rtsp://192.0.2.1/s", pipeline="rtspsrc location={url} ! appsink")
    check = doctor.check_opencv(Config(cameras=(camera,)))
    assert check.status == doctor.FAIL and "has no GStreamer" in check.detail and "door" in check.detail
    assert doctor.check_opencv(Config()).status == doctor.OK


def box_config(port: int, device: str, password: str) -> Config:
    mqtt = MqttConfig(host="127.0.0.1", port=port, prefix=PREFIX, username="box-a", password=password)
    return Config(device=DeviceConfig(id=device, site=SITE), mqtt=mqtt)


def test_broker_check_tries_the_login_and_the_acl(acl_broker: AclBroker) -> None:  # noqa: F811
    port, secret = acl_broker.port, acl_broker.passwords["box-a"]
    good = doctor.check_broker(box_config(port, "box-a", secret), timeout=5)
    assert [(c.name, c.status) for c in good] == [("broker", "ok"), ("broker:acl", "ok")], good
    assert "as box-a" in good[0].detail
    # box-a's login configured as box-b: the ACL refuses box-b's topics
    other = doctor.check_broker(box_config(port, "box-b", secret), timeout=5)
    assert other[1].status == doctor.FAIL and "refuses the box's publishes" in other[1].detail, other
    assert "box-b/cameras/doctor/status: Not authorized" in other[1].detail
    wrong = doctor.check_broker(box_config(port, "box-a", "not-the-password"), timeout=5)
    assert wrong[0].status == doctor.FAIL and "refused the login box-a" in wrong[0].detail
    closed = doctor.check_broker(box_config(free_port(), "box-a", secret), timeout=5)
    assert closed[0].status == doctor.FAIL and "cannot reach" in closed[0].detail


# ---- against a running daemon ----------------------------------------------------------------------------------


def edge_json(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_edge("--config", str(config), *args, timeout=120)


def wait_for_status(config: Path, predicate: Any, timeout: float) -> Dict[str, Any]:
    seen: List[Dict[str, Any]] = []

    def check() -> bool:
        done = edge_json(config, "status", "--json")
        try:
            seen.append(json.loads(done.stdout))
        except ValueError:
            return False
        return bool(predicate(seen[-1]))

    assert wait_until(check, timeout, 0.5), seen[-1:] if seen else "no status"
    return seen[-1]


def test_status_and_doctor_against_a_running_daemon(tmp_path: Path, rtsp: RtspServer) -> None:
    if mosquitto_unavailable():
        pytest.skip(str(mosquitto_unavailable()))
    broker = Mosquitto(tmp_path / "broker", free_port()).start()
    db = tmp_path / "edge.db"
    base = (
        f"device: {{id: door-box, timezone: Asia/Seoul}}\nstorage: {{database: {db}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, reconnect_min_s: 0.2, reconnect_max_s: 1.0}}\n"
        f"cameras:\n  - {{id: door, url: '{rtsp.url}', max_fps: 5, open_timeout_s: 3, read_timeout_s: 2,"
        " backoff: {initial_s: 0.2, max_s: 1.0}}\n"
    )
    config = tmp_path / "edge.yml"
    config.write_text(base)
    full = tmp_path / "full-disk.yml"  # the same box, read with a free-space minimum no disk has
    full.write_text(base + "ops: {min_free_mb: 1000000000.0}\n")
    log_path = tmp_path / "edge.log"
    with open(log_path, "w") as log:
        daemon = subprocess.Popen([*edge_command(), "--config", str(config), "run"], stdout=log, stderr=log, text=True)
    try:
        # healthy
        wait_for_status(config, lambda s: not s.get("problems") and s["cameras"][0].get("width"), 60)
        done = edge_json(config, "status")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "camera door: online 1280x720" in done.stdout or "camera door: online" in done.stdout
        assert done.stdout.strip().endswith("OK")
        checked = edge_json(config, "doctor")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "OK      camera:door" in checked.stdout and "OK      broker " in checked.stdout
        assert "the running daemon is connected to 127.0.0.1" in checked.stdout
        assert "opencv" in checked.stdout and "no problems found" in checked.stdout
        report = json.loads(edge_json(config, "doctor", "--json").stdout)
        assert {c["name"] for c in report["checks"]} >= {"database", "disk", "clock", "opencv", "camera:door", "broker"}
        # disk nearly full (by the threshold)
        done = edge_json(full, "status")
        assert done.returncode == 1 and "PROBLEM disk:" in done.stdout, done.stdout
        checked = edge_json(full, "doctor")
        assert checked.returncode == 1 and "FAIL    disk" in checked.stdout
        # broker down
        broker.stop()
        wait_for_status(config, lambda s: [p["what"] for p in s.get("problems", [])] == ["broker"], 30)
        done = edge_json(config, "status")
        assert done.returncode == 1 and "PROBLEM broker: not connected to 127.0.0.1" in done.stdout
        checked = edge_json(config, "doctor")
        assert checked.returncode == 1 and "FAIL    broker" in checked.stdout
        assert "the running daemon is not connected to 127.0.0.1" in checked.stdout  # no second login
        broker.start()
        wait_for_status(config, lambda s: not s.get("problems"), 30)
        # camera down
        rtsp.kill()
        wait_for_status(config, lambda s: [p["what"] for p in s.get("problems", [])] == ["camera:door"], 30)
        done = edge_json(config, "status")
        assert done.returncode == 1 and "PROBLEM camera:door: reconnecting" in done.stdout, done.stdout
        checked = edge_json(config, "doctor")
        assert checked.returncode == 1 and "FAIL    camera:door" in checked.stdout
        daemon.terminate()
        assert daemon.wait(20) == 0
        stopped = edge_json(config, "status")
        assert stopped.returncode == 1 and "PROBLEM daemon: stopped" in stopped.stdout
    finally:
        if daemon.poll() is None:
            daemon.kill()
        broker.kill()
    assert "Traceback" not in log_path.read_text()


def test_status_without_a_daemon_says_where_it_looked(tmp_path: Path) -> None:
    config = tmp_path / "edge.yml"
    config.write_text(f"storage: {{database: {tmp_path / 'edge.db'}}}\n")
    done = edge_json(config, "status")
    assert done.returncode == 1 and f"no status file at {tmp_path / 'edge.db.status.json'}" in done.stderr
    assert not (tmp_path / "edge.db").exists()


# ---- the metrics and health endpoint ---------------------------------------------------------------------------
def fetch(url: str) -> Tuple[int, str, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.headers.get("Content-Type", ""), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def test_metrics_are_off_by_default() -> None:
    assert Config().ops.metrics_port == 0 and Config().ops.metrics_host == "127.0.0.1"


def test_metrics_and_healthz_of_a_running_daemon(tmp_path: Path, data: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families
    from support import enroll_lin_manuel

    db = tmp_path / "edge.db"
    enroll_lin_manuel(db, data)
    port = free_port()
    config = tmp_path / "edge.yml"
    clip = data / "hamilton" / "short_hamilton_clip.mp4"
    config.write_text(
        f"device: {{id: door-box, timezone: Asia/Seoul}}\nstorage: {{database: {db}}}\n"
        f"cameras:\n  - {{id: door, url: '{clip}', role: entrance, max_fps: 0}}\n"
        f"ops: {{metrics_port: {port}}}\n"
    )
    log_path = tmp_path / "edge.log"
    with open(log_path, "w") as log:
        daemon = subprocess.Popen([*edge_command(), "--config", str(config), "run"], stdout=log, stderr=log, text=True)
    base = f"http://127.0.0.1:{port}"
    families: Dict[str, Any] = {}
    try:

        def entry_counted() -> bool:
            try:
                code, kind, text = fetch(f"{base}/metrics")
            except OSError:
                return False
            assert code == 200 and kind.startswith("text/plain")
            families.clear()
            families.update({f.name: f for f in text_string_to_metric_families(text)})
            events = families.get("edge_events")
            return events is not None and any(s.labels == {"type": "entry"} for s in events.samples)

        assert wait_until(entry_counted, 90, 0.5), log_path.read_text()[-3000:]
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
        assert samples[("edge_events_total", (("type", "entry"),))] == 1
        assert samples[("edge_frames_processed_total", (("camera", "door"),))] > 10
        assert samples[("edge_embeddings_total", (("camera", "door"),))] >= 1
        assert samples[("edge_detect_ms", (("camera", "door"),))] > 0
        assert ("edge_camera_fps", (("camera", "door"),)) in samples
        assert ("edge_camera_reconnects_total", (("camera", "door"),)) in samples
        assert ("edge_camera_frames_dropped_total", (("camera", "door"),)) in samples
        assert samples[("edge_broker_connected", ())] == 0 and samples[("edge_disk_free_bytes", ())] > 0
        info = [s for s in families["edge_info"].samples][0]
        assert info.labels["device"] == "door-box" and info.labels["model"]
        code, _, text = fetch(f"{base}/healthz")
        assert (code, text) == (200, "ok\n")
        assert fetch(f"{base}/nothing")[0] == 404
        with pytest.raises(OSError):  # bound to loopback only
            import socket

            addresses = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
            outside = sorted(a for a in addresses if not a.startswith("127."))
            if not outside:
                raise OSError("no address other than loopback on this machine")
            socket.create_connection((outside[0], port), timeout=2).close()
    finally:
        daemon.terminate()
        assert daemon.wait(20) == 0
    assert "Traceback" not in log_path.read_text()


def test_healthz_says_what_is_wrong() -> None:
    from edge.ops.metrics import MetricsServer
    from edge.ops.settings import OpsConfig

    server = MetricsServer(OpsConfig(metrics_port=free_port())).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert fetch(f"{base}/healthz") == (503, "text/plain; charset=utf-8", "starting\n")
        doc = status_doc(updated_at=time.time(), cameras=[{"camera_id": "door", "state": "reconnecting", "reason": "x"}])
        server.update(doc)
        code, _, text = fetch(f"{base}/healthz")
        assert code == 503 and text == "camera:door: reconnecting (x)\n"
        server.update(status_doc(updated_at=time.time()))
        assert fetch(f"{base}/healthz")[0] == 200
    finally:
        server.close()


def test_status_lines_say_what_each_part_does() -> None:
    from edge.ops.status import Problem, render

    doc = status_doc(
        device_id="door-box",
        software_version="0.2.0",
        pid=7,
        uptime_s=65.0,
        model_id="m",
        gallery_version=3,
        cameras=[{"camera_id": "door", "state": "online", "width": 1280, "height": 720, "fps": 9.5, "last_frame_at": NOW}],
        outbox={"depth": 2, "oldest_unacked_age_s": 4.2},
        last_event={"event_id": "e-1", "type": "entry", "person_id": "ann", "camera_id": "door", "at": "09:00"},
    )
    lines = render(doc, [], NOW)
    assert lines[0].startswith("edge running: device door-box, version 0.2.0, pid 7, up 65 s, updated 0.5 s ago")
    assert "camera door: online 1280x720, 9.5 fps, last frame 0.0 s ago, 0 reconnects, 0 dropped" in lines
    assert "outbox: 2 unacknowledged, oldest 4 s; broker broker.lan:1883 connected" in lines
    assert "last event: e-1 entry ann on door at 09:00" in lines and lines[-1] == "OK"
    offline = render(status_doc(outbox={"depth": None}, broker={}), [Problem("disk", "low")], NOW)
    assert "outbox: no broker, events kept in SQLite; broker off" in offline and offline[-1] == "PROBLEM disk: low"


def test_a_metrics_port_in_use_stops_the_start_with_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "edge.yml"
        config.write_text(f"storage: {{database: {tmp_path / 'edge.db'}}}\nops: {{metrics_port: {port}}}\n")
        done = run_edge("--config", str(config), "run")
    assert done.returncode == 1 and f"ops.metrics_port: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_doctors_login_leaves_what_was_queued_for_the_box(acl_broker: AclBroker) -> None:  # noqa: F811
    """The broker binds a login to one client id: the doctor resumes the box's session, so it must neither end it
    nor take the messages queued in it (an ack sent while the daemon was down still reaches the daemon)."""
    import paho.mqtt.client as mqtt

    from edge.mqtt.contract import Topics

    port, secret = acl_broker.port, acl_broker.passwords["box-a"]
    topics = Topics.of(PREFIX, SITE, "box-a")
    received: List[bytes] = []

    def box_session() -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edge-box-a", clean_session=False)
        client.username_pw_set("box-a", secret)
        client.on_message = lambda _c, _u, message: received.append(bytes(message.payload))
        client.connect("127.0.0.1", port)
        client.loop_start()
        return client

    box = box_session()
    box.subscribe(topics.ack, qos=1)
    time.sleep(0.5)
    box.disconnect()
    box.loop_stop()
    central = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edge-central")
    central.username_pw_set("edge-central", acl_broker.passwords["edge-central"])
    central.connect("127.0.0.1", port)
    central.loop_start()
    central.publish(topics.ack, b"queued while the box was down", qos=1).wait_for_publish(5)
    central.disconnect()
    central.loop_stop()
    checks = doctor.check_broker(box_config(port, "box-a", secret), timeout=5)
    assert [c.status for c in checks] == ["ok", "ok"], checks
    box = box_session()
    try:
        assert wait_until(lambda: b"queued while the box was down" in received, 10), received
    finally:
        box.disconnect()
        box.loop_stop()


def test_a_usb_camera_held_by_the_running_daemon_is_judged_from_its_status() -> None:
    online = {"camera_id": "usb", "state": "online", "width": 640, "height": 480, "fps": 9.8}
    check = doctor.camera_per_daemon("usb", online)
    assert check.status == doctor.OK and "640x480, 9.8 fps processed" in check.detail
    down = doctor.camera_per_daemon("usb", {"camera_id": "usb", "state": "reconnecting", "reason": "no such device"})
    assert down.status == doctor.FAIL and "reconnecting (no such device)" in down.detail
