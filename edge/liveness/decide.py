"""Liveness decisions, pure: which detections are worth scoring, and the per-track verdict from frame scores.

Defaults, measured with the shipped models (README "Liveness" has the tables; scripts/liveness_robustness.py):

- threshold 0.5: genuine camera frames (Hamilton clip, 528 faces at every yaw; 26 still faces) never scored below
  0.56; the sample attacks score 0.02 (print) and 0.34 (tablet), the head-and-shoulders composites 0.00-0.48.
- max_yaw_deg 35: on LFW View 1 (4,992 genuine press photos) the share called spoof is 0.21 up to 20 degrees and
  0.25-0.27 from 20 to 35 (none rise on the Hamilton clip). 25 was the first choice, but then an attack held at
  an angle is never scored (the sample print, turned ~34 degrees, gave an undecided verdict, which counts as usual
  even under enforce); the small rise in genuine faces flagged is the price of scoring it.
- min_face_px 80: genuine camera frames downscaled to 40 px faces never scored below the threshold, but on LFW the
  share called spoof grows below 100 px (0.17 at the original ~109 px, 0.26 at 80, 0.31 at 60, 0.45 at 40) and
  synthetic attacks start to pass or be missed at 60 px and below; at 80 px Lin-Manuel still has 80 of his 131
  frames in the Hamilton clip.
- the scoring gate (`judgeable`, on the face box of the full frame): min_sharpness 6, min_contrast 28,
  max_clipped 0.08. Blur, low contrast and over-exposure make genuine faces look like spoofs (LFW View 1: 0.17 called
  spoof as they are, 0.54 at Gaussian blur sigma 1.5, 0.85 at sigma 3, 0.40 at contrast x0.5, 0.34 at brightness
  x1.6; the Hamilton stills 1-2 faces at sigma 3, x1.6, contrast x0.5), so such faces are not scored at all. On the
  originals the gate declines 0.08 of the Hamilton stills, 0.06 of the clip's faces of 80 px and more, 0.04 of LFW;
  it declines 0.25-1.0 of the blurred, 0.70-1.0 of the contrast x0.5 and 0.98-1.0 of the brightness x1.6 faces
  of the Hamilton sets (none left called spoof) and no sample attack or caught composite (the softest, a screen showing
  alex-lacamoire.png, has sharpness 6.2; the tablet image_F2.jpg has 0.06 of its face clipped by glare).
  scripts/liveness_robustness.py has the table.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from edge.faces import Box, Detection, Verdict
from edge.quality import estimate_yaw

POLICIES = ("off", "shadow", "flag", "enforce")

# BlazeFace keypoint rows (edge.faces.KEYPOINT_NAMES).


@dataclass(frozen=True)
class LivenessConfig:
    """Settings of the liveness stage.

    policy: off (never scored) | shadow (evidence recorded, nothing changes) | flag (suspect events marked for
        review) | enforce (a suspect entry becomes a spoof_attempt event).
    threshold: a frame whose fused p_real is below it counts as a spoof frame; the track verdict compares the
        median of its frames' p_real with it.
    frames: at most this many frames are scored per track.
    min_frames: fewest scored frames for a verdict (fewer: "undecided").
    max_yaw_deg: only faces turned less than this (estimated from the detector keypoints) are scored.
    min_face_px: only faces whose detector box is at least this wide (pixels of the full frame) are scored.
    min_sharpness: the scoring gate (``judgeable``): faces blurrier than this (``FaceCues.sharpness``) are not
        scored; 0 turns the check off.
    min_contrast: faces whose grey levels vary less than this (standard deviation; under-exposed or washed-out
        faces) are not scored; 0 turns the check off.
    max_clipped: faces with more than this share of pixels clipped (a channel >= 250: over-exposed) are not
        scored; 1 turns the check off.
    num_threads: LiteRT threads of the two models.
    """

    policy: str = "shadow"
    threshold: float = 0.5
    frames: int = 5
    min_frames: int = 3
    max_yaw_deg: float = 35.0
    min_face_px: float = 80.0
    min_sharpness: float = 6.0
    min_contrast: float = 28.0
    max_clipped: float = 0.08
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy: must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        _check_number("threshold", self.threshold, 0.0, 1.0)
        _check_int("frames", self.frames, 1, 100)
        _check_int("min_frames", self.min_frames, 1, 100)
        if self.min_frames > self.frames:
            raise ValueError(f"min_frames: must be <= frames ({self.frames}), got {self.min_frames}")
        _check_number("max_yaw_deg", self.max_yaw_deg, 0.0, 90.0)
        _check_number("min_face_px", self.min_face_px, 0.0, 10000.0)
        _check_range("min_sharpness", self.min_sharpness, 0.0, 100000.0)
        _check_range("min_contrast", self.min_contrast, 0.0, 128.0)
        _check_range("max_clipped", self.max_clipped, 0.0, 1.0)
        _check_int("num_threads", self.num_threads, 1, 64)


def _check_number(name: str, value: object, low: float, high: float) -> None:
    """``value`` is a finite number with low < value <= high (threshold: low < value < high)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    upper_ok = value < high if name == "threshold" else value <= high
    if not (value > low and upper_ok):
        bracket = ")" if name == "threshold" else "]"
        raise ValueError(f"{name}: must be in ({low:g}, {high:g}{bracket}, got {value!r}")


