"""Pick the matcher threshold for a site's own gallery (`edge calibrate`): how often would a stranger be named?

A stranger is named when their face (the track's fused template) scores at least the threshold against one of the
gallery's N people. Every enrolled photo is a stranger to the other people, so the gallery itself measures that:

    impostor scores   every photo against every OTHER person (best of their photos)
    p(t)              share of those scores >= t; above their 99.9th percentile u, the tail is extrapolated as an
                      exponential, p(t) = 0.001 * exp(-(t - u) / beta), beta = the mean excess over u (peaks over
                      threshold), so rates far below one in the number of pairs can still be estimated
    false identity    rate per stranger pass against a gallery of N people = 1 - (1 - p(t)) ** N
    threshold         the smallest t whose rate is at most the target

On the shared data (LFW people, 1,000-person galleries) this predicts the door benchmark: at 0.45 it expects
3.6-4.1% of strangers named, the benchmark's fused counterfactual named 4%. People with several photos also give
genuine scores (each photo against the person's other photos): the share that would pass at t (photo to photo;
walks at a door score lower). Pure numpy over the stored embeddings; no model is run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge.errors import EdgeError
from edge.gallery.store import Gallery

TAIL_QUANTILE = 0.999
GRID = tuple(round(0.30 + 0.005 * i, 3) for i in range(121))  # 0.30 .. 0.90
CHUNK = 512
TEMPLATE_SOURCE = "template"
"""Source of a person's fused enrollment template (edge.enroll): not a photo, so not a probe of its own."""


@dataclass(frozen=True)
class Row:
    threshold: float
    false_identity_rate: float
    genuine_pass: Optional[float]


@dataclass(frozen=True)
class Calibration:
    people: int
    photos: int
    impostor_scores: int
    genuine_scores: int
    gallery_size: int
    target_rate: float
    threshold: float
    expected_rate: float
    tail_start: float
    tail_scale: float
    table: Tuple[Row, ...]


def stored_photos(gallery: Gallery, model_id: str) -> Tuple[List[str], np.ndarray]:
    """(person id per photo, unit vectors) of the gallery's photo embeddings for `model_id` (templates left out)."""
    rows = gallery.db.execute(
        "SELECT person_id, vector FROM embeddings WHERE model_id = ? AND source != ? ORDER BY person_id, id",
        [model_id, TEMPLATE_SOURCE],
    ).fetchall()
    if not rows:
        raise EdgeError(f"the gallery has no embeddings of model {model_id}: enroll people first")
    vectors = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    return [r[0] for r in rows], vectors


