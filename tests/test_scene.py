"""edge.scene: the motion gate, the plan of each frame's passes (pure, fake frames and boxes), and with the real
detector, that a person entering a still scene is found on the first frame they are in."""

from __future__ import annotations

from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from edge.detect import DetectorConfig, FaceDetector, Pass
from edge.faces import Box, Detection
from edge.scene import MotionGate, SceneDetector, cover, plan

HD = (1920, 1080)
WHOLE = [Pass("short", (0.0, 0.0, 1920.0, 1080.0)), Pass("full", (0.0, 0.0, 1920.0, 1080.0))]


def noisy_scene(rng: np.random.Generator, base: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    noise = rng.normal(0.0, sigma, base.shape[:2])[:, :, None]
    return np.clip(base.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def textured(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 255, (height // 40 + 1, width // 40 + 1, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def test_motion_gate_ignores_sensor_noise_and_finds_what_moved() -> None:
    rng = np.random.default_rng(0)
    base = textured(720, 1280)
    gate = MotionGate(width=160, threshold=16.0, cells=4)
    assert gate.moving(noisy_scene(rng, base)) == [(0.0, 0.0, 1280.0, 720.0)]  # the first frame is all motion
    assert all(gate.moving(noisy_scene(rng, base)) == [] for _ in range(20))
    moved = base.copy()
    moved[300:380, 900:960] = 255  # a 60x80 bright thing appears
    (rect,) = gate.moving(noisy_scene(rng, moved))
    assert rect[0] <= 900 and rect[1] <= 300 and rect[2] >= 960 and rect[3] >= 380
    assert (rect[2] - rect[0]) < 200 and (rect[3] - rect[1]) < 200
    assert gate.moving(noisy_scene(rng, moved)) == []  # still again


def test_a_still_frame_with_nothing_tracked_gets_no_pass_until_the_idle_pass_is_due() -> None:
    config = DetectorConfig()
    assert plan(config, WHOLE, HD, [], [], None, whole_due=False, turn=0) == []
    assert plan(config, WHOLE, HD, [], [], None, whole_due=True, turn=0) == WHOLE


def test_a_live_track_gets_a_focus_pass_around_its_predicted_face_even_when_nothing_moves() -> None:
    config = DetectorConfig(refine_context=3.0)
    passes = plan(config, WHOLE, HD, [], [Box(100, 200, 60, 60)], None, whole_due=False, turn=0)
    assert passes == [Pass("short", (40.0, 140.0, 220.0, 320.0), focus=True)]


def test_while_tracks_are_live_the_whole_frame_pass_is_the_full_range_one_alone() -> None:
    """The focus passes hold the tracked faces; the full-range model finds a new face of any size the short-range
    one would. With nothing tracked, both run."""
    config = DetectorConfig(refine_context=3.0)
    moved = [(0.0, 0.0, 1920.0, 1080.0)]
    assert plan(config, WHOLE, HD, moved, [], None, whole_due=False, turn=0) == WHOLE
    passes = plan(config, WHOLE, HD, moved, [Box(100, 200, 60, 60)], None, whole_due=False, turn=0)
    assert passes == [WHOLE[1], Pass("short", (40.0, 140.0, 220.0, 320.0), focus=True)]


def test_a_coasting_track_gets_no_focus_pass_while_the_whole_frame_pass_runs() -> None:
    """A decided track with nothing due (Tracker.expected's `coasting`) is followed by the whole-frame pass: no focus
    pass, only a marker that keeps its small face from being refined; a track to measure gets its focus pass. When
    no whole-frame pass runs (nothing moved), the coasting track is looked for with a focus pass too."""
    config = DetectorConfig(refine_context=3.0)
    moved = [(0.0, 0.0, 1920.0, 1080.0)]
    due, coasting = Box(100, 200, 60, 60), Box(1000, 200, 60, 60)
    passes = plan(config, WHOLE, HD, moved, [], None, False, 0, coasting=[coasting])
    assert passes == [WHOLE[1], Pass("full", (1000.0, 200.0, 1060.0, 260.0), coasting=True)]
    assert not any(p.focus for p in passes)
    passes = plan(config, WHOLE, HD, moved, [due], None, False, 0, coasting=[coasting])
    assert [p.rect for p in passes if p.focus] == [(40.0, 140.0, 220.0, 320.0)]
    still = plan(config, WHOLE, HD, [], [due], None, False, 0, coasting=[coasting])
    assert still == [
        Pass("short", (40.0, 140.0, 220.0, 320.0), focus=True),
        Pass("short", (940.0, 140.0, 1120.0, 320.0), focus=True),
    ]


def test_a_small_face_over_a_coasting_track_is_coarse_for_the_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """SceneDetector.coarse: the small face of a coasting track was not refined (the pipeline neither embeds nor
    liveness-scores it); a face elsewhere, or a large one, was measured as usual."""
    with FaceDetector(DetectorConfig()) as detector:
        asked: List[List[Pass]] = []
        monkeypatch.setattr(detector, "detect_in", lambda image, passes: asked.append(list(passes)) or [])
        scene = SceneDetector(detector, detector.config)
        scene.detect(np.zeros((720, 1280, 3), np.uint8), 0.0, [Box(600, 300, 60, 60)], [Box(100, 100, 60, 60)])
        assert [p.rect for p in asked[0] if p.coasting] == [(100.0, 100.0, 160.0, 160.0)]
        kp = np.zeros((6, 2), np.float32)
        assert scene.coarse(Detection(Box(104, 98, 60, 62), 0.9, kp))
        assert not scene.coarse(Detection(Box(600, 300, 60, 60), 0.9, kp))
        assert not scene.coarse(Detection(Box(60, 60, 300, 300), 0.9, kp))  # large: never refined anyway


def test_motion_in_a_large_frame_gets_the_whole_pass_and_native_scale_regions_around_it() -> None:
    config = DetectorConfig(region_size=512)
    person = (1500.0, 600.0, 1600.0, 1000.0)  # a 100x400 moving region, bottom right
    passes = plan(config, WHOLE, HD, [person], [], None, whole_due=False, turn=0)
    assert passes[:2] == WHOLE
    regions = passes[2:]
    assert regions and all(p.model == "full" and p.verify for p in regions)
    for p in regions:
        x0, y0, x1, y1 = p.rect
        assert x1 - x0 <= 512 and y1 - y0 <= 512 and x0 >= 0 and y0 >= 0 and x1 <= 1920 and y1 <= 1080
        assert x0 <= person[0] and x1 >= person[2] and y0 <= person[1]  # the person's top (the head) is inside


def test_small_frames_and_whole_view_changes_get_no_regions() -> None:
    config = DetectorConfig(region_size=512)
    small = [Pass("full", (0.0, 0.0, 640.0, 360.0))]
    assert plan(config, small, (640, 360), [(10.0, 10.0, 100.0, 100.0)], [], None, False, 0) == small
    everything = [(0.0, 0.0, 1900.0, 1000.0)]  # lighting changed: the whole-frame pass covers it
    assert plan(config, WHOLE, HD, everything, [], None, False, 0) == WHOLE


def test_regions_beyond_the_budget_are_taken_in_turns() -> None:
    config = DetectorConfig(region_size=512, max_regions=2)
    moving = [(x, 100.0, x + 40.0, 140.0) for x in (100.0, 700.0, 1300.0)]  # three small things far apart
    seen: List[tuple] = []
    for turn in range(3):
        regions = plan(config, WHOLE, HD, moving, [], None, False, turn)[2:]
        assert len(regions) == 2
        seen.extend(p.rect for p in regions)
    assert len(set(seen)) == 3


def test_the_door_region_is_looked_at_whenever_something_moves() -> None:
    config = DetectorConfig(region_size=512)
    door = (1200.0, 100.0, 1600.0, 700.0)
    passes = plan(config, WHOLE, HD, [(0.0, 0.0, 1900.0, 1000.0)], [], door, False, 0)
    regions = [p.rect for p in passes[2:]]
    assert regions == cover(door, 512, 1920, 1080)
    assert plan(config, WHOLE, HD, [], [], door, False, 0) == []  # nothing moved: no pass at all


def test_cover_keeps_regions_inside_the_frame_and_within_the_size() -> None:
    for rect in [(0.0, 0.0, 30.0, 30.0), (1890.0, 1050.0, 1920.0, 1080.0), (0.0, 0.0, 1920.0, 1080.0)]:
        squares = cover(rect, 512, 1920, 1080)
        assert squares
        for x0, y0, x1, y1 in squares:
            assert 0 <= x0 < x1 <= 1920 and 0 <= y0 < y1 <= 1080 and x1 - x0 <= 512 and y1 - y0 <= 512


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    with FaceDetector(DetectorConfig(region_size=512)) as det:
        yield det


def test_a_person_entering_a_still_scene_is_found_on_the_first_frame_they_are_in(
    data: Path, detector: FaceDetector
) -> None:
    """A still 1080p scene (the negative clip's first frame, with noise) costs no detector pass; then the Hamilton
    photo of two people appears in its corner, shrunk to 1/4: the first frame they are in already gives both faces,
    which the whole-frame detector alone misses."""
    cap = cv2.VideoCapture(str(data / "negatives" / "one-by-one-person-detection.mp4"))
    ok, still = cap.read()
    cap.release()
    assert ok
    base = cv2.resize(still, (1920, 1080))
    rng = np.random.default_rng(3)
    scene = SceneDetector(detector, detector.config)
    frames = 0
    for _ in range(30):  # 3 s at 10 fps: the first frame is all motion, then one idle whole-frame pass at 2 s
        mono = frames / 10
        scene.detect(noisy_scene(rng, base, 2.0), mono)
        frames += 1
    assert scene.idle >= 27
    person = cv2.imread(str(data / "hamilton" / "two_people.jpg"))
    small = cv2.resize(person, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    h, w = small.shape[:2]
    entering = noisy_scene(rng, base, 2.0)
    entering[1080 - 40 - h : 1080 - 40, 1920 - 40 - w : 1920 - 40] = small
    corner = (1920 - 40 - w, 1080 - 40 - h)

    def in_corner(found: List[Detection]) -> List[Detection]:
        return [d for d in found if d.box.x >= corner[0] and d.box.y >= corner[1]]

    whole = in_corner(detector.detect(entering))
    found = in_corner(scene.detect(entering, frames / 10))
    assert len(found) == 2, found  # both faces, ~30-40 px, on the first frame
    assert len(whole) < 2
