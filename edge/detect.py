"""Face detection with mediapipe's BlazeFace models, without mediapipe.

The two detector models ship in ``models/`` (extracted from the pinned mediapipe wheel by
scripts/extract_detector.py; listed with their sha256 in ``models/manifest.yml``, checked at load):

* short range, ``face_detection_short_range.tflite``: 128x128 input, faces within ~2 m that fill much of the frame;
* full range, ``face_detection_full_range_sparse.tflite``: 192x192 input, smaller faces up to ~5 m.

They are run directly through LiteRT (edge.litert: ``ai_edge_litert``, else ``tflite_runtime``) rather than through
``mp.solutions.face_detection``: the legacy solution graph hard-codes a score floor (0.5 short range, 0.6 full
range) that ``min_detection_confidence`` cannot lower, and masked faces mostly score just above 0.5 in the full-range
model. The pre- and post-processing here reproduces the graph (letterboxing, SSD anchors, box/keypoint decoding,
weighted NMS); at the graph's thresholds it gives the same boxes, scores and keypoints as mediapipe (the parity test
in tests/test_detect.py, with mediapipe from the dev extra). The box never installs mediapipe.

Per frame, each pass warps the region it looks at straight into the model's small input tensor (one
``cv2.warpAffine``), so the full frame is never colour-converted or copied: the BGR->RGB swap happens on the
128x128 / 192x192 tensor. Passes (see ``DetectorConfig``):

* the whole image through the short-range model and/or the full-range model (``model``);
* small images only (longer side <= ``small_side``, e.g. web photos, crops, stills): one more full-range pass on
  the image padded with a black border, which finds faces that fill the frame;
* large images only (longer side > ``tile_above``, off by default): overlapping tiles through the full-range model
  for faces too small to see in the downscaled whole frame.

Detections of all passes are merged in image pixels with mediapipe's weighted NMS. Then each face that is small in
the image (``refine_below``) is looked at again at its own scale: a square region ``refine_context`` times the
face, through the short-range model, whose box and keypoints replace the whole-frame ones. A 90 px face in a 720p
frame is ~13 px in the full-range model's 192 px input: its keypoints are off by ~8% of the face width (24% at
60 px), enough to misalign the embedding's crop (cosine to the same photo aligned well 0.85, and 0.29 at 60 px);
the region pass brings the error to ~1.6% and the cosine to ~0.98 for ~1 ms per face (measured with
scripts/eval_detection.py-style pastes of LFW photos into a 1280x720 frame; see issue 8's note).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Literal, Optional, Sequence, Tuple

import cv2
import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError, ImageError, ModelError
from edge.faces import Box, Detection
from edge.litert import load_interpreter
from edge.manifest import DEFAULT_MODELS_DIR, DetectorModel, load_detector_models, verify_file

MODEL_CHOICES = ("short", "full", "both")

SHORT_RANGE_FILE = "face_detection_short_range.tflite"
FULL_RANGE_FILE = "face_detection_full_range_sparse.tflite"

# weighted_nms drops a detection with more than this share of its area inside a better-scoring one.
CONTAINED = 0.6

# A region of the source image to look at: (x0, y0, x1, y1) in pixels; it may extend past the image (black border).
Rect = Tuple[float, float, float, float]


@dataclass(frozen=True)
class Pass:
    """One look of the detector: a model over a region of the image (it may extend past the image: black there)."""

    model: Literal["short", "full"]
    rect: Rect
    focus: bool = False
    """A region around a face expected there (a live track's predicted box, ``refine_context`` times its size):
    scored with ``focus_min_score``; its faces are already measured at their own scale (no refine pass after)."""
    verify: bool = False
    """A region at close to native scale (edge.scene): a face only such passes found must be found again by the
    short-range model at its own scale (the refine view), and keeps the lower of the two scores. At native scale
    the full-range model calls some backs of heads faces with 0.8+; the two models rarely agree on one."""
    coasting: bool = False
    """Not run: ``rect`` is the predicted face of a live track that needs no precise measurement this frame (a
    decided track with nothing due, edge.scene): a small face the other passes find over it (IoU > 0.3) is kept as
    they measured it, not refined (tracking needs its box only; alignment and liveness need the refine view)."""


class DetectorConfigError(ConfigError, ValueError):
    """A DetectorConfig field is invalid; the message starts with the field name."""


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of FaceDetector. Defaults were chosen with scripts/eval_detection.py (see its docstring).

    model: "short", "full" or "both" models on the whole image.
    min_score: score threshold of the full-range model (tiles and small-image padding pass included).
    min_score_short: score threshold of the short-range model. It needs a higher one than the full-range model:
        at 0.5 it finds a "face" in dlib's dogs.jpg, at 0.6 one in a dlib crowd photo (none at 0.7).
    nms_iou: IoU above which detections (of any pass) are merged by weighted NMS.
    max_faces: keep at most this many detections, best first.
    small_side: images whose longer side is <= this many pixels get one more full-range pass on the image padded
        by ``small_pad`` (a fraction of width/height on every side); 0 disables it.
    small_pad: border fraction of that pass.
    tile_above: images whose longer side is > this many pixels are also cut into overlapping tiles of about
        ``tile_size`` pixels, each run through the full-range model; 0 disables tiling.
    tile_size: target tile side in pixels of the input image.
    tile_overlap: fraction of a tile shared with its neighbour.
    tile_min_score: score threshold in tiles (more, smaller views find more false faces than one whole view).
    refine_below: faces whose longer side is below this share of the image's longer side get the region pass
        (their box and keypoints measured again at the face's own scale): 0.2 = under ~38 px in the full-range
        model's 192 px view of the whole image, where its keypoints are off by 5-8% of the face; 0 disables it.
    refine_context: side of that square region, in face sizes (the short-range model sees the face at ~1/3 of
        its input, where its keypoints are best).
    refine_min_score: score threshold of the region pass (a face is already known to be there).
    focus_min_score: score threshold of a pass around a live track's predicted face (edge.scene): higher than
        refine_min_score, since nothing in this frame says a face is there yet.
    region_size: side in pixels of the squares edge.scene looks at close to native scale through the full-range
        model (a grid over the frame, neighbours overlapping by 30%, plus squares over the camera's door region),
        where something moved in the last ``region_memory_s``: a 48 px face is ~18 px of the model's 192 px input
        in a 512 px square, where the whole frame shrunk to it makes a 1080p frame's 48 px face 5 px. Frames whose
        longer side is under twice this get none (the whole-frame pass sees them at more than half that scale; on
        the 768x432 negative clip the squares added backs of heads the refine view confirmed, one of them an
        unknown_face event); 0 disables them. A face only these passes found must be found again by the refine view (``Pass.verify``).
        512 with 2 per frame: recall of faces >= 48 px vs YuNet on the Hamilton clip shrunk into a 1080p corner
        0.765 -> 1.0, on LFW faces entering a 1080p scene 0.72 -> 0.94 (scripts/bench_recall.py; issue 9's note).
    max_regions: most such squares looked at per frame, those waiting longest first (in turns).
    region_cycle: frames in which every square of a view busy all over is looked at once: ceil(squares / this) per
        frame, at most ``max_regions``. 8: a 1080p frame's 15 squares take 2 per frame, a 720p frame's 8 take 1
        (the cost of the sweep follows the frame's area: four 720p cameras with people cost ~85-100% of a core at
        2 per frame against ~60% without the sweep; issue 9's note).
    region_memory_s: a square stays due this long (seconds of the frames' clock) after something last moved in
        it: a face that keeps still where others move (an audience, a queue) is looked at until a track holds it.
    motion_gate: edge.scene compares each frame with the previous one at low resolution first; a frame with no
        change and no live track gets no detector pass at all (a whole-frame pass every ``idle_interval_s``).
    motion_width: width in pixels of that low-resolution image.
    motion_threshold: grey-level change (in the lightly blurred low-resolution image) that counts as motion.
    motion_cells: fewest changed low-resolution pixels that make a moving region (fewer are noise).
    idle_interval_s: with nothing moving and nothing tracked, a whole-frame pass this often anyway (seconds of the
        frames' own clock): a face that appeared without moving past the gate is found within this time.
    num_threads: LiteRT threads. 1: the models are tiny (128/192 px) and a second XNNPACK thread costs more CPU
        than it saves time (per invocation on a 2-core box, short/full range: 0.9/2.8 ms of CPU with one thread,
        1.6/4.2 ms with two, and no faster in wall time once the cores are shared); the pipeline's other work and
        the other cameras use the second core.
    model_dir: folder with manifest.yml and the two .tflite files it lists; None means edge's models/ (the config
        gives the embedder's models_dir when that is set: see edge.config).
    """

    model: Literal["short", "full", "both"] = "both"
    min_score: float = 0.5
    min_score_short: float = 0.7
    nms_iou: float = 0.3
    max_faces: int = 20
    small_side: int = 400
    small_pad: float = 0.25
    tile_above: int = 0
    tile_size: int = 640
    tile_overlap: float = 0.2
    tile_min_score: float = 0.6
    refine_below: float = 0.2
    refine_context: float = 3.0
    refine_min_score: float = 0.5
    focus_min_score: float = 0.6
    region_size: int = 512
    max_regions: int = 2
    region_memory_s: float = 3.0
    region_cycle: int = 8
    motion_gate: bool = True
    motion_width: int = 160
    motion_threshold: float = 16.0
    motion_cells: int = 4
    idle_interval_s: float = 2.0
    num_threads: int = 1
    model_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.model not in MODEL_CHOICES:
            raise DetectorConfigError(f"model: must be one of {', '.join(MODEL_CHOICES)}, got {self.model!r}")
        for name in ("min_score", "min_score_short", "tile_min_score", "refine_min_score", "focus_min_score"):
            _check_number(name, getattr(self, name), 0.0, 1.0, low_open=True, high_open=True)
        _check_number("refine_below", self.refine_below, 0.0, 1.0, low_open=False, high_open=False)
        _check_number("refine_context", self.refine_context, 1.5, 8.0, low_open=False, high_open=False)
        _check_number("nms_iou", self.nms_iou, 0.0, 1.0, low_open=True, high_open=False)
        _check_number("small_pad", self.small_pad, 0.0, 2.0, low_open=False, high_open=False)
        _check_number("tile_overlap", self.tile_overlap, 0.0, 0.5, low_open=False, high_open=False)
        _check_int("max_faces", self.max_faces, 1)
        _check_int("small_side", self.small_side, 0)
        _check_int("tile_above", self.tile_above, 0)
        _check_int("tile_size", self.tile_size, 32)
        _check_int("num_threads", self.num_threads, 1)
        _check_int("region_size", self.region_size, 0)
        if 0 < self.region_size < 64:
            raise DetectorConfigError(f"region_size: must be 0 (off) or >= 64, got {self.region_size!r}")
        _check_int("max_regions", self.max_regions, 0)
        _check_number("region_memory_s", self.region_memory_s, 0.0, 3600.0, low_open=False, high_open=False)
        _check_int("region_cycle", self.region_cycle, 1)
        _check_int("motion_width", self.motion_width, 16)
        _check_int("motion_cells", self.motion_cells, 1)
        _check_number("motion_threshold", self.motion_threshold, 0.0, 255.0, low_open=True, high_open=True)
        _check_number("idle_interval_s", self.idle_interval_s, 0.0, 3600.0, low_open=True, high_open=False)
        if not isinstance(self.motion_gate, bool):
            raise DetectorConfigError(f"motion_gate: must be true or false, got {self.motion_gate!r}")
        if self.model_dir is not None and not isinstance(self.model_dir, str):
            raise DetectorConfigError(f"model_dir: must be a path string or None, got {self.model_dir!r}")


def _check_number(name: str, value: object, low: float, high: float, *, low_open: bool, high_open: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise DetectorConfigError(f"{name}: must be a number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise DetectorConfigError(f"{name}: must be in {lo}{low}, {high}{hi}, got {value!r}")


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DetectorConfigError(f"{name}: must be an integer, got {value!r}")
    if value < low:
        raise DetectorConfigError(f"{name}: must be >= {low}, got {value!r}")


def detector_model(model_dir: Path, name: str, size: int) -> DetectorModel:
    """The manifest's entry for model file `name`, its file checked by sha256."""
    models = load_detector_models(model_dir)
    if name not in models:
        raise ModelError(f"{model_dir / 'manifest.yml'}: the detector section does not list {name}")
    model = models[name]
    if model.input_size != size:
        raise ModelError(f"{model_dir / 'manifest.yml'}: {name} input_size {model.input_size}, expected {size}")
    verify_file(model.path, model.sha256, "face-detection model")
    return model


def ssd_anchors(size: int, strides: Tuple[int, ...], interpolated_scale: bool) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1] as mediapipe's SsdAnchorsCalculator makes them with fixed_anchor_size."""
    centres = []
    layer = 0
    while layer < len(strides):
        per_cell = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            per_cell += 2 if interpolated_scale else 1
            last += 1
        cells = math.ceil(size / strides[layer])
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        centres.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], axis=1), per_cell, axis=0))
        layer = last
    return np.concatenate(centres).astype(np.float32)


