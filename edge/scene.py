"""Where to look in each frame of one camera: the detector's work planned from what changed and what is tracked.

A whole-frame pass shrinks a 720p/1080p frame to the detector's 128/192 px input, where a 48-96 px face (a person
three to five metres from the door) is 5-15 px: mostly missed. Tiling the whole frame finds them at ~4x the cost on
every frame, most of which show nobody. Instead, per frame (`plan`):

* the motion gate (`MotionGate`) compares a low-resolution grey copy of the frame with the previous one: a frame
  with no change and no live track gets no detector pass at all (a whole-frame pass still runs every
  ``idle_interval_s``), so an empty scene costs little more than decoding;
* when something moved: the cheap whole-frame pass (large faces);
* the sweep (`Sweep`): squares of ``region_size`` pixels (a fixed overlapping grid, plus the camera's door region,
  ``CameraConfig.door``) looked at close to native scale through the full-range model while something moved in
  them in the last ``region_memory_s``: at most ``max_regions`` per frame, those waiting longest first;
* for every live track that needs its face measured this frame (edge.track ``Tracker.expected``: it may be
  embedded or liveness-scored) and for a coasting one the last frame missed: a focus pass, a square
  ``refine_context`` times its predicted face through the short-range model (the same view as the detector's refine
  pass: its keypoints are kept as they are), so a tracked face is found again each frame whatever the gate says;
* a coasting track (decided, nothing due) is followed by the whole-frame pass alone, and its face is not refined
  (a ``Pass.coasting`` marker): tracking needs the box only. When no whole-frame pass runs (nothing moved), it gets
  a focus pass too;
* while tracks are live, the whole-frame pass is the full-range model's only: the focus passes hold the tracked
  faces, and the full-range model finds a new face of any size the short-range one would (a face from 15% to 50%
  of a 720p frame's height: 20/20 LFW faces, where the short-range one finds none at 15%); with nothing tracked
  both run.

Measured with scripts/bench_recall.py (issue 9's note): with tracks live, the whole-frame short-range pass added no
face the others missed (recall vs YuNet unchanged on every clip, first detections as fast): one of the ~6 model
invocations per frame of a scene with people.

A person entering moves, so the gate opens on the first frame they are in (the first frame of a camera counts as
all motion). The plan is a pure function; `SceneDetector` holds one camera's state (gate, clock of the last
whole-frame pass, the sweep) and `Scenes` one per camera for the pipeline.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge.capture import CameraConfig
from edge.detect import DetectorConfig, FaceDetector, Pass, Rect, over
from edge.faces import Box, Detection
from edge.recognize import DetectorLike

GLOBAL_CHANGE = 0.5
"""A moving region larger than this share of the frame is a change of the whole view (lighting, the camera moved,
someone right in front of the lens): the whole-frame pass covers it, no regions."""
REGION_MIN = 256
"""Smallest region side (pixels of the frame) around a small moving thing: a face in it is at least what a whole
frame pass would see."""
Door = Tuple[Tuple[float, float], Tuple[float, float]]


class MotionGate:
    """Frame differencing at low resolution: the regions (frame pixels) that changed since the previous frame.

    The frame is sampled every ``step`` pixels (no resize of the full frame), turned grey and box-blurred 3x3 so that
    sensor noise stays under ``threshold``; changed pixels are grouped (dilated, connected) and a group with fewer
    than ``cells`` changed pixels is noise. The first frame, or one of another size, is all motion."""

    def __init__(self, width: int = 160, threshold: float = 16.0, cells: int = 4) -> None:
        self.width, self.threshold, self.cells = width, threshold, cells
        self._previous: Optional[np.ndarray] = None

    def moving(self, image: np.ndarray) -> List[Rect]:
        height, width = image.shape[:2]
        step = max(1, int(round(width / self.width)))
        small = np.ascontiguousarray(image[::step, ::step])
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        grey = cv2.blur(grey, (3, 3))
        previous, self._previous = self._previous, grey
        if previous is None or previous.shape != grey.shape:
            return [(0.0, 0.0, float(width), float(height))]
        changed = (cv2.absdiff(grey, previous) > self.threshold).astype(np.uint8)
        if int(changed.sum()) < self.cells:
            return []
        grown = cv2.dilate(changed, np.ones((3, 3), np.uint8), iterations=2)
        count, labels, boxes, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
        per_label = np.bincount(labels[changed > 0], minlength=count)
        rects: List[Rect] = []
        for label in range(1, count):
            if per_label[label] < self.cells:
                continue
            x, y, w, h = (int(v) for v in boxes[label, :4])
            rects.append(
                (
                    float(x * step),
                    float(y * step),
                    float(min((x + w) * step, width)),
                    float(min((y + h) * step, height)),
                )
            )
        return rects


def door_rect(door: Optional[Door], width: int, height: int) -> Optional[Rect]:
    """The door region of a camera's config (image fractions) in pixels of a frame of this size."""
    if door is None:
        return None
    (x0, y0), (x1, y1) = door
    return (x0 * width, y0 * height, x1 * width, y1 * height)


