"""The one module that wires the stages: frame -> detect -> track -> (align, gate, embed, match when a track needs
it) -> vote -> (liveness: score named tracks, hold their sightings for a verdict) -> attendance machine -> event
store. Used by `edge run` (live cameras) and `edge replay` (a file).

Liveness (`liveness.policy`, edge/liveness/): the only place the liveness models score a face is here, from the
full frame around the detector box (edge/liveness/tracks.py says which faces and how long a sighting waits). Then
per policy: shadow: events as usual, carrying the verdict; flag: events of a track called a spoof get `review`
(and, with crops enabled, the context crop of its lowest-scoring frame as `<event_id>.jpg`); enforce: such a
sighting goes to `AttendanceMachine.refuse` (one spoof_attempt event, with the same crop) instead of `step`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, tzinfo
from typing import Dict, List, Mapping, Optional, Protocol, Sequence, Set, Tuple

import numpy as np

from edge.align import align
from edge.attendance import AttendanceConfig, AttendanceEvent, AttendanceMachine, CameraRole, Sighting
from edge.capture import CameraConfig, Frame
from edge.crops import CropStore, wants_crop
from edge.embed import Embedder
from edge.faces import Box, Detection
from edge.gallery.store import Gallery
from edge.liveness.crop import context_crop
from edge.liveness.decide import LivenessConfig
from edge.liveness.tracks import LivenessTracks
from edge.match import MatcherConfig
from edge.quality import QualityConfig, assess
from edge.recognize import DetectorLike
from edge.scene import Scenes
from edge.store import EventContext, EventStore, StoredEvent, StoreError
from edge.timetable import central_schedule, effective_attendance
from edge.track import Observation, Tracker, TrackerConfig

log = logging.getLogger("edge.pipeline")

LOST_LISTED = 100
"""At most this many lost events are listed one by one in the log at stop (all are counted)."""
REVIEW_CROP_SCALE, REVIEW_CROP_PX = 2.7, 224
"""The crop kept for review (flag, enforce): the detector box 2.7x (what MiniFASNetV2 sees), 224x224."""


@dataclass
class CameraStats:
    """Running figures of one camera's pipeline work (for logs now, MQTT stats later)."""

    frames: int = 0
    faces: int = 0
    embeddings: int = 0
    detect_ms: float = 0.0
    embed_ms: float = 0.0
    rejections: Counter = field(default_factory=Counter)  # type: ignore[type-arg]
    liveness_scored: int = 0
    liveness_ms: float = 0.0
    verdicts: Counter = field(default_factory=Counter)  # type: ignore[type-arg]
    """Sightings handed on with a liveness verdict, by verdict."""


class LivenessScorer(Protocol):
    """What the pipeline needs of edge.liveness.model.LivenessModel (tests hand in fakes)."""

    def score(self, image_bgr: np.ndarray, box: Box) -> float: ...


@dataclass(frozen=True)
class PipelineParts:
    """The stages and stores the pipeline drives (built and closed by the caller)."""

    detector: DetectorLike
    embedder: Embedder
    gallery: Gallery
    store: EventStore
    liveness: Optional[LivenessScorer] = None
    """The liveness models; None: no liveness check whatever the policy says (the daemon builds them unless off)."""


