"""The door-pass benchmark (`edge eval door`): its script, its scoring on known outcomes, its rendering, and a small
run of the real command on the shared data (the full size is a benchmark, not a test)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence, Tuple

import pytest
from support import run_edge

from edge.door.plan import (
    CONDITIONS,
    ENTRANCE,
    EXIT,
    PATTERNS,
    Identity,
    PlanSize,
    Walk,
    catalogue,
    choose_people,
    make_plan,
    walk_window,
)
from edge.door.score import EventRecord, Sighted, Vote, WalkDiag, WalkResult, attribute, explain, outcome, summarize


def walk(walk_id: int, person: str, enrolled: bool = True, expected: Tuple[str, ...] = ("entry",),
         condition: str = "unmasked") -> Walk:  # fmt: skip
    return Walk(walk_id, person, Path(f"{person}.jpg"), enrolled, condition, "on_time" if enrolled else "stranger",
                expected if enrolled else (), 3.0, walk_id)  # fmt: skip


def event(
    kind: str, person: Optional[str], at: float = 10.0, camera: str = ENTRANCE, latency: float = 0.5
) -> EventRecord:
    return EventRecord(kind, person, camera, at, latency, "t-1", 0.6, 5)


def diag(votes: Sequence[Tuple[Optional[str], float]] = (), detected: int = 10) -> WalkDiag:
    return WalkDiag(
        30, detected, 60.0 if detected else 0.0, 1, tuple(Vote(0.1 * i, p, s, s) for i, (p, s) in enumerate(votes))
    )


def result(w: Walk, *events: EventRecord, d: Optional[WalkDiag] = None) -> WalkResult:
    return WalkResult(w, ENTRANCE, (0.0, 100.0), tuple(events), d)


# -- scoring on known outcomes ---------------------------------------------------------------------------------


def test_a_stranger_named_is_a_false_identity_and_a_stranger_unknown_is_not() -> None:
    named = outcome(result(walk(1, "lfw.Stranger", enrolled=False), event("entry", "lfw.Someone")))
    assert named.false_identity and not named.hit and named.wrong_people == ("lfw.Someone",)
    quiet = outcome(result(walk(2, "lfw.Stranger", enrolled=False), event("unknown_face", None)))
    assert not quiet.false_identity and quiet.unknown
    report = summarize([result(walk(1, "lfw.S", enrolled=False), event("entry", "lfw.X")),
                        result(walk(2, "lfw.T", enrolled=False), event("unknown_face", None))], [])  # fmt: skip
    row = report["conditions"]["unmasked"]
    assert (row["stranger_passes"], row["stranger_named"], row["false_identities"]) == (2, 1, 1)
    assert row["stranger_reported_unknown"] == 1


def test_an_enrolled_walk_hits_only_with_its_own_event_for_the_right_person() -> None:
    hit = outcome(result(walk(1, "lfw.A"), event("entry", "lfw.A", latency=0.7)))
    assert hit.hit and hit.latency_s == 0.7 and not hit.false_identity
    wrong = outcome(result(walk(2, "lfw.A"), event("entry", "lfw.B")))
    assert not wrong.hit and wrong.false_identity
    other_type = outcome(result(walk(3, "lfw.A", expected=("outing_start",)), event("entry", "lfw.A")))
    assert not other_type.hit and not other_type.false_identity
    unknown = outcome(result(walk(4, "lfw.A"), event("unknown_face", None)), 2, 0.6)
    assert unknown.unknown and not unknown.hit and unknown.failure == "no_diagnostics"
    report = summarize(
        [result(walk(1, "lfw.A"), event("entry", "lfw.A", latency=0.2)),
         result(walk(2, "lfw.A"), event("entry", "lfw.B")),
         result(walk(3, "lfw.A"), event("entry", "lfw.A", latency=1.0)),
         result(walk(4, "lfw.A"), event("unknown_face", None))], []
    )  # fmt: skip
    row = report["conditions"]["unmasked"]
    assert (row["passes"], row["hits"], row["false_identities"], row["enrolled_reported_unknown"]) == (4, 2, 1, 1)
    assert row["pass_recall"] == 0.5 and row["latency_p50_s"] == 0.6
    assert report["rules"]["entry"] == {"expected": 4, "produced": 2}
    assert {m["walk_id"] for m in report["misses"]} == {2, 4}


def test_the_fused_counterfactual_is_counted_apart_from_what_the_daemon_did() -> None:
    walker = WalkDiag(30, 10, 60.0, 1, (Vote(0.1, None, 0.4, 0.4),), fused=Vote(0.0, "lfw.A", 0.5, 0.5))
    other = WalkDiag(30, 10, 60.0, 1, (Vote(0.1, None, 0.4, 0.4),), fused=Vote(0.0, "lfw.B", 0.5, 0.3))
    stranger = WalkDiag(30, 10, 60.0, 1, (Vote(0.1, None, 0.4, None),), fused=Vote(0.0, "lfw.B", 0.5, None))
    report = summarize(
        [result(walk(1, "lfw.A"), d=walker), result(walk(2, "lfw.A"), d=other),
         result(walk(3, "lfw.S", enrolled=False), d=stranger)], []
    )  # fmt: skip
    row = report["all"]
    assert (row["hits"], row["false_identities"]) == (0, 0)  # no events: the daemon named nobody
    assert (row["fused_would_name_walker"], row["fused_would_name_other"], row["fused_would_name_stranger"]) == (
        1,
        1,
        1,
    )
    # missed walks are explained from the fused template first (issue 8: tracks are decided on it)
    assert row["failures"] == {"fused_enough_no_sighting": 1, "fused_names_other": 1}
    assert row["embeddings_per_pass"] == 1
    assert "usable_frames_per_pass" not in row  # not measured without --all-frames


def test_every_usable_frame_figures_when_measured() -> None:
    votes = (Vote(0.1, None, 0.4, 0.4), Vote(0.5, "lfw.A", 0.5, 0.5))
    seen = WalkDiag(30, 20, 60.0, 1, votes, usable=8, usable_walker=6, fused_all=Vote(0.0, "lfw.A", 0.6, 0.6))
    stranger = WalkDiag(30, 20, 60.0, 1, votes[:1], usable=2, usable_walker=0, fused_all=Vote(0.0, None, 0.3, None))
    row = summarize([result(walk(1, "lfw.A"), d=seen), result(walk(2, "lfw.S", enrolled=False), d=stranger)], [])["all"]
    assert row["usable_frames_per_pass"] == 5.0 and row["usable_frames_embedded_share"] == 0.3  # 3 of 10
    assert row["usable_frames_matching_walker_share"] == 0.75  # 6 of the enrolled walk's 8
    assert (row["fused_all_would_name_walker"], row["fused_all_would_name_stranger"]) == (1, 0)


def test_events_belong_to_the_walk_of_their_camera_and_time() -> None:
    windows = [(ENTRANCE, 0.0, 5.0), (ENTRANCE, 5.0, 10.0), (EXIT, 5.0, 10.0)]
    exit_event = event("exit", "lfw.A", at=6.0, camera=EXIT)  # an exit carries the time the person went out
    found, stray = attribute(
        windows,
        [event("entry", "lfw.A", at=1.0), event("entry", "lfw.B", at=5.0), exit_event, event("entry", "x", at=12.0)],
    )
    assert [e.person_id for e in found[0]] == ["lfw.A"] and [e.person_id for e in found[1]] == ["lfw.B"]
    assert found[2] == [exit_event] and [e.at for e in stray] == [12.0]


def test_a_missed_walk_is_explained_from_its_diagnostics() -> None:
    assert explain(diag(detected=0), "a", 2, 0.6) == "not_detected"
    assert explain(diag(()), "a", 2, 0.6) == "no_embedding"
    assert explain(diag([(None, 0.3), (None, 0.35)]), "a", 2, 0.6) == "unknown_votes"
    assert explain(diag([(None, 0.3), ("b", 0.5), ("b", 0.5)]), "a", 2, 0.6) == "wrong_votes"
    assert explain(diag([(None, 0.3), (None, 0.3), ("a", 0.6)]), "a", 2, 0.6) == "split_votes"
    assert explain(diag([(None, 0.3), ("a", 0.6), ("a", 0.7)]), "a", 2, 0.6) == "votes_enough_no_sighting"
    dropped = replace(diag([("a", 0.6), ("a", 0.7)]), sightings=(Sighted("a", 2, "low_frames"),))
    assert explain(dropped, "a", 2, 0.6) == "sighting_low_frames"  # decided, ignored by an attendance rule
    below = WalkDiag(30, 10, 60.0, 1, (Vote(0.1, None, 0.4, 0.4),), fused=Vote(0.0, None, 0.5, 0.5))
    assert explain(below, "a", 2, 0.6) == "fused_below_threshold"  # the walk's template under the fused threshold


# -- the script ------------------------------------------------------------------------------------------------


def people(count: int, photos: int, prefix: str) -> list:  # type: ignore[type-arg]
    return [Identity(f"{prefix}{i}", f"{prefix}{i}", tuple(Path(f"{prefix}{i}_{k}.jpg") for k in range(photos)))
            for i in range(count)]  # fmt: skip


def test_the_script_keeps_walk_photos_apart_from_enrollment_and_strangers_out_of_the_gallery() -> None:
    size = PlanSize(passes=60, strangers=30, people=10, gallery_size=40, people_per_day=6, seed=3)
    candidates, fillers, strangers = choose_people(people(15, 4, "m"), people(50, 1, "s") + people(10, 2, "d"), size)
    assert len(candidates) == 15 and len(fillers) == 30  # gallery 40 = 10 enrolled (the first who enroll) + 30
    enrollees = candidates[:10]
    gallery = {e.person_id for e in enrollees} | {f.person_id for f in fillers}
    assert not gallery & {s.person_id for s in strangers}
    plan = make_plan(enrollees, fillers, strangers, size)
    walks = [w for _, w in plan.walks()]
    assert sum(w.enrolled for w in walks) >= 60 and sum(not w.enrolled for w in walks) == 30
    photos = {e.person_id: set(e.enroll_photos) for e in enrollees}
    assert all(w.photo not in photos[w.person_id] for w in walks if w.enrolled)
    assert all(w.person_id not in gallery for w in walks if not w.enrolled)
    shares = Counter(w.condition for w in walks if w.enrolled)
    assert set(shares) == set(CONDITIONS) and max(shares.values()) - min(shares.values()) <= 1
    for day in plan.days:
        seen = [w.person_id for s in day.segments if s.name == "in-morning" or s.name == "in-late" for w in s.walks]
        assert len([p for p in seen if p.startswith("m")]) == len({p for p in seen if p.startswith("m")})
        starts = [s.start for s in day.segments]
        assert starts == sorted(starts) and day.segments[-1].name == "closing"
        for segment in day.segments:
            windows = [walk_window(segment, k) for k in range(len(segment.walks))]
            assert all(abs(a[1] - b[0]) < 1e-3 for a, b in zip(windows, windows[1:]))
    expected = {w.expected for w in walks if w.enrolled}
    assert expected == {exp for walks_ in PATTERNS.values() for _, exp in walks_}


# -- rendering and a small real run ----------------------------------------------------------------------------


def test_lfw_label_errors_are_fixed_in_the_catalogue(data: Path) -> None:
    """One person under two spellings is one identity (else recognising him as himself counts as a false
    identity: seed 2 named "stranger" Hassan Wirajuda as enrolled Hasan Wirayuda at 0.64), misfiled photos are out."""
    several, few = catalogue(data)
    by_id = {p.person_id: p for p in several + few}
    assert "lfw.Hasan_Wirayuda" not in by_id and "lfw.Joseph_Blatter" not in by_id
    folders = {path.parent.name for path in by_id["lfw.Hassan_Wirajuda"].photos}
    assert folders == {"Hassan_Wirajuda", "Hasan_Wirayuda"}
    assert not any(path.name == "Andrew_Gilligan_0001.jpg" for p in several + few for path in p.photos)
    assert all(p.photos for p in several + few), "a folder whose only photo was misfiled is nobody (a full run crashed)"


def test_a_rendered_walk_grows_from_far_to_near_at_the_door(data: Path) -> None:
    from edge.config import Config
    from edge.detect import FaceDetector
    from edge.door.render import HEIGHT, WIDTH, Noise, corridor, cut_out, walk_frames
    from edge.evaluate import central_face
    from edge.images import read_image

    photo = data / "lfw-view1" / "lfw-deepfunneled" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    w = Walk(0, "lfw.Aaron_Peirsol", photo, True, "unmasked", "on_time", ("entry",), 3.5, 7)
    with FaceDetector(Config().detector) as detector:
        image = read_image(photo)
        face = central_face(detector.detect(image), image.shape[1], image.shape[0])
        assert face is not None
        frames = walk_frames(w, cut_out(image, face, "unmasked", photo.name), corridor(0), Noise(0))
        assert len(frames) == 50 and all(f.shape == (HEIGHT, WIDTH, 3) for f in frames)
        sizes = [max((d.box.w for d in detector.detect(f)), default=0.0) for f in frames]
    walking, gap = sizes[:35], sizes[35:]
    assert 170 <= walking[-1] <= 230, sizes  # ~200 px at the door
    assert walking[0] == 0 or walking[0] < 0.6 * walking[-1], sizes  # far away at first
    assert gap == [0.0] * 15, sizes  # the corridor alone between walks


def test_a_small_door_run_through_the_command(data: Path, tmp_path: Path) -> None:
    done = run_edge(
        "eval", "door", "--json", "--data", str(data), "--passes", "8", "--strangers", "4", "--people", "6",
        "--gallery-size", "60", "--people-per-day", "6", "--conditions", "unmasked,masked", "--seed", "2",
        "--cache", str(tmp_path / "cache"), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    setup, total = report["setup"], report["all"]
    assert setup["gallery_people"] == 60 and setup["stranger_passes"] == 4 and setup["enrolled_passes"] >= 8
    assert set(report["conditions"]) == {"unmasked", "masked"}
    assert total["passes"] == setup["enrolled_passes"] and total["stranger_passes"] == 4
    assert total["hits"] >= 1, report["misses"]  # some walks are recognised...
    assert total["false_identities"] == 0, report["misses"]  # ...and nobody is named for someone else
    assert report["stray_events"] == []
    assert 0 < total["detected_frame_share"] <= 1 and total["embeddings_per_pass"] > 0
    assert 0 <= total["latency_p50_s"] <= total["latency_p95_s"] <= 4.0
    assert sum(total["failures"].values()) == total["passes"] - total["hits"]
    assert report["hamilton"]["ok"] is True, report["hamilton"]


@pytest.mark.parametrize(
    ("bad", "said"),
    [(["--conditions", "fog"], "conditions must be among"), (["--passes", "0"], "passes must be >= 1"),
     (["--workers", "0"], "workers must be >= 1")],
)  # fmt: skip
def test_bad_options_are_usage_errors(bad: list, said: str, tmp_path: Path) -> None:  # type: ignore[type-arg]
    done = run_edge("eval", "door", "--data", str(tmp_path), *bad)
    assert done.returncode == 2 and said in done.stderr, done.stderr
