"""The headline figures, measured on the real data with the shipped models: LFW View 1 verification and masked-face
detection. These are the slowest tests (about three minutes together)."""

from __future__ import annotations

import glob
import json
import subprocess
import sys
from pathlib import Path

import cv2

from edge.detect import DetectorConfig, FaceDetector


def test_lfw_view1_accuracy_with_the_shipped_model(data: Path) -> None:
    lfw = data / "lfw-view1"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge",
            "eval",
            "lfw",
            "--json",
            "--train-pairs",
            str(lfw / "pairsDevTrain.txt"),
            "--pairs",
            str(lfw / "pairsDevTest.txt"),
            "--images",
            str(lfw / "lfw-deepfunneled"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
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
