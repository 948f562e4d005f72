#!/usr/bin/env python3
"""Cost of the liveness stage: per scored face and per door pass at 1 and 2 threads, and the per-camera CPU of a
720p / 10 fps replay with liveness off and on. Prints medians; asserts nothing. The machine is shared: read the
load average it prints next to the numbers.

    .venv/bin/python scripts/bench_liveness.py [--data ../shared/data] [--runs 300] [--replays 3]

1. Per scored face: LivenessModel.score (two context crops of a 1280x720 frame, two MiniFASNet invocations, the
   fusion) on the Hamilton clip upscaled to 720p, the face from edge's detector; the crops alone too. 1 and 2
   LiteRT threads, interleaved, median (p10, p90) of --runs calls after a warm-up.
2. Per door pass: liveness.frames (default 5) scored faces = the most a track costs.
3. Per camera: the Hamilton clip at 1280x720, 10 fps (ffmpeg), Lin-Manuel enrolled, replayed through the whole
   pipeline (edge.daemon.replay, every frame) in a fresh process per run with liveness.policy off and shadow,
   alternated --replays times: process CPU seconds per second of video, median; the ratio; the frames scored.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def frame_and_box(clip: Path):  # type: ignore[no-untyped-def]
    import cv2

    from edge.detect import DetectorConfig, FaceDetector

    cap = cv2.VideoCapture(str(clip))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 150)  # Lin-Manuel facing the camera
    ok, frame = cap.read()
    cap.release()
    assert ok
    frame = cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_LINEAR)
    with FaceDetector(DetectorConfig(num_threads=1)) as detector:
        face = max(detector.detect(frame), key=lambda d: d.box.area)
    return frame, face.box


def per_face(clip: Path, runs: int) -> Dict[str, Dict[str, float]]:
    from edge.liveness.crop import context_crop
    from edge.liveness.model import LivenessModel

    frame, box = frame_and_box(clip)
    models = {threads: LivenessModel(REPO / "models", threads) for threads in (1, 2)}
    for model in models.values():
        for _ in range(30):
            model.score(frame, box)
    times: Dict[str, List[float]] = {"threads_1": [], "threads_2": [], "crops_only": []}
    for _ in range(runs):
        for threads, model in models.items():
            t0 = time.perf_counter()
            model.score(frame, box)
            times[f"threads_{threads}"].append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        context_crop(frame, box, 2.7)
        context_crop(frame, box, 4.0)
        times["crops_only"].append((time.perf_counter() - t0) * 1000)
    out = {}
    for name, values in times.items():
        out[name] = {
            "median_ms": round(statistics.median(values), 3),
            "p10_ms": round(float(np.percentile(values, 10)), 3),
            "p90_ms": round(float(np.percentile(values, 90)), 3),
        }
    out["face_px"] = {"median_ms": round(box.w, 1), "p10_ms": 0.0, "p90_ms": 0.0}
    return out


def replay_child(policy: str, video: Path, db: Path) -> Dict[str, object]:
    from edge.config import Config
    from edge.daemon import replay

    config = Config()
    config = replace(config, liveness=replace(config.liveness, policy=policy))
    start = datetime(2026, 11, 23, 8, 0, tzinfo=timezone.utc)
    cpu = time.process_time()
    wall = time.perf_counter()
    pipeline = replay(config, video, None, start, True, db)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stats = next(iter(pipeline.stats.values()))
    return {
        "policy": policy,
        "frames": stats.frames,
        "cpu_s": cpu,
        "wall_s": wall,
        "liveness_scored": getattr(stats, "liveness_scored", 0),
        "liveness_ms": getattr(stats, "liveness_ms", 0.0),
    }


def per_camera(clip: Path, data: Path, replays: int) -> Dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "hamilton_720p_10fps.mp4"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-i", str(clip), "-vf", "scale=1280:720,fps=10", "-c:v", "libx264",
             "-preset", "veryfast", "-crf", "20", str(video)],
            check=True,
        )  # fmt: skip
        db = Path(tmp) / "edge.db"
        subprocess.run(
            [sys.executable, "-m", "edge", "--db", str(db), "enroll", "--person-id", "lin-manuel",
             str(data / "hamilton" / "lin-manuel-miranda.png")],
            check=True, capture_output=True,
        )  # fmt: skip
        runs: Dict[str, List[dict]] = {"off": [], "shadow": []}
        for i in range(replays):
            for policy in ("off", "shadow") if i % 2 == 0 else ("shadow", "off"):
                copy = Path(tmp) / f"run-{policy}-{i}.db"
                shutil.copy(db, copy)
                out = subprocess.run(
                    [sys.executable, __file__, "--child", policy, str(video), str(copy)],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                runs[policy].append(json.loads(out.stdout.strip().splitlines()[-1]))
        seconds = runs["off"][0]["frames"] / 10.0
        off = statistics.median(r["cpu_s"] for r in runs["off"])
        on = statistics.median(r["cpu_s"] for r in runs["shadow"])
        scored = runs["shadow"][0]["liveness_scored"]
        return {
            "video_s": seconds,
            "cpu_s_off": [round(r["cpu_s"], 3) for r in runs["off"]],
            "cpu_s_shadow": [round(r["cpu_s"], 3) for r in runs["shadow"]],
            "cpu_per_video_s_off": round(off / seconds, 4),
            "cpu_per_video_s_shadow": round(on / seconds, 4),
            "ratio": round(on / off, 4),
            "faces_scored": scored,
            "liveness_ms_total": round(runs["shadow"][0]["liveness_ms"], 2),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("EDGE_TEST_DATA", REPO.parent / "shared/data")))
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--replays", type=int, default=3)
    ap.add_argument("--frames", type=int, default=5, help="scored frames per door pass (liveness.frames)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        policy, video, db = a.child
        print(json.dumps(replay_child(policy, Path(video), Path(db))))
        return
    clip = a.data / "hamilton" / "short_hamilton_clip.mp4"
    if not clip.is_file():
        sys.exit(f"bench_liveness: {clip} not found: pass --data or set EDGE_TEST_DATA")
    result: Dict[str, object] = {"load_average_before": os.getloadavg()}
    face = per_face(clip, a.runs)
    result["per_face"] = face
    result["per_door_pass_ms"] = {
        f"threads_{t}": round(a.frames * face[f"threads_{t}"]["median_ms"], 2) for t in (1, 2)
    }
    if shutil.which("ffmpeg") and a.replays > 0:
        result["per_camera_720p_10fps"] = per_camera(clip, a.data, a.replays)
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
