#!/usr/bin/env python3
"""Robustness of the liveness stage on GENUINE faces: BPCER (share of genuine faces called spoof) per condition.

    .venv/bin/python scripts/liveness_robustness.py [--data DIR] [--lfw 300] [--json out.json]

Genuine sets (EDGE_TEST_DATA, default ../shared/data):
  stills  the Hamilton stills and knn_examples photos + liveness/image_T1.jpg: every face the detector finds
  clip    every 3rd frame of hamilton/short_hamilton_clip.mp4 (640x360): the largest face
  lfw     LFW View 1 press photos, N evenly spaced (a different domain: 250x250 crops, the context is cut)
Conditions: the original; the whole frame downscaled so the face is 120/100/80/60/40 px wide (never upscaled);
JPEG quality 50/20; an H.264 round trip (libx264 CRF 28/38, ffmpeg); Gaussian blur sigma 1.5/3; a 9-px motion
blur; brightness x0.5 / x1.6; contrast x0.5. The detector runs on each transformed frame (as on a box); a face is
scored when frontal (|yaw| <= the config's limit; the size gate is NOT applied here, since this table is what the
size gate is chosen from); its fused p_real below the threshold counts as a BPCER error. Wilson 95% intervals.
"gated": the same among the faces that also pass edge's quality gates (score, size, pose, sharpness of the aligned
crop: edge/quality.py defaults). "liveness gate": the same among the faces the scoring gate lets through
(edge.liveness.decide.gate: sharpness, contrast, clipping of the face box, the config's thresholds; what the
pipeline scores), and the share of faces it declined (not scored: a track left with too few frames is undecided).
Also prints the synthetic attacks (print on a wall, screen with a bezel) made from the stills: APCER.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from edge.align import align  # noqa: E402
from edge.detect import DetectorConfig, FaceDetector  # noqa: E402
from edge.liveness.decide import LivenessConfig, gate, yaw_deg  # noqa: E402
from edge.liveness.evaluate import wilson  # noqa: E402
from edge.liveness.model import LivenessModel  # noqa: E402
from edge.quality import QualityConfig, assess  # noqa: E402

Transform = Callable[[np.ndarray, float], Optional[np.ndarray]]  # (frame, face width) -> frame or None (skip)


def downscale_to(width: int) -> Transform:
    def run(frame: np.ndarray, face_w: float) -> Optional[np.ndarray]:
        if face_w <= width:
            return None  # never upscale: the face is already this small
        f = width / face_w
        return cv2.resize(
            frame, (max(2, round(frame.shape[1] * f)), max(2, round(frame.shape[0] * f))), interpolation=cv2.INTER_AREA
        )

    return run


def jpeg(quality: int) -> Transform:
    def run(frame: np.ndarray, _w: float) -> np.ndarray:
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        return cv2.imdecode(data, cv2.IMREAD_COLOR)

    return run


def h264(crf: int) -> Transform:
    def run(frame: np.ndarray, _w: float) -> np.ndarray:
        h, w = frame.shape[:2]
        frame = frame[: h - h % 2, : w - w % 2]
        h, w = frame.shape[:2]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "x.mp4"
            cmd = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}",
                   "-r", "10", "-i", "-", "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p", str(out)]  # fmt: skip
            subprocess.run(cmd, input=np.ascontiguousarray(frame).tobytes() * 3, check=True)  # 3 frames: P-frames too
            cap = cv2.VideoCapture(str(out))
            got = None
            while True:
                ok, f = cap.read()
                if not ok:
                    break
                got = f
            cap.release()
        assert got is not None
        return got

    return run


def blur(sigma: float) -> Transform:
    return lambda frame, _w: cv2.GaussianBlur(frame, (0, 0), sigma)


def motion_blur(length: int) -> Transform:
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    return lambda frame, _w: cv2.filter2D(frame, -1, kernel)


def brightness(factor: float) -> Transform:
    return lambda frame, _w: np.clip(frame.astype(np.float32) * factor, 0, 255).astype(np.uint8)


def contrast(factor: float) -> Transform:
    return lambda frame, _w: np.clip((frame.astype(np.float32) - 128) * factor + 128, 0, 255).astype(np.uint8)


CONDITIONS: Dict[str, Optional[Transform]] = {
    "original": None,
    "face 120 px": downscale_to(120),
    "face 100 px": downscale_to(100),
    "face 80 px": downscale_to(80),
    "face 60 px": downscale_to(60),
    "face 40 px": downscale_to(40),
    "JPEG q50": jpeg(50),
    "JPEG q20": jpeg(20),
    "H.264 CRF 28": h264(28),
    "H.264 CRF 38": h264(38),
    "blur sigma 1.5": blur(1.5),
    "blur sigma 3": blur(3.0),
    "motion blur 9 px": motion_blur(9),
    "brightness x0.5": brightness(0.5),
    "brightness x1.6": brightness(1.6),
    "contrast x0.5": contrast(0.5),
}


def genuine_sets(data: Path, lfw_count: int) -> Dict[str, List[np.ndarray]]:
    stills = sorted((data / "hamilton").glob("*.jpg")) + sorted((data / "hamilton").glob("*.png"))
    stills += sorted((data / "hamilton" / "knn_examples").rglob("*.jpg"))
    stills.append(data / "liveness" / "image_T1.jpg")
    sets: Dict[str, List[np.ndarray]] = {"stills": [cv2.imread(str(p)) for p in stills]}
    cap = cv2.VideoCapture(str(data / "hamilton" / "short_hamilton_clip.mp4"))
    frames, i = [], 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        if i % 3 == 0:
            frames.append(f)
        i += 1
    cap.release()
    sets["clip"] = frames
    if lfw_count:
        names = sorted((data / "lfw-view1" / "lfw-deepfunneled").glob("*/*.jpg"))
        idx = np.linspace(0, len(names) - 1, min(lfw_count, len(names))).round().astype(int)
        sets["lfw"] = [cv2.imread(str(names[k])) for k in idx]
    return sets


def faces_to_score(detector: FaceDetector, frame: np.ndarray, every_face: bool, config: LivenessConfig) -> list:
    faces = detector.detect(frame)
    if not faces:
        return []
    chosen = faces if every_face else [max(faces, key=lambda d: d.box.area)]
    return [d for d in chosen if abs(yaw_deg(d)) <= config.max_yaw_deg]


def run(data: Path, lfw_count: int, config: LivenessConfig) -> dict:
    sets = genuine_sets(data, lfw_count)
    detector = FaceDetector(DetectorConfig(num_threads=1))
    model = LivenessModel(REPO / "models", 1)
    table: Dict[str, Dict[str, dict]] = {}
    for name, transform in CONDITIONS.items():
        row: Dict[str, dict] = {}
        for set_name, frames in sets.items():
            scores: List[float] = []
            gated: List[float] = []
            judged: List[float] = []
            widths: List[float] = []
            skipped = 0
            for frame in frames:
                base = faces_to_score(detector, frame, set_name == "stills", config)
                if not base:
                    continue
                if transform is None:
                    scored = [(frame, f) for f in base]
                else:
                    # downscale relative to the largest frontal face in the original frame
                    shown = transform(frame, max(f.box.w for f in base))
                    if shown is None:
                        skipped += 1
                        continue
                    scored = [(shown, f) for f in faces_to_score(detector, shown, set_name == "stills", config)]
                for image, face in scored:
                    p_real = model.score(image, face.box)
                    scores.append(p_real)
                    widths.append(face.box.w)
                    if assess(face, align(image, face).image, QualityConfig()).accepted:
                        gated.append(p_real)  # quality gates passed
                    if gate(image, face, config) is None:
                        judged.append(p_real)  # the liveness scoring gate passed: the faces the pipeline scores
            k, n = sum(s < config.threshold for s in scores), len(scores)
            ci = wilson(k, n)
            row[set_name] = {
                "errors": k,
                "n": n,
                "bpcer": round(k / n, 4) if n else None,
                "ci95": [round(ci[0], 3), round(ci[1], 3)] if ci else None,
                "p_real_median": round(float(np.median(scores)), 3) if scores else None,
                "p_real_min": round(float(np.min(scores)), 3) if scores else None,
                "face_px_median": round(float(np.median(widths))) if widths else None,
                "frames_skipped": skipped,
                "gated_errors": sum(s < config.threshold for s in gated),
                "gated_n": len(gated),
                "judged_errors": sum(s < config.threshold for s in judged),
                "judged_n": len(judged),
                "judged_bpcer": round(sum(s < config.threshold for s in judged) / len(judged), 4) if judged else None,
                "declined": round(1 - len(judged) / n, 4) if n else None,
            }
        table[name] = row
        print(f"{name}: " + ", ".join(f"{s} {r['errors']}/{r['n']}" for s, r in row.items()), file=sys.stderr)
    gate_settings = {k: getattr(config, k) for k in ("min_sharpness", "min_contrast", "max_clipped")}
    return {"threshold": config.threshold, "max_yaw_deg": config.max_yaw_deg, "gate": gate_settings, "table": table,
            "composites": composites(data, detector, model, config)}  # fmt: skip


def composites(data: Path, detector: FaceDetector, model: LivenessModel, config: LivenessConfig) -> dict:
    from liveness_composites import head_and_shoulders, print_on_wall, screen_with_bezel

    stills = sorted((data / "hamilton").glob("*.jpg")) + sorted((data / "hamilton").glob("*.png"))
    stills.append(data / "liveness" / "image_T1.jpg")
    out: Dict[str, dict] = {}
    for kind, make in (("print on a wall", print_on_wall), ("screen with bezel", screen_with_bezel)):
        for framing in ("head and shoulders", "whole photo"):
            scores = []
            declined = 0
            for path in stills:
                image = cv2.imread(str(path))
                faces = detector.detect(image)
                if not faces:
                    continue
                face = max(faces, key=lambda d: d.box.area)
                shown = make(head_and_shoulders(image, face.box) if framing == "head and shoulders" else image)
                found = detector.detect(shown)
                if found:
                    face = max(found, key=lambda d: d.box.area)
                    scores.append(model.score(shown, face.box))
                    declined += gate(shown, face, config) is not None
            k = sum(s >= config.threshold for s in scores)
            out[f"{kind}, {framing}"] = {"passed_as_real": k, "n": len(scores), "declined_by_gate": declined,
                                         "p_real": [round(s, 3) for s in scores]}  # fmt: skip
    return out


def markdown(result: dict) -> str:
    sets = list(next(iter(result["table"].values())).keys())
    lines = ["| condition | " + " | ".join(f"{s}: BPCER (errors/n, 95% CI), after quality gates, with the liveness gate (declined), face px" for s in sets) + " |",
             "| --- | " + " | ".join("---" for _ in sets) + " |"]  # fmt: skip
    for name, row in result["table"].items():
        cells = []
        for s in sets:
            r = row[s]
            if not r["n"]:
                cells.append("- (face already smaller)")
                continue
            cells.append(
                f"{r['bpcer']:.3f} ({r['errors']}/{r['n']}, {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}); "
                f"gated {r['gated_errors']}/{r['gated_n']}; "
                f"liveness gate {r.get('judged_errors', '-')}/{r.get('judged_n', '-')} (declined {r.get('declined')}); "
                f"{r['face_px_median']} px"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| synthetic attack | passed as real / n | declined by the liveness gate |")
    lines.append("| --- | --- | --- |")
    for name, r in result["composites"].items():
        lines.append(f"| {name} | {r['passed_as_real']}/{r['n']} | {r.get('declined_by_gate', '-')} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("EDGE_TEST_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--lfw", type=int, default=300, help="LFW View 1 images (0: none)")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--table", help="print the table of a result written earlier by --json, and stop")
    a = ap.parse_args()
    if a.table:
        print(markdown(json.loads(Path(a.table).read_text())))
        return 0
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is needed for the H.264 rows", file=sys.stderr)
        return 1
    result = run(Path(a.data), a.lfw, LivenessConfig())
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
