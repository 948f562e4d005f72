"""Hardware decoding for real: the distribution's OpenCV (python3-opencv, built with GStreamer) in a venv made by
`install_box.sh --venv DIR --system-opencv`, opening the test RTSP server through a GStreamer pipeline (software
decoder here: rtspsrc ! rtph264depay ! avdec_h264; nvv4l2decoder on a Jetson, v4l2h264dec on a Pi) and naming
Lin-Manuel at the door; and check-config refusing a pipeline when the running OpenCV (pip's) has no GStreamer."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import REPO, RtspServer, enroll_lin_manuel, stored_events, wait_until

from edge.capture.live import opencv_has_gstreamer
from edge.cli import main

SYSTEM_PYTHON = "/usr/bin/python3"
PIPELINE = (
    "rtspsrc location={url} latency=0 protocols=tcp ! rtph264depay ! avdec_h264 ! videoconvert"
    " ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1 sync=false"
)
PROBE = "import cv2, re, sys; sys.exit(not re.search(r'GStreamer:\\s+YES', cv2.getBuildInformation()))"


def system_opencv_missing() -> str:
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", PROBE], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON} unusable: {exc}"
    if done.returncode:
        return f"{SYSTEM_PYTHON} has no OpenCV with GStreamer: apt install python3-opencv (scripts/install_system_deps.sh)"
    return ""


@pytest.fixture(scope="module")
def system_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = system_opencv_missing()
    if reason:
        pytest.skip(reason)
    venv = tmp_path_factory.mktemp("system-opencv") / "venv"
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_box.sh"), "--venv", str(venv), "--system-opencv"],
        cwd=REPO, capture_output=True, text=True, timeout=900, env={"PATH": "/usr/bin:/bin", "PYTHON": SYSTEM_PYTHON},
    )  # fmt: skip
    if done.returncode and ("Could not find a version" in done.stderr or "NewConnectionError" in done.stderr):
        pytest.skip(f"the package index is unreachable: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stdout + done.stderr
    return venv


def test_the_venv_uses_the_system_opencv_with_gstreamer(system_venv: Path) -> None:
    code = "import cv2, numpy; print(cv2.__file__); print(numpy.__file__)"
    done = subprocess.run([str(system_venv / "bin" / "python"), "-c", code], capture_output=True, text=True)
    cv2_file, numpy_file = done.stdout.split()
    assert cv2_file.startswith("/usr/lib/python3/dist-packages/") and numpy_file.startswith("/usr/lib/python3/")
    assert subprocess.run([str(system_venv / "bin" / "python"), "-c", PROBE]).returncode == 0


def test_a_gstreamer_pipeline_opens_the_rtsp_camera(system_venv: Path, rtsp: RtspServer) -> None:
    code = (
        "import sys\nfrom edge.capture import CameraConfig\nfrom edge.capture.live import open_video\n"
        f"reader = open_video(CameraConfig('door', sys.argv[1], pipeline={PIPELINE!r}, open_timeout_s=10))\n"
        "frames = [f for f in (reader.read() for _ in range(20)) if f is not None]\n"
        "print(len(frames), *frames[0].image.shape)\n"
    )
    done = subprocess.run([str(system_venv / "bin" / "python"), "-c", code, rtsp.url], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    count, height, width, channels = map(int, done.stdout.split())
    assert count == 20 and (width, height, channels) == (640, 360, 3)


def test_the_daemon_names_lin_manuel_through_a_gstreamer_pipeline(
    system_venv: Path, rtsp: RtspServer, tmp_path: Path, data: Path
) -> None:
    db = tmp_path / "edge.db"
    enroll_lin_manuel(db, data)
    config = tmp_path / "edge.yml"
    config.write_text(
        f"device: {{id: door-box, timezone: Asia/Seoul}}\nstorage: {{database: {db}}}\n"
        f"embedder: {{models_dir: {REPO / 'models'}}}\n"
        f"cameras:\n  - id: door\n    url: '{rtsp.url}'\n    pipeline: '{PIPELINE}'\n    max_fps: 15\n"
    )
    edge = str(system_venv / "bin" / "edge")
    checked = subprocess.run([edge, "check-config", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0 and "GStreamer yes" in checked.stdout, checked.stdout + checked.stderr
    log_path = tmp_path / "edge.log"
    with open(log_path, "w") as log:
        daemon = subprocess.Popen([edge, "--config", str(config), "run"], stdout=log, stderr=log, text=True)
    try:

        def entry() -> bool:
            return any(e["type"] == "entry" and e["person_id"] == "lin-manuel" for e in stored_events(db))

        assert wait_until(entry, 90, 0.5), log_path.read_text()[-3000:]
        doctor = subprocess.run([edge, "--config", str(config), "doctor"], capture_output=True, text=True)
        assert "with GStreamer: a camera pipeline can be opened" in doctor.stdout, doctor.stdout
        assert "OK      camera:door" in doctor.stdout
    finally:
        daemon.terminate()
        assert daemon.wait(20) == 0
    assert "Traceback" not in log_path.read_text()


def test_check_config_refuses_a_pipeline_when_this_opencv_has_no_gstreamer(tmp_path: Path) -> None:
    if opencv_has_gstreamer():
        pytest.skip("the running OpenCV has GStreamer")
    config = tmp_path / "edge.yml"
    config.write_text(f"cameras:\n  - id: door\n    url: rtsp://192.0.2.1/s\n    pipeline: '{PIPELINE}'\n")
    result = CliRunner().invoke(main, ["check-config", str(config)])
    assert result.exit_code == 1 and "cameras door need GStreamer, but this OpenCV" in result.output
    assert "install_box.sh --system-opencv" in result.output
    config.write_text("cameras:\n  - id: door\n    url: rtsp://192.0.2.1/s\n")
    result = CliRunner().invoke(main, ["check-config", str(config)])
    assert result.exit_code == 0 and "GStreamer no" in result.output
