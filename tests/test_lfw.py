from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge import lfw
from edge.errors import EdgeError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    return path


def test_parses_view1_pairs(tmp_path: Path) -> None:
    parsed = lfw.parse_pairs(write(tmp_path, "1\nAnn 1 2\nAnn 1 Bob 3\n"))
    assert parsed.folds == 1
    assert parsed.pairs[0] == lfw.Pair("Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg", True)
    assert parsed.pairs[1] == lfw.Pair("Ann/Ann_0001.jpg", "Bob/Bob_0003.jpg", False)


def test_parses_view2_header(tmp_path: Path) -> None:
    body = "".join("A 1 2\n" if i % 2 == 0 else "A 1 B 1\n" for i in range(2 * 2 * 3))
    parsed = lfw.parse_pairs(write(tmp_path, "2 3\n" + body))
    assert (parsed.folds, parsed.per_fold, len(parsed.pairs)) == (2, 3, 12)


@pytest.mark.parametrize(
    "text, message",
    [("", "empty"), ("x y z\n", "header"), ("2\nA 1 2\n", "promises 4"), ("1\nA 1\nB 1 2\n", ":2:")],
)
def test_bad_pairs_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(EdgeError, match=message):
        lfw.parse_pairs(write(tmp_path, text))


def test_best_threshold_separates_when_possible() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    same = np.array([0, 0, 0, 1, 1, 1], dtype=bool)
    t = lfw.best_threshold(scores, same)
    assert 0.3 < t < 0.6
    assert lfw.accuracy(scores, same, t) == 1.0


def test_best_threshold_with_overlap_is_optimal() -> None:
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.normal(0.2, 0.1, 300), rng.normal(0.6, 0.1, 300)])
    same = np.concatenate([np.zeros(300, bool), np.ones(300, bool)])
    t = lfw.best_threshold(scores, same)
    grid = np.linspace(-0.5, 1.5, 4001)
    assert lfw.accuracy(scores, same, t) >= max(lfw.accuracy(scores, same, g) for g in grid)


def test_tar_at_far() -> None:
    impostors = np.linspace(0.0, 0.5, 1000)
    genuine = np.array([0.45, 0.55, 0.9, 0.49999, 0.51])
    scores = np.concatenate([impostors, genuine])
    same = np.concatenate([np.zeros(1000, bool), np.ones(5, bool)])
    tar, threshold = lfw.tar_at_far(scores, same, 1e-3)
    # one false accept is allowed among 1000 impostors: the threshold sits just above the second highest
    assert impostors[-2] < threshold <= impostors[-1]
    assert tar == pytest.approx(4 / 5)  # 0.45 is below the threshold


def test_k_fold_uses_other_folds_for_the_threshold() -> None:
    scores = np.tile([0.1, 0.9, 0.2, 0.8], 10)
    same = np.tile([False, True, False, True], 10)
    accs, thresholds = lfw.k_fold(scores, same, folds=10, per_fold=2)
    assert accs == [1.0] * 10
    assert all(0.2 < t < 0.8 for t in thresholds)