def inside(rect: Rect, width: int, height: int) -> Rect:
    """The rect moved (not shrunk) to lie inside the image where it fits; clipped where it does not."""
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    x0 = min(max(x0, 0.0), max(width - w, 0.0))
    y0 = min(max(y0, 0.0), max(height - h, 0.0))
    return (x0, y0, min(x0 + w, float(width)), min(y0 + h, float(height)))


def cover(rect: Rect, size: int, width: int, height: int) -> List[Rect]:
    """Square regions of at most ``size`` pixels covering ``rect`` with a margin, top row first (faces are at the
    top of a moving person): one square when it fits, else overlapping squares."""
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    side = max(w, h) * 1.25
    if side <= size:
        side = min(max(side, float(REGION_MIN)), float(size), float(max(width, height)))
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        return [inside((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), width, height)]
    margin = 0.1 * size
    x0, y0 = max(x0 - margin, 0.0), max(y0 - margin, 0.0)
    x1, y1 = min(x1 + margin, float(width)), min(y1 + margin, float(height))
    step = size * 0.8
    nx = max(1, math.ceil((x1 - x0 - size) / step) + 1) if x1 - x0 > size else 1
    ny = max(1, math.ceil((y1 - y0 - size) / step) + 1) if y1 - y0 > size else 1
    out: List[Rect] = []
    for j in range(ny):
        for i in range(nx):
            left = x0 + (x1 - x0 - size) * (i / (nx - 1) if nx > 1 else 0.5)
            top = y0 + (y1 - y0 - size) * (j / (ny - 1) if ny > 1 else 0.0)
            out.append(inside((left, top, left + size, top + size), width, height))
    return out


def focus_rect(box: Box, context: float) -> Rect:
    """The square region ``context`` times the face around its centre (what the detector's refine pass looks at)."""
    half = context * max(box.w, box.h) / 2.0
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    return (cx - half, cy - half, cx + half, cy + half)


def plan(
    whole: Sequence[Pass],
    motion: Optional[Sequence[Rect]],
    predictions: Sequence[Box],
    whole_due: bool,
    context: float,
    coasting: Sequence[Box] = (),
    regions: Sequence[Rect] = (),
) -> List[Pass]:
    """The passes of one frame. ``whole``: the detector's whole-frame passes; ``motion``: what the gate saw move
    (None: no gate, as if the frame moved with no region known); ``predictions``: tracked faces to measure (a focus
    pass each, ``context`` times the face); ``whole_due``: the idle whole-frame pass is due; ``coasting``: tracked
    faces the whole-frame pass follows (a focus pass each only when it does not run); ``regions``: what the sweep
    chose to look at close to native scale this frame (`Sweep.choose`)."""
    moved = motion is None or bool(motion)
    passes: List[Pass] = []
    if moved or whole_due:
        passes.extend(whole if not (predictions or coasting) else tracked_whole(whole))
        passes.extend(Pass("full", (b.x, b.y, b.x + b.w, b.y + b.h), coasting=True) for b in coasting)
    else:
        predictions = [*predictions, *coasting]
    passes.extend(Pass("short", focus_rect(box, context), focus=True) for box in predictions)
    passes.extend(Pass("full", rect, verify=True) for rect in regions)
    return passes


