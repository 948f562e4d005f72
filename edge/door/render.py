"""Rendering door walks: a photo's face, cut out with a soft edge, walking toward a 720p door camera down a plain
corridor, growing from ~40 to ~200 px, under a condition; the clip encoded as H.264 with ffmpeg.

A walk: the face's size follows a person walking at constant speed toward the camera (size ~ 1 / distance: far
frames are many and small), its centre drifts toward the middle of the frame with a small sway and bob. Every walk
has the door camera's own blur (motion during a 1/50 s exposure), sensor noise and H.264 compression (CRF 28);
a condition adds one thing:

    unmasked    nothing more
    masked      a surgical-style mask drawn on the walking photo (edge.masks, from its keypoints)
    side_light  light from one side: 1.6x on the lit cheek down to 0.3x on the other, a warm cast
    blur        a 1/15 s exposure (4x the motion blur) and defocus
    low_light   the scene at 40% brightness (gamma) with strong sensor noise
    compressed  the walk's frames through H.264 at CRF 40 first (blocking, smeared detail)
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from edge.door.plan import FPS, GAP_S, Segment, Walk, frames_of
from edge.errors import EdgeError
from edge.faces import Detection
from edge.masks import draw_mask, style_for

WIDTH, HEIGHT = 1280, 720
FAR_PX, NEAR_PX = 40.0, 200.0
CRF = 28
COMPRESSED_CRF = 40
EXPOSURE = 0.2
"""Shutter open for this fraction of the frame interval (1/50 s at 10 fps)."""


@dataclass(frozen=True)
class Cutout:
    """A head cut out of a photo: colour and soft alpha (float32), with where its face box sits."""

    colour: np.ndarray
    alpha: np.ndarray
    face_w: float
    face_centre: Tuple[float, float]
    shirt: Tuple[int, int, int]


def cut_out(image: np.ndarray, face: Detection, condition: str, name: str) -> Cutout:
    """The head of `face` in `image` (BGR or grey), with the condition's mask or light applied to the photo."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if condition == "masked":
        image = draw_mask(image, face, style_for(name))
    box = face.box
    side = int(round(2.6 * max(box.w, box.h)))
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    matrix = np.array([[1.0, 0.0, side / 2.0 - cx], [0.0, 1.0, side / 2.0 - cy]])
    crop = cv2.warpAffine(image, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    centre = side / 2.0
    # the head: an ellipse a little wider than the face box, reaching up over the hair and down to the chin
    ex, ey = 0.62 * box.w, 0.82 * box.h
    inside = ((xs - centre) / ex) ** 2 + ((ys - (centre - 0.12 * box.h)) / ey) ** 2
    hard = np.clip((1.0 - inside) / 0.35, 0.0, 1.0).astype(np.float32)
    alpha = cv2.GaussianBlur(hard, (0, 0), max(0.5, 0.06 * box.w))
    colour = crop.astype(np.float32)
    if condition == "side_light":
        from_left = int.from_bytes(name.encode()[:1] or b"a", "big") % 2 == 0
        across = (np.arange(side, dtype=np.float32) - centre) / box.w  # -0.5 .. 0.5 over the face
        ramp = np.clip(0.95 - 1.3 * across, 0.3, 1.6)  # 1.6x on the lit cheek, 0.3x on the other
        gain = ramp if from_left else ramp[::-1]
        lit = colour * gain[None, :, None] * np.array([0.92, 1.0, 1.08], np.float32)
        colour = np.clip(lit, 0.0, 255.0).astype(np.float32)
    bottom = image[-max(2, image.shape[0] // 10) :].reshape(-1, 3).mean(axis=0)
    shirt = (int(bottom[0]), int(bottom[1]), int(bottom[2]))
    return Cutout(colour, alpha, float(box.w), (centre, centre), shirt)


def corridor(seed: int) -> np.ndarray:
    """A plain corridor seen from above a door (no faces): walls, floor, a far door, ceiling lights."""
    rng = np.random.default_rng(seed)
    tint = rng.uniform(0.85, 1.15, size=3)
    image = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    vanish = (WIDTH / 2.0, HEIGHT * 0.42)
    image[:] = np.array([150, 160, 170], np.float32) * tint
    floor = np.array([[0, HEIGHT], [WIDTH, HEIGHT], [vanish[0] + 90, vanish[1] + 60], [vanish[0] - 90, vanish[1] + 60]])
    cv2.fillPoly(image, [floor.astype(np.int32)], (95.0 * tint[0], 100.0 * tint[1], 105.0 * tint[2]))
    ceiling = np.array([[0, 0], [WIDTH, 0], [vanish[0] + 90, vanish[1] - 80], [vanish[0] - 90, vanish[1] - 80]])
    cv2.fillPoly(image, [ceiling.astype(np.int32)], (200.0, 205.0, 210.0))
    cv2.rectangle(image, (int(vanish[0] - 90), int(vanish[1] - 80)), (int(vanish[0] + 90), int(vanish[1] + 60)),
                  (70.0, 80.0, 95.0), -1)  # fmt: skip
    for k in range(1, 5):
        y = int(vanish[1] - 80 - (vanish[1] - 80) * (1 - 0.55**k))
        cv2.rectangle(image, (int(WIDTH / 2 - 40 * k), y - 3 * k), (int(WIDTH / 2 + 40 * k), y), (250.0,) * 3, -1)
    smooth = cv2.GaussianBlur(image, (0, 0), 2.0) + rng.normal(0.0, 4.0, size=image.shape).astype(np.float32)
    return np.clip(smooth, 0, 255).astype(np.uint8)


def face_size(u: float) -> float:
    """Face box width at fraction `u` of the walk: constant walking speed, size ~ 1 / distance."""
    return 1.0 / (1.0 / FAR_PX + (1.0 / NEAR_PX - 1.0 / FAR_PX) * u)


def walk_path(walk: Walk) -> List[Tuple[float, float, float]]:
    """(face centre x, y, face width) for each frame of the walk."""
    rng = np.random.default_rng(walk.seed)
    n = frames_of(walk.duration_s)
    x0, x1 = rng.uniform(0.3, 0.7) * WIDTH, rng.uniform(0.42, 0.58) * WIDTH
    y0, y1 = rng.uniform(0.36, 0.44) * HEIGHT, rng.uniform(0.38, 0.46) * HEIGHT
    phase = rng.uniform(0, 2 * np.pi)
    out = []
    for i in range(n):
        u = i / max(n - 1, 1)
        s = face_size(u)
        step = 2 * np.pi * i / 5.0 + phase  # about two steps a second
        out.append((x0 + (x1 - x0) * u + 0.08 * s * np.sin(step / 2), y0 + (y1 - y0) * u + 0.04 * s * np.sin(step), s))
    return out


def _motion_kernel(length: float) -> Optional[np.ndarray]:
    taps = int(round(length))
    if taps < 2:
        return None
    return np.full((1, taps), 1.0 / taps, np.float32)


def _paste(frame: np.ndarray, cutout: Cutout, x: float, y: float, s: float, blur: float, defocus: float) -> None:
    """Composite the cutout into `frame` (uint8, in place) with its face box centred at (x, y), s px wide."""
    scale = s / cutout.face_w
    side = max(2, int(round(cutout.alpha.shape[0] * scale)))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    colour = cv2.resize(cutout.colour, (side, side), interpolation=interp)
    alpha = cv2.resize(cutout.alpha, (side, side), interpolation=interp)
    kernel = _motion_kernel(blur)
    if kernel is not None:
        colour, alpha = cv2.filter2D(colour, -1, kernel), cv2.filter2D(alpha, -1, kernel)
    if defocus > 0.3:
        colour, alpha = cv2.GaussianBlur(colour, (0, 0), defocus), cv2.GaussianBlur(alpha, (0, 0), defocus)
    # torso below the head, in the photo's bottom colour
    cv2.ellipse(frame, (int(x), int(y + 1.9 * s)), (int(1.25 * s), int(1.35 * s)), 0, 0, 360,
                cutout.shirt, -1, cv2.LINE_AA)  # fmt: skip
    left, top = int(round(x - side / 2.0)), int(round(y - side / 2.0))
    fx0, fy0, fx1, fy1 = max(left, 0), max(top, 0), min(left + side, WIDTH), min(top + side, HEIGHT)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    a = alpha[fy0 - top : fy1 - top, fx0 - left : fx1 - left, None]
    c = colour[fy0 - top : fy1 - top, fx0 - left : fx1 - left]
    region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    frame[fy0:fy1, fx0:fx1] = np.clip(region * (1.0 - a) + a * c, 0.0, 255.0).astype(np.uint8)


class Noise:
    """Sensor noise from a small bank of precomputed frames, added with saturating uint8 arithmetic (fast); the
    bank is cycled with random horizontal shifts."""

    def __init__(self, seed: int, bank: int = 3) -> None:
        self.rng = np.random.default_rng(seed)
        self.unit = [self.rng.standard_normal((HEIGHT, WIDTH, 3)).astype(np.float32) for _ in range(bank)]
        self.banks: Dict[float, List[Tuple[np.ndarray, np.ndarray]]] = {}
        self.turn = 0

    def add(self, frame: np.ndarray, sigma: float) -> np.ndarray:
        bank = self.banks.get(sigma)
        if bank is None:
            scaled = [np.round(sigma * u) for u in self.unit]
            bank = self.banks[sigma] = [
                (np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)) for n in scaled
            ]
        plus, minus = bank[self.turn % len(bank)]
        self.turn += 1
        rows = int(self.rng.integers(0, HEIGHT))
        plus, minus = np.roll(plus, rows, axis=0), np.roll(minus, rows, axis=0)
        return cv2.subtract(cv2.add(frame, plus), minus)


LOW_LIGHT_LUT = np.clip(255.0 * np.power(np.arange(256) / 255.0, 1.6) * 0.6, 0, 255).astype(np.uint8)


def walk_frames(walk: Walk, cutout: Cutout, background: np.ndarray, noise: Noise) -> List[np.ndarray]:
    """The walk's frames then GAP_S of empty corridor, as BGR uint8 720p frames."""
    exposure = EXPOSURE * (4.0 if walk.condition == "blur" else 1.0)
    path = walk_path(walk)
    frames = []
    for i, (x, y, s) in enumerate(path):
        nx, ny, ns = path[min(i + 1, len(path) - 1)]
        speed = abs(nx - x) + abs(ny - y) + 0.5 * abs(ns - s)
        defocus = 0.015 * s if walk.condition == "blur" else 0.0
        frame = background.copy()
        _paste(frame, cutout, x, y, s, exposure * speed, defocus)
        frames.append(_finish(frame, walk.condition, noise))
    for _ in range(frames_of(walk.duration_s + GAP_S) - len(path)):
        frames.append(_finish(background.copy(), walk.condition, noise))
    if walk.condition == "compressed":
        frames = h264_roundtrip(frames, COMPRESSED_CRF)
    return frames


def _finish(frame: np.ndarray, condition: str, noise: Noise) -> np.ndarray:
    if condition == "low_light":
        return noise.add(cv2.LUT(frame, LOW_LIGHT_LUT), 9.0)
    return noise.add(frame, 2.5)


def ffmpeg_path() -> str:
    found = shutil.which("ffmpeg")
    if found is None:
        raise EdgeError("ffmpeg not found: the door benchmark encodes its clips with ffmpeg (apt install ffmpeg)")
    return found


class ClipWriter:
    """H.264 (libx264, yuv420p) mp4 at FPS from BGR frames, through an ffmpeg process (one encoder thread)."""

    def __init__(self, path: Path, crf: int = CRF) -> None:
        cmd = [ffmpeg_path(), "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
               "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-preset", "veryfast",
               "-crf", str(crf), "-pix_fmt", "yuv420p", "-threads", "1", str(path)]  # fmt: skip
        self.path = path
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(np.ascontiguousarray(frame).tobytes())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        if self.proc.wait() != 0:
            raise EdgeError(f"ffmpeg could not encode {self.path}: {err.strip()[-400:]}")


def h264_roundtrip(frames: List[np.ndarray], crf: int) -> List[np.ndarray]:
    """The frames after an H.264 encode at `crf` and a decode (what a starved camera stream does to them)."""
    with tempfile.TemporaryDirectory(prefix="edge-door-") as tmp:
        path = Path(tmp) / "walk.mp4"
        writer = ClipWriter(path, crf)
        for frame in frames:
            writer.write(frame)
        writer.close()
        cap = cv2.VideoCapture(str(path))
        out = []
        while True:
            ok, image = cap.read()
            if not ok:
                break
            out.append(image)
        cap.release()
    if len(out) != len(frames):
        raise EdgeError(f"H.264 round trip returned {len(out)} of {len(frames)} frames")
    return out


def render_segment(segment: Segment, cutouts: List[Cutout], path: Path) -> int:
    """Write the segment's clip to `path` (mp4); `cutouts` in the order of its walks. Returns frames written."""
    seed = segment.day * 101 + len(segment.name)
    background = corridor(seed)
    noise = Noise(seed)
    writer = ClipWriter(path)
    written = 0
    try:
        for walk, cutout in zip(segment.walks, cutouts):
            for frame in walk_frames(walk, cutout, background, noise):
                writer.write(frame)
                written += 1
        if not segment.walks:  # the closing clip: time passes in an empty corridor
            for _ in range(frames_of(segment.duration_s)):
                writer.write(_finish(background.copy(), "unmasked", noise))
                written += 1
    finally:
        writer.close()
    return written


def iter_walk_frames(walk: Walk, cutout: Cutout, seed: int = 0) -> Iterator[np.ndarray]:
    """One walk alone on a corridor (for looking at a rendering)."""
    yield from walk_frames(walk, cutout, corridor(seed), Noise(seed))
