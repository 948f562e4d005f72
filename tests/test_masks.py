"""Tests of edge.masks: synthetic surgical masks drawn from detector keypoints (for enrollment augmentation)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.evaluate import LFW_CANONICAL_KEYPOINTS, canonical_detection, central_face
from edge.faces import Box, Detection
from edge.masks import STYLE_NAMES, draw_mask, mask_polygon, style_for

NOSE, MOUTH, RIGHT_EYE, LEFT_EYE = 2, 3, 0, 1


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(250, 250, 3), dtype=np.uint8)


def _rotated(det: Detection, degrees: float) -> Detection:
    centre = det.keypoints.mean(axis=0)
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), degrees, 1.0)
    kp = (det.keypoints @ m[:, :2].T + m[:, 2]).astype(np.float32)
    return Detection(box=det.box, score=det.score, keypoints=kp)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = a.astype(int) - b.astype(int)
    return np.abs(diff).reshape(a.shape[0], a.shape[1], -1).max(axis=2) > 0


def _bbox(det: Detection, margin: int = 2) -> tuple:
    poly = mask_polygon(det)
    x0, y0 = np.floor(poly.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(poly.max(axis=0)).astype(int) + margin
    return x0, y0, x1, y1


@pytest.mark.parametrize("degrees", [0.0, 20.0, -35.0, 180.0])
@pytest.mark.parametrize("style", STYLE_NAMES)
def test_mask_covers_nose_and_mouth_not_eyes(style: str, degrees: float) -> None:
    det = _rotated(canonical_detection(250, 250), degrees)
    poly = mask_polygon(det).astype(np.float32)
    for i in (NOSE, MOUTH):
        assert cv2.pointPolygonTest(poly, tuple(map(float, det.keypoints[i])), True) > 5
    for i in (RIGHT_EYE, LEFT_EYE):
        assert cv2.pointPolygonTest(poly, tuple(map(float, det.keypoints[i])), True) < -3
    image = _image()
    out = draw_mask(image, det, style)
    changed = _changed(out, image)
    for i in (NOSE, MOUTH):
        x, y = np.round(det.keypoints[i]).astype(int)
        assert changed[y - 2 : y + 3, x - 2 : x + 3].all()
    for i in (RIGHT_EYE, LEFT_EYE):
        x, y = np.round(det.keypoints[i]).astype(int)
        assert not changed[y - 2 : y + 3, x - 2 : x + 3].any()


def test_mask_reaches_below_the_chin() -> None:
    det = canonical_detection(250, 250)
    eyes_y = float(det.keypoints[:2, 1].mean())
    mouth_y = float(det.keypoints[MOUTH, 1])
    bottom = float(mask_polygon(det)[:, 1].max())
    # the chin is about half the eyes -> mouth distance below the mouth
    assert bottom > mouth_y + 0.5 * (mouth_y - eyes_y)


@pytest.mark.parametrize("style", STYLE_NAMES)
def test_unchanged_outside_bounding_box_and_input_untouched(style: str) -> None:
    det = _rotated(canonical_detection(250, 250), 15.0)
    image = _image(1)
    before = image.copy()
    out = draw_mask(image, det, style)
    assert np.array_equal(image, before)
    assert out is not image and out.shape == image.shape and out.dtype == np.uint8
    x0, y0, x1, y1 = _bbox(det)
    outside = np.ones(image.shape[:2], dtype=bool)
    outside[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = False
    assert np.array_equal(out[outside], image[outside])
    assert _changed(out, image).sum() > 0.5 * cv2.contourArea(mask_polygon(det).astype(np.float32))


def test_deterministic() -> None:
    det = canonical_detection(250, 250)
    image = _image(2)
    assert np.array_equal(draw_mask(image, det, "white"), draw_mask(image, det, "white"))
    assert style_for("Aaron_Peirsol/Aaron_Peirsol_0001.jpg") == style_for("Aaron_Peirsol/Aaron_Peirsol_0001.jpg")
    styles = {style_for(f"Person_{i}/Person_{i}_0001.jpg") for i in range(60)}
    assert styles == set(STYLE_NAMES)


def test_grey_bgr_stays_grey_and_grey_2d_works() -> None:
    det = canonical_detection(250, 250)
    grey = cv2.cvtColor(_image(3), cv2.COLOR_BGR2GRAY)
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    for style in STYLE_NAMES:
        out = draw_mask(bgr, det, style)
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
        assert _changed(out, bgr).any()
        out2 = draw_mask(grey, det, style)
        assert out2.shape == grey.shape
        assert np.array_equal(out2, out[..., 0])


def test_rejects_bad_input() -> None:
    det = canonical_detection(250, 250)
    with pytest.raises(ValueError, match="style"):
        draw_mask(_image(), det, "paisley")
    with pytest.raises(ValueError, match="uint8"):
        draw_mask(_image().astype(np.float32), det, "blue")
    same_eyes = LFW_CANONICAL_KEYPOINTS.copy()
    same_eyes[1] = same_eyes[0]
    with pytest.raises(ValueError, match="eye"):
        draw_mask(_image(), Detection(Box(0, 0, 10, 10), 1.0, same_eyes), "blue")


@pytest.mark.data
def test_masked_lfw_face_is_still_detected_near_its_keypoints(data: Path) -> None:
    from edge.detect import DetectorConfig, FaceDetector
    from edge.images import read_image

    path = data / "lfw-view1" / "lfw-deepfunneled" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    image = read_image(path)
    with FaceDetector(DetectorConfig(num_threads=1)) as detector:
        face = central_face(detector.detect(image), 250, 250)
        assert face is not None
        masked = draw_mask(image, face, style_for(path.name))
        again = central_face(detector.detect(masked), 250, 250)
    assert again is not None
    eye_dist = float(np.hypot(*(face.keypoints[1] - face.keypoints[0])))
    assert np.hypot(*(again.keypoints[:2] - face.keypoints[:2]).T).max() < 0.2 * eye_dist
