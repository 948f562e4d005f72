"""The long-running process (`edge run`) and its file twin (`edge replay`): build the parts, drive the pipeline,
tear down in reverse order. Concurrency: one capture thread per live camera, the pipeline on the calling thread,
one gallery thread applying the central's gallery commands (edge.gallery.worker), one stop event."""

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
from typing import Any, Callable, Dict, List, Optional

from edge.capture import CameraConfig, CameraStats
from edge.capture.cameras import CameraSet
from edge.capture.file import FileSource
from edge.config import Config
from edge.credentials import config_fingerprint
from edge.crops import CropStore
from edge.detect import FaceDetector
from edge.embed import Embedder
from edge.errors import ConfigError, EdgeError
from edge.gallery.store import Gallery
from edge.gallery.sync import GallerySync
from edge.gallery.worker import GalleryWorker, SyncFactory
from edge.mqtt.signing import CommandVerifier, box_verifier
from edge.ops.settings import status_path
from edge.ops.status import StatusBoard
from edge.pipeline import Pipeline, PipelineParts
from edge.recognize import Recognizer
from edge.store import EventStore, StoredEvent
from edge.version import software_version

log = logging.getLogger("edge.daemon")

TICK_INTERVAL_S = 1.0
STATS_INTERVAL_S = 60.0


def build_parts(config: Config, stack: ExitStack, db: Optional[Path] = None, init: bool = False) -> PipelineParts:
    """Open the event store and the gallery (one SQLite file), the detector, the embedder and (unless
    liveness.policy is off) the liveness models; closed by `stack`.
    The event store first: it refuses a database the box had and lost (unless `init`) before anything creates one."""
    path = db or config.storage.database
    store = stack.enter_context(EventStore(path, config.device.id, init=init))
    gallery = stack.enter_context(Gallery(path))
    detector = stack.enter_context(FaceDetector(config.detector))
    embedder = Embedder(config.embedder.models_path, config.embedder.num_threads)
    liveness = None
    if config.liveness.policy != "off":  # a missing or altered model file stops the start here, naming the file
        from edge.liveness.model import LivenessModel

        liveness = stack.enter_context(LivenessModel(config.embedder.models_path, config.liveness.num_threads))
    return PipelineParts(detector=detector, embedder=embedder, gallery=gallery, store=store, liveness=liveness)


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
        crops=CropStore(config.crops) if config.crops.enabled else None,
        liveness=config.liveness,
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


