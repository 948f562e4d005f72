"""Synthetic surgical-style face masks drawn from the detector's keypoints (pure, deterministic).

Used by scripts/eval_masked.py to measure masked-face recognition on LFW View 1 with SYNTHESIZED masks (the mask is
drawn before detection, as in real life). It was also measured as enrollment augmentation (one extra embedding of
each enrolled photo with a mask drawn on it): that raised masked genuine scores but raised masked strangers' scores
as much, so it is not wired into enrollment (see the script's report).

The mask is a filled polygon placed in a face frame built from the keypoints (edge.faces.KEYPOINT_NAMES):
origin at the midpoint of the eyes, x along the eye line, y perpendicular to it towards the mouth, unit = the
distance between the eyes. It covers from the nose bridge (below the eyes) to below the chin, and from ear to ear
(the ears' positions follow head turn, clipped to a plausible width). Thin darker lines mimic the pleats.
"""

from __future__ import annotations

import hashlib
from typing import Dict, Tuple

import cv2
import numpy as np

from edge.faces import Detection

# Mask colours (B, G, R) and their pleat colours.
STYLES: Dict[str, Tuple[Tuple[int, int, int], Tuple[int, int, int]]] = {
    "blue": ((225, 200, 160), (195, 170, 130)),
    "white": ((238, 238, 236), (205, 205, 203)),
    "black": ((38, 36, 36), (20, 18, 18)),
}
STYLE_NAMES = tuple(STYLES)

# Face-frame geometry, in units of the eye distance (y is measured down from the eye line).
TOP_OF_MOUTH = 0.30  # top edge at the nose bridge: this fraction of the eyes -> mouth-centre distance
BOTTOM_OF_MOUTH = 1.62  # bottom edge below the chin: this multiple of the eyes -> mouth-centre distance
MIN_HALF_WIDTH = 0.7
MAX_HALF_WIDTH = 1.5
SUPERSAMPLE_SHIFT = 4  # fixed-point bits for cv2.fillPoly (sub-pixel vertex positions)


def style_for(name: str) -> str:
    """A mask style chosen deterministically from a name (e.g. an image file name): stable across runs."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return STYLE_NAMES[digest[0] % len(STYLE_NAMES)]


def _frame(keypoints: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Origin (eye midpoint), unit x (image-left eye -> image-right eye), unit y (towards the chin), eye distance."""
    kp = np.asarray(keypoints, dtype=np.float64)
    right_eye, left_eye = kp[0], kp[1]
    origin = (right_eye + left_eye) / 2.0
    across = left_eye - right_eye
    dist = float(np.hypot(*across))
    if dist < 1e-6:
        raise ValueError("the two eye keypoints coincide: cannot place a mask")
    ux = across / dist
    uy = np.array([-ux[1], ux[0]])
    # uy must point from the eyes towards the mouth; flip the frame for an upside-down face
    if float(np.dot(kp[3] - origin, uy)) < 0:
        uy = -uy
    return origin, ux, uy, dist


def mask_polygon(detection: Detection) -> np.ndarray:
    """The mask outline in image pixels, float64 array of shape (N, 2)."""
    origin, ux, uy, dist = _frame(detection.keypoints)
    local = (np.asarray(detection.keypoints, dtype=np.float64) - origin) @ np.stack([ux, uy], axis=1) / dist
    nose_x = float(local[2, 0])
    mouth_y = float(np.clip(local[3, 1], 0.7, 1.6))  # eyes -> mouth-centre distance (about 1.15 frontal)
    centre = float(np.clip(0.5 * nose_x + 0.5 * local[3, 0], -0.5, 0.5))
    left = centre - float(np.clip(centre - local[4, 0], MIN_HALF_WIDTH, MAX_HALF_WIDTH))  # subject's right ear
    right = centre + float(np.clip(local[5, 0] - centre, MIN_HALF_WIDTH, MAX_HALF_WIDTH))  # subject's left ear
    top = TOP_OF_MOUTH * mouth_y
    bottom = BOTTOM_OF_MOUTH * mouth_y

    def at(frac: float) -> float:  # a point between the centre line (0) and the side (+-1)
        return centre + frac * ((right - centre) if frac > 0 else (centre - left))

    points = [
        (at(-1.0), top + 0.18),
        (at(-0.5), top + 0.05),
        (centre, top),
        (at(0.5), top + 0.05),
        (at(1.0), top + 0.18),
        (at(1.0), 0.55 * (top + bottom)),
        (at(0.8), bottom - 0.32),
        (at(0.4), bottom - 0.06),
        (centre, bottom),
        (at(-0.4), bottom - 0.06),
        (at(-0.8), bottom - 0.32),
        (at(-1.0), 0.55 * (top + bottom)),
    ]
    pts = np.array(points, dtype=np.float64)
    return origin + dist * (pts[:, :1] * ux + pts[:, 1:] * uy)


