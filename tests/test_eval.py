"""The headline figures, measured on the real data with the shipped models: LFW View 1 verification and masked-face
detection. These are the slowest tests (about three minutes together)."""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Any, Dict

import cv2
from support import run_edge

from edge.detect import DetectorConfig, FaceDetector


def eval_lfw(*args: str) -> Dict[str, Any]:
    """`edge eval lfw --json ARGS` through the real command; its JSON result."""
    done = run_edge("eval", "lfw", "--json", *args, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_lfw_view1_accuracy_with_the_shipped_model(data: Path) -> None:
    lfw = data / "lfw-view1"
    result = eval_lfw(
        "--train-pairs", str(lfw / "pairsDevTrain.txt"), "--pairs", str(lfw / "pairsDevTest.txt"),
        "--images", str(lfw / "lfw-deepfunneled"),
    )  # fmt: skip
    print({k: result[k] for k in ("accuracy", "threshold", "tar_at_far_1e-3", "no_face", "model_id")})
    assert {"accuracy", "threshold", "tar_at_far_1e-3", "no_face", "model_id"} <= set(result)
    assert result["pairs_count"] == 1000 and result["images"] == 4992
    assert result["accuracy"] >= 0.985
    assert result["tar_at_far_1e-3"] >= 0.9
    assert 0.2 < result["threshold"] < 0.6


def test_masked_faces_are_found_and_dogs_are_not_faces(data: Path) -> None:
    files = sorted(glob.glob(str(data / "rmfd-masked-detect" / "RWMFD_part_1" / "*" / "*.jpg")))
    assert len(files) >= 1193
    found = readable = 0
    with FaceDetector(DetectorConfig()) as detector:
        for name in files:
            image = cv2.imread(name)
            if image is None:
                continue
            readable += 1
            found += bool(detector.detect(image))
        dogs = detector.detect(cv2.imread(str(data / "dlib-faces" / "dogs.jpg")))
    share = found / readable
    print(f"masked: face found in {found}/{readable} = {share:.3f}")
    assert share >= 0.90
    assert dogs == []


def test_ten_fold_protocol_on_a_view2_format_file(tmp_path: Path, data: Path) -> None:
    """A View 2 style file (header `10 N`) gives the standard 10-fold mean and std (a small one made from View 1)."""
    lfw = data / "lfw-view1"
    lines = (lfw / "pairsDevTest.txt").read_text().splitlines()[1:]
    same, diff = [ln for ln in lines if len(ln.split()) == 3], [ln for ln in lines if len(ln.split()) == 4]
    body = [ln for k in range(10) for ln in same[3 * k : 3 * k + 3] + diff[3 * k : 3 * k + 3]]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("10 3\n" + "\n".join(body) + "\n")
    result = eval_lfw("--pairs", str(pairs), "--images", str(lfw / "lfw-deepfunneled"))
    assert result["protocol"] == "10-fold cross-validation"
    assert len(result["fold_accuracies"]) == 10 and len(result["fold_thresholds"]) == 10
    assert result["accuracy"] == sum(result["fold_accuracies"]) / 10
    assert result["accuracy"] >= 0.9 and result["accuracy_std"] >= 0.0