def run(
    config: Config,
    stop: threading.Event,
    db: Optional[Path] = None,
    config_hash: str = "defaults",
    init: bool = False,
    reload: Optional[Callable[[], Optional[Config]]] = None,
) -> None:
    """Watch every enabled camera until `stop` is set; events go to SQLite as they are decided, then to MQTT.
    `init` (`edge run --init`): start a new database (or epoch) when the one the box had is lost or went back.
    `reload`, asked once a tick, returns a new validated config after a SIGHUP (edge.reload says what changes live)."""
    cameras = [c for c in config.cameras if c.enabled]
    if not config.cameras:
        log.warning("no cameras configured: nothing to watch (add a 'cameras:' section)")
    with ExitStack() as stack:
        parts = build_parts(config, stack, db, init)
        pipeline = make_pipeline(config, parts, list(config.cameras), datetime.now(config.device.tz))
        camera_set = stack.enter_context(CameraSet.open(list(config.cameras)))
        verifier = box_verifier(config.mqtt.central_key_file, config.device.site, config.device.id)
        link = open_link(config, parts, stack, db, config_hash)
        if link is not None and pipeline.crops is not None:
            pipeline.crops.send_to(link.offer_crop)  # crops.upload: a bounded side queue, never holding events back
        stack.callback(stop_pipeline, pipeline, link)  # however the loop ends: before the link and stores close
        worker = open_gallery_worker(link, gallery_sync_factory(config, db, verifier), parts.gallery.version, stack)
        board = open_status_board(config, parts, db, stack)
        metrics = open_metrics(config, stack)  # before READY: a port in use stops the start with a config error
        camera_set.start()
        log.info(
            "edge running: device %s, %d cameras, gallery version %d, MQTT %s",
            config.device.id,
            len(cameras),
            parts.gallery.version,
            f"{config.mqtt.host}:{config.mqtt.port}" if link else "off (events are kept in SQLite)",
        )
        notify_systemd("READY=1")
        reporter = Reporter(config, pipeline, camera_set, link)
        last_tick = time.monotonic()
        while not stop.is_set():
            frame = camera_set.next_frame(timeout=0.2)
            if frame is None and camera_set.finished:
                stop.wait(0.2)  # nothing left to read (no cameras, or files that ended): idle, keep serving MQTT
            if frame is not None:
                board.saw_frame(frame.camera_id, frame.wall_time, frame.image.shape[1], frame.image.shape[0])
            stored = pipeline.process(frame) if frame is not None else []
            now = time.monotonic()
            if worker is not None and not worker.alive:  # no silent half-daemon: systemd restarts the whole process
                raise EdgeError("the gallery worker thread has died (see the log above); edge stops")
            if link is not None and link.failure() is not None:  # the outbox died: no watchdog feed, a restart
                raise EdgeError(f"{link.failure()} (see the log above); edge stops")
            if now - last_tick >= TICK_INTERVAL_S:  # once a second, not per frame
                stored += pipeline.tick(time.time(), now)
                notify_systemd("WATCHDOG=1")
                reporter.report(now)
                write_status(board, camera_set, link, config, pipeline, metrics)
                fresh = reload() if reload is not None else None
                if fresh is not None:
                    config = apply_reload(config, fresh, pipeline, camera_set)
                    if link is not None:
                        link.set_config_hash(config_fingerprint(config))
                last_tick = now
            for event in stored:
                ev = event.event
                board.saw_event(event.event_id, ev.type.value, ev.person_id, ev.camera_id, ev.at.isoformat())
            if link is not None and stored:
                link.notify_new_events()
        notify_systemd("STOPPING=1")
        log.info("edge stopping")


def open_status_board(config: Config, parts: PipelineParts, db: Optional[Path], stack: ExitStack) -> StatusBoard:
    """The status file `edge status` reads (rewritten each tick; marked stopped at a clean stop)."""
    database = Path(db or config.storage.database)
    identity = {
        "device_id": config.device.id,
        "site": config.device.site,
        "software_version": software_version(),
        "model_id": parts.embedder.model_id,
        "database": str(database.resolve()),
    }
    board = StatusBoard(status_path(config.ops, database), identity, database)
    stack.callback(board.stopped)
    return board


def open_metrics(config: Config, stack: ExitStack) -> Any:
    """The local /healthz and /metrics endpoint when ops.metrics_port is set (off by default)."""
    if not config.ops.metrics_port:
        return None
    from edge.ops.metrics import MetricsServer

    try:
        server = MetricsServer(config.ops).start()
    except OSError as exc:
        raise ConfigError(
            f"ops.metrics_port: cannot listen on {config.ops.metrics_host}:{config.ops.metrics_port} ({exc.strerror})"
        ) from None
    stack.callback(server.close)
    return server