def scores(person_ids: Sequence[str], vectors: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(impostor scores: each photo against each other person's best photo; genuine scores: each photo against
    its own person's other photos, best of them)."""
    people = sorted(set(person_ids))
    if len(people) < 2:
        raise EdgeError("calibration needs at least 2 enrolled people")
    column = {p: i for i, p in enumerate(people)}
    owner = np.asarray([column[p] for p in person_ids])
    order = np.argsort(owner, kind="stable")
    owner, vectors = owner[order], vectors[order]
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    ends = np.r_[starts[1:], len(owner)]
    impostor: List[np.ndarray] = []
    genuine: List[float] = []
    for lo in range(0, len(vectors), CHUNK):
        sims = vectors[lo : lo + CHUNK] @ vectors.T
        mine = owner[lo : lo + CHUNK]
        for k, person in enumerate(mine):
            own = np.arange(starts[person], ends[person])
            others = own[own != lo + k]
            if len(others):
                genuine.append(float(sims[k, others].max()))
            sims[k, own] = -1.0  # not an impostor of itself (nor of its own person)
        best = np.maximum.reduceat(sims, starts, axis=1)
        best[np.arange(len(mine)), mine] = np.nan
        impostor.append(best[~np.isnan(best)])
    return np.concatenate(impostor), np.asarray(genuine, dtype=np.float64)


def tail_model(impostor: np.ndarray) -> Tuple[float, float]:
    """(u, beta) of the exponential tail above the 99.9th percentile of the impostor scores."""
    u = float(np.quantile(impostor, TAIL_QUANTILE))
    excess = impostor[impostor > u] - u
    return u, float(excess.mean()) if len(excess) else 0.01


def pair_rate(impostor: np.ndarray, u: float, beta: float, t: float) -> float:
    """Share of impostor comparisons scoring >= t (empirical below u, the fitted tail above)."""
    if t <= u:
        return float(np.mean(impostor >= t))
    return (1.0 - TAIL_QUANTILE) * math.exp(-(t - u) / max(beta, 1e-6))


def calibrate(gallery: Gallery, model_id: str, gallery_size: Optional[int] = None, target_rate: float = 0.001) -> Calibration:
    """The threshold whose expected false-identity rate per stranger pass, against `gallery_size` people (default:
    the gallery's own), is at most `target_rate`."""
    if not 0.0 < target_rate < 1.0:
        raise EdgeError(f"target rate must be within 0..1 (exclusive), got {target_rate}")
    person_ids, vectors = stored_photos(gallery, model_id)
    impostor, genuine = scores(person_ids, vectors)
    people = len(set(person_ids))
    n = gallery_size or people
    u, beta = tail_model(impostor)
    table = []
    for t in GRID:
        rate = 1.0 - (1.0 - pair_rate(impostor, u, beta, t)) ** n
        passing = float(np.mean(genuine >= t)) if len(genuine) else None
        table.append(Row(t, rate, passing))
    chosen = next((r for r in table if r.false_identity_rate <= target_rate), table[-1])
    return Calibration(
        people=people, photos=len(person_ids), impostor_scores=len(impostor), genuine_scores=len(genuine),
        gallery_size=n, target_rate=target_rate, threshold=chosen.threshold,
        expected_rate=chosen.false_identity_rate, tail_start=u, tail_scale=beta, table=tuple(table),
    )  # fmt: skip


def format_calibration(c: Calibration) -> str:
    lines = [
        f"{c.people} people, {c.photos} photos: {c.impostor_scores} impostor scores, {c.genuine_scores} genuine "
        f"(people with several photos); tail above {c.tail_start:.3f} fitted with scale {c.tail_scale:.4f}",
        f"gallery size {c.gallery_size}, target false-identity rate {c.target_rate:g} per stranger pass",
        "",
        f"{'threshold':>9} {'false id rate':>13} {'genuine pass':>12}",
    ]
    shown: Dict[float, Row] = {r.threshold: r for r in c.table if round(r.threshold * 1000) % 50 == 0}
    shown[c.threshold] = next(r for r in c.table if r.threshold == c.threshold)
    for t in sorted(shown):
        r = shown[t]
        genuine = "-" if r.genuine_pass is None else f"{r.genuine_pass:.3f}"
        mark = "  <- chosen" if t == c.threshold else ""
        lines.append(f"{t:>9.3f} {r.false_identity_rate:>13.2e} {genuine:>12}{mark}")
    lines += [
        "",
        f"matcher.fused_threshold: {c.threshold:.3f}  (expected false-identity rate {c.expected_rate:.2e} per "
        f"stranger pass, about {c.expected_rate * 1000:.2f} in 1,000)",
    ]
    return "\n".join(lines)


def as_dict(c: Calibration) -> Dict[str, object]:
    return {
        "people": c.people, "photos": c.photos, "impostor_scores": c.impostor_scores,
        "genuine_scores": c.genuine_scores, "gallery_size": c.gallery_size, "target_rate": c.target_rate,
        "threshold": c.threshold, "expected_rate": c.expected_rate, "tail_start": c.tail_start,
        "tail_scale": c.tail_scale,
        "table": [{"threshold": r.threshold, "false_identity_rate": r.false_identity_rate,
                   "genuine_pass": r.genuine_pass} for r in c.table],
    }  # fmt: skip
