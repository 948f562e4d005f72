#!/usr/bin/env python3
"""Benchmark the whole pipeline on recordings (replay, every frame) beside decode-only time of the same files:
frames per second, CPU use, peak memory, and the face-appears -> event-stored latency. Prints medians and ratios;
asserts nothing. Makes a 1080p copy of the Hamilton clip with ffmpeg in a temporary folder.

    .venv/bin/python scripts/bench_pipeline.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def decode_only(video: Path) -> Dict[str, float]:
    import cv2

    cap = cv2.VideoCapture(str(video))
    wall, cpu = time.perf_counter(), time.process_time()
    frames = 0
    while True:
        ok, _ = cap.read()
        if not ok:
            break
        frames += 1
    cap.release()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "frames": frames,
        "wall_s": wall,
        "cpu_s": cpu,
        "fps": frames / wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def replay(video: Path, db: Path) -> Dict[str, object]:
    from edge.config import Config
    from edge.daemon import replay as run_replay

    latencies: List[float] = []
    types: List[str] = []

    def on_event(event: object, latency: float) -> None:
        latencies.append(latency)
        types.append(event.event.type.value)  # type: ignore[attr-defined]

    start = datetime(2026, 11, 23, 0, 0, tzinfo=timezone.utc)
    wall, cpu = time.perf_counter(), time.process_time()
    pipeline = run_replay(Config(), video, None, start, True, db, on_event=on_event)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stats = next(iter(pipeline.stats.values()))
    return {
        "frames": stats.frames,
        "wall_s": wall,
        "cpu_s": cpu,
        "fps": stats.frames / wall,
        "detect_ms": stats.detect_ms / max(stats.frames, 1),
        "embeddings": stats.embeddings,
        "embed_ms": stats.embed_ms / max(stats.embeddings, 1),
        "events": types,
        "latencies_s": latencies,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child(mode: str, video: Path, db: Path) -> Dict[str, object]:
    """Run one measurement in a fresh process so peak memory is its own."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(video), str(db)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("EDGE_TEST_DATA", REPO.parent / "shared/data"))
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, video, db = args.child
        result = decode_only(Path(video)) if mode == "decode" else replay(Path(video), Path(db))
        print(json.dumps(result))
        return
    clip = args.data / "hamilton" / "short_hamilton_clip.mp4"
    if not clip.is_file():
        sys.exit(f"bench: {clip} not found: pass --data or set EDGE_TEST_DATA")
    if not shutil.which("ffmpeg"):
        sys.exit("bench: ffmpeg not found (scripts/install_system_deps.sh installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "hamilton_1080p.mp4"
        subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-i",
                str(clip),
                "-vf",
                "scale=1920:1080",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-crf",
                "20",
                str(big),
            ],
            check=True,
        )
        db = Path(tmp) / "edge.db"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "edge",
                "--db",
                str(db),
                "enroll",
                "--person-id",
                "lin-manuel",
                str(args.data / "hamilton" / "lin-manuel-miranda.png"),
            ],
            check=True,
            capture_output=True,
        )
        all_latencies: List[float] = []
        print(f"machine: {os.cpu_count()} cpus; replay = whole pipeline, every frame, Lin-Manuel Miranda enrolled")
        for name, video in (("hamilton 640x360", clip), ("hamilton 1920x1080", big)):
            dec = child("decode", video, db)
            run_db = Path(tmp) / f"{video.stem}.db"
            shutil.copy(db, run_db)  # the enrolled gallery, fresh events for each run
            rep = child("replay", video, run_db)
            all_latencies += rep["latencies_s"]  # type: ignore[arg-type]
            print(f"{name}: {rep['frames']} frames")
            print(
                f"  decode only: {dec['fps']:7.1f} fps, CPU {dec['cpu_s'] / dec['wall_s'] * 100:5.0f}% of one core, "
                f"peak RSS {dec['peak_rss_mb']:.0f} MB"
            )
            print(
                f"  replay:      {rep['fps']:7.1f} fps, CPU {rep['cpu_s'] / rep['wall_s'] * 100:5.0f}% of one core, "
                f"peak RSS {rep['peak_rss_mb']:.0f} MB  (replay/decode time {rep['wall_s'] / dec['wall_s']:.1f}x)"
            )
            print(
                f"  detect {rep['detect_ms']:.1f} ms/frame, {rep['embeddings']} embeddings at "
                f"{rep['embed_ms']:.1f} ms, events {rep['events']}"
            )
        if all_latencies:
            lat = sorted(all_latencies)
            p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
            print(
                f"first usable face of a track -> event stored (media time, n={len(lat)}): median {statistics.median(lat):.2f} s, "
                f"p95 {p95:.2f} s, all {[round(x, 2) for x in lat]}"
            )


if __name__ == "__main__":
    main()