def write_status(
    board: StatusBoard, camera_set: CameraSet, link: Any, config: Config, pipeline: Pipeline, metrics: Any
) -> None:
    """Each tick: the status file (`edge status`) and the metrics endpoint get the same figures."""
    cameras = []
    for cam in camera_set.stats():
        stats = pipeline.stats.get(cam.camera_id)
        frames, embeddings = (stats.frames, stats.embeddings) if stats else (0, 0)
        cameras.append(
            {
                "camera_id": cam.camera_id,
                "state": cam.state.value,
                "reason": cam.reason,
                "frames_read": cam.frames_read,
                "frames_dropped": cam.frames_dropped,
                "reconnects": cam.reconnects,
                "frames_processed": frames,
                "embeddings": embeddings,
                "detect_ms": round(stats.detect_ms / max(frames, 1), 2) if stats else 0.0,
                "embed_ms": round(stats.embed_ms / max(embeddings, 1), 2) if stats else 0.0,
            }
        )
    broker: Dict[str, Any] = {"host": config.mqtt.host, "port": config.mqtt.port, "connected": False, "state": "off"}
    outbox: Dict[str, Any] = {"depth": None, "oldest_unacked_age_s": None}
    queues: Dict[str, int] = {}
    if link is not None:  # edge.mqtt.link.Link (tests hand in smaller fakes: only what they have is reported)
        connected = bool(getattr(link, "connected", False))
        broker.update(connected=connected, state="connected" if connected else "disconnected")
        broker["subscription_refused"] = getattr(link, "subscription_refused", None)
        if hasattr(link, "outbox_stats"):
            outbox = link.outbox_stats()
        queues["gallery_commands"] = link.commands.qsize()
    document = board.snapshot(cameras, outbox, broker, pipeline.parts.gallery.version, queues)
    if metrics is not None:
        metrics.update(document)
    try:
        board.write(document)
    except OSError as exc:  # a full disk must not stop the daemon: the status is only a window into it
        log.debug("status file not written: %s", exc)


def apply_reload(config: Config, fresh: Config, pipeline: Pipeline, camera_set: CameraSet) -> Config:
    """Between two frames: the live sections of `fresh` take effect; returns the config now in force."""
    from edge.reload import plan_reload

    plan = plan_reload(config, fresh)
    new = plan.config
    if "cameras" in plan.applied:
        camera_set.reconfigure(list(new.cameras))
    pipeline.reconfigure(list(new.cameras), new.quality, new.matcher, new.tracker, new.attendance)
    log.info(
        "config reloaded: %s%s",
        ", ".join(plan.applied) or "nothing changed that can change live",
        f" (cameras reopened: {', '.join(plan.cameras_changed)})" if plan.cameras_changed else "",
    )
    if plan.needs_restart:
        log.warning("config: %s changed; that takes effect at the next start", ", ".join(plan.needs_restart))
    return new


def stop_pipeline(pipeline: Pipeline, link: Any) -> None:
    """At stop: every track in view ends, so a decided person not yet reported (or a face still undecided) becomes
    its event, as when a file ends; then events held in memory (disk full, locked) get one last try (the pipeline
    logs what is lost)."""
    try:
        ended = pipeline.finish(time.time(), time.monotonic())
    except Exception:  # a failing stage must not keep the held events from their last try
        log.exception("ending the tracks at stop failed")
        ended = []
    if (pipeline.flush() or ended) and link is not None:
        link.notify_new_events()


def open_link(config: Config, parts: PipelineParts, stack: ExitStack, db: Optional[Path], config_hash: str) -> Any:
    """The MQTT outbox when a broker is configured (closed before the stores: it is entered after them)."""
    if not config.mqtt.host:
        return None
    from edge.mqtt.link import Link, LinkInfo

    info = LinkInfo(
        software_version=software_version(),
        model_id=parts.embedder.model_id,
        config_hash=config_hash,
        gallery_version=parts.gallery.version,
    )
    link = Link(config.mqtt, config.device, Path(db or config.storage.database), info)
    link.start()
    stack.callback(link.close)
    return link


def gallery_sync_factory(config: Config, db: Optional[Path], verifier: Optional[CommandVerifier]) -> SyncFactory:
    """What the gallery worker applies commands with, opened on its thread at the first command: its own gallery
    connection, detector and embedder (one LiteRT thread each: the pipeline keeps the CPU it needs)."""

    def make(stack: ExitStack) -> GallerySync:
        gallery = stack.enter_context(Gallery(db or config.storage.database))
        detector = stack.enter_context(FaceDetector(replace(config.detector, num_threads=1)))
        embedder = Embedder(config.embedder.models_path, 1)
        return GallerySync(gallery, Recognizer(detector, embedder, config.quality), verifier)

    return make


