"""Open-set matching of one embedding against the gallery (pure, vectorised with numpy)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class MatcherConfig:
    """When a face is someone: best score >= threshold AND best minus the runner-up person >= margin."""

    threshold: float = 0.45
    """Smallest cosine similarity to the best person (calibrate with `edge eval lfw`)."""
    margin: float = 0.05
    """Smallest lead of the best person over the second-best person."""
    top_k: int = 3
    """How many candidate people to report."""
    fused_threshold: float = 0.55
    """Smallest cosine similarity of a track's fused template to the best person (the daemon's decision; pick it
    for the gallery's size with `edge calibrate`: a 1,000-person gallery needs a higher one than a 50-person one)."""
    fused_margin: float = 0.05
    """Smallest lead of the best person over the second-best for a track's fused template."""

    @property
    def fused(self) -> MatcherConfig:
        """The settings a track's fused template is matched with."""
        return replace(self, threshold=self.fused_threshold, margin=self.fused_margin)

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be within -1..1, got {self.threshold}")
        for name in ("margin", "fused_margin"):
            if not 0.0 <= getattr(self, name) <= 2.0:
                raise ValueError(f"{name} must be within 0..2, got {getattr(self, name)}")
        if not -1.0 <= self.fused_threshold <= 1.0:
            raise ValueError(f"fused_threshold must be within -1..1, got {self.fused_threshold}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


@dataclass(frozen=True)
class Candidate:
    person_id: str
    score: float


@dataclass(frozen=True)
class Match:
    """The verdict for one face: `person_id` is None when the face is unknown."""

    person_id: Optional[str]
    score: float
    margin: float
    candidates: Tuple[Candidate, ...]

    @property
    def known(self) -> bool:
        return self.person_id is not None


class GalleryIndex:
    """Embeddings of one model, grouped by person, ready for matching.

    Rows are kept sorted by person so the best score per person is one `np.maximum.reduceat`.
    """

    def __init__(self, person_ids: Sequence[str], vectors: np.ndarray, version: int = 0) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(person_ids) != len(vectors):
            raise ValueError(f"need one person id per embedding row, got {len(person_ids)} ids, {vectors.shape}")
        order = np.argsort(np.asarray(person_ids, dtype=object), kind="stable")
        ids_sorted = [person_ids[i] for i in order]
        self.vectors = np.ascontiguousarray(vectors[order])
        self.version = version
        starts = [i for i in range(len(ids_sorted)) if i == 0 or ids_sorted[i] != ids_sorted[i - 1]]
        self.people: Tuple[str, ...] = tuple(ids_sorted[i] for i in starts)
        self._starts = np.asarray(starts, dtype=np.intp)

    def __len__(self) -> int:
        return len(self.vectors)

    def person_scores(self, embedding: np.ndarray) -> np.ndarray:
        """Best cosine similarity of `embedding` to each person (order of `self.people`)."""
        if not len(self.vectors):
            return np.zeros(0, dtype=np.float32)
        sims = self.vectors @ np.asarray(embedding, dtype=np.float32)
        return np.maximum.reduceat(sims, self._starts)

    def match(self, embedding: np.ndarray, config: MatcherConfig) -> Match:
        scores = self.person_scores(embedding)
        k = min(config.top_k, len(scores))
        if k == 0:
            return Match(person_id=None, score=0.0, margin=0.0, candidates=())
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        candidates = tuple(Candidate(self.people[i], float(scores[i])) for i in top)
        best = candidates[0].score
        if len(scores) > 1:
            second = candidates[1].score if k > 1 else float(np.partition(scores, len(scores) - 2)[-2])
        else:
            second = 0.0  # no runner-up: measure the lead over an unrelated face (cosine ~0)
        margin = best - second
        known = best >= config.threshold and margin >= config.margin
        return Match(
            person_id=candidates[0].person_id if known else None, score=best, margin=margin, candidates=candidates
        )
