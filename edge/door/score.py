"""Scoring door walks (pure): the events a replay stored, attributed to walks, turned into the benchmark's figures.

An event belongs to the walk on its camera whose frames (and the gap after them) contain the event's `at` (for an
exit or early_leave that is when the person went out, so it lands on the walk out). Per walk:

- **hit** (enrolled walks): the walk's first expected event (entry, outing_start or outing_end) for the walker;
- **false identity**: any named event for someone else on the walk (for a stranger: any named event at all);
- **unknown**: an unknown_face event on an enrolled person's walk;
- **latency**: media seconds from the first face of the track that passed the quality gates to the hit event
  (what `edge replay` reports as latency_s).

A missed walk is explained from its diagnostics (the detector's and embedder's calls during the walk, the match
each embedding got, and the sightings the tracker handed the attendance machine), first cause first:
not_detected; no_embedding (detected but never good enough); sighting_<outcome> (the tracker decided the walker
and the attendance machine ignored the sighting: sighting_low_frames, sighting_no_change, ... or it caused another
event than the one expected, e.g. sighting_entry,late when an earlier miss left the person absent); then, with no
sighting, from the walk's fused template (its embeddings' plain mean, matched with matcher.fused_threshold):
fused_names_other (the template is someone else), fused_below_threshold (the walker's score under the threshold,
or the lead over the runner-up too small), fused_enough_no_sighting (the plain mean would name the walker; the
tracker weights by quality and decides per track, so this is an explanation, not a replica); without a fused
template, from the per-embedding votes: unknown_votes (embedded, nothing matched), wrong_votes (more votes for someone else than for the
walker), split_votes (some votes for the walker, not enough to decide), votes_enough_no_sighting (the votes, as
counted here, would decide the walker; the tracker weights them by face quality, so this is an explanation, not a
replica).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edge.door.plan import FPS, Walk

NAMED_TYPES = ("entry", "late", "outing_start", "outing_end", "exit", "early_leave")
HALF = 0.5 / FPS
"""Windows are shifted back half a frame, so a frame's time (rounded on a POSIX timeline) falls in one only."""


@dataclass(frozen=True)
class EventRecord:
    """A stored event as the benchmark keeps it (picklable, plain values)."""

    type: str
    person_id: Optional[str]
    camera_id: str
    at: float
    """POSIX seconds on the clip's timeline."""
    latency_s: float
    track_id: str
    score: float
    frames: int


@dataclass(frozen=True)
class Vote:
    """One embedding of a walk: when (seconds into the walk), what it matched, and how the walker scored."""

    t: float
    person_id: Optional[str]
    score: float
    walker_score: Optional[float]
    """The walker's best gallery score for this embedding (None for strangers)."""


@dataclass(frozen=True)
class Sighted:
    """A sighting the tracker handed the attendance machine during a walk, and what became of it: the events it
    caused ("entry", "entry,late", ...), "nothing", or the rule that ignored it (edge.attendance.Ignored)."""

    person_id: Optional[str]
    frames: int
    outcome: str


@dataclass(frozen=True)
class WalkDiag:
    frames: int
    """Frames in which the face is in view."""
    detected: int
    """Of those, frames with a detection."""
    first_px: float
    """Width of the first detected face box (0: never detected)."""
    tracks: int
    """Tracks that showed a usable face during the walk."""
    votes: Tuple[Vote, ...] = ()
    fused: Optional[Vote] = None
    """What the walk's embeddings would match fused into one template (the normalised mean, equal weights): a
    counterfactual for deciding per track rather than per frame (issue 8 item 2); None without embeddings."""
    usable: Optional[int] = None
    """With --all-frames: frames of the walk whose face passed the quality gates (None: not measured)."""
    usable_walker: Optional[int] = None
    """Of those, frames whose embedding matches the walker."""
    fused_all: Optional[Vote] = None
    """The fused counterfactual over every usable frame."""
    sightings: Tuple[Sighted, ...] = ()
    vectors: Tuple[Any, ...] = field(default=(), repr=False, compare=False)
    """The embeddings behind `votes` (numpy vectors, same order): only for `edge eval door --dump`."""


@dataclass(frozen=True)
class WalkResult:
    walk: Walk
    camera: str
    window: Tuple[float, float]
    events: Tuple[EventRecord, ...]
    diag: Optional[WalkDiag] = None


@dataclass(frozen=True)
class Outcome:
    walk: Walk
    hit: bool
    false_identity: bool
    unknown: bool
    """An unknown_face event came on the walk."""
    produced: Tuple[str, ...]
    latency_s: Optional[float]
    failure: Optional[str]
    diag: Optional[WalkDiag]
    wrong_people: Tuple[str, ...] = ()