def _pleats(detection: Detection) -> np.ndarray:
    """Three short pleat lines across the mask, shape (3, 2, 2) in image pixels."""
    origin, ux, uy, dist = _frame(detection.keypoints)
    poly = (mask_polygon(detection) - origin) @ np.stack([ux, uy], axis=1) / dist
    top, bottom = float(poly[:, 1].min()), float(poly[:, 1].max())
    left, right = float(poly[:, 0].min()), float(poly[:, 0].max())
    lines = []
    for frac in (0.35, 0.5, 0.65):
        y = top + frac * (bottom - top)
        x0, x1 = left + 0.2 * (right - left), right - 0.2 * (right - left)
        lines.append([(x0, y), (x1, y)])
    local = np.array(lines, dtype=np.float64)
    return origin + dist * (local[..., :1] * ux + local[..., 1:] * uy)


def draw_mask(image_bgr: np.ndarray, detection: Detection, style: str = "blue") -> np.ndarray:
    """A copy of `image_bgr` with a surgical-style mask drawn over the face of `detection`.

    `image_bgr`: uint8, shape (H, W, 3) BGR or (H, W) grey; a grey image (or a BGR image whose three channels are
    equal) gets the mask in grey levels of the same brightness. `style`: one of STYLE_NAMES. The input is not
    modified; pixels outside the polygon's bounding box (plus one pixel of anti-aliasing) are unchanged.
    """
    if style not in STYLES:
        raise ValueError(f"mask style must be one of {', '.join(STYLE_NAMES)}, got {style!r}")
    image = np.asarray(image_bgr)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"need a uint8 (H, W, 3) BGR or (H, W) grey image, got {image.dtype} {image.shape}")
    fill, pleat = STYLES[style]
    grey = image.ndim == 2 or bool(
        np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    )
    if grey:
        fill = _grey(fill)
        pleat = _grey(pleat)
    out = image.copy()
    colour: Tuple[float, ...] = (float(fill[0]),) if image.ndim == 2 else tuple(float(c) for c in fill)
    pleat_colour: Tuple[float, ...] = (float(pleat[0]),) if image.ndim == 2 else tuple(float(c) for c in pleat)
    scale = float(1 << SUPERSAMPLE_SHIFT)
    polygon = np.round(mask_polygon(detection) * scale).astype(np.int32)
    cv2.fillPoly(out, [polygon], colour, lineType=cv2.LINE_AA, shift=SUPERSAMPLE_SHIFT)
    _, _, _, dist = _frame(detection.keypoints)
    thickness = max(1, int(round(dist / 40.0)))
    for line in _pleats(detection):
        a, b = np.round(line * scale).astype(np.int32)
        cv2.line(
            out, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), pleat_colour, thickness, cv2.LINE_AA, SUPERSAMPLE_SHIFT
        )
    return out


def _grey(bgr: Tuple[int, int, int]) -> Tuple[int, int, int]:
    level = int(round(0.114 * bgr[0] + 0.587 * bgr[1] + 0.299 * bgr[2]))
    return (level, level, level)
