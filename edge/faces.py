"""Frozen dataclasses passed between the recognition stages: detector -> aligner -> embedder -> matcher, and the
liveness verdict that travels with a track into the attendance events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

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


VERDICTS = ("real", "spoof", "undecided")


@dataclass(frozen=True)
class Verdict:
    """A track's liveness: the median of its frames' p_real, how many frames were scored, and the verdict."""

    p_real: Optional[float]
    frames: int
    verdict: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict: must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")
        if self.frames < 0:
            raise ValueError(f"frames: must be >= 0, got {self.frames}")
        if self.p_real is not None and not 0.0 <= self.p_real <= 1.0:
            raise ValueError(f"p_real: must be in [0, 1] or None, got {self.p_real}")

    @property
    def suspect(self) -> bool:
        return self.verdict == "spoof"
