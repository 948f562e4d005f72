#!/usr/bin/env python3
"""Measure edge.detect.FaceDetector on the shared face data; prints numbers and timings.

    .venv/bin/python scripts/eval_detection.py [--data DIR] [--set field=value ...] [--runs 50] [--quick]

Data (``--data``, else $EDGE_TEST_DATA, else ../shared/data next to the repository):

* masked: rmfd-masked-detect/RWMFD_part_1/*/*.jpg (web photos of people wearing masks, no boxes): share of images
  with >= 1 face. Files OpenCV cannot decode are counted separately, not as misses.
* dlib-faces: box recall on the hand-labelled boxes of training.xml + testing.xml (boxes with ignore='1' skipped).
  A label counts as found when some detection has IoU >= 0.3 with it (dlib's boxes are tight, square and smaller
  than BlazeFace's, so 0.5 would reject correct detections); detections with IoU < 0.3 to every label are false
  positives. dogs.jpg must give zero detections.
* negatives/one-by-one-person-detection.mp4: every 10th frame (people seen from behind, no visible face): frames
  with >= 1 detection. Backs of heads are the typical false face of BlazeFace.
* sanity: hamilton/two_people.jpg -> 2, hamilton/obama.jpg -> 1, orl/att_faces/s1/1.pgm (92x112 grey) -> 1.
* timing: median over --runs calls on hamilton/obama-1080p.jpg and its 640x360 resize, for this config and for
  its single passes.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.detect import DetectorConfig, FaceDetector  # noqa: E402
from edge.faces import Box  # noqa: E402

IOU_MATCH = 0.3


def default_data_dir() -> Path:
    env = os.environ.get("EDGE_TEST_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def parse_overrides(pairs: List[str]) -> Dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(DetectorConfig)}
    out: Dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"--set expects field=value with field one of {', '.join(fields)}; got {pair!r}")
        default = getattr(DetectorConfig(), key)
        if raw.lower() == "none":
            out[key] = None
        elif isinstance(default, bool):
            out[key] = raw.lower() in ("1", "true", "yes")
        elif isinstance(default, int):
            out[key] = int(raw)
        elif isinstance(default, float):
            out[key] = float(raw)
        else:
            out[key] = raw
    return out


def read_dlib_labels(folder: Path) -> Dict[str, List[Box]]:
    labels: Dict[str, List[Box]] = {}
    for name in ("training.xml", "testing.xml"):
        for image in ET.parse(folder / name).getroot().iter("image"):
            boxes = [
                Box(
                    float(b.get("left", 0)), float(b.get("top", 0)), float(b.get("width", 0)), float(b.get("height", 0))
                )
                for b in image.iter("box")
                if b.get("ignore") != "1"
            ]
            labels.setdefault(str(image.get("file")), []).extend(boxes)
    return labels


def eval_masked(detector: FaceDetector, data: Path) -> None:
    files = sorted(glob.glob(str(data / "rmfd-masked-detect" / "RWMFD_part_1" / "*" / "*.jpg")))
    others = sorted(set(glob.glob(str(data / "rmfd-masked-detect" / "RWMFD_part_1" / "*" / "*"))) - set(files))
    found = unreadable = 0
    times: List[float] = []
    for path in files:
        image = cv2.imread(path)
        if image is None:
            unreadable += 1
            continue
        t0 = time.perf_counter()
        faces = detector.detect(image)
        times.append(time.perf_counter() - t0)
        found += bool(faces)
    readable = len(files) - unreadable
    share = found / readable if readable else float("nan")
    print(
        f"masked RWMFD_part_1/*/*.jpg: {len(files)} files, {unreadable} unreadable, {readable} readable; "
        f"face found in {found}/{readable} = {share:.3f}; {1000 * statistics.mean(times):.2f} ms/image mean"
    )
    if others:
        print(f"  (not *.jpg, not counted: {len(others)} file(s), e.g. {os.path.relpath(others[0], data)})")


def eval_dlib(detector: FaceDetector, data: Path) -> None:
    folder = data / "dlib-faces"
    labels = read_dlib_labels(folder)
    n_labels = found = fps = 0
    rows = []
    for name, boxes in sorted(labels.items()):
        image = cv2.imread(str(folder / name))
        if image is None:
            print(f"  cannot read {name}")
            continue
        faces = detector.detect(image)
        hit = sum(1 for lab in boxes if any(lab.iou(f.box) >= IOU_MATCH for f in faces))
        false = sum(1 for f in faces if all(lab.iou(f.box) < IOU_MATCH for lab in boxes))
        n_labels += len(boxes)
        found += hit
        fps += false
        rows.append(f"{name} {hit}/{len(boxes)} fp {false}")
    print(
        f"dlib-faces box recall (IoU >= {IOU_MATCH}): {found}/{n_labels} = {found / max(n_labels, 1):.3f}; "
        f"false positives {fps} in {len(rows)} images = {fps / max(len(rows), 1):.2f}/image"
    )
    print("  " + "; ".join(rows))
    dogs = cv2.imread(str(folder / "dogs.jpg"))
    if dogs is not None:
        faces = detector.detect(dogs)
        print(f"dogs.jpg: {len(faces)} detections {[round(f.score, 3) for f in faces]}")


def eval_negatives(detector: FaceDetector, data: Path, every: int = 10) -> None:
    path = data / "negatives" / "one-by-one-person-detection.mp4"
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        print(f"negatives: cannot open {path}")
        return
    index = frames = with_face = total = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % every == 0:
            faces = detector.detect(frame)
            frames += 1
            with_face += bool(faces)
            total += len(faces)
        index += 1
    cap.release()
    print(
        f"negatives video (every {every}th frame, no visible face): {with_face}/{frames} frames with a detection, "
        f"{total} detections"
    )


def eval_sanity(detector: FaceDetector, data: Path) -> None:
    cases: List[Tuple[str, int]] = [
        ("hamilton/two_people.jpg", 2),
        ("hamilton/obama.jpg", 1),
        ("orl/att_faces/s1/1.pgm", 1),
    ]
    for rel, want in cases:
        image = cv2.imread(str(data / rel))
        if image is None:
            print(f"sanity {rel}: cannot read")
            continue
        faces = detector.detect(image)
        grey = detector.detect(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        verdict = "ok" if len(faces) == want else "FAIL"
        print(
            f"sanity {rel} {image.shape[1]}x{image.shape[0]}: {len(faces)} faces (want {want}) {verdict}; "
            f"scores {[round(f.score, 3) for f in faces]}; as grayscale: {len(grey)}"
        )
    orl_ok = 0
    orl = sorted(glob.glob(str(data / "orl" / "att_faces" / "s*" / "*.pgm")))
    for path in orl:
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        orl_ok += image is not None and len(detector.detect(image)) == 1
    if orl:
        print(f"ORL (all {len(orl)} grey 92x112 images): exactly one face in {orl_ok} = {orl_ok / len(orl):.3f}")


def median_ms(detector: FaceDetector, image: np.ndarray, runs: int) -> float:
    detector.detect(image)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        detector.detect(image)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def eval_timing(config: DetectorConfig, data: Path, runs: int) -> None:
    big = cv2.imread(str(data / "hamilton" / "obama-1080p.jpg"))
    if big is None:
        print("timing: hamilton/obama-1080p.jpg not found")
        return
    big = cv2.resize(big, (1920, 1080), interpolation=cv2.INTER_AREA) if big.shape[:2] != (1080, 1920) else big
    small = cv2.resize(big, (640, 360), interpolation=cv2.INTER_AREA)
    variants: List[Tuple[str, DetectorConfig]] = [
        ("this config", config),
        ("short range only, whole image", dataclasses.replace(config, model="short", small_side=0, tile_above=0)),
        ("full range only, whole image", dataclasses.replace(config, model="full", small_side=0, tile_above=0)),
        ("both, whole image", dataclasses.replace(config, model="both", small_side=0, tile_above=0)),
        ("both + tiles of 640 px (tile_above=700)", dataclasses.replace(config, model="both", tile_above=700)),
    ]
    print(f"timing (median of {runs} runs, {config.num_threads} threads), ms per frame:")
    for label, cfg in variants:
        with FaceDetector(cfg) as det:
            t_small = median_ms(det, small, runs)
            t_big = median_ms(det, big, runs)
            n_small, n_big = len(det.passes(640, 360)), len(det.passes(1920, 1080))
            faces = len(det.detect(big))
        print(
            f"  {label:42s} 640x360 {t_small:6.2f} ({n_small} passes)   1920x1080 {t_big:6.2f} "
            f"({n_big} passes; {faces} face(s))"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="shared face data folder")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="DetectorConfig override")
    parser.add_argument("--runs", type=int, default=50, help="timing runs per image size")
    parser.add_argument("--quick", action="store_true", help="skip the timing section")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"face data not found at {args.data}: pass --data or set EDGE_TEST_DATA", file=sys.stderr)
        return 2
    config = DetectorConfig(**parse_overrides(args.set))
    print(f"config: {config}")
    with FaceDetector(config) as detector:
        eval_masked(detector, args.data)
        eval_dlib(detector, args.data)
        eval_negatives(detector, args.data)
        eval_sanity(detector, args.data)
    if not args.quick:
        eval_timing(config, args.data, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