def open_gallery_worker(link: Any, make_sync: SyncFactory, version: int, stack: ExitStack) -> Optional[GalleryWorker]:
    """The gallery thread when MQTT is on (stopped before the link closes: it is entered after it)."""
    if link is None:
        return None
    worker = GalleryWorker(link.commands, link, make_sync, version=version).start()
    stack.callback(worker.close)
    return worker


class Reporter:
    """Camera status changes (checked every tick) and periodic stats: to the log, and to MQTT when linked."""

    def __init__(self, config: Config, pipeline: Pipeline, camera_set: CameraSet, link: Any) -> None:
        self.config, self.pipeline, self.camera_set, self.link = config, pipeline, camera_set, link
        self.started = self.last_stats = time.monotonic()
        self.states: Dict[str, str] = {}
        self.frames_at_last: Dict[str, int] = {}
        self.interval = config.mqtt.stats_interval_s if link is not None else STATS_INTERVAL_S

    def report(self, now: float) -> None:
        cameras = self.camera_set.stats()
        if self.link is not None:
            for cam in cameras:
                if self.states.get(cam.camera_id) != cam.state.value:
                    self.states[cam.camera_id] = cam.state.value
                    self.link.publish_camera_status(cam.camera_id, cam.state.value, cam.reason or "")
        if now - self.last_stats < self.interval:
            return
        payload = self.stats_payload(cameras, now - self.last_stats, now)
        self.last_stats = now
        for cam in payload["cameras"]:
            log.info(
                "camera %s", " ".join(f"{k}={v}" for k, v in cam.items() if k != "camera_id") + f" [{cam['camera_id']}]"
            )
        if self.link is not None:
            self.link.publish_stats(payload)

    def stats_payload(self, cameras: List[CameraStats], interval: float, now: float) -> Dict[str, Any]:
        from edge.mqtt.contract import now_iso

        rows = []
        for cam in cameras:
            stats = self.pipeline.stats.get(cam.camera_id)
            if stats is None:
                continue
            processed = stats.frames - self.frames_at_last.get(cam.camera_id, 0)
            self.frames_at_last[cam.camera_id] = stats.frames
            rows.append(
                {
                    "camera_id": cam.camera_id,
                    "state": cam.state.value,
                    "fps": round(processed / interval, 2) if interval > 0 else 0.0,
                    "frames_read": cam.frames_read,
                    "frames_processed": stats.frames,
                    "frames_dropped": cam.frames_dropped,
                    "reconnects": cam.reconnects,
                    "detect_ms": round(stats.detect_ms / max(stats.frames, 1), 2),
                    "embed_ms": round(stats.embed_ms / max(stats.embeddings, 1), 2),
                    "embeddings": stats.embeddings,
                    "rejections": dict(stats.rejections),
                    "liveness_ms": round(stats.liveness_ms / max(stats.liveness_scored, 1), 2),
                    "liveness_scored": stats.liveness_scored,
                    "liveness_verdicts": dict(stats.verdicts),
                }
            )
        outbox = (
            self.link.outbox_stats()
            if self.link is not None
            else {"depth": 0, "oldest_unacked_age_s": None, "last_seq": 0, "acked_up_to": 0}
        )
        return {
            "schema": "edge.stats/1",
            "device_id": self.config.device.id,
            "at": now_iso(),
            "interval_s": round(interval, 3),
            "uptime_s": round(now - self.started, 3),
            "cameras": rows,
            "outbox": outbox,
        }


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
            for event in pipeline.finish(last.wall_time, last.mono):  # the file ended: so does every track
                if on_event:
                    first = pipeline.first_seen.get(event.event.track_id, last.mono)
                    on_event(event, last.mono - first)
            for event in pipeline.tick(last.wall_time, last.mono):
                if on_event:
                    on_event(event, 0.0)
        for event in pipeline.flush():
            if on_event:
                on_event(event, 0.0)
        return pipeline


def replay_camera(config: Config, video: Path, camera_id: Optional[str], every_frame: bool) -> CameraConfig:
    """The configured camera whose role (and line) the replay takes, pointed at the video file."""
    if camera_id is not None:
        matches = [c for c in config.cameras if c.id == camera_id]
        if not matches:
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