class Pipeline:
    """Turns frames into stored attendance events. Single-threaded: call from the pipeline thread only."""

    def __init__(
        self,
        parts: PipelineParts,
        cameras: Sequence[CameraConfig],
        quality: QualityConfig,
        matcher: MatcherConfig,
        tracker: TrackerConfig,
        attendance: AttendanceConfig,
        tz: tzinfo,
        now: datetime,
        crops: Optional[CropStore] = None,
        liveness: Optional[LivenessConfig] = None,
    ) -> None:
        self.parts = parts
        self.liveness = liveness if liveness is not None and parts.liveness is not None else None
        """The liveness settings when faces are checked (policy not off and the models built), else None."""
        if self.liveness is not None and self.liveness.policy == "off":
            self.liveness = None
        self._max_age_s = tracker.max_age_s
        self.evidence: Dict[str, LivenessTracks] = {}
        """Per camera: the liveness evidence of its tracks and the sightings waiting for it."""
        self.crops = crops if crops is not None and crops.config.enabled else None
        self._best_crop: Dict[str, Tuple[float, np.ndarray]] = {}
        """Only with crops enabled: the best aligned face of each recent track, for its unknown_face event."""
        self.quality, self.matcher, self.tz = quality, matcher, tz
        self.cameras = {c.id: c for c in cameras}
        today = parts.store.events_of_day(now.astimezone(tz).date(), tz)
        self.run_id = new_run_id({e.track_id for e in today})
        self._min_frames = (attendance.min_frames, attendance.unknown_min_frames)
        self.trackers = {c.id: self._tracker(tracker, c) for c in cameras}
        for c in cameras:
            self._evidence_of(c.id)
        roles = {c.id: CameraRole(c.role) for c in cameras}
        self._yaml_attendance = attendance
        """The config's attendance section; the central's timetable (when the gallery holds one) replaces its schedule."""
        attendance = effective_attendance(attendance, central_schedule(parts.gallery))
        self.machine = AttendanceMachine(attendance, roles, groups_of(parts.gallery))
        self._groups_version = parts.gallery.version
        self._unstored: List[Tuple[List[AttendanceEvent], EventContext]] = []
        """Decided events the store refused (disk full, locked): kept in order and retried before new ones."""
        self._store_failing = False
        """The store refused the last append: warned once, until it works again (not at every frame)."""
        overdue = close_past_days(parts.store, attendance, roles, self.machine.groups, now, tz)
        if overdue:
            log.info("closed %d outings left open on earlier days (the box was down at midnight)", len(overdue))
            self._store(overdue, 0.0, now.timestamp(), parts.gallery.version)
        self.machine.restore(today)
        if today:
            log.info("restored today's attendance from %d stored events", len(today))
        self.stats: Dict[str, CameraStats] = {c.id: CameraStats() for c in cameras}
        self.scenes = Scenes(parts.detector)
        """Per camera, where the detector looks in each frame (motion gate, regions, live tracks: edge/scene.py)."""
        self.first_seen: Dict[str, float] = {}
        """mono time each track first showed a face that passed the quality gates (for latency figures)."""

    def reconfigure(
        self,
        cameras: Sequence[CameraConfig],
        quality: QualityConfig,
        matcher: MatcherConfig,
        tracker: TrackerConfig,
        attendance: AttendanceConfig,
    ) -> None:
        """A reloaded config (SIGHUP), between two frames: the attendance state (who is present, open outings) is
        kept; only the tracks of cameras whose config changed restart."""
        self.quality, self.matcher = quality, matcher
        self._max_age_s = tracker.max_age_s
        for c in cameras:
            self._evidence_of(c.id).max_age_s = tracker.max_age_s
            kept = self.trackers.get(c.id)
            self._min_frames = (attendance.min_frames, attendance.unknown_min_frames)
            if kept is None or self.cameras.get(c.id) != c:
                self.trackers[c.id] = self._tracker(tracker, c)
            else:
                kept.config, kept.min_frames = tracker, self._min_frames
            self.stats.setdefault(c.id, CameraStats())
        ids = {c.id for c in cameras}
        for gone in [i for i in self.trackers if i not in ids]:
            del self.trackers[gone]
        self.cameras = {c.id: c for c in cameras}
        self._yaml_attendance = attendance
        self.machine.config = effective_attendance(attendance, central_schedule(self.parts.gallery))
        self.machine.cameras = {c.id: CameraRole(c.role) for c in cameras}

    def _evidence_of(self, camera_id: str) -> LivenessTracks:
        """The camera's liveness evidence (kept across a reload: held sightings go on when their tracks end)."""
        if camera_id not in self.evidence:
            config = self.liveness if self.liveness is not None else LivenessConfig(policy="off")
            self.evidence[camera_id] = LivenessTracks(config, self._max_age_s)
        return self.evidence[camera_id]

    def _tracker(self, config: TrackerConfig, camera: CameraConfig) -> Tracker:
        return Tracker(
            config, camera.id, role=camera.role, line=camera.line, in_side=camera.in_side, run_id=self.run_id,
            min_frames=self._min_frames,
        )  # fmt: skip

    def process(self, frame: Frame) -> List[StoredEvent]:
        """Run one frame through every stage; return the events it caused, already stored."""
        tracker = self.trackers[frame.camera_id]
        stats = self.stats[frame.camera_id]
        at = datetime.fromtimestamp(frame.wall_time, tz=self.tz)
        height, width = frame.image.shape[:2]
        tracker.frame_size = (width, height)
        started = time.perf_counter()
        camera = self.cameras.get(frame.camera_id)
        wanting = self.evidence[frame.camera_id].collecting() if self.liveness is not None else set()
        expected = tracker.expected(frame.mono, wanting)
        detections = self.scenes.detect(
            frame.camera_id, camera, frame.image, frame.mono, expected.focus, expected.coasting
        )
        stats.detect_ms += (time.perf_counter() - started) * 1000.0
        stats.frames += 1
        stats.faces += len(detections)
        embedder = self.parts.embedder
        index = self.parts.gallery.index(embedder.model_id)
        if index.version != self._groups_version:  # the gallery changed (a sync): people may have new groups
            self.machine.groups = dict(groups_of(self.parts.gallery))
            self.machine.config = effective_attendance(self._yaml_attendance, central_schedule(self.parts.gallery))
            self._groups_version = index.version
        observations = []
        for assignment in tracker.assign(frame.mono, detections):
            aligned = align(frame.image, assignment.detection, size=embedder.manifest.input_size[0])
            quality = assess(assignment.detection, aligned.image, self.quality)
            # a small face of a coasting track is not measured at its own scale (edge.scene): its keypoints are too
            # coarse to align an embedding or to be liveness-scored; if its track is due now, it is measured next frame
            precise = not self.scenes.coarse(frame.camera_id, assignment.detection)
            if quality.rejection is not None:
                stats.rejections[quality.rejection.value] += 1
            else:
                self.first_seen.setdefault(assignment.track_id, frame.mono)
                if self.crops is not None and precise:
                    self._keep_crop(assignment.track_id, quality.value, aligned.image)
            embedding = match = None
            if precise and tracker.needs_embedding(assignment.track_id, quality, frame.mono):
                started = time.perf_counter()
                embedding = embedder.embed(aligned.image)
                stats.embed_ms += (time.perf_counter() - started) * 1000.0
                stats.embeddings += 1
                template = tracker.template(assignment.track_id, embedding, quality)
                match = index.match(template, self.matcher.fused)
            if self.liveness is not None:
                # Any track may be about to be named: its usable frontal faces are scored from the first one (at
                # most liveness.frames per track, ~2.4 ms each), so that when its name is decided the verdict is
                # mostly there and the sighting does not wait (waiting for frames scored only after the name cost a
                # door walk ~0.4 s of latency; issue 8's p95 target is 1.5 s).
                accepted = quality.accepted and precise
                self._check_liveness(frame, assignment.track_id, assignment.detection, True, accepted)
            observations.append(Observation(assignment.track_id, assignment.detection, quality, embedding, match))
        sightings = tracker.update(frame.mono, at, observations)
        if self.liveness is not None:
            sightings = self.evidence[frame.camera_id].pass_on(sightings, frame.mono)
        events = self._step(sightings)
        events.extend(self.machine.tick(at))
        if len(self.first_seen) > 10_000:
            self.first_seen = dict(list(self.first_seen.items())[-1000:])
        return self._store(events, frame.mono, frame.wall_time, index.version)

    def _check_liveness(self, frame: Frame, track_id: str, detection: Detection, named: bool, accepted: bool) -> None:
        """Score this face when its track wants it (named, frontal, short of its frames): the full frame around the
        detector box. With crops on and a policy that keeps them, the frame's context crop too."""
        assert self.liveness is not None and self.parts.liveness is not None
        evidence = self.evidence[frame.camera_id]
        evidence.seen(track_id, frame.mono, named)
        if not evidence.wants(track_id, detection, accepted, frame.image):
            return
        stats = self.stats[frame.camera_id]
        started = time.perf_counter()
        p_real = self.parts.liveness.score(frame.image, detection.box)
        stats.liveness_ms += (time.perf_counter() - started) * 1000.0
        stats.liveness_scored += 1
        keep = self.crops is not None and self.liveness.policy in ("flag", "enforce")
        crop = context_crop(frame.image, detection.box, REVIEW_CROP_SCALE, REVIEW_CROP_PX) if keep else None
        evidence.add(track_id, p_real, crop)

    def _step(self, sightings: Sequence[Sighting]) -> List[AttendanceEvent]:
        """Sightings into the attendance machine, per the liveness policy: a spoof is refused (enforce) or its
        events are marked for review (flag); an undecided named sighting's events are marked for review (flag,
        enforce); shadow only carries the verdict on."""
        events: List[AttendanceEvent] = []
        policy = self.liveness.policy if self.liveness is not None else "off"
        for sighting in sightings:
            verdict = sighting.liveness
            if verdict is not None:
                self.stats[sighting.camera_id].verdicts[verdict.verdict] += 1
            suspect = verdict is not None and verdict.suspect
            if suspect and policy == "enforce":
                emitted = self.machine.refuse(sighting)
            else:
                emitted = self.machine.step(sighting)
            unchecked = verdict is not None and verdict.verdict == "undecided" and sighting.person_id is not None
            if (suspect and policy == "flag") or (unchecked and policy in ("flag", "enforce")):
                # flag: a spoof's events go to review; flag and enforce: so do a named person's events whose face
                # was never scored enough (turned away or too small throughout): they count, but a person checks
                emitted = [replace(e, review=True) if e.track_id == sighting.track_id else e for e in emitted]
            if verdict is not None and suspect:
                log.warning("liveness: track %s of %s on %s called a spoof (p_real %.2f over %d frames)",
                            sighting.track_id, sighting.person_id, sighting.camera_id, verdict.p_real or 0.0,
                            verdict.frames)  # fmt: skip
            events.extend(emitted)
        return events

    def _keep_crop(self, track_id: str, quality: float, image: np.ndarray) -> None:
        best = self._best_crop.get(track_id)
        if best is None or quality > best[0]:
            self._best_crop[track_id] = (quality, image.copy())
        if len(self._best_crop) > 1000:  # tracks end long before this: forget the oldest
            for stale in list(self._best_crop)[:500]:
                del self._best_crop[stale]

    def _save_crops(self, stored: List[StoredEvent]) -> None:
        if self.crops is None:
            return
        for event in stored:
            if not wants_crop(event.event):
                continue
            best = self._best_crop.get(event.event.track_id)
            crop = self._review_crop(event.event) if event.event.review else None
            if crop is None and best is not None:
                crop = best[1]
            if crop is not None:
                self.crops.save(event.event_id, crop, event.event.type.value, event.event.at.isoformat())

    def _review_crop(self, event: AttendanceEvent) -> Optional[np.ndarray]:
        """The full-frame context crop of a track called a spoof (its lowest-scoring frame), when one was kept."""
        evidence = self.evidence.get(event.camera_id)
        return evidence.crop(event.track_id) if evidence is not None else None

    def finish(self, wall_time: float, mono: float) -> List[StoredEvent]:
        """The file ended (or the cameras stop): every track ends, and the decisions of those not yet reported
        become events."""
        events: List[AttendanceEvent] = []
        for camera_id, tracker in self.trackers.items():
            sightings = tracker.finish()
            if self.liveness is not None:
                evidence = self.evidence[camera_id]
                sightings = evidence.pass_on(sightings, mono) + evidence.finish()
            events.extend(self._step(sightings))
        return self._store(events, mono, wall_time, self.parts.gallery.version)

    def tick(self, wall_time: float, mono: float) -> List[StoredEvent]:
        """Let time-based transitions fire with no frames (outing windows, session ends)."""
        if self.crops is not None:
            self.crops.purge()  # real time: retention is about how long a file is kept, not media time
        at = datetime.fromtimestamp(wall_time, tz=self.tz)
        events: List[AttendanceEvent] = []
        if self.liveness is not None:  # sightings held for tracks that ended while their camera sent no frame
            for evidence in self.evidence.values():
                events.extend(self._step(evidence.release(mono)))
        events.extend(self.machine.tick(at))
        return self._store(events, mono, wall_time, self.parts.gallery.version)

    def _store(
        self, events: List[AttendanceEvent], mono: float, wall_time: float, gallery_version: int
    ) -> List[StoredEvent]:
        """Append decided events; when the store fails, keep them (in order) and retry on the next call."""
        if events:
            context = EventContext(
                gallery_version=gallery_version,
                model_id=self.parts.embedder.model_id,
                mono_time=mono,
                wall_time=wall_time,
            )
            self._unstored.append((events, context))
        stored: List[StoredEvent] = []
        while self._unstored:
            batch, context = self._unstored[0]
            try:
                stored.extend(self.parts.store.append(batch, context))
            except StoreError as exc:
                if not self._store_failing:
                    log.warning("%s; %d event batches kept in memory, retrying", exc, len(self._unstored))
                    self._store_failing = True
                break
            self._unstored.pop(0)
        if self._store_failing and not self._unstored:
            log.info("the event store works again: the events kept in memory are stored")
            self._store_failing = False
        self._save_crops(stored)
        for event in stored:
            ev = event.event
            log.info("event %s %s %s on %s", event.event_id, ev.type.value, ev.person_id or "-", ev.camera_id)
        return stored

    def flush(self) -> List[StoredEvent]:
        """At stop: try once more to store the events held in memory (disk full, locked); what still fails is lost,
        and the log says how many and which (type, person id, camera, time; nothing more)."""
        if not self._unstored:
            return []
        stored = self._store([], 0.0, time.time(), self.parts.gallery.version)
        lost = [event for batch, _ in self._unstored for event in batch]
        if lost:
            kinds = Counter(event.type.value for event in lost)
            log.error(
                "stopping with %d decided events that could not be stored: they are lost (%s)",
                len(lost),
                ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())),
            )
            for event in lost[:LOST_LISTED]:
                who = event.person_id or "unknown"
                log.error("lost event %s %s on %s at %s", event.type.value, who, event.camera_id, event.at.isoformat())
            if len(lost) > LOST_LISTED:
                log.error("... and %d more lost events", len(lost) - LOST_LISTED)
        return stored