def attribute(windows: Sequence[Tuple[str, float, float]], events: Sequence[EventRecord]) -> Tuple[Dict[int, List[EventRecord]], List[EventRecord]]:  # fmt: skip
    """Events by the index of the (camera, start, end) window holding them; and the events in no window."""
    found: Dict[int, List[EventRecord]] = {}
    stray: List[EventRecord] = []
    for event in events:
        index = next(
            (
                i
                for i, (cam, t0, t1) in enumerate(windows)
                if cam == event.camera_id and t0 - HALF <= event.at < t1 - HALF
            ),
            None,
        )
        if index is None:
            stray.append(event)
        else:
            found.setdefault(index, []).append(event)
    return found, stray


def explain(diag: Optional[WalkDiag], person_id: str, min_votes: int, vote_share: float) -> str:  # noqa: C901
    if diag is None:
        return "no_diagnostics"
    if diag.detected == 0:
        return "not_detected"
    if not diag.votes:
        return "no_embedding"
    mine_sighted = [s for s in diag.sightings if s.person_id == person_id]
    if mine_sighted:
        return f"sighting_{mine_sighted[0].outcome}"  # decided: an attendance rule dropped it, or another event
    if diag.fused is not None:
        if diag.fused.person_id not in (None, person_id):
            return "fused_names_other"
        return "fused_below_threshold" if diag.fused.person_id is None else "fused_enough_no_sighting"
    counts = Counter(v.person_id for v in diag.votes)
    mine = counts.get(person_id, 0)
    others = max((n for who, n in counts.items() if who not in (person_id, None)), default=0)
    if mine == 0 and others == 0:
        return "unknown_votes"
    if others > mine:
        return "wrong_votes"
    if len(diag.votes) >= min_votes and mine / len(diag.votes) >= vote_share:
        return "votes_enough_no_sighting"
    return "split_votes"


def outcome(result: WalkResult, min_votes: int = 2, vote_share: float = 0.6) -> Outcome:
    walk = result.walk
    named = [e for e in result.events if e.person_id is not None]
    mine = [e for e in named if walk.enrolled and e.person_id == walk.person_id]
    wrong = [e for e in named if not (walk.enrolled and e.person_id == walk.person_id)]
    produced = tuple(e.type for e in mine)
    hit = bool(walk.expected) and walk.expected[0] in produced
    latency = next((e.latency_s for e in mine if e.type == walk.expected[0]), None) if hit else None
    failure = None
    if walk.enrolled and not hit:
        failure = explain(result.diag, walk.person_id, min_votes, vote_share)
    return Outcome(
        walk=walk,
        hit=hit,
        false_identity=bool(wrong),
        unknown=any(e.type == "unknown_face" for e in result.events),
        produced=produced,
        latency_s=latency,
        failure=failure,
        diag=result.diag,
        wrong_people=tuple(sorted({str(e.person_id) for e in wrong})),
    )


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class ConditionRow:
    """The figures of one condition (or of all walks)."""

    walks: int = 0
    hits: int = 0
    false_identities: int = 0
    unknown: int = 0
    stranger_walks: int = 0
    stranger_named: int = 0
    stranger_unknown: int = 0
    latencies: List[float] = field(default_factory=list)
    embeddings: List[int] = field(default_factory=list)
    detected_share: List[float] = field(default_factory=list)
    failures: Counter = field(default_factory=Counter)  # type: ignore[type-arg]
    fused_right: int = 0
    fused_wrong: int = 0
    fused_stranger_named: int = 0
    usable: List[int] = field(default_factory=list)
    usable_walker: int = 0
    usable_enrolled: int = 0
    embedded_of_usable: int = 0
    fused_all_right: int = 0
    fused_all_wrong: int = 0
    fused_all_stranger_named: int = 0

    def add(self, o: Outcome) -> None:
        fused = o.diag.fused if o.diag is not None else None
        self._add_every_frame(o)
        if o.diag is not None:
            self.embeddings.append(len(o.diag.votes))
            self.detected_share.append(o.diag.detected / max(o.diag.frames, 1))
        if not o.walk.enrolled:
            self.stranger_walks += 1
            self.stranger_named += o.false_identity
            self.stranger_unknown += o.unknown
            self.fused_stranger_named += fused is not None and fused.person_id is not None
            return
        if fused is not None and fused.person_id is not None:
            self.fused_right += fused.person_id == o.walk.person_id
            self.fused_wrong += fused.person_id != o.walk.person_id
        self.walks += 1
        self.hits += o.hit
        self.false_identities += o.false_identity
        self.unknown += o.unknown
        if o.latency_s is not None:
            self.latencies.append(o.latency_s)
        if o.failure:
            self.failures[o.failure] += 1

    def _add_every_frame(self, o: Outcome) -> None:
        d = o.diag
        if d is None or d.usable is None:
            return
        self.usable.append(d.usable)
        self.embedded_of_usable += len(d.votes)
        named = d.fused_all.person_id if d.fused_all is not None else None
        if not o.walk.enrolled:
            self.fused_all_stranger_named += named is not None
            return
        self.usable_walker += d.usable_walker or 0
        self.usable_enrolled += d.usable
        self.fused_all_right += named == o.walk.person_id
        self.fused_all_wrong += named is not None and named != o.walk.person_id

    def every_frame_dict(self) -> Dict[str, object]:
        if not self.usable:
            return {}
        total = sum(self.usable)
        return {
            "usable_frames_per_pass": _round(statistics.fmean(self.usable)),
            "usable_frames_embedded_share": _round(self.embedded_of_usable / total) if total else None,
            "usable_frames_matching_walker_share": _round(self.usable_walker / self.usable_enrolled)
            if self.usable_enrolled
            else None,
            "fused_all_would_name_walker": self.fused_all_right,
            "fused_all_would_name_other": self.fused_all_wrong,
            "fused_all_would_name_stranger": self.fused_all_stranger_named,
        }

    def as_dict(self) -> Dict[str, object]:
        return {
            "passes": self.walks,
            "hits": self.hits,
            "pass_recall": round(self.hits / self.walks, 4) if self.walks else None,
            "false_identities": self.false_identities + self.stranger_named,
            "false_identities_enrolled": self.false_identities,
            "enrolled_reported_unknown": self.unknown,
            "stranger_passes": self.stranger_walks,
            "stranger_named": self.stranger_named,
            "stranger_reported_unknown": self.stranger_unknown,
            "latency_p50_s": _round(percentile(self.latencies, 0.5)),
            "latency_p95_s": _round(percentile(self.latencies, 0.95)),
            "embeddings_per_pass": _round(statistics.fmean(self.embeddings)) if self.embeddings else None,
            "detected_frame_share": _round(statistics.fmean(self.detected_share)) if self.detected_share else None,
            "failures": dict(self.failures.most_common()),
            "fused_would_name_walker": self.fused_right,
            "fused_would_name_other": self.fused_wrong,
            "fused_would_name_stranger": self.fused_stranger_named,
            **self.every_frame_dict(),
        }


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)


