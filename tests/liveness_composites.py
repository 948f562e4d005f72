"""Synthetic presentation attacks made from genuine frames, for wiring tests of the liveness stage.

Give them a ``head_and_shoulders`` crop of a genuine frame, as a phone screen or a print usually shows a person.
``print_on_wall``: the genuine image as a photo print (white margin, slightly turned) pinned on a plain wall, seen by
a 720p door camera. ``screen_with_bezel``: the genuine image on a phone/tablet (black bezel, a little glare) held in
front of a blurred room. Both are easy for the models (paper edge, bezel in view) and say nothing about real
attacks, which have none of these tells when held close; the point is that the path from a frame to a spoof verdict
works. ``write_composite_clip`` turns every frame of a video into one (a replayed attack for the daemon).
Deterministic: fixed geometry, no random numbers.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional, Tuple

import cv2
import numpy as np

from edge.faces import Box
from edge.liveness.crop import crop_window

FRAME = (720, 1280)  # height, width of the simulated camera frame


def head_and_shoulders(image: np.ndarray, box: Box, scale: float = 2.2) -> np.ndarray:
    """The part of ``image`` around the face ``box`` (scaled ``scale`` times, kept inside the image): what a phone
    held up to the camera, or a photo print of a person, usually shows."""
    x0, y0, x1, y1 = crop_window(image.shape[1], image.shape[0], box, scale)
    return image[y0 : y1 + 1, x0 : x1 + 1].copy()


def _fit(image: np.ndarray, height: int) -> np.ndarray:
    scale = height / image.shape[0]
    return cv2.resize(image, (max(1, round(image.shape[1] * scale)), height), interpolation=cv2.INTER_AREA)


def _paste_warped(background: np.ndarray, item: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """``item`` warped onto the quadrilateral ``corners`` (tl, tr, br, bl) of ``background``."""
    h, w = item.shape[:2]
    src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
    matrix = cv2.getPerspectiveTransform(src, np.float32(corners))
    size = (background.shape[1], background.shape[0])
    warped = cv2.warpPerspective(item, matrix, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), matrix, size, flags=cv2.INTER_NEAREST)
    out = background.copy()
    np.copyto(out, warped, where=mask[:, :, None] > 0)
    return out


def _quad(cx: float, cy: float, w: float, h: float, skew: float) -> np.ndarray:
    """A w x h rectangle centred at (cx, cy), its right side nearer the camera by ``skew`` (a slight turn)."""
    return np.array(
        [
            [cx - w / 2, cy - h / 2 + skew],
            [cx + w / 2, cy - h / 2 - skew],
            [cx + w / 2, cy + h / 2 + skew],
            [cx - w / 2, cy + h / 2 - skew],
        ]
    )


@lru_cache(maxsize=1)
def _wall() -> np.ndarray:
    height, width = FRAME
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    shade = 0.85 + 0.15 * (xs / width)  # light from one side
    wall = np.stack([170 * shade, 190 * shade, 205 * shade], axis=2)  # BGR beige
    wall += np.sin(xs / 3.0)[..., None] * 2 + np.cos(ys / 5.0)[..., None] * 2  # a little texture
    return np.clip(wall, 0, 255).astype(np.uint8)


def print_on_wall(genuine: np.ndarray, print_height: int = 420) -> np.ndarray:
    """A 720p frame of a wall with ``genuine`` printed (white margin) and pinned on it."""
    height, width = FRAME
    wall = _wall()
    photo = _fit(genuine, print_height)
    margin = max(8, print_height // 20)
    paper = cv2.copyMakeBorder(photo, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=(245, 248, 250))
    paper = cv2.convertScaleAbs(paper, alpha=0.92, beta=10)  # paper is duller than a screen
    ph, pw = paper.shape[:2]
    return _paste_warped(wall, paper, _quad(width * 0.5, height * 0.5, pw, ph, skew=pw * 0.03))


def screen_with_bezel(genuine: np.ndarray, screen_height: int = 420) -> np.ndarray:
    """A 720p frame of ``genuine`` shown on a tablet (black bezel, glare) held in front of a blurred room."""
    height, width = FRAME
    small = cv2.GaussianBlur(cv2.resize(genuine, (width // 8, height // 8), interpolation=cv2.INTER_AREA), (0, 0), 3)
    room = (cv2.resize(small, (width, height)).astype(np.float32) * 0.6).astype(np.uint8)  # out of focus, darker
    screen = _fit(genuine, screen_height)
    sh, sw = screen.shape[:2]
    glare = np.linspace(1.15, 0.95, sw, dtype=np.float32)[None, :, None] * np.float32([1.05, 1.0, 0.92])
    screen = np.clip(screen * glare + 8, 0, 255).astype(np.uint8)  # a glare across it, bluish, brighter
    bezel = max(12, screen_height // 14)
    device = cv2.copyMakeBorder(screen, bezel, bezel * 2, bezel, bezel, cv2.BORDER_CONSTANT, value=(18, 18, 20))
    dh, dw = device.shape[:2]
    return _paste_warped(room, device, _quad(width * 0.5, height * 0.5, dw, dh, skew=dw * 0.02))


# Where Lin-Manuel Miranda stands in the Hamilton clip while he faces the camera (frames ~82-212): x0, y0, x1, y1.
HAMILTON_LIN_MANUEL = (120, 10, 390, 250)


def write_composite_clip(
    source: Path, target: Path, kind: str = "screen", region: Optional[Tuple[int, int, int, int]] = None
) -> int:
    """Write ``target`` (mp4v) with every frame of ``source`` turned into a ``kind`` ("screen" or "print") attack
    at 720p and the source's frame rate; returns the number of frames. ``region`` (x0, y0, x1, y1) shows only that
    part of each frame (a person framed head and shoulders, e.g. HAMILTON_LIN_MANUEL); without it the whole frame
    is shown, and a face small in it is the weak case (no bezel or paper edge inside the crops: see README)."""
    make = {"screen": screen_with_bezel, "print": print_on_wall}[kind]
    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (FRAME[1], FRAME[0]))
    count = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if region is not None:
                frame = frame[region[1] : region[3], region[0] : region[2]]
            writer.write(make(frame))
            count += 1
    finally:
        capture.release()
        writer.release()
    return count
