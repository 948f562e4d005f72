"""Face tracking on one camera: stable track ids across frames, embedding only when a track needs it, and an
identity decided per track from its fused template (pure: frames' own times in, sightings out).

Per frame the pipeline calls, in order:

    expected = tracker.expected(mono, wanting)              # where the detector looks (edge.scene), and how closely
    assignments = tracker.assign(mono, detections)          # which track each detection belongs to
    tracker.needs_embedding(track_id, quality, mono)        # for each accepted face: is an embedding worth it?
    template = tracker.template(track_id, embedding, quality)  # the track's fused template with this face
    sightings = tracker.update(mono, at, observations)      # template matches in; decided identities out
    sightings = tracker.finish(at)                          # at the end of a file (or stop): every track ends

A track is embedded when it is new, when a clearly better face appears, and periodically, up to a per-track
budget. Its embeddings are fused into one template, the quality-weighted mean of the normalised embeddings (the
weight grows with the square of the face's quality, so the late, large, sharp faces of a walk toward the door
dominate the early small ones, which can no longer out-vote them). The pipeline matches that template, and the
track is someone as soon as the template passes the matcher with at least `min_votes` embeddings behind it; a
known person is then final for the track. A track is unknown only once its budget is spent or it ends (an
unknown track still becomes someone if its template later clearly names them). A decided track is never lost: its
sighting waits until it has the frames the attendance machine wants, and a track that ends undecided is decided
then. A sighting is emitted once per track and identity on entrance/exit cameras, and at each crossing of the
virtual line on a line camera.

Only a track about to be embedded (or liveness-scored) needs its face measured at its own scale (precise
keypoints for alignment); tracking needs its box only. `expected` splits the live tracks accordingly: a decided
track with nothing due "coasts" on the whole-frame pass (no focus pass, no refine), which keeps one camera with
people in view at about the detector cost of a frame with only the new and undecided faces measured.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Collection, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np

from edge.attendance import Sighting
from edge.faces import Box, Detection
from edge.match import Match
from edge.quality import Quality

Point = Tuple[float, float]
Line = Tuple[Point, Point]
UNKNOWN = ""  # vote key of "no enrolled person"


@dataclass(frozen=True)
class TrackerConfig:
    """How faces are followed and how a track's identity is voted."""

    iou_match: float = 0.15
    """Smallest overlap between a track's predicted box and a detection to continue the track."""
    max_jump: float = 0.8
    """Without overlap, a detection whose centre is within this many box widths of the prediction continues it."""
    max_age_s: float = 1.0
    """A track not seen for this long has ended."""
    embed_interval_s: float = 0.1
    """Embed a visible, undecided (or unknown) track this often (besides clearly better faces), within max_embeds."""
    recheck_known_s: float = 2.0
    """Re-check a track already decided as someone this often (catches a tracker that swapped faces)."""
    better_face: float = 1.25
    """Embed again when a face's quality is this many times the best embedded so far."""
    max_embeds: int = 20
    """Most embeddings per track (the budget); an undecided track whose budget is spent is unknown."""
    min_votes: int = 2
    """Fewest embeddings fused into the template before a known identity is decided."""
    confirmations: int = 2
    """Consecutive embeddings whose template names the same person before the track is that person (a template
    looked at after each embedding is tested many times; one lucky look must not decide)."""
    vote_share: float = 0.6
    """Not used since identities come from the fused template (kept so existing config files still load)."""
    same_face_min_sim: float = 0.2
    """An embedding this dissimilar to the track's mean starts a new track (the tracker swapped faces)."""
    unknown_min_score: float = 0.8
    """An unknown track is reported only if the detector was this sure at least once (backs of heads are not)."""

    def __post_init__(self) -> None:
        for name in ("iou_match", "vote_share", "unknown_min_score"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {getattr(self, name)}")
        for name in ("max_jump", "max_age_s", "embed_interval_s", "recheck_known_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.better_face < 1.0:
            raise ValueError(f"better_face must be >= 1, got {self.better_face}")
        if not 1 <= self.confirmations <= self.max_embeds:
            raise ValueError(f"confirmations must be within 1..max_embeds, got {self.confirmations}")
        if self.min_votes < 1 or self.max_embeds < self.min_votes:
            raise ValueError(f"min_votes must be >= 1 and <= max_embeds, got {self.min_votes} and {self.max_embeds}")
        if not -1.0 <= self.same_face_min_sim <= 1.0:
            raise ValueError(f"same_face_min_sim must be within -1..1, got {self.same_face_min_sim}")


@dataclass(frozen=True)
class Assignment:
    """A detection and the track it belongs to (`new` when the track starts with it)."""

    track_id: str
    detection: Detection
    new: bool


@dataclass(frozen=True)
class Observation:
    """What the pipeline learned about an assigned face this frame: its quality, and a match if it was embedded."""

    track_id: str
    detection: Detection
    quality: Quality
    embedding: Optional[np.ndarray] = None
    match: Optional[Match] = None
    """The match of the track's fused template with this embedding (`Tracker.template`), not of the frame alone."""


@dataclass(frozen=True)
class Expected:
    """Where the live tracks' faces should be in a frame (their last boxes moved by their velocities), split by
    what the detector owes them (edge.scene)."""

    focus: Tuple[Box, ...] = ()
    """Faces to measure at their own scale (a focus pass each): tracks that may be embedded or liveness-scored this
    frame, and coasting tracks no face was given to on the last frame (the whole-frame pass missed them)."""
    coasting: Tuple[Box, ...] = ()
    """Faces of decided tracks with nothing due: the whole-frame pass keeps them tracked; not refined."""


@dataclass
class _Vote:
    weight: float = 0.0
    score: float = 0.0
    margin: float = 0.0
    count: int = 0


@dataclass
class _Track:
    track_id: str
    box: Box
    velocity: Tuple[float, float]
    first_mono: float
    last_mono: float
    hits: int = 1
    best_score: float = 0.0
    best_quality: float = 0.0
    embeds: int = 0
    last_embed_mono: float = float("-inf")
    best_embedded_quality: float = 0.0
    mean_embedding: Optional[np.ndarray] = None
    template_sum: Optional[np.ndarray] = None
    """Quality-weighted sum of the normalised embeddings (the fused template once normalised)."""
    fused: Optional[Match] = None
    """The match of the fused template after the latest embedding."""
    streak: int = 0
    """Consecutive embeddings (up to the latest) whose template named `fused.person_id`."""
    votes: Dict[str, _Vote] = field(default_factory=dict)
    identity: Optional[str] = None
    """Decided identity: a person id, UNKNOWN, or None while undecided."""
    reported: Dict[str, bool] = field(default_factory=dict)
    """Identities whose sighting was emitted (entrance/exit cameras)."""
    last_at: Optional[datetime] = None
    side: int = 0
    """Which side of the line the face's centre is on (+1 / -1; 0 = not yet known)."""
    crossing: Optional[Tuple[str, datetime]] = None
    """A line crossing ("in"/"out", when) waiting for the identity to be decided."""


def predicted(track: _Track, mono: float) -> Box:
    dt = mono - track.last_mono
    b = track.box
    return Box(b.x + track.velocity[0] * dt, b.y + track.velocity[1] * dt, b.w, b.h)


def centre(box: Box) -> Point:
    return (box.x + box.w / 2.0, box.y + box.h / 2.0)


def side_of(line: Line, point: Point) -> int:
    """+1 left of the directed line (image coordinates, y down: 'left' as seen walking from p1 to p2), -1 right."""
    (x1, y1), (x2, y2) = line
    cross = (x2 - x1) * (point[1] - y1) - (y2 - y1) * (point[0] - x1)
    # with y pointing down, a positive cross product is on the walker's right
    return -1 if cross > 0 else (1 if cross < 0 else 0)


def close_enough(track: _Track, det: Detection, mono: float, config: TrackerConfig) -> float:
    """Association affinity (higher is better; 0 = not this track): IoU, else a small value for a near centre."""
    guess = predicted(track, mono)
    iou = guess.iou(det.box)
    if iou >= config.iou_match:
        return iou
    (gx, gy), (dx, dy) = centre(guess), centre(det.box)
    distance = ((gx - dx) ** 2 + (gy - dy) ** 2) ** 0.5 / max(guess.w, 1.0)
    return 0.01 * (1.0 - distance / config.max_jump) if distance < config.max_jump else 0.0


def fusion_weight(quality: Quality) -> float:
    """How much one embedding counts in the track's template: the square of its quality (a 112 px sharp frontal
    face counts ~6 times a 40 px blurred one)."""
    return max(quality.value, 1e-3) ** 2


def normalised(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-9)  # type: ignore[no-any-return]


def decide(track: _Track, config: TrackerConfig, ending: bool) -> Optional[str]:
    """The identity the fused template decides now, or None while the evidence is not enough: someone once the
    template names them with `min_votes` embeddings, on `confirmations` embeddings in a row; unknown once the budget
    is spent or the track ends."""
    fused = track.fused
    named = fused is not None and fused.person_id is not None and track.streak >= config.confirmations
    if fused is not None and fused.person_id is not None and named and track.embeds >= config.min_votes:
        return fused.person_id
    if fused is not None and (ending or track.embeds >= config.max_embeds):
        return UNKNOWN
    return None


class Tracker:
    """Tracks of one camera. `role` and `line` decide the direction of its sightings."""

    def __init__(
        self,
        config: TrackerConfig,
        camera_id: str,
        role: Literal["entrance", "exit", "line"] = "entrance",
        line: Optional[Line] = None,
        in_side: Literal["left", "right"] = "left",
        frame_size: Tuple[int, int] = (1, 1),
        run_id: str = "",
        min_frames: Tuple[int, int] = (1, 1),
    ) -> None:
        if role == "line" and line is None:
            raise ValueError("line must be given for a line camera")
        self.config = config
        self.camera_id = camera_id
        self.role = role
        self._line = line
        self._in_side = 1 if in_side == "left" else -1
        self.frame_size = frame_size
        self._tracks: Dict[str, _Track] = {}
        self._ids = itertools.count(1)
        self._id_prefix = f"{camera_id}-{run_id}-" if run_id else f"{camera_id}-"
        """Track ids are `<camera>-<run>-<n>`: `n` restarts with the process, `run` makes them unique across runs."""
        self.stats: Counter[str] = Counter()
        self._frame_mono = float("-inf")
        """The time of the last frame given to `assign`."""
        self.min_frames = min_frames
        """Frames a track needs before its (known, unknown) sighting is emitted: the attendance machine's own
        minimums, so a decision is held until the track has them instead of being dropped there."""

    @property
    def active(self) -> int:
        return len(self._tracks)

    def expected(self, mono: float, wanting: Collection[str] = ()) -> Expected:
        """The live tracks' predicted faces at `mono`, split into those to measure at their own scale this frame
        (`measuring`; `wanting`: track ids another stage still wants faces of, the liveness evidence) and coasting
        ones; a coasting track missed on the last frame is looked for as well (`Expected.focus`)."""
        focus: List[Box] = []
        coasting: List[Box] = []
        for track in self._tracks.values():
            box = predicted(track, mono)
            missed = track.last_mono < self._frame_mono
            wanted = track.track_id in wanting
            (focus if missed or self.measuring(track.track_id, mono, wanted) else coasting).append(box)
        return Expected(tuple(focus), tuple(coasting))

    def measuring(self, track_id: str, mono: float, wanted: bool = False) -> bool:
        """Whether the track's face must be measured at its own scale at `mono`: whenever `needs_embedding` could
        say yes (undecided or unknown with budget left; known with its re-check due), or `wanted` by another stage
        (liveness) unless the track is unknown for good (its sightings carry no verdict)."""
        track = self._tracks[track_id]
        if track.embeds < self.config.max_embeds:
            if track.identity in (None, UNKNOWN):
                return True
            if mono - track.last_embed_mono >= self.config.recheck_known_s:
                return True
        return wanted and track.identity != UNKNOWN

    # -- association -------------------------------------------------------------------------------------------
    def assign(self, mono: float, detections: Sequence[Detection]) -> List[Assignment]:
        """Give each detection a track: greedy by affinity against predicted boxes; the rest start new tracks."""
        pairs = [
            (close_enough(t, d, mono, self.config), tid, i)
            for tid, t in self._tracks.items()
            for i, d in enumerate(detections)
        ]
        self._frame_mono = mono
        used_tracks, used_dets, out = set(), set(), []
        for affinity, tid, i in sorted(pairs, key=lambda p: -p[0]):
            if affinity <= 0 or tid in used_tracks or i in used_dets:
                continue
            used_tracks.add(tid)
            used_dets.add(i)
            self._follow(self._tracks[tid], detections[i], mono)
            out.append(Assignment(tid, detections[i], new=False))
        for i, det in enumerate(detections):
            if i not in used_dets:
                out.append(Assignment(self._start(det, mono).track_id, det, new=True))
        return out

    def _start(self, det: Detection, mono: float) -> _Track:
        track = _Track(f"{self._id_prefix}{next(self._ids)}", det.box, (0.0, 0.0), mono, mono, best_score=det.score)
        track.side = self._side(det.box)
        self._tracks[track.track_id] = track
        self.stats["tracks"] += 1
        return track

    def _follow(self, track: _Track, det: Detection, mono: float) -> None:
        dt = mono - track.last_mono
        if dt > 0:
            (ox, oy), (nx, ny) = centre(track.box), centre(det.box)
            alpha = 0.5
            track.velocity = (
                alpha * (nx - ox) / dt + (1 - alpha) * track.velocity[0],
                alpha * (ny - oy) / dt + (1 - alpha) * track.velocity[1],
            )
        track.box, track.last_mono = det.box, mono
        track.hits += 1
        track.best_score = max(track.best_score, det.score)

    # -- embedding policy --------------------------------------------------------------------------------------
    def needs_embedding(self, track_id: str, quality: Quality, mono: float) -> bool:
        """New track, a clearly better face (a track not yet known), or time for a periodic re-check; never past the
        cap. A known track is re-checked on its interval only, so between two re-checks it needs no precise
        measurement (`measuring`)."""
        track = self._tracks[track_id]
        if not quality.accepted or track.embeds >= self.config.max_embeds:
            return False
        if track.embeds == 0:
            return True
        decided_known = track.identity not in (None, UNKNOWN)
        if not decided_known and quality.value >= track.best_embedded_quality * self.config.better_face:
            return True
        interval = self.config.recheck_known_s if decided_known else self.config.embed_interval_s
        return mono - track.last_embed_mono >= interval

    def template(self, track_id: str, embedding: np.ndarray, quality: Quality) -> np.ndarray:
        """The track's fused template with `embedding` added (nothing is recorded: `update` does that). A face
        unlike the track's (a swapped track, split in `update`) is its own template."""
        track = self._tracks[track_id]
        unit = normalised(np.asarray(embedding, dtype=np.float32))
        if track.template_sum is None or self._other_face(track, unit):
            return unit
        return normalised(track.template_sum + fusion_weight(quality) * unit)

    def _other_face(self, track: _Track, unit: np.ndarray) -> bool:
        if track.mean_embedding is None:
            return False
        sim = float(np.dot(track.mean_embedding, unit) / max(np.linalg.norm(track.mean_embedding), 1e-6))
        return sim < self.config.same_face_min_sim

    # -- votes, decisions and sightings ------------------------------------------------------------------------
    def update(self, mono: float, at: datetime, observations: Sequence[Observation]) -> List[Sighting]:
        """Record this frame's observations; return sightings decided now (and of the tracks not seen lately,
        which end: an undecided one is decided on its template, a decided one not yet reported is reported)."""
        sightings: List[Sighting] = []
        for obs in observations:
            track = self._tracks.get(obs.track_id)
            if track is None:
                continue
            track.last_at = at
            track.best_quality = max(track.best_quality, obs.quality.value if obs.quality.accepted else 0.0)
            if obs.quality.rejection is not None:
                self.stats[f"rejected_{obs.quality.rejection.value}"] += 1
            if obs.match is not None and obs.embedding is not None:
                track = self._vote(track, obs, mono)
                track.last_at = at
            sightings.extend(self._line_crossing(track, obs.detection.box, at))
            sightings.extend(self._decide(track, at, ending=False))
        for tid in [tid for tid, t in self._tracks.items() if mono - t.last_mono > self.config.max_age_s]:
            sightings.extend(self._end(tid))
        return sightings

    def finish(self) -> List[Sighting]:
        """End every track now (the file ended, the camera stops): their decisions are flushed as sightings."""
        sightings: List[Sighting] = []
        for tid in list(self._tracks):
            sightings.extend(self._end(tid))
        return sightings

    def _end(self, track_id: str) -> List[Sighting]:
        track = self._tracks.pop(track_id)
        self.stats["tracks_ended"] += 1
        return self._decide(track, track.last_at, ending=True) if track.last_at is not None else []

    def _vote(self, track: _Track, obs: Observation, mono: float) -> _Track:
        assert obs.match is not None and obs.embedding is not None
        unit = normalised(np.asarray(obs.embedding, dtype=np.float32))
        if self._other_face(track, unit):
            # a different face took this track over: the old track ends, the face starts a new one
            self.stats["track_splits"] += 1
            del self._tracks[track.track_id]
            track = self._start(obs.detection, mono)
        self.stats["embeddings"] += 1
        track.embeds += 1
        track.last_embed_mono = mono
        track.best_embedded_quality = max(track.best_embedded_quality, obs.quality.value)
        track.mean_embedding = (
            obs.embedding.copy() if track.mean_embedding is None else track.mean_embedding + obs.embedding
        )
        weighted = fusion_weight(obs.quality) * unit
        track.template_sum = weighted if track.template_sum is None else track.template_sum + weighted
        same = track.fused is not None and track.fused.person_id == obs.match.person_id
        track.streak = track.streak + 1 if same else 1
        track.fused = obs.match
        key = obs.match.person_id or UNKNOWN
        vote = track.votes.setdefault(key, _Vote())
        weight = max(obs.quality.value, 1e-3)
        vote.weight += weight
        vote.count += 1
        if obs.match.person_id is not None:
            vote.score += obs.match.score
            vote.margin += obs.match.margin
        return track

    def _decide(self, track: _Track, at: datetime, ending: bool) -> List[Sighting]:
        decided = decide(track, self.config, ending)
        if decided is not None and decided != track.identity and track.identity in (None, UNKNOWN):
            track.identity = decided  # a known identity is final for the track; unknown yields to a clear name
            if decided == UNKNOWN and track.best_score < self.config.unknown_min_score:
                self.stats["unknown_weak_face"] += 1  # judged when decided: never reported for this track
                track.reported[UNKNOWN] = True
        if track.identity is None or track.reported.get(track.identity):
            return []
        if not ending and track.hits < self.min_frames[0 if track.identity else 1]:
            return []  # held until the track has the frames the attendance machine wants (or ends)
        track.reported[track.identity] = True
        if self.role == "line":
            if track.crossing is None:
                return []
            direction, crossed_at = track.crossing
            return [self._sighting(track, direction, crossed_at)]
        return [self._sighting(track, None, at)]

    def _side(self, box: Box) -> int:
        if self._line is None:
            return 0
        cx, cy = centre(box)
        return side_of(self._line, (cx / self.frame_size[0], cy / self.frame_size[1]))

    def _line_crossing(self, track: _Track, box: Box, at: datetime) -> List[Sighting]:
        side = self._side(box)
        if self._line is None or side == 0 or side == track.side:
            return []
        previous, track.side = track.side, side
        if previous == 0:
            return []
        direction = "in" if side == self._in_side else "out"
        track.crossing = (direction, at)
        self.stats[f"line_{direction}"] += 1
        if track.identity is None or (track.identity == UNKNOWN and track.best_score < self.config.unknown_min_score):
            return []
        return [self._sighting(track, direction, at)]

    def _sighting(self, track: _Track, direction: Optional[str], at: datetime) -> Sighting:
        assert track.identity is not None
        person = track.identity or None
        fused = track.fused
        self.stats["sightings"] += 1
        return Sighting(
            person_id=person,
            track_id=track.track_id,
            camera_id=self.camera_id,
            direction=direction,  # type: ignore[arg-type]
            at=at,
            score=fused.score if person and fused is not None else 0.0,
            margin=fused.margin if person and fused is not None else 0.0,
            frames=track.hits,
            quality=track.best_quality,
        )
