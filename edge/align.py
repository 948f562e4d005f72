"""Similarity-transform alignment of a detected face onto the embedding model's 112x112 template (pure)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.faces import Detection

# ArcFace 112x112 template, in the order of the detector keypoints we use:
# the image-left eye (the subject's right eye), the image-right eye, the nose tip and the mouth centre.
# The mouth centre is the midpoint of the template's two mouth corners.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [56.1396, 92.2848],
    ],
    dtype=np.float32,
)
TEMPLATE_SIZE = 112
# Indices into the detector's six keypoints that map onto ARCFACE_112.
ALIGN_KEYPOINTS = (0, 1, 2, 3)


@dataclass(frozen=True)
class AlignedFace:
    """A face warped onto the template: `image` is BGR uint8 of shape (size, size, 3); `matrix` maps source -> crop."""

    image: np.ndarray
    matrix: np.ndarray


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src points onto dst (Umeyama).

    Returns a 2x3 float64 matrix. Deterministic, unlike a RANSAC estimate, and exact for 2+ distinct points.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two matching (N>=2, 2) point arrays, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var <= 1e-12:
        raise ValueError("source points are all the same point")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_var
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def align(image_bgr: np.ndarray, detection: Detection, size: int = TEMPLATE_SIZE) -> AlignedFace:
    """Warp the face in `image_bgr` onto the template (scaled to `size`)."""
    src = detection.keypoints[list(ALIGN_KEYPOINTS)]
    dst = ARCFACE_112 * (size / TEMPLATE_SIZE)
    matrix = similarity_transform(src, dst)
    crop = cv2.warpAffine(image_bgr, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return AlignedFace(image=crop, matrix=matrix)
