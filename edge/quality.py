"""Quality gates for a detected face: every rejection carries a reason (pure functions)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from edge.faces import Detection


class Rejection(str, enum.Enum):
    """Why a face was not used for recognition."""

    TOO_SMALL = "too_small"
    BLURRED = "blurred"
    PROFILE = "profile"
    LOW_SCORE = "low_score"
    SEVERAL_FACES = "several_faces"
    NO_FACE = "no_face"


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the quality gates."""

    min_face_px: float = 64.0
    """Smallest accepted face, as the larger side of the detector box in source pixels. 64: a face smaller than this
    is tracked but not embedded. Once the detector's region sweep (edge.scene) found faces from ~35 px at 720p, a
    door walk's track spent its embedding budget on the far, small faces and fused a weak template (door benchmark,
    seed 2, 150 passes: recall 0.733 before the sweep, 0.680 with it at 24 px, 0.707 at 48 px, 0.720 at 64 px with
    p95 time to the event 2.10 -> 1.83 s; issue 9's note)."""
    min_sharpness: float = 15.0
    """Smallest accepted variance of the Laplacian of the grey 112x112 aligned crop."""
    max_yaw_deg: float = 50.0
    """Largest accepted head turn, estimated from the keypoints."""
    min_score: float = 0.5
    """Smallest accepted detector confidence."""

    def __post_init__(self) -> None:
        for name in ("min_face_px", "min_sharpness"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.max_yaw_deg <= 90:
            raise ValueError(f"max_yaw_deg must be within 0..90, got {self.max_yaw_deg}")
        if not 0 <= self.min_score <= 1:
            raise ValueError(f"min_score must be within 0..1, got {self.min_score}")


@dataclass(frozen=True)
class Quality:
    """Measured quality of one face and the verdict of the gates."""

    face_px: float
    sharpness: float
    yaw_deg: float
    score: float
    rejection: Optional[Rejection]

    @property
    def accepted(self) -> bool:
        return self.rejection is None

    @property
    def value(self) -> float:
        """A 0..1 summary used to weight votes and rank enrollment photos (higher is better)."""
        size = min(1.0, self.face_px / 112.0)
        sharp = min(1.0, self.sharpness / 200.0)
        frontal = max(0.0, math.cos(math.radians(self.yaw_deg)))
        return float(self.score * (0.4 * size + 0.3 * sharp + 0.3 * frontal))


EYE_NOSE_DEPTH = 0.6
"""How far the nose tip sits in front of the eyes' midpoint, in eye distances (the yaw model's one constant)."""


def estimate_yaw(keypoints: np.ndarray) -> float:
    """Head turn in degrees (0 = frontal, sign = direction) from the detector's eyes and nose tip: the nose tip
    EYE_NOSE_DEPTH eye-distances in front of the eyes' midpoint, both turning about a vertical axis, so the nose's
    offset from that midpoint along the eye line, over the eye distance, is EYE_NOSE_DEPTH * tan(yaw) (measured
    along the eye line, so roll does not change it).

    The ear tragions are not used: a turned face hides one ear and the detector then guesses it, so an estimate
    from the nose's place between the ears saturated at +-90 degrees for three-quarter views (LFW photos at 30-45
    degrees were rejected as profiles, and door walks of those people gave no embedding at all).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    r_eye, l_eye, nose = kp[0], kp[1], kp[2]
    axis = l_eye - r_eye
    distance = float(np.hypot(axis[0], axis[1]))
    if distance < 1e-6:
        return 90.0
    offset = float((nose - (l_eye + r_eye) / 2.0) @ (axis / distance))
    return math.degrees(math.atan2(offset / distance, EYE_NOSE_DEPTH))


def sharpness(aligned_bgr: np.ndarray) -> float:
    """Variance of the Laplacian of the grey aligned crop: low means blurred or flat."""
    grey = cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2GRAY) if aligned_bgr.ndim == 3 else aligned_bgr
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def assess(detection: Detection, aligned_bgr: np.ndarray, config: QualityConfig) -> Quality:
    """Measure a face and apply the gates in a fixed order (score, size, pose, blur)."""
    face_px = max(detection.box.w, detection.box.h)
    yaw = estimate_yaw(detection.keypoints)
    sharp = sharpness(aligned_bgr)
    rejection: Optional[Rejection] = None
    if detection.score < config.min_score:
        rejection = Rejection.LOW_SCORE
    elif face_px < config.min_face_px:
        rejection = Rejection.TOO_SMALL
    elif abs(yaw) > config.max_yaw_deg:
        rejection = Rejection.PROFILE
    elif sharp < config.min_sharpness:
        rejection = Rejection.BLURRED
    return Quality(face_px=face_px, sharpness=sharp, yaw_deg=yaw, score=detection.score, rejection=rejection)