class _BlazeFace:
    """One BlazeFace model: SxS RGB tensor in, boxes/keypoints (tensor pixels) and scores out."""

    def __init__(self, path: str, size: int, anchors: np.ndarray, num_threads: int) -> None:
        self.size = size
        self.anchors_px = anchors * size
        self._interpreter = load_interpreter(path, num_threads)
        (inp,) = self._interpreter.get_input_details()
        if tuple(inp["shape"]) != (1, size, size, 3):
            raise ModelError(f"{path}: expected input shape (1, {size}, {size}, 3), got {tuple(inp['shape'])}")
        self._input = inp["index"]
        outputs = sorted(self._interpreter.get_output_details(), key=lambda d: int(d["shape"][-1]))
        if len(outputs) != 2 or int(outputs[0]["shape"][1]) != len(anchors) or int(outputs[1]["shape"][-1]) != 16:
            raise ModelError(f"{path}: unexpected outputs {[tuple(d['shape']) for d in outputs]}")
        self._scores, self._boxes = outputs[0]["index"], outputs[1]["index"]

    def run(self, rgb: np.ndarray, min_score: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """rgb: (S, S, 3) uint8. Returns boxes (N, 4: x0 y0 x1 y1), keypoints (N, 6, 2), scores (N,), before NMS."""
        tensor = rgb.astype(np.float32)
        tensor *= 1.0 / 127.5
        tensor -= 1.0
        self._interpreter.set_tensor(self._input, tensor[None])
        self._interpreter.invoke()
        logits = self._interpreter.get_tensor(self._scores)[0, :, 0]
        # sigmoid(logit) >= min_score  <=>  logit >= log(p / (1 - p)); min_score is in (0, 1).
        keep = np.flatnonzero(logits >= math.log(min_score / (1.0 - min_score)))
        if keep.size == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0, 6, 2), np.float32), np.zeros(0, np.float32)
        raw = self._interpreter.get_tensor(self._boxes)[0, keep]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep], -100.0, 100.0)))
        # Regressors are in tensor pixels relative to the anchor centre: cx, cy, w, h, then 6 (x, y) keypoints.
        centre = self.anchors_px[keep]
        cx, cy = raw[:, 0] + centre[:, 0], raw[:, 1] + centre[:, 1]
        half_w, half_h = raw[:, 2] / 2, raw[:, 3] / 2
        boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
        keypoints = raw[:, 4:16].reshape(-1, 6, 2) + centre[:, None, :]
        return boxes, keypoints, scores.astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _inside_share(box: np.ndarray, other: np.ndarray) -> float:
    """Share of ``box``'s area that lies inside ``other``."""
    w = min(box[2], other[2]) - max(box[0], other[0])
    h = min(box[3], other[3]) - max(box[1], other[1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return float(max(w, 0.0) * max(h, 0.0) / area) if area > 0 else 1.0


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float, limit: int
) -> List[Tuple[np.ndarray, np.ndarray, float]]:
    """mediapipe's WEIGHTED non-max suppression: each kept detection is the score-weighted mean of the detections
    overlapping the best remaining one by more than ``iou``, with the best one's score. Best first.

    Also drops a merged detection lying mostly (> CONTAINED of its area) inside a better one already kept."""
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    alive = np.ones(len(scores), dtype=bool)
    kept: List[Tuple[np.ndarray, np.ndarray, float]] = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        group = alive & (_iou(boxes[i], boxes) > iou)
        group[i] = True
        weights = scores[group]
        total = float(weights.sum())
        box = (boxes[group] * weights[:, None]).sum(axis=0) / total
        kps = (keypoints[group] * weights[:, None, None]).sum(axis=0) / total
        alive &= ~group
        if any(_inside_share(box, other) > CONTAINED for other, _, _ in kept):
            continue  # a part of a face already kept (typically seen by a tile), not another face
        kept.append((box, kps, float(scores[i])))
        if len(kept) >= limit:
            break
    return kept


def _tiles(width: int, height: int, size: int, overlap: float) -> List[Rect]:
    """Overlapping tiles of about size x size covering the image (fewer, larger tiles along a short side)."""
    rects: List[Rect] = []
    step = size * (1.0 - overlap)
    nx = max(1, math.ceil((width - size) / step) + 1) if width > size else 1
    ny = max(1, math.ceil((height - size) / step) + 1) if height > size else 1
    tw = width / (nx - (nx - 1) * overlap)
    th = height / (ny - (ny - 1) * overlap)
    for j in range(ny):
        for i in range(nx):
            x0, y0 = i * tw * (1.0 - overlap), j * th * (1.0 - overlap)
            rects.append((x0, y0, x0 + tw, y0 + th))
    return rects


class FaceDetector:
    """Finds faces in BGR (or grayscale) uint8 images. Not thread-safe: use one detector per thread.

    >>> with FaceDetector(DetectorConfig()) as detector:
    ...     faces = detector.detect(frame)
    """

    def __init__(self, config: Optional[DetectorConfig] = None) -> None:
        self.config = config if config is not None else DetectorConfig()
        model_dir = Path(self.config.model_dir) if self.config.model_dir else DEFAULT_MODELS_DIR
        threads = self.config.num_threads
        self._short: Optional[_BlazeFace] = None
        self._full: Optional[_BlazeFace] = None
        if self.config.model in ("short", "both"):
            anchors = ssd_anchors(128, (8, 16, 16, 16), interpolated_scale=True)
            path = str(detector_model(model_dir, SHORT_RANGE_FILE, 128).path)
            self._short = _BlazeFace(path, 128, anchors, threads)
        if self.config.model in ("full", "both"):
            anchors = ssd_anchors(192, (4,), interpolated_scale=False)
            path = str(detector_model(model_dir, FULL_RANGE_FILE, 192).path)
            self._full = _BlazeFace(path, 192, anchors, threads)
        self._closed = False

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the interpreters. Idempotent; detect() afterwards raises RuntimeError."""
        self._short = None
        self._full = None
        self._closed = True

    def passes(self, width: int, height: int) -> List[Tuple[str, Rect]]:
        """The (model, region) passes detect() runs on an image of this size: whole image(s), then the padded
        small image or the tiles."""
        cfg = self.config
        whole: Rect = (0.0, 0.0, float(width), float(height))
        out: List[Tuple[str, Rect]] = []
        if self._short is not None:
            out.append(("short", whole))
        if self._full is not None:
            out.append(("full", whole))
        # Extra passes use the full-range model when it is loaded (it is the better one on those), else short range.
        extra = "full" if self._full is not None else "short"
        longest = max(width, height)
        if cfg.small_side and cfg.small_pad > 0 and longest <= cfg.small_side:
            px, py = cfg.small_pad * width, cfg.small_pad * height
            out.append((extra, (-px, -py, width + px, height + py)))
        if cfg.tile_above and longest > cfg.tile_above:
            tiles = _tiles(width, height, cfg.tile_size, cfg.tile_overlap)
            if len(tiles) > 1:
                out.extend((extra, rect) for rect in tiles)
        return out

    def detect(self, image_bgr: np.ndarray) -> List[Detection]:
        """Faces in an HxWx3 BGR (or HxW / HxWx1 grayscale) uint8 image, best score first.

        Boxes are clipped to the image; keypoints (right eye, left eye, nose tip, mouth centre, right ear, left ear)
        are in pixels of the input image and may lie slightly outside it.
        """
        image = _as_detector_input(image_bgr)
        height, width = image.shape[:2]
        return self.detect_in(image, [Pass(kind, rect) for kind, rect in self.passes(width, height)])  # type: ignore[arg-type]

    def detect_in(self, image_bgr: np.ndarray, passes: Sequence[Pass]) -> List[Detection]:
        """Faces found by the given passes (edge.scene plans them per frame), merged by weighted NMS, best first;
        then each small face is measured at its own scale (refine), unless a focus pass already measured it so or it
        is a coasting track's face (`Pass.coasting`: kept as found). No passes, no faces."""
        if self._closed:
            raise RuntimeError("FaceDetector is closed")
        image = _as_detector_input(image_bgr)
        height, width = image.shape[:2]
        all_boxes: List[np.ndarray] = []
        all_kps: List[np.ndarray] = []
        all_scores: List[np.ndarray] = []
        focused: List[Tuple[np.ndarray, np.ndarray]] = []
        trusted: List[np.ndarray] = []
        coasting = [look.rect for look in passes if look.coasting]
        for look in passes:
            if look.coasting:
                continue
            found = self._run_pass(image, look)
            if found is None:
                continue
            img_boxes, img_kps, scores = found
            all_boxes.append(img_boxes)
            all_kps.append(img_kps)
            all_scores.append(scores)
            if look.focus:
                focused.extend(zip(img_boxes, img_kps))
            if not look.verify:
                trusted.append(img_boxes)
        if not all_scores:
            return []
        merged = weighted_nms(
            np.concatenate(all_boxes),
            np.concatenate(all_kps),
            np.concatenate(all_scores),
            self.config.nms_iou,
            self.config.max_faces,
        )
        detections = []
        for box, points, score in merged:
            detection = _clipped(box, points, score, width, height)
            if detection is not None:
                detections.append(detection)
        if any(look.verify for look in passes):
            seen = np.concatenate(trusted) if trusted else np.zeros((0, 4), np.float32)
            detections = [v for v in (self._verified(image, d, seen, focused) for d in detections) if v is not None]
        if self.config.refine_below > 0:
            limit = self.config.refine_below * max(width, height)
            detections = [
                self._measured(image, d, focused, coasting) if max(d.box.w, d.box.h) < limit else d for d in detections
            ]
        return detections

    def _verified(
        self,
        image: npt.NDArray[np.uint8],
        detection: Detection,
        trusted: np.ndarray,
        focused: List[Tuple[np.ndarray, np.ndarray]],
    ) -> Optional[Detection]:
        """The detection as it is when a whole-frame or focus pass found it too; else the short-range model's view of
        it at its own scale (score: the lower of the two; added to ``focused``: no refine after), or None when that
        view finds no face there."""
        b = detection.box
        given = np.array([b.x, b.y, b.x + b.w, b.y + b.h], dtype=np.float32)
        if len(trusted) and float(_iou(given, trusted).max()) > 0.3:
            return detection
        found = self._own_scale(image, detection)
        if found is None:
            return None
        box, points, score = found
        focused.append((box, points))
        height, width = image.shape[:2]
        return _clipped(box, points, min(detection.score, score), width, height)

    def _run_pass(
        self, image: npt.NDArray[np.uint8], look: Pass
    ) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One pass: boxes (N, 4), keypoints (N, 6, 2) and scores in image pixels, faces cut by an inner region edge
        left out; None when it finds nothing."""
        height, width = image.shape[:2]
        model = self._short if look.model == "short" else self._full
        if model is None:  # a focus pass asks for the short-range model; only the full-range one is loaded
            model = self._full if self._full is not None else self._short
        assert model is not None
        if look.focus:
            min_score = self.config.focus_min_score
        else:
            min_score = self.config.min_score_short if model is self._short else self.config.min_score
            if _is_tile(look.rect, width, height):
                min_score = max(min_score, self.config.tile_min_score)
        tensor, scale, dx, dy = _letterbox(image, look.rect, model.size)
        boxes, kps, scores = model.run(tensor, min_score)
        if not scores.size:
            return None
        # Tensor pixels -> input image pixels.
        img_boxes = np.asarray((boxes - np.array([dx, dy, dx, dy])) / scale, dtype=np.float32)
        img_kps = np.asarray((kps - np.array([dx, dy])) / scale, dtype=np.float32)
        keep = _not_cut(img_boxes, look.rect, width, height)
        if not keep.any():
            return None
        return img_boxes[keep], img_kps[keep], scores[keep]

    def _measured(
        self,
        image: npt.NDArray[np.uint8],
        detection: Detection,
        focused: Sequence[Tuple[np.ndarray, np.ndarray]],
        coasting: Sequence[Rect] = (),
    ) -> Detection:
        """A small face's box and keypoints at its own scale: a focus pass's own measurement of it when there is one
        (the same view refine would take); as found when it is a coasting track's face (`over`); else refine."""
        b = detection.box
        given = np.array([b.x, b.y, b.x + b.w, b.y + b.h], dtype=np.float32)
        best, best_iou = None, 0.3
        for box, points in focused:
            iou = float(_iou(given, box[None])[0])
            if iou > best_iou:
                best, best_iou = (box, points), iou
        if best is None:
            return detection if over(detection.box, coasting) else self.refine(image, detection)
        height, width = image.shape[:2]
        measured = _clipped(best[0], best[1], detection.score, width, height)
        return measured if measured is not None else detection

    def refine(self, image_bgr: np.ndarray, detection: Detection) -> Detection:
        """The face measured again at its own scale: a square region `refine_context` times the face around its
        centre (black past the image's edge) through the short-range model (the full-range one when only it is
        loaded); the region's face that overlaps the given box most gives the box and keypoints (the score stays
        the whole-frame one). Unchanged when the region pass finds no such face."""
        image = _as_detector_input(image_bgr)
        found = self._own_scale(image, detection)
        if found is None:
            return detection
        height, width = image.shape[:2]
        measured = _clipped(found[0], found[1], detection.score, width, height)
        return measured if measured is not None else detection

    def _own_scale(
        self, image: npt.NDArray[np.uint8], detection: Detection
    ) -> Optional[Tuple[np.ndarray, np.ndarray, float]]:
        """Box, keypoints and score of the face the refine view finds over the detection (IoU > 0.3), or None."""
        model = self._short if self._short is not None else self._full
        assert model is not None
        b = detection.box
        half = self.config.refine_context * max(b.w, b.h) / 2.0
        cx, cy = b.x + b.w / 2.0, b.y + b.h / 2.0
        rect: Rect = (cx - half, cy - half, cx + half, cy + half)
        tensor, scale, dx, dy = _letterbox(image, rect, model.size)
        boxes, kps, scores = model.run(tensor, self.config.refine_min_score)
        if not scores.size:
            return None
        img_boxes = np.asarray((boxes - np.array([dx, dy, dx, dy])) / scale, dtype=np.float32)
        img_kps = np.asarray((kps - np.array([dx, dy])) / scale, dtype=np.float32)
        merged = weighted_nms(img_boxes, img_kps, scores, self.config.nms_iou, self.config.max_faces)
        given = np.array([b.x, b.y, b.x + b.w, b.y + b.h], dtype=np.float32)
        best: Optional[Tuple[np.ndarray, np.ndarray, float]] = None
        best_iou = 0.3
        for box, points, score in merged:
            iou = float(_iou(given, box[None])[0])
            if iou > best_iou:
                best, best_iou = (box, points, score), iou
        return best


def over(box: Box, rects: Sequence[Rect], min_iou: float = 0.3) -> bool:
    """Whether the box overlaps one of the rects (x0, y0, x1, y1) at IoU > ``min_iou``: a coasting track's face."""
    if not rects:
        return False
    given = np.array([box.x, box.y, box.x + box.w, box.y + box.h], dtype=np.float32)
    return float(_iou(given, np.asarray(rects, dtype=np.float32)).max()) > min_iou


def _clipped(box: np.ndarray, points: np.ndarray, score: float, width: int, height: int) -> Optional[Detection]:
    """A Detection with its box clipped to the image; None when less than a pixel of it is inside."""
    x0, x1 = float(np.clip(box[0], 0, width)), float(np.clip(box[2], 0, width))
    y0, y1 = float(np.clip(box[1], 0, height)), float(np.clip(box[3], 0, height))
    if x1 - x0 < 1.0 or y1 - y0 < 1.0:
        return None
    return Detection(box=Box(x0, y0, x1 - x0, y1 - y0), score=score, keypoints=points.astype(np.float32))


def _is_tile(rect: Rect, width: int, height: int) -> bool:
    return rect[0] > 0 or rect[1] > 0 or rect[2] < width or rect[3] < height


def _not_cut(boxes: np.ndarray, rect: Rect, width: int, height: int) -> np.ndarray:
    """Mask of boxes not cut by a region edge that lies inside the image (a tile's inner edge): a face cut there
    is a partial face, found whole by the neighbouring tile or the whole-image pass."""
    margin = 0.01 * max(rect[2] - rect[0], rect[3] - rect[1])
    keep = np.ones(len(boxes), dtype=bool)
    if rect[0] > 0:
        keep &= boxes[:, 0] > rect[0] + margin
    if rect[1] > 0:
        keep &= boxes[:, 1] > rect[1] + margin
    if rect[2] < width:
        keep &= boxes[:, 2] < rect[2] - margin
    if rect[3] < height:
        keep &= boxes[:, 3] < rect[3] - margin
    return keep


def _as_detector_input(image: np.ndarray) -> npt.NDArray[np.uint8]:
    """Validate; returns the image as HxWx3 BGR or HxW gray, C-contiguous uint8 (no copy when already so)."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy image array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ImageError(f"expected an HxWx3 BGR or HxW grayscale image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


def _letterbox(image: npt.NDArray[np.uint8], rect: Rect, size: int) -> Tuple[np.ndarray, float, float, float]:
    """Warp region ``rect`` of the image, aspect kept and centred, into a size x size RGB tensor (black outside the
    image). Returns (tensor, scale, dx, dy) with tensor_xy = image_xy * scale + (dx, dy)."""
    x0, y0, x1, y1 = rect
    scale = size / max(x1 - x0, y1 - y0)
    dx = (size - (x1 - x0) * scale) / 2 - x0 * scale
    dy = (size - (y1 - y0) * scale) / 2 - y0 * scale
    matrix = np.array([[scale, 0.0, dx], [0.0, scale, dy]], dtype=np.float64)
    warped = cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )
    # The colour conversion happens here, on the small tensor, never on the full frame.
    rgb = np.repeat(warped[:, :, None], 3, axis=2) if warped.ndim == 2 else warped[:, :, ::-1]
    return rgb, scale, dx, dy
