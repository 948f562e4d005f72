"""The box's runtime needs no mediapipe: the BlazeFace models ship in models/ (extracted from the pinned wheel and
sha256-checked), the daemon's detection runs with mediapipe blocked, and the runtime dependencies resolve to wheels
for Python 3.10-3.13 on x86_64 and aarch64."""

from __future__ import annotations

import configparser
import hashlib
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml
from support import enroll_lin_manuel

from edge.detect import DetectorConfig, FaceDetector
from edge.errors import ModelError
from edge.manifest import DEFAULT_MODELS_DIR, file_sha256, load_detector_models

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import extract_detector  # noqa: E402

START = "2026-11-23T09:00:00+09:00"

# `python -m edge ...` with mediapipe made unimportable (and unfindable) before edge is imported; at exit the child
# prints whether any mediapipe module was loaded anyway.
BLOCKED_EDGE = """
import atexit, importlib.abc, sys

class NoMediapipe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "mediapipe" or name.startswith("mediapipe."):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, NoMediapipe())
sys.modules["mediapipe"] = None  # find_spec("mediapipe") now says: not installed
atexit.register(lambda: print("LOADED:" + ",".join(m for m in sys.modules if m.startswith("mediapipe.")),
                              file=sys.stderr))
from edge.cli import main
main(prog_name="edge")
"""


def _replay(db: Path, config: Path, video: Path, blocked: bool) -> List[Dict[str, Any]]:
    prefix = [sys.executable, "-c", BLOCKED_EDGE] if blocked else [sys.executable, "-m", "edge"]
    done = subprocess.run(
        [*prefix, "--config", str(config), "replay", str(video), "--start", START],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    if blocked:
        assert "LOADED:\n" in done.stderr, done.stderr[-2000:]  # nothing of mediapipe was imported
    events = [json.loads(line) for line in done.stdout.splitlines()]
    tracks: Dict[str, str] = {}
    for event in events:  # ids carry the database's epoch and the run's track prefix: compare the decisions
        event.pop("event_id", None)
        event.pop("latency_s", None)
        event["track_id"] = tracks.setdefault(event["track_id"], f"track-{len(tracks)}")
    return events


def test_replay_without_mediapipe_gives_the_same_events(tmp_path: Path, data: Path) -> None:
    gallery = tmp_path / "gallery.db"
    enroll_lin_manuel(gallery, data)
    video = data / "hamilton" / "short_hamilton_clip.mp4"
    runs = []
    for blocked in (False, True):
        db = tmp_path / f"edge-{blocked}.db"
        with sqlite3.connect(gallery) as a, sqlite3.connect(db) as b:
            a.backup(b)
        config = tmp_path / f"edge-{blocked}.yml"
        config.write_text(
            f"device: {{id: door-box, timezone: Asia/Seoul}}\nstorage: {{database: {db}}}\n"
            "cameras:\n  - {id: door, url: unused.mp4, role: entrance}\n"
        )
        runs.append(_replay(db, config, video, blocked))
    normal, without = runs
    assert [(e["type"], e["person_id"]) for e in normal if e["person_id"]] == [("entry", "lin-manuel")]
    assert without == normal


def test_the_detector_loads_from_models_without_mediapipe() -> None:
    """In this process too: the detector's files come from models/, whatever mediapipe the venv has."""
    with FaceDetector(DetectorConfig(model="both")) as detector:
        assert [kind for kind, _ in detector.passes(640, 480)] == ["short", "full"]
    models = load_detector_models(DEFAULT_MODELS_DIR)
    assert sorted(models) == ["face_detection_full_range_sparse.tflite", "face_detection_short_range.tflite"]
    for model in models.values():
        assert model.path.parent == DEFAULT_MODELS_DIR and file_sha256(model.path) == model.sha256
    assert "Apache License" in (DEFAULT_MODELS_DIR / extract_detector.LICENCE_FILE).read_text()[:200]


def _models_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("manifest.yml", "face_detection_short_range.tflite", "face_detection_full_range_sparse.tflite"):
        shutil.copy(DEFAULT_MODELS_DIR / name, folder / name)
    return folder


def test_a_changed_detector_model_is_refused_at_load(tmp_path: Path) -> None:
    folder = _models_copy(tmp_path)
    path = folder / "face_detection_short_range.tflite"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="face_detection_short_range.tflite has sha256 .* manifest expects"):
        FaceDetector(DetectorConfig(model="short", model_dir=str(folder)))
    FaceDetector(DetectorConfig(model="full", model_dir=str(folder))).close()  # the other one is fine


