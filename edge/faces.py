"""Frozen dataclasses passed between the recognition stages: detector -> aligner -> embedder -> matcher."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Order of mediapipe's six face-detector keypoints (subject's right eye first).
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in pixels of the image it was found in."""

    x: float
    y: float
    w: float
    h: float

    def __post_init__(self) -> None:
        if self.w < 0 or self.h < 0:
            raise ValueError(f"Box width and height must be >= 0, got {self.w}x{self.h}")

    @property
    def area(self) -> float:
        return self.w * self.h

    def iou(self, other: Box) -> float:
        x1, y1 = max(self.x, other.x), max(self.y, other.y)
        x2 = min(self.x + self.w, other.x + other.w)
        y2 = min(self.y + self.h, other.y + other.h)
        inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Detection:
    """One face found by the detector: box, confidence and the six keypoints (pixels, shape (6, 2))."""

    box: Box
    score: float
    keypoints: np.ndarray

    def __post_init__(self) -> None:
        if self.keypoints.shape != (len(KEYPOINT_NAMES), 2):
            raise ValueError(f"Detection keypoints must have shape (6, 2), got {self.keypoints.shape}")
