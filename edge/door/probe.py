"""What the daemon did during a door walk, for explaining a missed pass (edge.door.bench uses it).

`recording(recorder)`: edge.daemon.replay runs unchanged while its detector's and embedder's calls, and the
sightings its attendance machine is given, are recorded (their results are not touched; the pipeline's own
timings then include the recording's small cost).
`walk_diags`: per walk, frames detected, tracks, each embedding's match and the walker's own score, and the fused
counterfactual. `all_frames`: decodes the clip again and embeds EVERY frame of each walk whose face passes the
quality gates (what the tracker left unembedded, and how it would have matched).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from edge import daemon
from edge.attendance import AttendanceEvent, AttendanceMachine, Sighting
from edge.capture import CameraConfig
from edge.config import Config
from edge.door.plan import FPS, GAP_S, Segment, Walk, frames_of
from edge.door.score import Sighted, Vote, WalkDiag
from edge.match import GalleryIndex
from edge.pipeline import Pipeline, PipelineParts


class Recorder:
    """What the detector and the embedder did during one replay, frame by frame (their results are untouched)."""

    def __init__(self) -> None:
        self.frames: List[List[float]] = []
        """Per frame: the width of each detected face box."""
        self.embeddings: List[Tuple[int, np.ndarray]] = []
        """(frame index, embedding) for each embedding made."""
        self.sightings: List[Tuple[float, Sighted]] = []
        """(POSIX time, what became of it) for each sighting the tracker handed the attendance machine."""

    def watch(self, machine: AttendanceMachine) -> None:
        """Record each sighting and whether it caused events or which rule ignored it."""
        step = machine.step

        def recording_step(sighting: Sighting) -> List[AttendanceEvent]:
            before = machine.stats
            events = step(sighting)
            after = machine.stats
            ignored = [reason for reason, count in after.items() if count != before.get(reason, 0)]
            outcome = ignored[0] if ignored else ",".join(e.type.value for e in events) or "nothing"
            self.sightings.append((sighting.at.timestamp(), Sighted(sighting.person_id, sighting.frames, outcome)))
            return events

        setattr(machine, "step", recording_step)  # noqa: B010

    def wrap(self, parts: PipelineParts) -> PipelineParts:
        detect, embed = parts.detector.detect, parts.embedder.embed

        def recording_detect(image: np.ndarray) -> Any:
            found = detect(image)
            self.frames.append([d.box.w for d in found])
            return found

        def recording_embed(aligned: np.ndarray) -> np.ndarray:
            vector = embed(aligned)
            self.embeddings.append((len(self.frames) - 1, np.array(vector, copy=True)))
            return vector

        if hasattr(parts.detector, "detect_in"):  # the pipeline's scene detector asks it once per frame
            detect_in = parts.detector.detect_in

            def recording_detect_in(image: np.ndarray, passes: Any) -> Any:
                found = detect_in(image, passes)
                self.frames.append([d.box.w for d in found])
                return found

            setattr(parts.detector, "detect_in", recording_detect_in)  # noqa: B010
        else:
            setattr(parts.detector, "detect", recording_detect)  # noqa: B010 - mypy refuses assigning to a method
        setattr(parts.embedder, "embed", recording_embed)  # noqa: B010
        return parts


@contextmanager
def recording(recorder: Recorder) -> Iterator[None]:
    """edge.daemon.replay, unchanged, with its detector and embedder recorded by `recorder`."""
    original, original_make = daemon.build_parts, daemon.make_pipeline

    def build(config: Config, stack: ExitStack, db: Optional[Path] = None) -> PipelineParts:
        return recorder.wrap(original(config, stack, db))

    def make(config: Config, parts: PipelineParts, cameras: List[CameraConfig], now: datetime) -> Pipeline:
        pipeline = original_make(config, parts, cameras, now)
        recorder.watch(pipeline.machine)
        return pipeline

    daemon.build_parts, daemon.make_pipeline = build, make  # type: ignore[assignment]
    try:
        yield
    finally:
        daemon.build_parts, daemon.make_pipeline = original, original_make  # type: ignore[assignment]


def vote_of(t: float, vector: np.ndarray, walk: Walk, index: GalleryIndex, config: Config, fused: bool = False) -> Vote:
    """What one embedding (or a fused template: the daemon's fused threshold) matches, and the walker's own best
    score for it (None for a stranger)."""
    match = index.match(vector, config.matcher.fused if fused else config.matcher)
    walker = None
    if walk.enrolled and walk.person_id in index.people:
        walker = float(index.person_scores(vector)[index.people.index(walk.person_id)])
    return Vote(t, match.person_id, match.score, walker)


def walk_diags(segment: Segment, recorder: Recorder, index: GalleryIndex, config: Config,
               first_seen: Dict[str, float]) -> List[WalkDiag]:  # fmt: skip
    """Per walk of the segment: detections, tracks, each embedding's match (with the walker's own score), the
    fused counterfactual, and the sightings handed to the attendance machine."""
    diags = []
    for walk, offset in zip(segment.walks, segment.offsets()):
        f0 = int(round(offset * FPS))
        n, span = frames_of(walk.duration_s), frames_of(walk.duration_s + GAP_S)
        seen = recorder.frames[f0 : f0 + n]
        detected = [widths for widths in seen if widths]
        mine = [(frame, vector) for frame, vector in recorder.embeddings if f0 <= frame < f0 + span]
        votes = [vote_of((frame - f0) / FPS, vector, walk, index, config) for frame, vector in mine]
        fused = vote_of(0.0, fuse([v for _, v in mine]), walk, index, config, fused=True) if mine else None
        tracks = sum(1 for t in first_seen.values() if offset <= t < offset + span / FPS)
        first_px = max(detected[0]) if detected else 0.0
        t0 = segment.start.timestamp() + offset
        sighted = tuple(s for at, s in recorder.sightings if t0 - 0.5 / FPS <= at < t0 + (span - 0.5) / FPS)
        diags.append(WalkDiag(len(seen), len(detected), first_px, tracks, tuple(votes), fused, sightings=sighted,
                              vectors=tuple(v for _, v in mine)))  # fmt: skip
    return diags


def fuse(vectors: List[np.ndarray]) -> np.ndarray:
    mean = np.mean(vectors, axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-9)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class EveryFrame:
    """One walk with every frame embedded whose face passed the quality gates."""

    usable: int
    walker: int
    """Of those, frames whose match is the walker."""
    fused: Optional[Vote]


def all_frames(segment: Segment, clip: Path, recognizer: Any, index: GalleryIndex, config: Config) -> List[EveryFrame]:
    """Decode the clip again; per walk, embed the largest face of each frame it is in view if it passes the gates."""
    spans = [(int(round(o * FPS)), frames_of(w.duration_s)) for o, w in zip(segment.offsets(), segment.walks)]
    vectors: List[List[np.ndarray]] = [[] for _ in segment.walks]
    cap = cv2.VideoCapture(str(clip))
    number, k = 0, 0
    try:
        while k < len(spans):
            ok, image = cap.read()
            if not ok:
                break
            while k < len(spans) and number >= spans[k][0] + spans[k][1]:
                k += 1
            if k < len(spans) and number >= spans[k][0]:
                faces = recognizer.analyze(image)
                if faces and faces[0].embedding is not None:
                    vectors[k].append(faces[0].embedding)
            number += 1
    finally:
        cap.release()
    out = []
    for walk, found in zip(segment.walks, vectors):
        votes = [vote_of(0.0, v, walk, index, config) for v in found]
        walker = sum(1 for v in votes if walk.enrolled and v.person_id == walk.person_id)
        fused = vote_of(0.0, fuse(found), walk, index, config, fused=True) if found else None
        out.append(EveryFrame(len(found), walker, fused))
    return out


def with_every_frame(diags: List[WalkDiag], every: List[EveryFrame]) -> List[WalkDiag]:
    return [replace(d, usable=e.usable, usable_walker=e.walker, fused_all=e.fused) for d, e in zip(diags, every)]
