from __future__ import annotations

import numpy as np
import pytest

from edge.align import ARCFACE_112, align, similarity_transform
from edge.faces import Box, Detection


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_recovers_a_known_similarity() -> None:
    angle, scale, shift = np.radians(17.0), 2.3, np.array([40.0, -12.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = np.array([[10.0, 20.0], [50.0, 22.0], [31.0, 45.0], [30.0, 70.0]])
    dst = src @ rot.T + shift
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_never_reflects() -> None:
    src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mirrored = src * np.array([-1.0, 1.0])
    matrix = similarity_transform(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_degenerate_points_are_refused() -> None:
    with pytest.raises(ValueError, match="same point"):
        similarity_transform(np.ones((4, 2)), ARCFACE_112)
    with pytest.raises(ValueError):
        similarity_transform(np.ones((4, 2)), np.ones((3, 2)))


def test_align_puts_keypoints_on_the_template() -> None:
    # A face drawn at 3x scale, rotated 10 degrees, somewhere in a 640x480 frame.
    angle = np.radians(10.0)
    rot = 3.0 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    keypoints4 = ARCFACE_112 @ rot.T + np.array([200.0, 100.0])
    ears = np.array([[keypoints4[0, 0] - 40, keypoints4[0, 1]], [keypoints4[1, 0] + 40, keypoints4[1, 1]]])
    det = Detection(Box(150, 80, 300, 300), 0.9, np.vstack([keypoints4, ears]).astype(np.float32))
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    for x, y in keypoints4.astype(int):
        image[y - 2 : y + 3, x - 2 : x + 3] = 255
    aligned = align(image, det)
    assert aligned.image.shape == (112, 112, 3)
    np.testing.assert_allclose(_apply(aligned.matrix, keypoints4), ARCFACE_112, atol=1e-3)
    for x, y in ARCFACE_112.round().astype(int):
        assert aligned.image[y, x].max() > 100, "a bright keypoint marker should land on its template point"
