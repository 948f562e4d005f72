"""Per-track liveness evidence of one camera, and the sightings held until it is complete (pure: the pipeline scores,
this keeps the scores and says when a sighting may go on).

Per frame the pipeline (edge/pipeline.py) calls, in order:

    tracker.expected(mono, tracks.collecting())   # before detection: these tracks' faces are measured precisely
    tracks.seen(track_id, mono, named)            # every assigned face: the track is alive; named = its fused match
                                                  # names an enrolled person (sticky: once named, always scored)
    if tracks.wants(track_id, detection, accepted, frame.image):
        tracks.add(track_id, model.score(frame.image, detection.box))
    sightings = tracks.pass_on(tracker.update(...), mono)   # the sightings that may go on now, with their verdict

Choices:

- Only tracks that may produce an attendance event are scored, on faces that passed the quality gates,
  `frontal()` (size, yaw) and the scoring gate `gate()` (not blurred, not low-contrast, not over-exposed: faces the
  models cannot judge; a track left with fewer than `min_frames` such frames is undecided), at most
  `config.frames` frames per track. The pipeline calls every track `named`: any
  track may be about to be named, and scoring its faces from the first usable one means its verdict is mostly
  complete when the name is decided (scoring only after the name held door walks ~0.4 s). Sightings of unknown
  faces still pass on at once.
- A known sighting is held until its track has `config.frames` scored frames, the track ends (unseen for
  `max_age_s`, the tracker's own rule, or `finish`), or it has waited `MAX_HOLD_S`; it then goes on with
  `decide(scores)` attached (undecided below `config.min_frames`). Every policy holds, shadow included, so a site's
  shadow evidence is exactly what enforce would have decided on. Its `at` is unchanged (the attendance machine
  takes it in time order per person); only the moment it is stored is later: on the Hamilton clip (every frame)
  the entry is stored one frame (0.03 s) later than without liveness, as the tracker's own confirmation already
  took 4 of the 5 frames (tests/test_liveness_pipeline.py).
- A released sighting's evidence is kept until its track is gone: a track can be reported again (a line crossing
  after its presence sighting) and carries the same verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from edge.attendance import Sighting
from edge.faces import Detection
from edge.liveness.decide import LivenessConfig, Verdict, decide, frontal, gate

MAX_HOLD_S = 0.5
"""Longest a known sighting waits for its liveness frames. A track's faces are scored from its first usable one, so
when a walking person is named most of the evidence is in (a sharp walk completes its frames within this wait);
what is still missing then is mostly faces the models cannot judge (blur, a dim or side-lit door: `gate`), which
no wait brings. 3.0 s held door walks under blur, low or side light until the track ended: p50 time from first
usable face to the event 1.9 -> 0.7 s, p95 2.96 -> 1.9 s with 0.5 (`edge eval door`, those conditions, same
walks; the same events)."""


@dataclass
class _Evidence:
    last_mono: float
    named: bool = False
    scores: List[float] = field(default_factory=list)
    worst: Optional[Tuple[float, np.ndarray]] = None
    """(p_real, context crop) of the lowest-scoring frame, kept only when the pipeline asks (crops for review)."""


@dataclass(frozen=True)
class _Held:
    sighting: Sighting
    since: float


class LivenessTracks:
    """The liveness evidence of one camera's tracks."""

    def __init__(self, config: LivenessConfig, max_age_s: float) -> None:
        self.config = config
        self.max_age_s = max_age_s
        self._tracks: Dict[str, _Evidence] = {}
        self._held: List[_Held] = []
        self.declined: Dict[str, int] = {}
        """Faces otherwise wanted that the scoring gate declined, by reason ("blurred", "low_contrast", ...)."""

    @property
    def held(self) -> int:
        """Sightings waiting for their liveness frames."""
        return len(self._held)

    def collecting(self) -> Set[str]:
        """The tracks still short of their frames (`wants` may say yes to their next face): the detector measures
        their faces at their own scale (edge.track `Tracker.expected`)."""
        return {t for t, e in self._tracks.items() if e.named and len(e.scores) < self.config.frames}

    def seen(self, track_id: str, mono: float, named: bool) -> None:
        """The track showed a face at `mono`; `named`: this frame's fused match named an enrolled person."""
        evidence = self._tracks.get(track_id)
        if evidence is None:
            evidence = self._tracks[track_id] = _Evidence(last_mono=mono)
        evidence.last_mono = max(evidence.last_mono, mono)
        evidence.named = evidence.named or named

    def wants(self, track_id: str, detection: Detection, accepted: bool, image: Optional[np.ndarray] = None) -> bool:
        """Whether this face is worth scoring: a named track short of its frames, a face that passed the quality
        gates (`accepted`), frontal and large enough and, given the full frame `image`, one the models can judge
        (`gate`: not blurred, low-contrast or over-exposed; a declined face is counted in `declined`)."""
        evidence = self._tracks.get(track_id)
        if evidence is None or not evidence.named or len(evidence.scores) >= self.config.frames:
            return False
        if not (accepted and frontal(detection, self.config)):
            return False
        reason = gate(image, detection, self.config) if image is not None else None
        if reason is not None:
            self.declined[reason] = self.declined.get(reason, 0) + 1
            return False
        return True

    def add(self, track_id: str, p_real: float, crop: Optional[np.ndarray] = None) -> None:
        """Record one scored frame (and, when given, its context crop if it is the track's lowest-scoring one)."""
        evidence = self._tracks[track_id]
        evidence.scores.append(float(p_real))
        if crop is not None and (evidence.worst is None or p_real < evidence.worst[0]):
            evidence.worst = (float(p_real), crop)

    def verdict(self, track_id: str) -> Verdict:
        evidence = self._tracks.get(track_id)
        return decide(evidence.scores if evidence is not None else [], self.config)

    def crop(self, track_id: str) -> Optional[np.ndarray]:
        """The lowest-scoring frame's context crop of a track (None when none was kept)."""
        evidence = self._tracks.get(track_id)
        return evidence.worst[1] if evidence is not None and evidence.worst is not None else None

    def pass_on(self, sightings: Sequence[Sighting], mono: float) -> List[Sighting]:
        """Hold this frame's known sightings; return, in order, those that may go on now (with their verdict), and
        the unknown ones."""
        out: List[Sighting] = []
        for sighting in sightings:
            if sighting.person_id is None:
                out.append(sighting)
            else:
                self._held.append(_Held(sighting, mono))
        return self.release(mono) + out

    def release(self, mono: float) -> List[Sighting]:
        """The held sightings whose evidence is complete at `mono` (enough frames, track ended, waited too long)."""
        ready = [h for h in self._held if self._complete(h, mono)]
        self._held = [h for h in self._held if not self._complete(h, mono)]
        released = [replace(h.sighting, liveness=self.verdict(h.sighting.track_id)) for h in ready]
        self._forget(mono)
        return released

    def finish(self) -> List[Sighting]:
        """Every track ended (the file ended, the cameras stop): every held sighting goes on with what it has."""
        released = [replace(h.sighting, liveness=self.verdict(h.sighting.track_id)) for h in self._held]
        self._held = []
        return released

    def _complete(self, held: _Held, mono: float) -> bool:
        evidence = self._tracks.get(held.sighting.track_id)
        if evidence is None or len(evidence.scores) >= self.config.frames:
            return True
        return mono - evidence.last_mono > self.max_age_s or mono - held.since >= MAX_HOLD_S

    def _forget(self, mono: float) -> None:
        """Drop the evidence of tracks gone for a while (none of their sightings held)."""
        waiting = {h.sighting.track_id for h in self._held}
        for track_id in [t for t, e in self._tracks.items() if mono - e.last_mono > 10 * self.max_age_s + 10.0]:
            if track_id not in waiting:
                del self._tracks[track_id]
