"""`edge doctor`: is this box able to work? Each check says ok, warn, fail or unknown, with what it saw.

Checks: the models against their manifest (sha256), the database (integrity, owner-only permissions), free disk,
the clock's synchronisation (timedatectl, else chronyc, else unknown), whether this OpenCV can open a GStreamer
`pipeline:`, each enabled camera (opened, one frame read: resolution and fps; a USB camera the running daemon holds
is judged from its status file, a V4L2 device opens once), and the broker (reachable, TLS and
credentials accepted, and the ACL: the box's subscriptions granted and a publish on its own topics acknowledged).
The broker: while the daemon runs (its status file is fresh), its own connection is the proof (login, TLS, granted
subscriptions), because a second login with the box's user name would take over its session (`edge broker conf`
sets use_username_as_clientid). When it does not run, the doctor logs in as the box: MQTT 5, resuming the box's
session (clean start off, no expiry) and acknowledging nothing it receives, so messages queued for the box stay
queued for the daemon; then it subscribes to the box's topics and publishes one empty, unretained message on
`<box>/cameras/doctor/status`: the PUBACK carries the broker's verdict (mosquitto answers "Not authorized" when the
ACL denies a publish). mosquitto grants a SUBACK even where its ACL will never deliver, so reads are not proven.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from edge.config import Config
from edge.errors import EdgeError

OK, WARN, FAIL, UNKNOWN = "ok", "warn", "fail", "unknown"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str

    def as_dict(self) -> Dict[str, str]:
        return asdict(self)


def check_models(config: Config) -> List[Check]:
    from edge.manifest import load_detector_models, load_manifest, verify_file, verify_model_file

    folder = config.embedder.models_path
    checks = []
    try:
        manifest = load_manifest(folder)
        verify_model_file(manifest)
        checks.append(Check("model:embedder", OK, f"{manifest.path} sha256 {manifest.sha256[:12]}… ({manifest.id})"))
    except EdgeError as exc:
        checks.append(Check("model:embedder", FAIL, str(exc)))
    detector_dir = Path(config.detector.model_dir) if config.detector.model_dir else folder
    try:
        for model in load_detector_models(detector_dir).values():
            try:
                verify_file(model.path, model.sha256, "face-detection model")
                checks.append(Check(f"model:{model.id}", OK, f"{model.path} sha256 {model.sha256[:12]}…"))
            except EdgeError as exc:
                checks.append(Check(f"model:{model.id}", FAIL, str(exc)))
    except EdgeError as exc:
        checks.append(Check("model:detector", FAIL, str(exc)))
    return checks


def check_database(path: Path) -> Check:
    if not path.is_file():
        return Check("database", FAIL, f"{path} does not exist (the daemon creates it at its first start)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check("database", FAIL, f"{path} is mode {mode:04o}: faces and attendance must be owner-only (0600)")
    if not os.access(path, os.R_OK | os.W_OK):
        return Check("database", FAIL, f"{path}: this user cannot read and write it (run as the daemon's user)")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.Error as exc:
        return Check("database", FAIL, f"{path}: cannot be checked ({exc})")
    if result != "ok":
        return Check("database", FAIL, f"{path}: integrity check failed: {result}")
    return Check("database", OK, f"{path}: integrity ok, mode {mode:04o}, owner uid {path.stat().st_uid}")


def check_disk(path: Path, min_free_mb: float) -> Check:
    folder = path.resolve().parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return Check("disk", FAIL, f"{folder}: {exc.strerror or exc}")
    detail = f"{free / 1e6:.0f} MB free in {folder} (minimum {min_free_mb:g} MB: ops.min_free_mb)"
    return Check("disk", OK if free >= min_free_mb * 1e6 else FAIL, detail)


def _run(command: List[str]) -> Optional[str]:
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def check_clock(run: Callable[[List[str]], Optional[str]] = _run) -> Check:
    synced = run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if synced is not None and synced.strip() in ("yes", "no"):
        if synced.strip() == "yes":
            return Check("clock", OK, "synchronised (timedatectl)")
        return Check("clock", FAIL, "not synchronised (timedatectl): event times may be wrong; enable NTP")
    tracking = run(["chronyc", "tracking"])
    if tracking is not None:
        leap = next((line.split(":", 1)[1].strip() for line in tracking.splitlines() if line.startswith("Leap")), "")
        if leap == "Normal":
            return Check("clock", OK, "synchronised (chronyc: leap status Normal)")
        return Check("clock", FAIL, f"not synchronised (chronyc: leap status {leap or 'unknown'})")
    return Check("clock", UNKNOWN, "unknown: neither timedatectl nor chronyc answered on this machine")


def check_opencv(config: Config) -> Check:
    import cv2

    from edge.capture.live import opencv_has_gstreamer

    wanted = [c.id for c in config.cameras if c.enabled and (c.pipeline or c.backend == "gstreamer")]
    if opencv_has_gstreamer():
        return Check("opencv", OK, f"OpenCV {cv2.__version__} with GStreamer: a camera pipeline can be opened")
    if wanted:
        return Check(
            "opencv",
            FAIL,
            f"OpenCV {cv2.__version__} has no GStreamer, but cameras {', '.join(wanted)} use a pipeline: install "
            "with scripts/install_box.sh --system-opencv (the distribution's OpenCV)",
        )
    return Check("opencv", OK, f"OpenCV {cv2.__version__} without GStreamer (no camera uses a pipeline)")


def check_camera(camera: Any) -> Check:
    import cv2

    from edge.capture import CaptureError, redact
    from edge.capture.live import open_video

    name = f"camera:{camera.id}"
    started = time.monotonic()
    try:
        reader = open_video(camera)
    except CaptureError as exc:
        return Check(name, FAIL, str(exc))
    try:
        deadline = started + camera.open_timeout_s + camera.read_timeout_s
        frame = None
        while frame is None and time.monotonic() < deadline:
            frame = reader.read()
        fps = reader.cap.get(cv2.CAP_PROP_FPS)
    finally:
        reader.release()
    if frame is None:
        return Check(name, FAIL, f"{redact(camera.url)} opened but gave no frame within {camera.read_timeout_s:g} s")
    height, width = frame.image.shape[:2]
    return Check(name, OK, f"{redact(camera.url)}: {width}x{height}, {fps:.1f} fps")


def broker_per_daemon(config: Config, broker: Dict[str, Any]) -> List[Check]:
    """The broker as the running daemon sees it (its status file's `broker`)."""
    where = f"{config.mqtt.host}:{config.mqtt.port}{' (TLS)' if config.mqtt.tls else ''}"
    if not broker.get("connected"):
        return [Check("broker", FAIL, f"the running daemon is not connected to {where}: {broker.get('state')}")]
    checks = [Check("broker", OK, f"the running daemon is connected to {where} (login and TLS accepted)")]
    refused = broker.get("subscription_refused")
    if refused:
        checks.append(Check("broker:acl", FAIL, f"the broker refused the daemon's subscriptions: {refused}"))
    else:
        checks.append(Check("broker:acl", OK, "the running daemon's subscriptions were granted"))
    return checks


def camera_per_daemon(camera_id: str, seen: Dict[str, Any]) -> Check:
    """A camera the running daemon holds (a USB device cannot be opened a second time), from its status file."""
    if seen.get("state") != "online":
        reason = f" ({seen['reason']})" if seen.get("reason") else ""
        return Check(f"camera:{camera_id}", FAIL, f"the running daemon has it {seen.get('state')}{reason}")
    size = f"{seen['width']}x{seen['height']}, " if seen.get("width") else ""
    return Check(f"camera:{camera_id}", OK, f"online in the running daemon: {size}{seen.get('fps', 0)} fps processed")


def check_broker(config: Config, timeout: float = 10.0, running: Optional[Dict[str, Any]] = None) -> List[Check]:
    """Connect as the box would (TLS, credentials), then test the ACL with what the box needs; `running`: the
    running daemon's broker figures, used instead of a second login."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from edge.mqtt.contract import Topics

    c = config.mqtt
    if not c.host:
        return [Check("broker", OK, "no broker configured (mqtt.host null): events are kept in SQLite")]
    if running is not None:
        return broker_per_daemon(config, running)
    where = f"{c.host}:{c.port}{' (TLS)' if c.tls else ''}"
    topics = Topics.of(c.prefix, config.device.site, config.device.id)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=c.client_id or f"edge-{config.device.id}", protocol=mqtt.MQTTv5
    )
    client.manual_ack_set(True)  # whatever was queued for the box stays queued for the daemon
    resume = Properties(PacketTypes.CONNECT)
    resume.SessionExpiryInterval = 0xFFFFFFFF  # the box's session outlives this visit
    seen: Dict[str, Any] = {}
    done = {key: threading.Event() for key in ("connect", "subscribe", "publish")}

    def on_connect(_c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        seen["connect"] = reason
        done["connect"].set()

    def on_subscribe(_c: Any, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        seen["subscribe"] = codes
        done["subscribe"].set()

    def on_publish(_c: Any, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        seen["publish"] = reason
        done["publish"].set()

    client.on_connect, client.on_subscribe, client.on_publish = on_connect, on_subscribe, on_publish
    if c.username is not None:
        client.username_pw_set(c.username, c.password)
    try:
        if c.tls is not None:
            client.tls_set(ca_certs=c.tls.ca_file, certfile=c.tls.cert_file, keyfile=c.tls.key_file)
            client.tls_insecure_set(c.tls.insecure)
        client.connect(c.host, c.port, keepalive=max(c.keepalive_s, 10), clean_start=False, properties=resume)
    except (OSError, ValueError) as exc:
        return [Check("broker", FAIL, f"cannot reach {where}: {exc}")]
    client.loop_start()
    try:
        if not done["connect"].wait(timeout):
            return [Check("broker", FAIL, f"{where}: no answer to CONNECT within {timeout:g} s")]
        if seen["connect"].is_failure:
            return [
                Check("broker", FAIL, f"{where} refused the login {c.username or '(anonymous)'}: {seen['connect']}")
            ]
        login = f"as {c.username}" if c.username else "anonymously"
        checks = [Check("broker", OK, f"connected to {where} {login}")]
        checks.append(_acl_check(client, topics, seen, done, timeout))
        return checks
    finally:
        client.disconnect()
        client.loop_stop()


def _acl_check(
    client: Any, topics: Any, seen: Dict[str, Any], done: Dict[str, threading.Event], timeout: float
) -> Check:
    wanted = [topics.ack, topics.gallery_command]
    client.subscribe([(topic, 1) for topic in wanted])
    if not done["subscribe"].wait(timeout):
        return Check("broker:acl", FAIL, "no answer to SUBSCRIBE")
    refused = [t for t, code in zip(wanted, seen["subscribe"]) if code.is_failure]
    if refused:
        return Check("broker:acl", FAIL, f"the broker refuses the box's subscriptions: {', '.join(refused)}")
    probe = topics.camera_status("doctor")
    client.publish(probe, b"", qos=1)
    if not done["publish"].wait(timeout):
        return Check("broker:acl", FAIL, f"no acknowledgement of a publish to {probe}")
    if seen["publish"].is_failure:
        return Check("broker:acl", FAIL, f"the broker refuses the box's publishes ({probe}: {seen['publish']})")
    return Check("broker:acl", OK, f"subscriptions {', '.join(wanted)} granted; publishing to {probe} acknowledged")


def run_checks(config: Config, database: Path) -> List[Check]:
    from edge.ops.settings import status_path
    from edge.ops.status import daemon_running

    checks = check_models(config)
    checks += [check_database(database), check_disk(database, config.ops.min_free_mb), check_clock()]
    checks.append(check_opencv(config))
    running = daemon_running(status_path(config.ops, database), time.time())
    seen = {cam.get("camera_id"): cam for cam in (running or {}).get("cameras", [])}
    for camera in config.cameras:
        if not camera.enabled:
            continue
        if camera.source_kind == "usb" and camera.id in seen:  # a V4L2 device opens once: the daemon holds it
            checks.append(camera_per_daemon(camera.id, seen[camera.id]))
        else:
            checks.append(check_camera(camera))
    checks += check_broker(config, running=None if running is None else dict(running.get("broker") or {}))
    return checks


def render(checks: List[Check]) -> List[str]:
    width = max((len(c.name) for c in checks), default=0)
    lines = [f"{c.status.upper():<7} {c.name:<{width}}  {c.detail}" for c in checks]
    failed = [c.name for c in checks if c.status == FAIL]
    lines.append(f"{len(failed)} problems: {', '.join(failed)}" if failed else "no problems found")
    return lines
