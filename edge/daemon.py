"""The long-running process (`edge run`) and its file twin (`edge replay`): build the parts, drive the pipeline,
tear down in reverse order. Concurrency: one capture thread per live camera, the pipeline on the calling thread,
one stop event."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from contextlib import ExitStack
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Callable, List, Optional

from edge.capture import CameraConfig, CameraSet, FileSource
from edge.config import Config
from edge.detect import FaceDetector
from edge.embed import Embedder
from edge.gallery import Gallery
from edge.pipeline import Pipeline, PipelineParts
from edge.store import EventStore, StoredEvent

log = logging.getLogger("edge.daemon")

TICK_INTERVAL_S = 1.0
STATS_INTERVAL_S = 60.0


def build_parts(config: Config, stack: ExitStack, db: Optional[Path] = None) -> PipelineParts:
    """Open the gallery, the event store (one SQLite file), the detector and the embedder; closed by `stack`."""
    path = db or config.storage.database
    gallery = stack.enter_context(Gallery(path))
    store = stack.enter_context(EventStore(path, config.device.id))
    detector = stack.enter_context(FaceDetector(config.detector))
    embedder = Embedder(config.embedder.models_path, config.embedder.num_threads)
    return PipelineParts(detector=detector, embedder=embedder, gallery=gallery, store=store)


def make_pipeline(config: Config, parts: PipelineParts, cameras: List[CameraConfig], now: datetime) -> Pipeline:
    return Pipeline(
        parts,
        cameras,
        quality=config.quality,
        matcher=config.matcher,
        tracker=config.tracker,
        attendance=config.attendance,
        tz=config.device.tz,
        now=now,
    )


def notify_systemd(message: str) -> None:
    """sd_notify without a dependency: READY=1, WATCHDOG=1, STOPPING=1 to $NOTIFY_SOCKET when run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)


def run(config: Config, stop: threading.Event, db: Optional[Path] = None) -> None:
    """Watch every enabled camera until `stop` is set; events go to SQLite as they are decided."""
    cameras = [c for c in config.cameras if c.enabled]
    if not config.cameras:
        log.warning("no cameras configured: nothing to watch (add a 'cameras:' section)")
    with ExitStack() as stack:
        parts = build_parts(config, stack, db)
        pipeline = make_pipeline(config, parts, list(config.cameras), datetime.now(config.device.tz))
        camera_set = stack.enter_context(CameraSet.open(list(config.cameras)))
        camera_set.start()
        log.info(
            "edge running: device %s, %d cameras, gallery version %d",
            config.device.id,
            len(cameras),
            parts.gallery.version,
        )
        notify_systemd("READY=1")
        last_tick = last_stats = time.monotonic()
        while not stop.is_set():
            frame = camera_set.next_frame(timeout=0.2)
            if frame is not None:
                pipeline.process(frame)
            now = time.monotonic()
            if now - last_tick >= TICK_INTERVAL_S:
                pipeline.tick(time.time(), now)
                notify_systemd("WATCHDOG=1")
                last_tick = now
            if now - last_stats >= STATS_INTERVAL_S:
                log_stats(pipeline, camera_set)
                last_stats = now
        notify_systemd("STOPPING=1")
        log.info("edge stopping")


def log_stats(pipeline: Pipeline, camera_set: CameraSet) -> None:
    for cam in camera_set.stats():
        stats = pipeline.stats.get(cam.camera_id)
        if stats is None:
            continue
        frames = max(stats.frames, 1)
        log.info(
            "camera %s %s: read %d, processed %d, dropped %d, reconnects %d, faces %d, embeddings %d, "
            "detect %.1f ms/frame, rejections %s",
            cam.camera_id,
            cam.state.value,
            cam.frames_read,
            stats.frames,
            cam.frames_dropped,
            cam.reconnects,
            stats.faces,
            stats.embeddings,
            stats.detect_ms / frames,
            dict(stats.rejections),
        )


def replay(
    config: Config,
    video: Path,
    camera_id: Optional[str],
    start: datetime,
    every_frame: bool,
    db: Optional[Path] = None,
    on_event: Optional[Callable[[StoredEvent, float], None]] = None,
) -> Pipeline:
    """Run the whole pipeline on a recording, on its own timeline from `start`; return the pipeline (stats)."""
    camera = replay_camera(config, video, camera_id, every_frame)
    with ExitStack() as stack:
        parts = build_parts(config, stack, db)
        pipeline = make_pipeline(config, parts, [camera], start)
        source = stack.enter_context(FileSource(camera, start_wall=start.timestamp()))
        last = None
        for frame in source.frames():
            for event in pipeline.process(frame):
                if on_event:
                    first = pipeline.first_seen.get(event.event.track_id, frame.mono)
                    on_event(event, frame.mono - first)
            last = frame
        if last is not None:
            for event in pipeline.tick(last.wall_time, last.mono):
                if on_event:
                    on_event(event, 0.0)
        return pipeline


def replay_camera(config: Config, video: Path, camera_id: Optional[str], every_frame: bool) -> CameraConfig:
    """The configured camera whose role (and line) the replay takes, pointed at the video file."""
    if camera_id is not None:
        matches = [c for c in config.cameras if c.id == camera_id]
        if not matches:
            from edge.errors import ConfigError

            known = ", ".join(c.id for c in config.cameras) or "none configured"
            raise ConfigError(f"--camera {camera_id}: no such camera in the config (cameras: {known})")
        base = matches[0]
    elif config.cameras:
        base = config.cameras[0]
    else:
        base = CameraConfig(id="replay", url=str(video))
    return replace(
        base, url=str(video), kind="file", backend="auto", pipeline=None, max_fps=0.0 if every_frame else base.max_fps
    )
