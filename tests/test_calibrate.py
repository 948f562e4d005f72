"""Calibration from a gallery's own photos, and the enrollment consistency report (synthetic embeddings)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pytest

from edge.calibrate import calibrate, format_calibration
from edge.enroll import PhotoOutcome, PhotoResult, fused_template, judged
from edge.errors import EdgeError
from edge.gallery.store import Gallery, NewEmbedding, PersonRecord

MODEL = "test-model"


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def photo(v: np.ndarray, quality: float = 0.5, name: str = "p.jpg") -> NewEmbedding:
    return NewEmbedding(unit(v), MODEL, quality, f"photo:{name}")


def gallery_of(path: Path, people: int, seed: int = 3) -> Gallery:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(people):
        face = rng.normal(size=128)
        shots = [photo(face + 0.8 * rng.normal(size=128)) for _ in range(2 if i % 4 == 0 else 1)]
        records.append(PersonRecord(f"p{i:04d}", f"P {i}", tuple(shots)))
    gallery = Gallery(path)
    gallery.put_people(records)
    return gallery


def test_a_larger_gallery_needs_a_higher_threshold(tmp_path: Path) -> None:
    with gallery_of(tmp_path / "g.db", 300) as gallery:
        small = calibrate(gallery, MODEL, gallery_size=50, target_rate=0.001)
        large = calibrate(gallery, MODEL, gallery_size=5000, target_rate=0.001)
        loose = calibrate(gallery, MODEL, gallery_size=5000, target_rate=0.05)
    assert small.threshold < large.threshold and loose.threshold < large.threshold
    assert large.expected_rate <= 0.001 and small.people == 300 and small.genuine_scores == 2 * 75
    rates = [r.false_identity_rate for r in large.table]
    assert rates == sorted(rates, reverse=True)  # a higher threshold never names more strangers
    assert "<- chosen" in format_calibration(large)


def test_the_predicted_rate_matches_strangers_measured_apart(tmp_path: Path) -> None:
    with gallery_of(tmp_path / "g.db", 400) as gallery:
        result = calibrate(gallery, MODEL, target_rate=0.01)
        index = gallery.index(MODEL)
    rng = np.random.default_rng(99)  # strangers: never enrolled
    named = 0
    for _ in range(2000):
        named += float(index.person_scores(unit(rng.normal(size=128))).max()) >= result.threshold
    assert named / 2000 <= 3 * result.target_rate


def test_calibration_needs_people(tmp_path: Path) -> None:
    with Gallery(tmp_path / "g.db") as gallery, pytest.raises(EdgeError, match="enroll"):
        calibrate(gallery, MODEL)


def results_for(shots: List[NewEmbedding]) -> List[PhotoResult]:
    return [PhotoResult(f"{i}.jpg", PhotoOutcome.ENROLLED, quality=s.quality) for i, s in enumerate(shots)]


def test_a_photo_unlike_the_others_is_flagged_and_left_out_of_the_template() -> None:
    rng = np.random.default_rng(5)
    face, other = rng.normal(size=128), rng.normal(size=128)
    shots = [photo(face + 0.5 * rng.normal(size=128)) for _ in range(3)] + [photo(other)]
    results, kept = judged(results_for(shots), shots)
    assert [r.flagged for r in results] == [False, False, False, True]
    assert all(r.similarity is not None for r in results) and results[3].similarity < 0.3 < results[0].similarity
    assert len(kept) == 3
    template = fused_template(kept)
    assert template.source == "template" and abs(float(np.linalg.norm(template.vector)) - 1.0) < 1e-5
    assert float(template.vector @ unit(face)) > max(float(s.vector @ unit(face)) for s in shots[:3])


def test_two_photos_unlike_each_other_are_both_flagged_and_no_template() -> None:
    rng = np.random.default_rng(6)
    shots = [photo(rng.normal(size=128)), photo(rng.normal(size=128))]
    results, kept = judged(results_for(shots), shots)
    assert [r.flagged for r in results] == [True, True] and kept == []
