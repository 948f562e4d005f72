"""edge.scene: the motion gate, the plan of each frame's passes (pure, fake frames and boxes), and with the real
detector, that a person entering a still scene is found on the first frame they are in."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import cv2
import numpy as np
import pytest

from edge.detect import DetectorConfig, FaceDetector, Pass
from edge.faces import Box, Detection
from edge.scene import MotionGate, SceneDetector, Sweep, cover, grid, plan

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
    assert plan(WHOLE, [], [], whole_due=False, context=3.0) == []
    assert plan(WHOLE, [], [], whole_due=True, context=3.0) == WHOLE


def test_a_live_track_gets_a_focus_pass_around_its_predicted_face_even_when_nothing_moves() -> None:
    passes = plan(WHOLE, [], [Box(100, 200, 60, 60)], whole_due=False, context=3.0)
    assert passes == [Pass("short", (40.0, 140.0, 220.0, 320.0), focus=True)]


def test_while_tracks_are_live_the_whole_frame_pass_is_the_full_range_one_alone() -> None:
    """The focus passes hold the tracked faces; the full-range model finds a new face of any size the short-range
    one would. With nothing tracked, both run."""
    moved = [(0.0, 0.0, 1920.0, 1080.0)]
    assert plan(WHOLE, moved, [], whole_due=False, context=3.0) == WHOLE
    passes = plan(WHOLE, moved, [Box(100, 200, 60, 60)], whole_due=False, context=3.0)
    assert passes == [WHOLE[1], Pass("short", (40.0, 140.0, 220.0, 320.0), focus=True)]


def test_a_coasting_track_gets_no_focus_pass_while_the_whole_frame_pass_runs() -> None:
    """A decided track with nothing due (Tracker.expected's `coasting`) is followed by the whole-frame pass: no focus
    pass, only a marker that keeps its small face from being refined; a track to measure gets its focus pass. When
    no whole-frame pass runs (nothing moved), the coasting track is looked for with a focus pass too."""
    moved = [(0.0, 0.0, 1920.0, 1080.0)]
    due, coasting = Box(100, 200, 60, 60), Box(1000, 200, 60, 60)
    passes = plan(WHOLE, moved, [], False, 3.0, coasting=[coasting])
    assert passes == [WHOLE[1], Pass("full", (1000.0, 200.0, 1060.0, 260.0), coasting=True)]
    assert not any(p.focus for p in passes)
    passes = plan(WHOLE, moved, [due], False, 3.0, coasting=[coasting])
    assert [p.rect for p in passes if p.focus] == [(40.0, 140.0, 220.0, 320.0)]
    still = plan(WHOLE, [], [due], False, 3.0, coasting=[coasting])
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


def test_the_grid_covers_the_frame_with_overlapping_squares_a_face_fits_in() -> None:
    squares = grid(1920, 1080, 512)
    assert len(squares) == 5 * 3
    for x0, y0, x1, y1 in squares:
        assert 0 <= x0 < x1 <= 1920 and 0 <= y0 < y1 <= 1080 and x1 - x0 == 512 and y1 - y0 == 512
    rng = np.random.default_rng(0)
    for _ in range(200):  # any face up to 0.3 of a side lies whole in some square
        side = float(rng.uniform(20, 0.3 * 512))
        x, y = float(rng.uniform(0, 1920 - side)), float(rng.uniform(0, 1080 - side))
        assert any(a <= x and b <= y and x + side <= c and y + side <= d for a, b, c, d in squares)
    assert grid(1280, 720, 512) and grid(400, 300, 512) == [(0.0, 0.0, 400.0, 300.0)]


def sweep_of(squares: List[tuple], memory_s: float = 3.0, door: Sequence[tuple] = ()) -> Sweep:
    return Sweep(squares, door, memory_s)


def test_the_sweep_looks_where_something_moves_first_then_keeps_looking_while_it_is_remembered() -> None:
    squares = grid(1920, 1080, 512)
    sweep = sweep_of(squares)
    area = 1920.0 * 1080.0
    assert sweep.choose([], 0.0, 2, area) == []  # nothing ever moved: nothing to look at
    person = (1500.0, 600.0, 1600.0, 1000.0)
    moving = [s for s in squares if s[0] < person[2] and person[0] < s[2] and s[1] < person[3] and person[1] < s[3]]
    assert len(moving) >= 2
    first = sweep.choose([person], 0.1, 2, area)
    assert len(first) == 2 and set(first) <= set(moving)
    # nothing moves any more: the squares it moved in are looked at in turns while remembered, then no more
    seen = set(first)
    for step in range(2, 20):
        chosen = sweep.choose([], step / 10, 2, area)
        assert set(chosen) <= set(moving)
        seen |= set(chosen)
    assert seen == set(moving)
    assert sweep.choose([], 3.2, 2, area) == []


def test_new_motion_is_looked_at_first_and_squares_still_moving_take_turns_with_those_remembered() -> None:
    squares = grid(1920, 1080, 512)
    sweep = sweep_of(squares)
    area = 1920.0 * 1080.0
    left, right = (100.0, 100.0, 140.0, 140.0), (1800.0, 900.0, 1840.0, 940.0)
    sweep.choose([left], 0.0, 1, area)
    (chosen,) = sweep.choose([right], 0.1, 1, area)
    assert chosen[0] > 1000  # the new motion, not the square looked at a frame ago (and only remembered now)
    (chosen,) = sweep.choose([right], 0.2, 1, area)
    assert chosen[0] < 600  # the left one, remembered, has waited longest: a moving square cannot starve it


def test_a_change_of_the_whole_view_makes_no_square_due_and_a_door_square_is_due_whenever_anything_moves() -> None:
    door = cover((1200.0, 100.0, 1600.0, 700.0), 512, 1920, 1080)
    sweep = sweep_of(grid(1920, 1080, 512), door=door)
    area = 1920.0 * 1080.0
    assert sweep.choose([(0.0, 0.0, 1900.0, 1000.0)], 0.0, 4, area) == door  # lighting: only the door
    assert sweep.choose([], 5.0, 4, area) == []  # long still: nothing
    assert sweep.choose([(10.0, 10.0, 20.0, 20.0)], 5.1, 1, area) in ([door[0]], [grid(1920, 1080, 512)[0]])


def test_time_running_backwards_restarts_the_sweep() -> None:
    sweep = sweep_of(grid(1920, 1080, 512))
    area = 1920.0 * 1080.0
    assert sweep.choose([(10.0, 10.0, 20.0, 20.0)], 100.0, 1, area)
    assert sweep.choose([], 1.0, 1, area) == []  # a looped file: what moved "at 100 s" is forgotten


def test_small_frames_and_regions_off_get_no_sweep() -> None:
    with FaceDetector(DetectorConfig(region_size=512)) as det:
        scene = SceneDetector(det, det.config)
        assert scene.sweep(640, 360) is None and scene.sweep(768, 432) is None and scene.sweep(1280, 720) is not None
        assert SceneDetector(det, DetectorConfig(region_size=0)).sweep(1920, 1080) is None
        assert SceneDetector(det, DetectorConfig(region_size=512, max_regions=0)).sweep(1920, 1080) is None


def test_the_sweep_looks_at_as_many_squares_per_frame_as_cover_a_busy_view_in_region_cycle_frames() -> None:
    with FaceDetector(DetectorConfig(region_size=512, max_regions=2, region_cycle=8)) as det:
        scene = SceneDetector(det, det.config)
        hd, full_hd = scene.sweep(1280, 720), scene.sweep(1920, 1080)
        assert hd is not None and full_hd is not None
        assert (len(hd.squares), scene.looks(hd)) == (8, 1)
        assert (len(full_hd.squares), scene.looks(full_hd)) == (15, 2)
        assert scene.looks(Sweep(grid(3840, 2160, 512), [], 3.0)) == 2  # at most max_regions


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


def test_the_sweep_finds_a_small_face_that_keeps_still_beside_people_who_move(data: Path) -> None:
    """The far-door case of scripts/bench_recall.py: the Hamilton clip shrunk to 0.7 into the corner of a still
    1080p scene. After the cut at ~7.1 s an audience member's ~55 px face barely moves while the people beside her do:
    motion alone never frames her, and the whole-frame pass shrinks her to ~5 px. The sweep keeps looking at the
    squares where things moved and finds her; the detector without it never does."""
    cap = cv2.VideoCapture(str(data / "negatives" / "one-by-one-person-detection.mp4"))
    ok, still = cap.read()
    cap.release()
    assert ok
    scene = cv2.resize(still, (1920, 1080))
    clip = cv2.VideoCapture(str(data / "hamilton" / "short_hamilton_clip.mp4"))
    frames: List[np.ndarray] = []
    index = 0
    while len(frames) < 84:
        ok, frame = clip.read()
        if not ok:
            break
        if index % 3 == 0:  # 10 fps, as the box's max_fps
            small = cv2.resize(frame, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
            out = scene.copy()
            h, w = small.shape[:2]
            out[1080 - 32 - h : 1080 - 32, 1920 - 32 - w : 1920 - 32] = small
            frames.append(out)
        index += 1
    clip.release()
    assert len(frames) == 84
    face = (1468.0, 838.0, 1517.0, 896.0)  # where YuNet (score >= 0.9) finds her in frames 71-83

    def found_her(config: DetectorConfig) -> List[int]:
        with FaceDetector(config) as detector:
            scene_detector = SceneDetector(detector, config)
            hits = []
            for i, image in enumerate(frames[60:], start=60):
                for d in scene_detector.detect(image, i / 10.0):
                    box = (d.box.x, d.box.y, d.box.x + d.box.w, d.box.y + d.box.h)
                    if box[0] < face[2] and face[0] < box[2] and box[1] < face[3] and face[1] < box[3]:
                        hits.append(i)
            return hits

    swept = found_her(DetectorConfig())
    assert swept and min(swept) <= 74, swept  # within 0.3 s of the cut, with no track to hold her
    assert found_her(DetectorConfig(region_size=0)) == []