def grid(width: int, height: int, size: int, overlap: float = 0.3) -> List[Rect]:
    """Squares of ``size`` pixels covering the frame, row by row, neighbours sharing ``overlap`` of a side (a face
    up to that wide lies whole in one of them)."""

    def starts(extent: int) -> List[float]:
        if extent <= size:
            return [0.0]
        count = math.ceil((extent - size) / (size * (1.0 - overlap))) + 1
        return [(extent - size) * i / (count - 1) for i in range(count)]

    w, h = float(min(size, width)), float(min(size, height))
    return [(x, y, x + w, y + h) for y in starts(height) for x in starts(width)]


def _touches(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class Sweep:
    """Which squares of a large frame to look at close to native scale, frame by frame (pure but for its memory).

    The frame is covered by a fixed grid of overlapping squares (`grid`), plus the squares over the camera's door
    region. Each remembers when something last moved in it and when it was last looked at. A square is due while
    something moved in it within ``memory_s`` (a door square: while anything moved anywhere); each frame the
    ``count`` due squares left unlooked the longest are chosen, in turns. A square where something starts to move
    after a still while has not been looked at since, so a person entering is looked at on the first frames they
    move in (no bonus for moving now: a square moving every frame would starve the remembered ones); a face that stays still where people
    move (an audience, a queue, someone waiting at the door) is looked at every few frames until a track holds it
    (a focus pass follows it then); a scene where nothing moved for ``memory_s`` costs nothing. A change of most of
    the view (`GLOBAL_CHANGE`: lighting, the camera moved) makes no square due by itself: the whole-frame pass
    covers it."""

    def __init__(self, squares: Sequence[Rect], door: Sequence[Rect], memory_s: float) -> None:
        self.squares: List[Rect] = [*squares, *door]
        self.is_door = np.array([False] * len(squares) + [True] * len(door), bool)
        self.memory_s = memory_s
        self.moved_at = np.full(len(self.squares), -math.inf)
        self.looked_at = np.full(len(self.squares), -math.inf)
        self._last = -math.inf

    def choose(self, motion: Optional[Sequence[Rect]], mono: float, count: int, area: float) -> List[Rect]:
        """Up to ``count`` squares for this frame. ``motion``: the gate's moving regions (None: no gate, everything
        counts as moving); ``area``: the frame's, for telling a change of the whole view."""
        if mono < self._last:  # time ran backwards (a file looped): forget
            self.moved_at[:] = -math.inf
            self.looked_at[:] = -math.inf
        self._last = mono
        if motion is None:
            moving = np.ones(len(self.squares), bool)
        else:
            local = [r for r in motion if (r[2] - r[0]) * (r[3] - r[1]) <= GLOBAL_CHANGE * area]
            moving = np.array([any(_touches(square, r) for r in local) for square in self.squares], bool)
            moving |= self.is_door & bool(motion)
        self.moved_at[moving] = mono
        due = np.flatnonzero(mono - self.moved_at <= self.memory_s)
        if not len(due) or count <= 0:
            return []
        staleness = mono - self.looked_at[due]
        chosen = due[np.argsort(-staleness, kind="stable")[:count]]
        self.looked_at[chosen] = mono
        return [self.squares[i] for i in sorted(chosen)]


def tracked_whole(whole: Sequence[Pass]) -> List[Pass]:
    """The whole-frame passes while tracks are live: the short-range one left out when the full-range one runs."""
    full = [look for look in whole if look.model == "full"]
    return full if full else list(whole)


class SceneDetector:
    """One camera's detector: plans each frame's passes (`plan`) and runs them through the shared FaceDetector.

    A detector without region passes (a test's fake: anything but a FaceDetector) is asked for every frame whole."""

    def __init__(self, detector: DetectorLike, config: DetectorConfig, door: Optional[Door] = None) -> None:
        self.detector = detector
        self.config = config
        self.door = door
        self.gate = MotionGate(config.motion_width, config.motion_threshold, config.motion_cells)
        self._last_whole = -math.inf
        self._sweep: Optional[Tuple[Tuple[int, int], Optional[Sweep]]] = None
        """The sweep of the frame size last seen (None for a frame too small for regions)."""
        self._coasting: List[Rect] = []
        """The coasting faces of the last frame whose small faces were kept as found (`coarse`)."""
        self._small = 0.0
        """Faces below this side (pixels) of the last frame are refined unless coasting."""
        self.frames = self.idle = 0
        """Frames seen, and of those the ones that got no detector pass at all."""

    def detect(
        self, image: np.ndarray, mono: float, predictions: Sequence[Box] = (), coasting: Sequence[Box] = ()
    ) -> List[Detection]:
        """Faces in this frame; ``mono``: the frame's own time (seconds); ``predictions``: where the camera's live
        tracks to measure expect their faces now, ``coasting``: those of the tracks to follow only
        (Tracker.expected)."""
        self.frames += 1
        self._coasting = []
        if not isinstance(self.detector, FaceDetector):
            return list(self.detector.detect(image))
        height, width = image.shape[:2]
        motion = self.gate.moving(image) if self.config.motion_gate else None
        whole = [Pass(kind, rect) for kind, rect in self.detector.passes(width, height)]  # type: ignore[arg-type]
        due = mono - self._last_whole >= self.config.idle_interval_s or mono < self._last_whole
        sweep = self.sweep(width, height)
        regions = sweep.choose(motion, mono, self.looks(sweep), float(width * height)) if sweep else []
        context = self.config.refine_context
        passes = plan(whole, motion, predictions, due, context, coasting, regions)
        self._coasting = [look.rect for look in passes if look.coasting]
        self._small = self.config.refine_below * max(width, height)
        if not passes:
            self.idle += 1  # still asked, with no pass (returns at once): what wraps the detector sees every frame
        if any(look in whole for look in passes):
            self._last_whole = mono
        return self.detector.detect_in(image, passes)

    def looks(self, sweep: Sweep) -> int:
        """Squares to look at this frame: enough for every square of a busy view within ``region_cycle`` frames, at
        most ``max_regions`` (a 720p frame's 8 squares: 1 per frame; a 1080p frame's 15: 2)."""
        return min(self.config.max_regions, math.ceil(len(sweep.squares) / self.config.region_cycle))

    def sweep(self, width: int, height: int) -> Optional[Sweep]:
        """The region sweep for frames of this size: None when regions are off or the frame is small enough that the
        whole-frame pass sees it at more than half their scale (longer side under twice ``region_size``)."""
        if self._sweep is None or self._sweep[0] != (width, height):
            size = self.config.region_size
            made = None
            if size and self.config.max_regions and max(width, height) >= 2 * size:
                door = door_rect(self.door, width, height)
                squares = cover(door, size, width, height) if door is not None else []
                made = Sweep(grid(width, height, size), squares, self.config.region_memory_s)
            self._sweep = ((width, height), made)
        return self._sweep[1]

    def coarse(self, detection: Detection) -> bool:
        """Whether this face of the last frame was left as the whole-frame pass measured it (small, over a
        coasting track's face: not refined), so its keypoints are not precise enough to align or liveness-score.
        Errs towards yes (a coasting face a focus pass measured anyway counts as coarse)."""
        return max(detection.box.w, detection.box.h) < self._small and over(detection.box, self._coasting)


class Scenes:
    """A SceneDetector per camera for the pipeline: made on a camera's first frame, made anew when its config
    changes (a reload)."""

    def __init__(self, detector: DetectorLike) -> None:
        self.detector = detector
        self._scenes: Dict[str, Tuple[Optional[CameraConfig], SceneDetector]] = {}

    def detect(
        self,
        camera_id: str,
        camera: Optional[CameraConfig],
        image: np.ndarray,
        mono: float,
        predictions: Sequence[Box],
        coasting: Sequence[Box] = (),
    ) -> List[Detection]:
        kept = self._scenes.get(camera_id)
        if kept is None or kept[0] != camera:
            config = getattr(self.detector, "config", None)
            door = camera.door if camera is not None else None
            scene = SceneDetector(
                self.detector, config if isinstance(config, DetectorConfig) else DetectorConfig(), door
            )
            kept = self._scenes[camera_id] = (camera, scene)
        return kept[1].detect(image, mono, predictions, coasting)

    def coarse(self, camera_id: str, detection: Detection) -> bool:
        """SceneDetector.coarse of the camera's last frame (False for a camera not seen yet)."""
        scene = self.get(camera_id)
        return scene.coarse(detection) if scene is not None else False

    def get(self, camera_id: str) -> Optional[SceneDetector]:
        kept = self._scenes.get(camera_id)
        return kept[1] if kept is not None else None