def test_a_missing_detector_model_or_entry_is_refused(tmp_path: Path) -> None:
    folder = _models_copy(tmp_path)
    (folder / "face_detection_full_range_sparse.tflite").unlink()
    with pytest.raises(ModelError, match="face_detection_full_range_sparse.tflite is missing"):
        FaceDetector(DetectorConfig(model="full", model_dir=str(folder)))
    doc = yaml.safe_load((folder / "manifest.yml").read_text())
    doc["detector"]["models"] = doc["detector"]["models"][1:]
    (folder / "manifest.yml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ModelError, match="does not list face_detection_short_range.tflite"):
        FaceDetector(DetectorConfig(model="short", model_dir=str(folder)))


def test_the_config_gives_the_detector_the_embedders_models_folder(tmp_path: Path) -> None:
    from edge.config import load_config

    path = tmp_path / "edge.yml"
    path.write_text("embedder:\n  models_dir: /opt/edge/models\n")
    assert load_config(path).detector.model_dir == "/opt/edge/models"
    path.write_text("embedder:\n  models_dir: /opt/edge/models\ndetector:\n  model_dir: /srv/detector\n")
    assert load_config(path).detector.model_dir == "/srv/detector"


def _fake_wheel(tmp_path: Path, short: bytes, full: bytes) -> Dict[str, Any]:
    """A wheel laid out like mediapipe's, and a detector section describing it."""
    section = yaml.safe_load((DEFAULT_MODELS_DIR / "manifest.yml").read_text())["detector"]
    wheel = tmp_path / section["source"]["wheel"]
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(section["models"][0]["file_in_wheel"], short)
        archive.writestr(section["models"][1]["file_in_wheel"], full)
        archive.writestr(section["source"]["licence_in_wheel"], "Apache License 2.0\n")
    section["source"]["wheel_sha256"] = hashlib.sha256(wheel.read_bytes()).hexdigest()
    for model, content in zip(section["models"], (short, full)):
        model["sha256"], model["size_bytes"] = hashlib.sha256(content).hexdigest(), len(content)
    return {"wheel": wheel, "section": section}


def test_extraction_checks_the_wheel_and_each_file(tmp_path: Path) -> None:
    fake = _fake_wheel(tmp_path, b"short model", b"full model")
    files = extract_detector.extract(fake["wheel"], fake["section"])
    assert files["face_detection_short_range.tflite"] == b"short model"
    assert files[extract_detector.LICENCE_FILE] == b"Apache License 2.0\n"
    wrong_wheel = dict(fake["section"], source=dict(fake["section"]["source"], wheel_sha256="0" * 64))
    with pytest.raises(SystemExit, match="has sha256"):
        extract_detector.extract(fake["wheel"], wrong_wheel)
    fake["section"]["models"][1]["sha256"] = "0" * 64
    with pytest.raises(SystemExit, match="MISMATCH.*face_detection_full_range_sparse.tflite"):
        extract_detector.extract(fake["wheel"], fake["section"])


def test_the_shipped_detector_files_pass_the_extractors_check() -> None:
    section = extract_detector.detector_section(DEFAULT_MODELS_DIR / "manifest.yml")
    assert extract_detector.check_installed(DEFAULT_MODELS_DIR, section) == []
    assert section["source"]["package"] == "mediapipe" and section["source"]["version"] == "0.10.18"


# ---- the runtime dependency set resolves to wheels on every Python and machine a box runs ----------------------
def runtime_requirements() -> List[str]:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    lines = parser["options"]["install_requires"].splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_mediapipe_is_not_a_runtime_dependency() -> None:
    names = [req.split(";")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower() for req in runtime_requirements()]
    assert "mediapipe" not in names and "opencv-python-headless" in names
    assert not [r for r in runtime_requirements() if r.startswith("numpy") and "<2" in r]


def _pypi_unreachable() -> str:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError as exc:
        return f"PyPI is unreachable ({exc}): the wheel-resolution check needs the package index"
    return ""


def platforms(machine: str) -> List[str]:
    """pip --platform options for a glibc 2.35 box (Ubuntu 22.04 / JetPack 6; Pi OS Bookworm has 2.36)."""
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(35, 16, -1)] + [f"manylinux2014_{machine}"]
    return [option for tag in tags for option in ("--platform", tag)]


@pytest.mark.parametrize("platform", ["x86_64", "aarch64"])
@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12", "3.13"])
def test_runtime_dependencies_resolve_to_wheels(tmp_path: Path, python: str, platform: str) -> None:
    reason = _pypi_unreachable()
    if reason:
        pytest.skip(reason)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
         "--python-version", python, *platforms(platform), "-d", str(tmp_path), *runtime_requirements()],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    wheels = sorted(p.name for p in tmp_path.glob("*.whl"))
    assert not list(tmp_path.glob("*.tar.gz")), "a source distribution would need a compiler on the box"
    for package in ("numpy", "opencv_python_headless", "ai_edge_litert", "cryptography"):
        assert any(w.startswith(package + "-") for w in wheels), (package, wheels)
    assert not any(w.startswith("mediapipe-") for w in wheels)


def test_opencv_logs_are_quieted_on_old_and_new_opencv() -> None:
    """cv2.setLogLevel is gone from OpenCV 4.12+ (cv2.utils.logging has it): `edge run` crashed on a fresh box."""
    from edge.capture.live import OPENCV_LOG_ERROR, opencv_log_level, quiet_opencv

    quiet_opencv()
    assert opencv_log_level() == OPENCV_LOG_ERROR