def _check_range(name: str, value: object, low: float, high: float) -> None:
    """``value`` is a finite number with low <= value <= high."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name}: must be in [{low:g}, {high:g}], got {value!r}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name}: must be in [{low}, {high}], got {value!r}")


CUE_PX = 128
"""The face box is read with a pixel stride that leaves at most about this many columns (a 1080p face of 400 px is
read every 3rd pixel: ~0.2 ms), close to the pixel scale the models see through their unsmoothed resize."""


@dataclass(frozen=True)
class FaceCues:
    """What the scoring gate looks at in the face box of the full frame (grey, native pixels, strided).

    sharpness: the smaller of the variances of the horizontal and vertical second differences (a blurred face has
        little of either; motion blur along one axis removes one of them).
    contrast: the standard deviation of the grey levels.
    clipped: the share of pixels with a colour channel at 250 or more (over-exposed skin clips red first).
    """

    sharpness: float
    contrast: float
    clipped: float


def face_cues(image: np.ndarray, box: Box) -> FaceCues:
    """The gate's cues of the face ``box`` of the full BGR frame ``image`` (the box clamped to the image)."""
    height, width = image.shape[:2]
    x0, y0 = max(0, int(box.x)), max(0, int(box.y))
    x1, y1 = min(width, int(round(box.x + box.w))), min(height, int(round(box.y + box.h)))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return FaceCues(sharpness=0.0, contrast=0.0, clipped=0.0)
    stride = max(1, (x1 - x0) // CUE_PX)
    region = image[y0:y1:stride, x0:x1:stride]
    grey = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY).astype(np.float32)
    dxx = grey[:, 2:] - 2.0 * grey[:, 1:-1] + grey[:, :-2]
    dyy = grey[2:, :] - 2.0 * grey[1:-1, :] + grey[:-2, :]
    return FaceCues(
        sharpness=float(min(dxx.var(), dyy.var())),
        contrast=float(grey.std()),
        clipped=float((np.maximum(np.maximum(region[..., 0], region[..., 1]), region[..., 2]) >= 250).mean()),
    )


def judgeable(cues: FaceCues, config: LivenessConfig) -> Optional[str]:
    """Why the models cannot judge this face (None: they can): "blurred", "low_contrast" or "over_exposed"."""
    if cues.sharpness < config.min_sharpness:
        return "blurred"
    if cues.contrast < config.min_contrast:
        return "low_contrast"
    if cues.clipped > config.max_clipped:
        return "over_exposed"
    return None


# Depth of the nose tip in front of the eyes over the distance between the eyes (anthropometric: ~38 of ~63 mm).
def yaw_deg(detection: Detection) -> float:
    """Head yaw in degrees from the detector's eyes and nose tip (edge.quality.estimate_yaw: the same estimate the
    quality gates use; the ear keypoints are guessed on a turned face and overstated yaw ~1.5x on LFW)."""
    return estimate_yaw(detection.keypoints)


def gate(image: np.ndarray, detection: Detection, config: LivenessConfig) -> Optional[str]:
    """Why this face of the full frame ``image`` is not scored ("blurred", "low_contrast", "over_exposed"), or
    None. Cheap (~0.1-0.3 ms): strided grey pixels of the face box only."""
    return judgeable(face_cues(image, detection.box), config)


def frontal(detection: Detection, config: LivenessConfig) -> bool:
    """Whether a detection is worth scoring: wide enough and turned less than ``config.max_yaw_deg``."""
    if detection.box.w < config.min_face_px:
        return False
    return abs(yaw_deg(detection)) <= config.max_yaw_deg


def decide(scores: Sequence[float], config: LivenessConfig) -> Verdict:
    """The per-track verdict: the median p_real of the scored frames against ``config.threshold``; "undecided"
    with fewer than ``config.min_frames`` frames (one frame is never enough: a single blurred or turned frame of a
    real face can score low)."""
    values = [float(s) for s in scores]
    for s in values:
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"a liveness score must be in [0, 1], got {s}")
    if not values:
        return Verdict(p_real=None, frames=0, verdict="undecided")
    median = float(statistics.median(values))
    if len(values) < config.min_frames:
        return Verdict(p_real=median, frames=len(values), verdict="undecided")
    return Verdict(p_real=median, frames=len(values), verdict="real" if median >= config.threshold else "spoof")
