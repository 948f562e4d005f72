from __future__ import annotations

import numpy as np
import pytest

from edge.match import GalleryIndex, MatcherConfig


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def index() -> GalleryIndex:
    rng = np.random.default_rng(0)
    base = unit(rng.normal(size=(3, 128)))
    vectors, ids = [], []
    for pid, b in zip(["carol", "alice", "bob"], base):
        for _ in range(3):
            vectors.append(unit(b + 0.3 * rng.normal(size=128) / np.sqrt(128)))
            ids.append(pid)
    return GalleryIndex(ids, np.array(vectors), version=7)


def test_best_score_per_person(index: GalleryIndex) -> None:
    probe = index.vectors[4]
    scores = dict(zip(index.people, index.person_scores(probe)))
    owner = index.people[int(np.argmax(list(scores.values())))]
    assert scores[owner] == pytest.approx(1.0, abs=1e-5)
    assert sorted(scores) == ["alice", "bob", "carol"]


def test_known_and_unknown(index: GalleryIndex) -> None:
    config = MatcherConfig(threshold=0.5, margin=0.05, top_k=2)
    match = index.match(index.vectors[0], config)
    assert match.known and match.person_id == index.people[0]
    assert len(match.candidates) == 2 and match.candidates[0].score >= match.candidates[1].score
    stranger = unit(np.random.default_rng(5).normal(size=128))
    unknown = index.match(stranger, config)
    assert unknown.person_id is None and unknown.score < 0.5


def test_margin_rejects_a_face_between_two_people() -> None:
    a, b = np.eye(4, dtype=np.float32)[0], np.eye(4, dtype=np.float32)[1]
    index = GalleryIndex(["a", "b"], np.stack([a, b]))
    between = unit(np.array([1.0, 0.97, 0.0, 0.0]))
    config = MatcherConfig(threshold=0.3, margin=0.05)
    match = index.match(between, config)
    assert match.person_id is None
    assert match.score >= 0.3 and match.margin < 0.05
    assert index.match(between, MatcherConfig(threshold=0.3, margin=0.0)).person_id == "a"


def test_threshold_alone_decides_with_one_person() -> None:
    index = GalleryIndex(["only"], np.eye(4, dtype=np.float32)[:1])
    assert index.match(np.eye(4, dtype=np.float32)[0], MatcherConfig(threshold=0.9)).person_id == "only"
    assert index.match(unit(np.array([1.0, 1.0, 1.0, 1.0])), MatcherConfig(threshold=0.9)).person_id is None


def test_empty_gallery_is_unknown() -> None:
    index = GalleryIndex([], np.zeros((0, 128), dtype=np.float32))
    match = index.match(unit(np.ones(128)), MatcherConfig())
    assert match.person_id is None and match.candidates == ()


def test_large_gallery_matches_the_right_person() -> None:
    rng = np.random.default_rng(1)
    vectors = unit(rng.normal(size=(100_000, 128)).astype(np.float32))
    ids = [f"p{i // 4:05d}" for i in range(100_000)]
    index = GalleryIndex(ids, vectors)
    assert len(index.people) == 25_000
    probe = unit(vectors[40_001] + 0.2 * rng.normal(size=128).astype(np.float32) / np.sqrt(128))
    match = index.match(probe, MatcherConfig(threshold=0.5, margin=0.1, top_k=5))
    assert match.person_id == "p10000"
    assert len(match.candidates) == 5


@pytest.mark.parametrize(
    "kwargs, field", [({"threshold": 1.5}, "threshold"), ({"margin": -0.1}, "margin"), ({"top_k": 0}, "top_k")]
)
def test_config_names_the_bad_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MatcherConfig(**kwargs)
