"""Liveness stage: context crops, the per-track decision, config checks, the models, `edge eval liveness`.

Data tests use EDGE_TEST_DATA (default ../shared/data): liveness/ samples, hamilton/ stills and clip."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edge.errors import EdgeError, ModelError
from edge.faces import Box, Detection
from edge.liveness.crop import context_crop, crop_window
from edge.liveness.decide import FaceCues, LivenessConfig, Verdict, decide, face_cues, frontal, gate, judgeable, yaw_deg
from edge.liveness.evaluate import Item, ItemResult, discover, score_item, summarise, wilson

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"


# ------------------------------------------------------------------------------------------------ crops (pure)
@pytest.mark.parametrize(
    ("box", "scale", "window"),
    [
        (Box(100, 100, 100, 100), 2.7, (15, 15, 285, 285)),  # room all round: scaled about the centre
        (Box(0, 300, 100, 100), 4.0, (0, 150, 400, 550)),  # at the left edge: shifted right, not padded
        (Box(100, 100, 200, 200), 4.0, (0, 0, 479, 479)),  # too large for 4x: factor shrunk to fit, then shifted
        (Box(400, 560, 79, 79), 2.7, (265, 425, 479, 639)),  # bottom-right corner: shifted up and left
    ],
)
def test_the_crop_window_is_the_reference_one(box: Box, scale: float, window: tuple) -> None:
    assert crop_window(480, 640, box, scale) == window


@pytest.mark.parametrize("scale", [2.7, 4.0])
@pytest.mark.parametrize(
    "box",
    [Box(0, 0, 30, 30), Box(450, 610, 30, 30), Box(0, 600, 60, 40), Box(10, 10, 470, 630), Box(200, 0, 50, 200)],
)
def test_a_crop_is_never_padded(box: Box, scale: float) -> None:
    image = np.full((640, 480, 3), 200, np.uint8)
    x0, y0, x1, y1 = crop_window(480, 640, box, scale)
    assert 0 <= x0 <= x1 <= 479 and 0 <= y0 <= y1 <= 639
    crop = context_crop(image, box, scale)
    assert crop.shape == (80, 80, 3) and crop.dtype == np.uint8
    assert (crop == 200).all()  # a padded crop would bring in a black (or replicated) border


def test_the_crop_is_the_context_not_the_face() -> None:
    """A 4x crop of a face in the middle of a frame shows the frame around it (here: a dark ring)."""
    image = np.zeros((640, 480, 3), np.uint8)
    image[200:440, 120:360] = 255
    crop = context_crop(image, Box(190, 270, 100, 100), 4.0)
    assert crop[40, 40].tolist() == [255, 255, 255] and crop[2, 2].tolist() == [0, 0, 0]


def test_a_degenerate_box_or_image_is_refused() -> None:
    with pytest.raises(ValueError, match="face box"):
        crop_window(480, 640, Box(10, 10, 0.5, 20), 2.7)
    with pytest.raises(ValueError, match="BGR uint8"):
        context_crop(np.zeros((64, 64), np.uint8), Box(10, 10, 20, 20), 2.7)


# ------------------------------------------------------------------------------------------------ decide (pure)
def test_fewer_than_min_frames_is_undecided_even_when_they_look_like_a_spoof() -> None:
    config = LivenessConfig(frames=5, min_frames=3)
    assert decide([], config) == Verdict(p_real=None, frames=0, verdict="undecided")
    assert decide([0.01, 0.02], config).verdict == "undecided"
    assert decide([0.01, 0.02, 0.03], config).verdict == "spoof"


def test_the_track_verdict_is_the_median_so_one_bad_frame_does_not_flip_it() -> None:
    config = LivenessConfig(threshold=0.5, frames=5, min_frames=3)
    real = decide([0.95, 0.02, 0.9, 0.97, 0.91], config)
    assert real.verdict == "real" and real.p_real == pytest.approx(0.91) and real.frames == 5
    spoof = decide([0.1, 0.99, 0.2, 0.15], config)
    assert spoof.verdict == "spoof" and spoof.p_real == pytest.approx(0.175) and spoof.suspect


def test_a_score_outside_0_1_is_a_bug_not_a_verdict() -> None:
    with pytest.raises(ValueError, match="score"):
        decide([0.5, 1.5, 0.4], LivenessConfig())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("policy", "block"),
        ("threshold", 0.0),
        ("threshold", 1.0),
        ("threshold", float("nan")),
        ("threshold", "0.5"),
        ("frames", 0),
        ("frames", 2.5),
        ("frames", True),
        ("min_frames", 0),
        ("max_yaw_deg", 0),
        ("max_yaw_deg", 91),
        ("max_yaw_deg", float("inf")),
        ("min_face_px", -1),
        ("num_threads", 0),
        ("min_sharpness", -1),
        ("min_sharpness", float("nan")),
        ("min_contrast", 129),
        ("min_contrast", "28"),
        ("max_clipped", 1.5),
        ("max_clipped", -0.1),
    ],
)
def test_each_bad_setting_is_refused_naming_its_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        LivenessConfig(**{field: value})  # type: ignore[arg-type]


def test_min_frames_cannot_exceed_frames() -> None:
    with pytest.raises(ValueError, match="^min_frames: must be <= frames"):
        LivenessConfig(frames=3, min_frames=4)


def _face(yaw: float = 0.0, roll: float = 0.0, width: float = 120.0, cx: float = 300.0, cy: float = 200.0) -> Detection:
    """Synthetic BlazeFace keypoints of a head turned by `yaw` and rolled by `roll` degrees."""
    e = width * 0.3  # half the eye distance when frontal
    t = math.radians(yaw)
    pts = np.array(
        [
            [-e * math.cos(t), 0.0],  # right eye (image left)
            [e * math.cos(t), 0.0],  # left eye
            [0.6 * 2 * e * math.sin(t), 0.35 * width],  # nose tip, 0.6 eye-distances in front of the eyes
            [0.6 * e * math.sin(t), 0.7 * width],  # mouth
            [-1.2 * e * math.cos(t), 0.1 * width],  # ears
            [1.2 * e * math.cos(t), 0.1 * width],
        ]
    )
    r = math.radians(roll)
    rot = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    pts = pts @ rot.T + [cx, cy]
    return Detection(box=Box(cx - width / 2, cy - width / 2, width, width), score=0.9, keypoints=pts.astype(np.float32))


@pytest.mark.parametrize("yaw", [0.0, 10.0, 20.0, 30.0, 45.0])
@pytest.mark.parametrize("roll", [0.0, 20.0, -35.0])
def test_yaw_is_recovered_from_the_keypoints_whatever_the_roll(yaw: float, roll: float) -> None:
    assert yaw_deg(_face(yaw, roll)) == pytest.approx(yaw, abs=0.5)
    assert yaw_deg(_face(-yaw, roll)) == pytest.approx(-yaw, abs=0.5)


def test_only_frontal_faces_of_usable_size_are_scored() -> None:
    config = LivenessConfig(max_yaw_deg=25, min_face_px=60)
    assert frontal(_face(10, width=120), config)
    assert frontal(_face(-24, width=60), config)
    assert not frontal(_face(30, width=120), config)
    assert not frontal(_face(-30, width=120), config)
    assert not frontal(_face(0, width=59), config)


def test_the_scoring_gate_names_what_it_cannot_judge_and_each_check_can_be_turned_off() -> None:
    config = LivenessConfig(min_sharpness=6.0, min_contrast=28.0, max_clipped=0.08)
    assert judgeable(FaceCues(sharpness=40.0, contrast=40.0, clipped=0.0), config) is None
    assert judgeable(FaceCues(sharpness=2.0, contrast=40.0, clipped=0.0), config) == "blurred"
    assert judgeable(FaceCues(sharpness=40.0, contrast=15.0, clipped=0.0), config) == "low_contrast"
    assert judgeable(FaceCues(sharpness=40.0, contrast=40.0, clipped=0.3), config) == "over_exposed"
    off = LivenessConfig(min_sharpness=0.0, min_contrast=0.0, max_clipped=1.0)
    assert judgeable(FaceCues(sharpness=0.0, contrast=0.0, clipped=1.0), off) is None


def test_face_cues_read_the_face_box_of_the_full_frame() -> None:
    rng = np.random.default_rng(0)
    image = np.full((400, 600, 3), 120, np.uint8)
    image[100:300, 200:400] = rng.integers(40, 200, (200, 200, 3), dtype=np.uint8)  # textured face box
    box = Box(200, 100, 200, 200)
    sharp = face_cues(image, box)
    assert sharp.sharpness > 1000 and sharp.contrast > 20 and sharp.clipped == 0.0
    assert face_cues(image, Box(0, 0, 150, 90)).contrast == 0.0  # the flat wall beside it
    blurred = face_cues(cv2.GaussianBlur(image, (0, 0), 3), box)
    assert blurred.sharpness < sharp.sharpness / 50
    white = face_cues(np.full((400, 600, 3), 255, np.uint8), box)
    assert white.clipped == 1.0 and white.contrast == 0.0
    assert face_cues(image, Box(595, 395, 40, 40)).sharpness == 0.0  # almost all outside: nothing to judge


def _blur(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), 3.0)


def _bright(image: np.ndarray) -> np.ndarray:
    return np.clip(image.astype(np.float32) * 1.6, 0, 255).astype(np.uint8)


def _flat(image: np.ndarray) -> np.ndarray:
    return np.clip((image.astype(np.float32) - 128) * 0.5 + 128, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ the models
def test_a_missing_liveness_model_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    from edge.liveness.model import LivenessModel

    shutil.copy(MODELS / "manifest.yml", tmp_path / "manifest.yml")
    shutil.copy(MODELS / "minifasnet_v2.tflite", tmp_path / "minifasnet_v2.tflite")
    with pytest.raises(ModelError, match=r"minifasnet_v1se\.tflite is missing.*--liveness-only"):
        LivenessModel(tmp_path)


def test_a_replaced_liveness_model_is_refused_by_its_sha256(tmp_path: Path) -> None:
    from edge.liveness.model import LivenessModel

    for name in ("manifest.yml", "minifasnet_v2.tflite"):
        shutil.copy(MODELS / name, tmp_path / name)
    shutil.copy(MODELS / "minifasnet_v2.tflite", tmp_path / "minifasnet_v1se.tflite")  # the wrong model
    with pytest.raises(EdgeError, match=r"minifasnet_v1se\.tflite has sha256 .* but the manifest expects"):
        LivenessModel(tmp_path)


def test_a_manifest_without_a_liveness_section_says_so(tmp_path: Path) -> None:
    from edge.liveness.model import LivenessModel

    (tmp_path / "manifest.yml").write_text("id: x\nfile: y.tflite\n")
    with pytest.raises(ModelError, match="missing key 'liveness'"):
        LivenessModel(tmp_path)


@pytest.fixture(scope="module")
def model():
    from edge.liveness.model import LivenessModel

    with LivenessModel(MODELS) as liveness:
        yield liveness


@pytest.fixture(scope="module")
def detector():
    from edge.detect import DetectorConfig, FaceDetector

    with FaceDetector(DetectorConfig(num_threads=1)) as found:
        yield found


def test_the_model_is_closed_for_good(detector) -> None:
    from edge.liveness.model import LivenessModel

    liveness = LivenessModel(MODELS)
    liveness.close()
    with pytest.raises(RuntimeError, match="closed"):
        liveness.score(np.zeros((100, 100, 3), np.uint8), Box(10, 10, 50, 50))


def _largest(detector, image: np.ndarray) -> Detection:
    faces = detector.detect(image)
    assert faces, "no face found"
    return max(faces, key=lambda d: d.box.area)


@pytest.mark.data
@pytest.mark.parametrize(
    ("name", "verdict"), [("image_F1.jpg", "spoof"), ("image_F2.jpg", "spoof"), ("image_T1.jpg", "real")]
)
def test_the_sample_print_and_tablet_are_spoofs_and_the_genuine_face_is_real(
    data: Path, model, detector, name: str, verdict: str
) -> None:
    image = cv2.imread(str(data / "liveness" / name))
    config = LivenessConfig()
    p_real = model.score(image, _largest(detector, image).box)
    assert ("real" if p_real >= config.threshold else "spoof") == verdict, p_real
    # every frame of a still image gives the same score: the track verdict is the same
    assert decide([p_real] * config.min_frames, config).verdict == verdict


@pytest.mark.data
def test_the_fused_score_is_the_mean_of_the_two_models(data: Path, model, detector) -> None:
    image = cv2.imread(str(data / "liveness" / "image_F2.jpg"))
    box = _largest(detector, image).box
    v2, v1se = model.score_each(image, box)
    assert model.score(image, box) == pytest.approx((v2 + v1se) / 2)
    assert v2 < 0.01 and v1se > 0.5  # the tablet fools one model alone: fusing is what catches it


HAMILTON_STILLS = [
    "alex-lacamoire.png",
    "biden.jpg",
    "lin-manuel-miranda.png",
    "obama.jpg",
    "obama2.jpg",
    "obama-240p.jpg",
    "obama-480p.jpg",
    "obama-720p.jpg",
    "obama-1080p.jpg",
    "two_people.jpg",
]


@pytest.mark.data
@pytest.mark.parametrize("name", HAMILTON_STILLS)
def test_no_hamilton_still_is_flagged(data: Path, model, detector, name: str) -> None:
    image = cv2.imread(str(data / "hamilton" / name))
    config = LivenessConfig()
    for face in detector.detect(image):
        if frontal(face, config):
            assert model.score(image, face.box) >= config.threshold


@pytest.mark.data
def test_the_hamilton_clip_as_one_track_is_real(data: Path, model, detector) -> None:
    item = Item(data / "hamilton" / "short_hamilton_clip.mp4", "real", None)
    result = score_item(item, detector.detect, model.score, LivenessConfig(), every=3)
    assert result.track is not None and result.track.verdict == "real"
    assert len(result.scores) >= 10 and min(result.scores) >= LivenessConfig().threshold


# ------------------------------------------------------------------------------------------------ evaluation
def test_wilson_intervals_match_known_values() -> None:
    assert wilson(0, 0) is None
    lo, hi = wilson(0, 10)  # type: ignore[misc]
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(5, 10)  # type: ignore[misc]
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_the_folder_layout_gives_labels_and_attack_sources(tmp_path: Path) -> None:
    _touch(tmp_path / "real" / "walks" / "a.mp4")
    _touch(tmp_path / "real" / "b.JPG")
    _touch(tmp_path / "spoof" / "phone" / "x" / "c.mp4")
    _touch(tmp_path / "spoof" / "d.png")
    _touch(tmp_path / "spoof" / "phone" / "notes.txt")
    items = {p.path.name: (p.label, p.source) for p in discover(tmp_path)}
    assert items == {
        "a.mp4": ("real", None),
        "b.JPG": ("real", None),
        "c.mp4": ("spoof", "phone"),
        "d.png": ("spoof", "unspecified"),
    }


def test_a_labels_csv_replaces_the_layout_and_bad_rows_name_their_line(tmp_path: Path) -> None:
    _touch(tmp_path / "x.jpg")
    _touch(tmp_path / "y.mp4")
    (tmp_path / "labels.csv").write_text("path,label,source\nx.jpg,real,\ny.mp4,spoof,monitor\n")
    assert [(i.label, i.source) for i in discover(tmp_path)] == [("real", None), ("spoof", "monitor")]
    (tmp_path / "labels.csv").write_text("path,label,source\nx.jpg,maybe,\n")
    with pytest.raises(EdgeError, match=r"labels.csv:2: label must be real or spoof"):
        discover(tmp_path)
    with pytest.raises(EdgeError, match="not a folder"):
        discover(tmp_path / "real")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeError, match="expected real/ and/or spoof"):
        discover(tmp_path / "empty")


def _result(label: str, source, scores: List[float], video: bool, config: LivenessConfig) -> ItemResult:
    item = Item(Path(f"x.{'mp4' if video else 'jpg'}"), label, source)
    return ItemResult(item, scores=scores, track=decide(scores[: config.frames], config) if video else None)


def test_apcer_per_source_and_bpcer_per_frame_and_per_track() -> None:
    config = LivenessConfig(threshold=0.5, frames=5, min_frames=3)
    results = [
        _result("real", None, [0.9, 0.8, 0.4, 0.9], True, config),  # 1 spoof frame, track real
        _result("real", None, [0.3, 0.2, 0.9], True, config),  # 2 spoof frames, track spoof
        _result("real", None, [0.9], True, config),  # undecided
        _result("real", None, [0.7], False, config),  # an image: frame level only
        _result("spoof", "phone", [0.1, 0.6, 0.2], True, config),  # 1 frame passes, track spoof
        _result("spoof", "print", [0.9, 0.9, 0.9], True, config),  # passes
    ]
    s = summarise(results, config)
    assert (s["frame"]["bpcer"]["errors"], s["frame"]["bpcer"]["n"]) == (3, 9)
    assert (s["track"]["bpcer"]["errors"], s["track"]["bpcer"]["n"], s["track"]["bpcer"]["undecided"]) == (1, 2, 1)
    assert (s["frame"]["apcer"]["phone"]["errors"], s["frame"]["apcer"]["phone"]["n"]) == (1, 3)
    assert s["track"]["apcer"]["phone"]["rate"] == 0.0 and s["track"]["apcer"]["print"]["rate"] == 1.0
    assert s["frame"]["apcer_max"] == 1.0
    lo, hi = s["frame"]["bpcer"]["ci95"]
    assert lo < 3 / 9 < hi


@pytest.mark.data
def test_edge_eval_liveness_on_the_samples(data: Path, tmp_path: Path) -> None:
    from edge.cli import main

    folder = tmp_path / "set"
    for name, where in (("image_T1.jpg", "real"), ("image_F1.jpg", "spoof/print"), ("image_F2.jpg", "spoof/tablet")):
        (folder / where).mkdir(parents=True, exist_ok=True)
        shutil.copy(data / "liveness" / name, folder / where / name)
    result = CliRunner().invoke(
        main, ["--db", str(tmp_path / "edge.db"), "eval", "liveness", str(folder), "--all-faces", "--json", "--files"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["frame"]["bpcer"]["errors"] == 0 and report["frame"]["bpcer"]["n"] == 1
    assert report["frame"]["apcer"]["print"]["errors"] == 0 and report["frame"]["apcer"]["tablet"]["errors"] == 0
    assert report["model_id"] == "minifasnet-v2-v1se-fp32"


# ------------------------------------------------------------------------------------------------ synthetic attacks
@pytest.mark.data
@pytest.mark.parametrize("kind", ["print_on_wall", "screen_with_bezel"])
@pytest.mark.parametrize(
    "name", ["hamilton/obama.jpg", "hamilton/biden.jpg", "hamilton/lin-manuel-miranda.png", "liveness/image_T1.jpg"]
)
def test_a_genuine_frame_shown_on_paper_or_a_screen_is_a_spoof(
    data: Path, model, detector, kind: str, name: str
) -> None:
    """Wiring, not evidence: these composites show their paper edge or bezel inside the crops, which real attacks
    held close to the camera need not do (README "Liveness")."""
    import liveness_composites

    image = cv2.imread(str(data / name))
    genuine = _largest(detector, image)
    assert model.score(image, genuine.box) >= LivenessConfig().threshold
    shown = getattr(liveness_composites, kind)(liveness_composites.head_and_shoulders(image, genuine.box))
    face = _largest(detector, shown)
    assert frontal(face, LivenessConfig())
    assert model.score(shown, face.box) < LivenessConfig().threshold


# ------------------------------------------------------------------------------------------------ the scoring gate
@pytest.mark.data
@pytest.mark.parametrize(
    ("name", "degrade", "reason"),
    [
        ("hamilton/biden.jpg", _blur, "blurred"),  # blur sigma 3: two stills called spoof without the gate
        ("hamilton/lin-manuel-miranda.png", _bright, "over_exposed"),  # brightness x1.6 (the still flagged at x1.6)
        ("hamilton/two_people.jpg", _flat, "low_contrast"),  # contrast x0.5 (flagged at x0.5)
        ("liveness/image_T1.jpg", _blur, "blurred"),
    ],
)
def test_a_degraded_genuine_face_is_declined_and_the_sharp_one_is_scored(
    data: Path, detector, name: str, degrade, reason: str
) -> None:
    image = cv2.imread(str(data / name))
    config = LivenessConfig()
    face = _largest(detector, image)
    assert gate(image, face, config) is None, face_cues(image, face.box)
    shown = degrade(image)
    face = _largest(detector, shown)
    assert frontal(face, config)
    assert gate(shown, face, config) == reason, face_cues(shown, face.box)


@pytest.mark.data
def test_a_track_of_declined_faces_is_undecided_not_a_spoof(data: Path, detector) -> None:
    from edge.liveness.tracks import LivenessTracks

    image = _blur(cv2.imread(str(data / "hamilton" / "biden.jpg")))
    face = _largest(detector, image)
    tracks = LivenessTracks(LivenessConfig(), max_age_s=1.0)
    tracks.seen("t", 0.0, named=True)
    for _ in range(10):
        assert not tracks.wants("t", face, accepted=True, image=image)
    assert tracks.declined == {"blurred": 10}
    assert tracks.verdict("t").verdict == "undecided"


@pytest.mark.data
@pytest.mark.parametrize("name", ["image_F1.jpg", "image_F2.jpg"])
def test_the_sample_attacks_pass_the_gate_and_are_still_spoofs(data: Path, model, detector, name: str) -> None:
    image = cv2.imread(str(data / "liveness" / name))
    face = _largest(detector, image)
    config = LivenessConfig()
    assert gate(image, face, config) is None, face_cues(image, face.box)  # the tablet's glare clips 0.06 of its face
    assert model.score(image, face.box) < config.threshold


@pytest.mark.data
@pytest.mark.parametrize("kind", ["print_on_wall", "screen_with_bezel"])
@pytest.mark.parametrize("name", ["hamilton/" + n for n in HAMILTON_STILLS] + ["liveness/image_T1.jpg"])
def test_the_head_and_shoulders_composites_pass_the_gate_and_are_spoofs(
    data: Path, model, detector, kind: str, name: str
) -> None:
    import liveness_composites

    image = cv2.imread(str(data / name))
    shown = getattr(liveness_composites, kind)(liveness_composites.head_and_shoulders(image, _largest(detector, image).box))
    face = _largest(detector, shown)
    config = LivenessConfig()
    if kind == "print_on_wall" and name == "hamilton/alex-lacamoire.png":
        # the one head-and-shoulders composite that passes as real (README); the softest still, its print is declined
        # as blurred (sharpness 5.3 < 6): the track is undecided, marked for review under flag and enforce
        assert gate(shown, face, config) == "blurred"
        return
    assert gate(shown, face, config) is None, face_cues(shown, face.box)
    assert model.score(shown, face.box) < config.threshold
