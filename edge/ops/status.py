"""`edge status`: what the running daemon is doing, from the status file it rewrites once a second.

The daemon (edge.daemon) feeds a `StatusBoard` the frames and events it handles and, each tick, the cameras' and the
outbox's figures; the board writes them as one JSON document, atomically (a temporary file renamed over the old
one), so a reader never sees half a file. `read_status` + `problems` turn that file into the lines `edge status`
prints and its exit code: a missing or stale file (the daemon is not running), a camera not online, the broker not
connected, an event unacknowledged too long, low disk space.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from edge.errors import EdgeError

SCHEMA = "edge.status/1"
STALE_AFTER_S = 10.0
"""The daemon rewrites the file every second: older than this, it is not running (or its loop is stuck)."""


@dataclass(frozen=True)
class Problem:
    """Something wrong that `edge status` reports (and exits non-zero for)."""

    what: str
    """The part: daemon, camera:<id>, broker, outbox, disk."""
    detail: str


class StatusBoard:
    """Collects what the daemon saw and writes the status file; used from the pipeline thread only."""

    def __init__(self, path: Path, identity: Dict[str, Any], database: Path) -> None:
        self.path = path
        self.identity = dict(identity)
        self.database = database
        self.started = time.time()
        self.frames: Dict[str, Dict[str, Any]] = {}
        self.counts: Dict[str, int] = {}
        self._counted: Dict[str, int] = {}
        self._counted_at = time.monotonic()
        self.last_event: Optional[Dict[str, Any]] = None
        self.events = 0
        self.events_by_type: Dict[str, int] = {}

    def saw_frame(self, camera_id: str, wall_time: float, width: int, height: int) -> None:
        self.frames[camera_id] = {"last_frame_at": wall_time, "width": width, "height": height}
        self.counts[camera_id] = self.counts.get(camera_id, 0) + 1

    def _fps(self) -> Dict[str, float]:
        """Frames processed per second per camera since the last snapshot."""
        now = time.monotonic()
        span = max(now - self._counted_at, 1e-6)
        fps = {cam: round((n - self._counted.get(cam, 0)) / span, 2) for cam, n in self.counts.items()}
        self._counted, self._counted_at = dict(self.counts), now
        return fps

    def saw_event(self, event_id: str, kind: str, person_id: Optional[str], camera_id: str, at: str) -> None:
        self.events += 1
        self.events_by_type[kind] = self.events_by_type.get(kind, 0) + 1
        self.last_event = {"event_id": event_id, "type": kind, "person_id": person_id, "camera_id": camera_id, "at": at}

    def snapshot(
        self,
        cameras: Sequence[Dict[str, Any]],
        outbox: Dict[str, Any],
        broker: Dict[str, Any],
        gallery_version: int,
        queues: Optional[Dict[str, int]] = None,
    ) -> Dict[str, Any]:
        now = time.time()
        fps = self._fps()
        rows = []
        for cam in cameras:
            seen = self.frames.get(cam["camera_id"], {})
            rows.append({**cam, **seen, "fps": fps.get(cam["camera_id"], 0.0)})
        return {
            "schema": SCHEMA,
            **self.identity,
            "pid": os.getpid(),
            "state": "running",
            "started_at": self.started,
            "updated_at": now,
            "uptime_s": round(now - self.started, 3),
            "gallery_version": gallery_version,
            "cameras": rows,
            "outbox": outbox,
            "broker": broker,
            "events_since_start": self.events,
            "events_by_type": dict(self.events_by_type),
            "queues": dict(queues or {}),
            "last_event": self.last_event,
            "disk": disk_figures(self.database),
        }

    def write(self, document: Dict[str, Any]) -> None:
        write_atomically(self.path, document)

    def stopped(self) -> None:
        """At a clean stop: the file says so (a reader tells a stop from a crash)."""
        try:
            document = read_status(self.path)
        except EdgeError:
            return
        document.update(state="stopped", updated_at=time.time())
        write_atomically(self.path, document)


def disk_figures(database: Path) -> Dict[str, Any]:
    folder = database.resolve().parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return {"path": str(folder), "free_bytes": None, "total_bytes": None}
    return {"path": str(folder), "free_bytes": usage.free, "total_bytes": usage.total}


def write_atomically(path: Path, document: Dict[str, Any]) -> None:
    """Write JSON to a temporary file beside `path`, then rename it over `path` (readers never see half a file).
    Owner-only: it names people (the last event)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps(document, ensure_ascii=False).encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_status(path: Path) -> Dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgeError(
            f"no status file at {path}: the daemon is not running (or never ran with this config)"
        ) from None
    except (OSError, ValueError) as exc:
        raise EdgeError(f"{path}: cannot read the status file ({exc})") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise EdgeError(f"{path}: not an edge status file ({SCHEMA})")
    return document


