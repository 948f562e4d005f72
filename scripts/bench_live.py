#!/usr/bin/env python3
"""Live cameras through the whole pipeline: N RTSP cameras (scripts/rtsp_server.py, real time) at 1280x720 and
10 fps, the pipeline loop of `edge run` on one thread, for --seconds of steady state. Prints per scenario: frames
read / processed and the share processed (frames still buffered at either end of the window make it a few frames
off), frames lost (late or skipped: exact), those lost because the pipeline was late per camera, CPU of the whole
process (capture threads' decoding included) in % of one core, and detect ms per frame; then the connect phase on
its own: how long until every camera was online, and the frames lost before the measured window.

The measured window starts once the warm-up (--warmup, from start) is over and every camera has been ONLINE for
--settle seconds: an RTSP open reads seconds of stream ahead and delivers them at once, a burst that belongs to the
connect figures, not to the steady state.

    .venv/bin/python scripts/bench_live.py [--data ../shared/data] [--seconds 40] [--repo DIR] [--json OUT]
        [--clip VIDEO] [--only SCENARIO ...]

Scenarios: "1 empty" (a still scene with sensor-like noise: what a camera with nobody in view costs), "1 people"
and "4 people" (the Hamilton clip, or --clip VIDEO (a held-out clip), scaled to 1280x720 at 10 fps and looped:
people in view nearly all the time), "3 people + 1 empty".
Lin-Manuel Miranda is enrolled, as in bench_pipeline.py. Needs ffmpeg and the system python's gst-rtsp-server
(scripts/install_system_deps.sh). --repo measures another checkout (a `git worktree` of an older commit).
CPU numbers depend on what else runs on the machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
SCENARIOS: Dict[str, Tuple[int, int]] = {
    "1 empty": (0, 1),
    "1 people": (1, 0),
    "4 people": (4, 0),
    "3 people + 1 empty": (3, 1),
}
"""name -> (cameras showing the Hamilton clip, cameras showing the empty scene)."""


def make_clips(data: Path, folder: Path, clip: Optional[Path] = None) -> Tuple[Path, Path]:
    """The people clip (the Hamilton clip, or ``clip``) at 1280x720, 10 fps, and 30 s of an empty scene (the
    negative clip's first frame, scaled, with per-frame noise), both H.264 without B-frames."""
    name = "people_720p10.mp4" if clip is None else f"{clip.stem}-{clip.stat().st_size}_720p10.mp4"
    people, empty = folder / name, folder / "empty_720p10.mp4"
    encode = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-bf", "0", "-g", "20", "-pix_fmt", "yuv420p"]
    if not people.is_file():
        clip = clip or data / "hamilton" / "short_hamilton_clip.mp4"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-i", str(clip), "-an", "-vf", "scale=1280:720,fps=10", *encode,
             str(people)],
            check=True,
        )  # fmt: skip
    if not empty.is_file():
        clip = data / "negatives" / "one-by-one-person-detection.mp4"
        still = folder / "empty.png"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-i", str(clip), "-frames:v", "1", str(still)], check=True
        )
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-loop", "1", "-i", str(still), "-t", "30",
             "-vf", "scale=1280:720,noise=alls=3:allf=t,fps=10", *encode, str(empty)],
            check=True,
        )  # fmt: skip
    return people, empty


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(clip: Path) -> Tuple[subprocess.Popen[str], str]:
    port = free_port()
    cmd = [SYSTEM_PYTHON, str(REPO / "scripts" / "rtsp_server.py"), "--file", str(clip), "--port", str(port)]
    proc = subprocess.Popen(cmd + ["--mount", "cam", "--loop"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(20):
            proc.kill()
            raise RuntimeError("rtsp_server.py did not start")
    line = proc.stdout.readline().split()
    return proc, line[-1]


def connect_figures(
    start: float, online: Dict[str, float], cams: Dict[str, Any], processed: Dict[str, int]
) -> Dict[str, Any]:
    """The connect phase, from start to the measured window: when each camera came online, what was lost meanwhile."""
    return {
        "online_s": {k: round(t - start, 2) for k, t in online.items()},
        "all_online_s": round(max(online.values()) - start, 2),
        "read": sum(c.frames_read for c in cams.values()),
        "processed": sum(processed.values()),
        "dropped": sum(c.frames_dropped for c in cams.values()),
        "late": sum(getattr(c, "frames_late", 0) for c in cams.values()),
        "skipped": sum(getattr(c, "frames_skipped", 0) for c in cams.values()),
    }


def measure(
    repo: Path, urls: List[str], db: Path, warmup: float, seconds: float, settle: float = 2.0, connect: float = 60.0
) -> Dict[str, Any]:
    """In this process: the cameras and the pipeline loop; figures over `seconds` from when `warmup` is over and
    every camera has been online for `settle` seconds (none online within `connect` seconds: an error)."""
    sys.path.insert(0, str(repo))
    from edge.capture import CameraConfig, CameraState
    from edge.capture.cameras import CameraSet
    from edge.config import Config
    from edge.daemon import build_parts, make_pipeline

    cameras = tuple(CameraConfig(id=f"cam{i}", url=url, max_fps=10.0) for i, url in enumerate(urls))
    config = Config(cameras=cameras)
    with ExitStack() as stack:
        parts = build_parts(config, stack, db)
        pipeline = make_pipeline(config, parts, list(cameras), datetime.now(timezone.utc))
        camera_set = stack.enter_context(CameraSet.open(list(cameras)))
        camera_set.start()
        start = time.monotonic()
        marks: Dict[str, Any] = {}
        online: Dict[str, float] = {}  # when each camera was first seen online
        while True:
            now = time.monotonic()
            if not marks:
                snapshot = camera_set.stats()
                for cam in snapshot:
                    if cam.state is CameraState.ONLINE:
                        online.setdefault(cam.camera_id, now)
                    elif cam.state is not CameraState.CONNECTING:  # it failed: its connect is not over
                        online.pop(cam.camera_id, None)
                settled = len(online) == len(snapshot) and now - max(online.values()) >= settle
                if now - start >= warmup and settled:
                    usage = resource.getrusage(resource.RUSAGE_SELF)
                    marks = {
                        "t": now,
                        "cpu": usage.ru_utime + usage.ru_stime,
                        "cams": {c.camera_id: c for c in snapshot},
                        "pipe": {k: (v.frames, v.detect_ms) for k, v in pipeline.stats.items()},
                    }
                    processed = {k: v.frames for k, v in pipeline.stats.items()}
                    marks["connect"] = connect_figures(start, online, marks["cams"], processed)
                    marks["connect"]["window_s"] = round(now - start, 2)
                elif now - start >= connect:
                    states = ", ".join(f"{c.camera_id} {c.state.value} ({c.reason})" for c in snapshot)
                    raise RuntimeError(f"cameras not all online after {connect:g} s: {states}")
            if marks and now - marks["t"] >= seconds:
                break
            frame = camera_set.next_frame(timeout=0.2)
            if frame is not None:
                pipeline.process(frame)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - marks["t"]
        cpu_pct = (usage.ru_utime + usage.ru_stime - marks["cpu"]) / wall * 100
        out: Dict[str, Any] = {"cpu_pct": cpu_pct, "cameras": {}, "connect": marks["connect"]}
        for cam in camera_set.stats():
            before = marks["cams"][cam.camera_id]
            frames0, detect0 = marks["pipe"][cam.camera_id]
            stats = pipeline.stats[cam.camera_id]
            processed = stats.frames - frames0
            row = {
                "read": cam.frames_read - before.frames_read,
                "delivered": cam.frames_delivered - before.frames_delivered,
                "processed": processed,
                "dropped": cam.frames_dropped - before.frames_dropped,
                "late": getattr(cam, "frames_late", 0) - getattr(before, "frames_late", 0),
                "reconnects": cam.reconnects - before.reconnects,
                "detect_ms": (stats.detect_ms - detect0) / max(processed, 1),
            }
            out["cameras"][cam.camera_id] = row
        return out


def run_scenario(
    args: argparse.Namespace, clips: Tuple[Path, Path], people: int, empty: int, db: Path
) -> Dict[str, Any]:
    servers = []
    try:
        urls = []
        for clip in [clips[0]] * people + [clips[1]] * empty:
            proc, url = serve(clip)
            servers.append(proc)
            urls.append(url)
        cmd = [sys.executable, __file__, "--child", json.dumps({"repo": str(args.repo), "urls": urls, "db": str(db),
               "warmup": args.warmup, "seconds": args.seconds, "settle": args.settle})]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("EDGE_TEST_DATA", REPO.parent / "shared/data"))
    )
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose edge package is measured")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds from start before the window may begin")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds every camera must have been online before")
    parser.add_argument("--only", action="append", choices=list(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edge-bench-live"), help="where the clips are made")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--clip", type=Path, help="the people cameras stream this video (scaled to 1280x720, 10 fps; a held-out clip)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data, args.repo = args.data.resolve(), args.repo.resolve()  # the enrolment runs in --repo
    if args.child:
        spec = json.loads(args.child)
        result = measure(
            Path(spec["repo"]), spec["urls"], Path(spec["db"]), spec["warmup"], spec["seconds"], spec["settle"]
        )
        print(json.dumps(result))
        return
    if not shutil.which("ffmpeg"):
        sys.exit("bench_live: ffmpeg not found (scripts/install_system_deps.sh installs it)")
    args.work.mkdir(parents=True, exist_ok=True)
    clips = make_clips(args.data, args.work, args.clip.resolve() if args.clip else None)
    results: Dict[str, Any] = {"repo": str(args.repo), "seconds": args.seconds}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "edge.db"
        enroll = [sys.executable, "-m", "edge", "--db", str(db), "enroll", "--person-id", "lin-manuel"]
        subprocess.run(enroll + [str(args.data / "hamilton" / "lin-manuel-miranda.png")], check=True,
                       capture_output=True, cwd=args.repo, env={**os.environ, "PYTHONPATH": str(args.repo)})  # fmt: skip
        for name, (people, empty) in SCENARIOS.items():
            if args.only and name not in args.only:
                continue
            load: Optional[float] = os.getloadavg()[0]
            row = run_scenario(args, clips, people, empty, db)
            row["load"] = load
            results[name] = row
            cams = row["cameras"].values()
            read = sum(c["read"] for c in cams)
            processed = sum(c["processed"] for c in cams)
            lost = sum(c["dropped"] for c in cams)
            per = ", ".join(
                f"{k} {c['processed']}/{c['read']} (late {c['late']}, detect {c['detect_ms']:.1f} ms)"
                for k, c in row["cameras"].items()
            )
            con = row["connect"]
            online = ", ".join(f"{k} {t:.1f}" for k, t in con["online_s"].items())
            print(
                f"{name:20s} CPU {row['cpu_pct']:5.1f}% of a core, processed {processed}/{read} "
                f"= {processed / max(read, 1):.1%}, lost {lost}  [{per}]  (load before {load:.1f})\n"
                f"{'':20s} connect: all online after {con['all_online_s']:.1f} s ({online}); before the window "
                f"(from {con['window_s']:.1f} s) processed {con['processed']}/{con['read']}, lost {con['dropped']} "
                f"(late {con['late']}, skipped {con['skipped']})",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
