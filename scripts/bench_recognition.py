#!/usr/bin/env python3
"""Benchmark the recognition core on this machine: per-face detect / align / embed medians, faces per second,
model size and peak memory. Prints medians and ratios; asserts nothing.

    .venv/bin/python scripts/bench_recognition.py [--runs 200] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List

import cv2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge.align import align  # noqa: E402
from edge.detect import DetectorConfig, FaceDetector  # noqa: E402
from edge.embed import Embedder  # noqa: E402
from edge.images import read_image  # noqa: E402


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times: List[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("EDGE_TEST_DATA", REPO.parent / "shared/data"))
    )
    args = parser.parse_args()
    photo = args.data / "hamilton" / "obama-1080p.jpg"
    if not photo.is_file():
        sys.exit(f"bench: {photo} not found: pass --data or set EDGE_TEST_DATA")

    frame_1080 = read_image(photo)
    frame_1080 = cv2.resize(frame_1080, (1920, 1080), interpolation=cv2.INTER_AREA)
    frame_360 = cv2.resize(frame_1080, (640, 360), interpolation=cv2.INTER_AREA)
    print(f"machine: {os.cpu_count()} cpus; runs per figure: {args.runs}")

    with FaceDetector(DetectorConfig()) as detector:
        det_360 = median_ms(lambda: detector.detect(frame_360), args.runs // 2)
        det_1080 = median_ms(lambda: detector.detect(frame_1080), args.runs // 2)
        faces = detector.detect(frame_1080)
        if not faces:
            sys.exit("bench: no face found in the benchmark photo")
        face = faces[0]
        align_ms = median_ms(lambda: align(frame_1080, face), args.runs)
        crop = align(frame_1080, face).image

        embed_ms = {}
        for threads in (1, 2):
            embedder = Embedder(num_threads=threads)
            embed_ms[threads] = median_ms(lambda e=embedder: e.embed(crop), args.runs)
        manifest = embedder.manifest

        def whole() -> None:
            for det in detector.detect(frame_360):
                embedder.embed(align(frame_360, det).image)

        whole_ms = median_ms(whole, args.runs // 2)
        n_faces = len(detector.detect(frame_360))

    print(f"model: {manifest.id}, {manifest.path.stat().st_size / 1e6:.2f} MB ({manifest.path.name})")
    print(f"detect per frame  640x360: {det_360:7.2f} ms median")
    print(f"detect per frame 1920x1080: {det_1080:7.2f} ms median  (ratio 1080p/360p {det_1080 / det_360:.2f}x)")
    print(f"align per face:             {align_ms:7.3f} ms median")
    print(f"embed per face, 1 thread:   {embed_ms[1]:7.2f} ms median")
    print(f"embed per face, 2 threads:  {embed_ms[2]:7.2f} ms median  (speed-up {embed_ms[1] / embed_ms[2]:.2f}x)")
    print(
        f"detect+align+embed 640x360 frame with {n_faces} face(s): {whole_ms:.2f} ms median "
        f"-> {n_faces * 1000.0 / whole_ms:.1f} faces/s"
    )
    import numpy as np

    from edge.match import GalleryIndex, MatcherConfig

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(100_000, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    started = time.perf_counter()
    index = GalleryIndex([f"p{i // 5:05d}" for i in range(100_000)], vectors)
    build_ms = (time.perf_counter() - started) * 1000.0
    probe = vectors[12345]
    match_ms = median_ms(lambda: index.match(probe, MatcherConfig()), args.runs)
    print(
        f"match one face against 100,000 embeddings (20,000 people): {match_ms:.2f} ms median "
        f"(index build {build_ms:.0f} ms, once per gallery version)"
    )
    print(f"peak memory (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