def close_past_days(
    store: EventStore,
    config: AttendanceConfig,
    roles: Mapping[str, CameraRole],
    groups: Mapping[str, str],
    now: datetime,
    tz: tzinfo,
    days: int = 7,
) -> List[AttendanceEvent]:
    """The exits (and early leaves) of outings left open on the last `days` days and on the last day with events
    (however long ago: a box switched off for the holidays): a box that was down at midnight never ticked past
    their deadline. Each day is rebuilt from its stored events and ticked to `now`."""
    closing: List[AttendanceEvent] = []
    today = now.astimezone(tz).date()
    recent = [today - timedelta(days=back) for back in range(days, 0, -1)]
    last = store.last_day_before(today, tz)
    earlier = [last] if last is not None and last < today - timedelta(days=days) else []
    for day in earlier + recent:
        events = store.events_of_day(day, tz)
        if not events:
            continue
        machine = AttendanceMachine(config, roles, groups)
        machine.restore(events)
        closing.extend(e for e in machine.tick(now) if e.at.astimezone(tz).date() < today)
    return closing


def new_run_id(taken: Set[str]) -> str:
    """A short random token for this run's track ids (`<camera>-<run>-<n>`), used by none of `taken` (today's
    stored track ids): the attendance machine restores today's announced tracks by id, so a new run must not reuse
    one, or the day's first unknown faces after a restart would be taken for tracks already announced."""
    while True:
        run_id = secrets.token_hex(3)
        if not any(f"-{run_id}-" in track_id for track_id in taken):
            return run_id


def groups_of(gallery: Gallery) -> Mapping[str, str]:
    """person id -> group, from each person's `group` metadata (people without one follow the shared sessions)."""
    return {p.person_id: str(p.metadata["group"]) for p in gallery.people() if p.metadata.get("group")}