def daemon_running(path: Path, now: float) -> Optional[Dict[str, Any]]:
    """The status document when a daemon is running and wrote it lately, else None."""
    try:
        status = read_status(path)
    except EdgeError:
        return None
    fresh = now - float(status.get("updated_at", 0.0)) <= STALE_AFTER_S
    return status if status.get("state") == "running" and fresh else None


def problems(status: Dict[str, Any], now: float, min_free_mb: float, max_unacked_age_s: float) -> List[Problem]:
    """What is wrong according to a status document read at `now` (epoch seconds)."""
    age = now - float(status.get("updated_at", 0.0))
    if status.get("state") == "stopped":
        return [Problem("daemon", f"stopped {age:.0f} s ago (pid {status.get('pid')})")]
    if age > STALE_AFTER_S:
        return [Problem("daemon", f"not running: the status file was last written {age:.0f} s ago")]
    found = []
    for cam in status.get("cameras", []):
        if cam.get("state") not in ("online", "disabled", "stopped"):
            reason = f" ({cam['reason']})" if cam.get("reason") else ""
            found.append(Problem(f"camera:{cam['camera_id']}", f"{cam.get('state')}{reason}"))
    broker = status.get("broker") or {}
    if broker.get("host") and not broker.get("connected"):
        found.append(
            Problem("broker", f"not connected to {broker['host']}:{broker.get('port')}: {broker.get('state')}")
        )
    oldest = (status.get("outbox") or {}).get("oldest_unacked_age_s")
    if oldest is not None and float(oldest) > max_unacked_age_s:
        found.append(Problem("outbox", f"an event has waited {oldest:.0f} s for the central's ack"))
    free = (status.get("disk") or {}).get("free_bytes")
    if free is not None and free < min_free_mb * 1e6:
        found.append(
            Problem("disk", f"{free / 1e6:.0f} MB free in {status['disk']['path']} (minimum {min_free_mb:g} MB)")
        )
    return found


def _ago(now: float, then: Optional[float]) -> str:
    return "never" if then is None else f"{max(now - float(then), 0.0):.1f} s ago"


def render(status: Dict[str, Any], found: List[Problem], now: float) -> List[str]:
    """The lines `edge status` prints."""
    lines = [
        f"edge {status.get('state')}: device {status.get('device_id')}, version {status.get('software_version')}, "
        f"pid {status.get('pid')}, up {float(status.get('uptime_s', 0)):.0f} s, updated {_ago(now, status.get('updated_at'))}",
        f"model {status.get('model_id')}, gallery version {status.get('gallery_version')}",
    ]
    for cam in status.get("cameras", []):
        size = f" {cam['width']}x{cam['height']}" if cam.get("width") else ""
        lines.append(
            f"camera {cam['camera_id']}: {cam.get('state')}{size}, {cam.get('fps', 0)} fps, last frame "
            f"{_ago(now, cam.get('last_frame_at'))}, {cam.get('reconnects', 0)} reconnects, "
            f"{cam.get('frames_dropped', 0)} dropped"
        )
    outbox, broker = status.get("outbox") or {}, status.get("broker") or {}
    oldest = outbox.get("oldest_unacked_age_s")
    where = f"{broker['host']}:{broker.get('port')} {broker.get('state')}" if broker.get("host") else "off"
    if outbox.get("depth") is None:
        lines.append(f"outbox: no broker, events kept in SQLite; broker {where}")
    else:
        lines.append(
            f"outbox: {outbox['depth']} unacknowledged, oldest {'-' if oldest is None else f'{oldest:.0f} s'}; "
            f"broker {where}"
        )
    last = status.get("last_event")
    lines.append(
        f"last event: {last['event_id']} {last['type']} {last['person_id'] or '-'} on {last['camera_id']} at {last['at']}"
        if last
        else "last event: none since start"
    )
    disk = status.get("disk") or {}
    if disk.get("free_bytes") is not None:
        lines.append(f"disk: {disk['free_bytes'] / 1e9:.1f} GB free in {disk['path']}")
    lines += [f"PROBLEM {p.what}: {p.detail}" for p in found] or ["OK"]
    return lines