def summarize(results: Sequence[WalkResult], stray: Sequence[EventRecord], min_votes: int = 2,
              vote_share: float = 0.6) -> Dict[str, Any]:  # fmt: skip
    """The benchmark's figures: per condition, all together, per attendance rule, and the failures explained."""
    rows: Dict[str, ConditionRow] = {}
    total = ConditionRow()
    rules: Dict[str, Counter] = {}  # type: ignore[type-arg]
    outcomes = []
    for result in results:
        o = outcome(result, min_votes, vote_share)
        outcomes.append(o)
        rows.setdefault(o.walk.condition, ConditionRow()).add(o)
        total.add(o)
        for kind in o.walk.expected:
            counter = rules.setdefault(kind, Counter())
            counter["expected"] += 1
            counter["produced"] += kind in o.produced
    return {
        "conditions": {name: row.as_dict() for name, row in rows.items()},
        "all": total.as_dict(),
        "rules": {kind: dict(c) for kind, c in rules.items()},
        "stray_events": [e.__dict__ for e in stray],
        "genuine_scores": genuine_scores(outcomes),
        "misses": [miss_record(o) for o in outcomes if (o.walk.enrolled and not o.hit) or o.false_identity],
    }


def genuine_scores(outcomes: Sequence[Outcome]) -> Dict[str, object]:
    """How the walkers' own gallery scores sit, over every embedding of enrolled walks, per condition."""
    out: Dict[str, object] = {}
    by_condition: Dict[str, List[float]] = {}
    for o in outcomes:
        if o.walk.enrolled and o.diag is not None:
            by_condition.setdefault(o.walk.condition, []).extend(
                v.walker_score for v in o.diag.votes if v.walker_score is not None
            )
    for name, scores in by_condition.items():
        out[name] = {
            "embeddings": len(scores),
            "p10": _round(percentile(scores, 0.1)),
            "p50": _round(percentile(scores, 0.5)),
            "p90": _round(percentile(scores, 0.9)),
        }
    return out


def miss_record(o: Outcome) -> Dict[str, object]:
    d = o.diag
    return {
        "walk_id": o.walk.walk_id,
        "person_id": o.walk.person_id,
        "enrolled": o.walk.enrolled,
        "condition": o.walk.condition,
        "pattern": o.walk.pattern,
        "photo": o.walk.photo.name,
        "expected": list(o.walk.expected),
        "produced": list(o.produced),
        "wrong_people": list(o.wrong_people),
        "failure": o.failure,
        "frames": d.frames if d else None,
        "detected": d.detected if d else None,
        "first_px": round(d.first_px) if d else None,
        "tracks": d.tracks if d else None,
        "fused": _vote_list(d.fused if d else None),
        "usable": d.usable if d else None,
        "usable_walker": d.usable_walker if d else None,
        "fused_all": _vote_list(d.fused_all if d else None),
        "sightings": [[x.person_id, x.frames, x.outcome] for x in (d.sightings if d else ())],
        "votes": [
            [
                round(v.t, 1),
                v.person_id,
                round(v.score, 3),
                None if v.walker_score is None else round(v.walker_score, 3),
            ]
            for v in (d.votes if d else ())
        ],
    }


def _vote_list(vote: Optional[Vote]) -> Optional[List[object]]:
    return None if vote is None else [vote.person_id, round(vote.score, 3), _round(vote.walker_score)]
