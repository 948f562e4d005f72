"""The reference preprocessing of the MiniFASNet anti-spoofing models: a context crop of the FULL camera frame.

The models look at what surrounds the face (a phone's bezel, a paper edge, the hand holding it), so the crop is the
detector box scaled ``scale`` times around its centre (2.7x for MiniFASNetV2, 4.0x for MiniFASNetV1SE). Where the
scaled box does not fit the image the factor is shrunk until it does, and the window is then shifted to lie inside
the image: a crop is never padded (a black border would look like a screen's bezel). The window, like the box, is
not square in general; it is resized to ``size`` x ``size`` as is. This is Silent-Face-Anti-Spoofing's
``CropImage._get_new_box`` (src/generate_patches.py) step for step, pixel for pixel.
"""

from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

from edge.faces import Box

# (x0, y0, x1, y1): pixel columns x0..x1 and rows y0..y1, both ends included, all inside the image.
Window = Tuple[int, int, int, int]


def crop_window(width: int, height: int, box: Box, scale: float) -> Window:
    """The window of an image of ``width`` x ``height`` pixels that ``context_crop`` resizes (ends included)."""
    if width < 2 or height < 2:
        raise ValueError(f"image too small for a context crop: {width}x{height}")
    if not (box.w >= 1.0 and box.h >= 1.0):
        raise ValueError(f"face box too small for a context crop: {box.w}x{box.h}")
    if not scale > 0:
        raise ValueError(f"crop scale must be > 0, got {scale}")
    scale = min((height - 1) / box.h, (width - 1) / box.w, scale)
    new_w, new_h = box.w * scale, box.h * scale
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0, y0 = cx - new_w / 2, cy - new_h / 2
    x1, y1 = cx + new_w / 2, cy + new_h / 2
    if x0 < 0:
        x1 -= x0
        x0 = 0
    if y0 < 0:
        y1 -= y0
        y0 = 0
    if x1 > width - 1:
        x0 -= x1 - width + 1
        x1 = width - 1
    if y1 > height - 1:
        y0 -= y1 - height + 1
        y1 = height - 1
    # The shrunk factor makes the window at most (width-1) x (height-1): a shift never pushes it out again.
    return max(int(x0), 0), max(int(y0), 0), int(x1), int(y1)


def context_crop(image: np.ndarray, box: Box, scale: float, size: int = 80) -> np.ndarray:
    """The ``size`` x ``size`` BGR uint8 crop of the full frame ``image`` around ``box`` scaled ``scale`` times."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 BGR uint8 image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    x0, y0, x1, y1 = crop_window(width, height, box, scale)
    window = image[y0 : y1 + 1, x0 : x1 + 1]
    return cv2.resize(window, (size, size))
