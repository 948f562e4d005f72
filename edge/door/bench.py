"""The door-pass benchmark (`edge eval door`): rendered walks replayed through the real daemon, scored per condition.

    plan (edge.door.plan)  ->  gallery: the enrolled through edge.enroll + fillers to the gallery size
      -> per benchmark day (one process each with --workers): render each segment's clip (edge.door.render), replay
         it with edge.daemon.replay on the day's own SQLite file (a copy of the gallery), keep the stored events
      -> score (edge.door.score)  +  the real-video check: the Hamilton clip's replay names Lin-Manuel, nobody else

While a clip is replayed, the detector's and embedder's calls are recorded (their results are not touched) so that
a missed walk can be explained: frames detected, embeddings made, and what each embedding matched.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge import daemon
from edge.capture import CameraConfig
from edge.config import Config, DeviceConfig
from edge.door.plan import (
    ENTRANCE,
    EXIT,
    FPS,
    GAP_S,
    OUTING_WINDOW_S,
    Day,
    Enrollee,
    Plan,
    PlanSize,
    catalogue,
    choose_people,
    frames_of,
    make_plan,
)
from edge.door.probe import Recorder, all_frames, recording, walk_diags, with_every_frame
from edge.door.score import EventRecord, WalkDiag, WalkResult, attribute, summarize
from edge.faces import Box, Detection
from edge.gallery.store import Gallery, NewEmbedding, PersonRecord
from edge.match import GalleryIndex
from edge.schedule import ScheduleConfig, SessionConfig
from edge.store import StoredEvent

SCHEDULE = ScheduleConfig(
    sessions=(SessionConfig("morning", "09:00", "12:00", days=("mon", "tue", "wed", "thu", "fri", "sat", "sun")),),
    grace_min=5.0,
)
HAMILTON_START = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)
HAMILTON_CLIP_PEOPLE = ("ham.obama", "ham.alex_lacamoire")
"""Enrolled people of the benchmark who appear in the Hamilton clip: left out of its gallery (the check expects
Lin-Manuel and nobody else named)."""


@dataclass(frozen=True)
class DoorOptions:
    data: Path
    size: PlanSize = field(default_factory=PlanSize)
    workers: int = 1
    cache: Optional[Path] = None
    """Where face boxes of the photos and the fillers' embeddings are kept between runs (default: a folder in the
    system's temporary directory)."""
    keep: Optional[Path] = None
    """Keep the clips and databases in this folder (default: a temporary folder, removed at the end)."""
    hamilton: bool = True
    all_frames: bool = False
    """Also embed every usable frame of each walk (slower): what the tracker left unembedded."""
    dump: Optional[Path] = None
    """Write each walk's embeddings (and the gallery) to .npz files in this folder, for calibrating the decision
    rule offline (scripts/door_rules.py)."""


def bench_config(config: Config, workers: int) -> Config:
    """The site's recognition settings (detector, quality, matcher, tracker, debouncing) with the benchmark's own
    device, cameras, schedule and outing window; one inference thread each when several days run at once."""
    threads = 1 if workers > 1 else None
    return replace(
        config,
        device=DeviceConfig(id="door-bench", site="bench", timezone="UTC"),
        cameras=(
            CameraConfig(id=ENTRANCE, url="door-in.mp4", role="entrance"),
            CameraConfig(id=EXIT, url="door-out.mp4", role="exit"),
        ),
        attendance=replace(config.attendance, outing_window_s=OUTING_WINDOW_S, schedule=SCHEDULE),
        detector=replace(config.detector, num_threads=threads or config.detector.num_threads),
        embedder=replace(config.embedder, num_threads=threads or config.embedder.num_threads),
    )


def default_cache() -> Path:
    return Path(tempfile.gettempdir()) / "edge-door-cache"


def copy_db(src: Path, dst: Path) -> Path:
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()
    return dst


# ------------------------------------------------------------------------------------------- photos and gallery


def _detection_to_list(d: Detection) -> List[float]:
    return [d.box.x, d.box.y, d.box.w, d.box.h, d.score] + [float(v) for v in d.keypoints.ravel()]


def _detection_from_list(v: Sequence[float]) -> Detection:
    return Detection(Box(v[0], v[1], v[2], v[3]), v[4], np.asarray(v[5:17], dtype=np.float32).reshape(6, 2))


def face_boxes(recognizer: Any, photos: Sequence[Path], cache: Path, key: str) -> Tuple[Dict[Path, Detection], int]:
    """The face nearest the centre of each photo, cached; a photo with none gets the canonical LFW box (counted)."""
    from edge.evaluate import canonical_detection, central_face
    from edge.images import read_image

    path = cache / f"faces-{key}.json"
    stored: Dict[str, List[float]] = json.loads(path.read_text()) if path.is_file() else {}
    out: Dict[Path, Detection] = {}
    missing = 0
    for photo in photos:
        values = stored.get(str(photo))
        if values is None:
            image = read_image(photo)
            height, width = image.shape[:2]
            face = central_face(recognizer.detector.detect(image), width, height)
            if face is None:
                face = canonical_detection(width, height)
            values = stored[str(photo)] = _detection_to_list(face)
        detection = _detection_from_list(values)
        missing += detection.score == 0.0
        out[photo] = detection
    path.write_text(json.dumps(stored))
    return out, missing


def filler_records(recognizer: Any, fillers: Sequence[Any], cache: Path, model_id: str) -> List[PersonRecord]:
    """The fillers as gallery records, each from their one photo, embedded once and cached."""
    from edge.evaluate import embed_images

    path = cache / f"fillers-{hashlib.sha256(model_id.encode()).hexdigest()[:16]}.npz"
    known: Dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as saved:
            known = dict(zip(saved["names"].tolist(), saved["vectors"]))
    wanted = {str(p.photos[0]): p for p in fillers}
    todo = [Path(name) for name in wanted if name not in known]
    for root in sorted({p.parent.parent for p in todo}):
        names = [f"{p.parent.name}/{p.name}" for p in todo if p.parent.parent == root]
        run = embed_images(recognizer, root, names)
        known.update({str(root / name): vector for name, vector in run.embeddings.items()})
    if todo:
        names = sorted(known)
        np.savez(path, names=np.array(names), vectors=np.stack([known[n] for n in names]))
    return [
        PersonRecord(p.person_id, p.name, (NewEmbedding(known[n], model_id, 0.5, f"photo:{Path(n).name}"),))
        for n, p in wanted.items()
    ]


def build_gallery(recognizer: Any, candidates: Sequence[Enrollee], people: int, fillers: Sequence[Any], db: Path,
                  cache: Path) -> Tuple[List[Enrollee], List[str]]:  # fmt: skip
    """Enroll the first `people` candidates who can be enrolled through edge.enroll (the real path), add the
    fillers; (enrolled, candidates tried and not enrollable)."""
    from edge.enroll import enroll_person

    enrolled: List[Enrollee] = []
    failed: List[str] = []
    with Gallery(db) as gallery:
        for person in candidates:
            if len(enrolled) >= people:
                break
            result = enroll_person(gallery, recognizer, person.person_id, person.name, list(person.enroll_photos))
            if result.written:
                enrolled.append(person)
            else:
                failed.append(person.person_id)
        gallery.put_people(filler_records(recognizer, fillers, cache, recognizer.embedder.model_id))
    return enrolled, failed


# ------------------------------------------------------------------------------------------- one benchmark day


def event_record(stored: StoredEvent, latency: float) -> EventRecord:
    e = stored.event
    return EventRecord(
        type=e.type.value, person_id=e.person_id, camera_id=e.camera_id, at=e.at.timestamp(),
        latency_s=float(latency), track_id=e.track_id, score=float(e.score), frames=int(e.frames),
    )  # fmt: skip


@dataclass(frozen=True)
class DayTask:
    day: Day
    config: Config
    gallery_db: Path
    workdir: Path
    boxes: Dict[Path, Detection]
    keep: bool
    all_frames: bool = False
    dump: Optional[Path] = None


@dataclass
class DayOutput:
    results: List[WalkResult]
    stray: List[EventRecord]
    frames: int = 0
    render_s: float = 0.0
    replay_s: float = 0.0
    detect_ms: float = 0.0
    embed_ms: float = 0.0
    embeddings: int = 0


def run_day(task: DayTask) -> DayOutput:
    """Render and replay one benchmark day on its own SQLite file; its walks with their events and diagnostics."""
    from edge.manifest import load_manifest

    config = task.config
    db = copy_db(task.gallery_db, task.workdir / f"day{task.day.index:04d}.db")
    with Gallery(db) as gallery:
        index = gallery.index(load_manifest(config.embedder.models_path).id)
    out = DayOutput([], [])
    with ExitStack() as stack:
        recognizer = probe_recognizer(config, stack) if task.all_frames else None
        replay_day(task, db, index, recognizer, out)
    return out


def probe_recognizer(config: Config, stack: ExitStack) -> Any:
    from edge.detect import FaceDetector
    from edge.embed import Embedder
    from edge.recognize import Recognizer

    detector = stack.enter_context(FaceDetector(config.detector))
    return Recognizer(detector, Embedder(config.embedder.models_path, config.embedder.num_threads), config.quality)


def replay_day(task: DayTask, db: Path, index: GalleryIndex, recognizer: Any, out: DayOutput) -> None:
    """Each segment rendered, replayed on `db` (diagnostics recorded) and its clip removed; walks and events into
    `out`."""
    from edge.door.render import cut_out, render_segment
    from edge.images import read_image

    day, config = task.day, task.config
    events: List[EventRecord] = []
    windows: List[Tuple[str, float, float]] = []
    pending: List[Tuple[Any, str, Tuple[float, float], WalkDiag]] = []
    for segment in day.segments:
        started = time.perf_counter()
        cutouts = [cut_out(read_image(w.photo), task.boxes[w.photo], w.condition, w.photo.name) for w in segment.walks]
        clip = task.workdir / f"day{day.index:04d}-{segment.name}.mp4"
        out.frames += render_segment(segment, cutouts, clip)
        out.render_s += time.perf_counter() - started
        recorder = Recorder()
        started = time.perf_counter()
        with recording(recorder):
            pipeline = daemon.replay(
                config, clip, segment.camera, segment.start, True, db,
                on_event=lambda stored, latency: events.append(event_record(stored, latency)),
            )  # fmt: skip
        out.replay_s += time.perf_counter() - started
        stats = pipeline.stats[segment.camera]
        out.detect_ms += stats.detect_ms
        out.embed_ms += stats.embed_ms
        out.embeddings += stats.embeddings
        diags = walk_diags(segment, recorder, index, config, pipeline.first_seen)
        if recognizer is not None:
            diags = with_every_frame(diags, all_frames(segment, clip, recognizer, index, config))
        for k, diag in enumerate(diags):
            t0 = segment.start.timestamp() + segment.offsets()[k]
            window = (t0, t0 + frames_of(segment.walks[k].duration_s + GAP_S) / FPS)
            windows.append((segment.camera, window[0], window[1]))
            pending.append((segment.walks[k], segment.camera, window, diag))
        if not task.keep:
            clip.unlink(missing_ok=True)
    found, stray = attribute(windows, events)
    for i, (walk, camera, window, diag) in enumerate(pending):
        out.results.append(WalkResult(walk, camera, window, tuple(found.get(i, [])), diag))
    out.stray = stray
    if not task.keep:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    if task.dump is not None:
        dump_walks(task.dump / f"day{day.index:04d}.npz", [(walk, diag) for walk, _, _, diag in pending])


def dump_gallery(gallery_db: Path, config: Config, folder: Path, enrolled: Sequence[Enrollee]) -> None:
    """The gallery's rows (person ids, vectors) and how many photos each enrolled person was enrolled from."""
    from edge.manifest import load_manifest

    folder.mkdir(parents=True, exist_ok=True)
    with Gallery(gallery_db) as gallery:
        index = gallery.index(load_manifest(config.embedder.models_path).id)
    people = np.asarray([e.person_id for e in enrolled])
    photos = np.asarray([len(e.enroll_photos) for e in enrolled])
    ids = np.repeat(np.asarray(index.people), np.diff(np.append(index._starts, len(index.vectors))))
    np.savez_compressed(folder / "gallery.npz", ids=ids, vectors=index.vectors, enrolled=people, photos=photos)


def dump_walks(path: Path, walks: Sequence[Tuple[Any, WalkDiag]]) -> None:
    """Per walk: who, condition, and the embeddings the tracker made (in order, with their media time)."""
    meta, vectors, owner, times = [], [], [], []
    for k, (walk, diag) in enumerate(walks):
        meta.append((walk.walk_id, walk.person_id, int(walk.enrolled), walk.condition, walk.pattern))
        for vote, vector in zip(diag.votes, diag.vectors):
            vectors.append(vector)
            owner.append(k)
            times.append(vote.t)
    np.savez_compressed(
        path, meta=np.asarray(meta, dtype=object), vectors=np.asarray(vectors, dtype=np.float32).reshape(-1, 128),
        owner=np.asarray(owner, dtype=np.int32), times=np.asarray(times, dtype=np.float32),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------- the real video


def hamilton_check(config: Config, recognizer: Any, gallery_db: Path, data: Path, workdir: Path) -> Dict[str, Any]:
    """The Hamilton clip replayed against the benchmark's gallery (its people in the clip left out) with
    Lin-Manuel enrolled from his still: exactly one named event, his entry."""
    from edge.enroll import enroll_person

    clip = data / "hamilton" / "short_hamilton_clip.mp4"
    if not clip.is_file():
        return {"ok": None, "skipped": f"{clip} not found"}
    db = copy_db(gallery_db, workdir / "hamilton.db")
    with Gallery(db) as gallery:
        for person_id in HAMILTON_CLIP_PEOPLE:
            if any(p.person_id == person_id for p in gallery.people()):
                gallery.remove_person(person_id)
        enroll_person(
            gallery, recognizer, "lin-manuel", "Lin-Manuel Miranda", [data / "hamilton" / "lin-manuel-miranda.png"]
        )
        people = len(gallery.people())
    events: List[EventRecord] = []
    daemon.replay(config, clip, ENTRANCE, HAMILTON_START, True, db, lambda s, lat: events.append(event_record(s, lat)))
    named = [(e.type, e.person_id) for e in events if e.person_id is not None]
    entry = next((e for e in events if e.type == "entry"), None)
    return {
        "ok": named == [("entry", "lin-manuel")],
        "gallery_people": people,
        "named_events": [list(n) for n in named],
        "unknown_faces": sum(e.type == "unknown_face" for e in events),
        "entry_at_s": round(entry.at - HAMILTON_START.timestamp(), 2) if entry else None,
        "entry_latency_s": round(entry.latency_s, 2) if entry else None,
    }


# ------------------------------------------------------------------------------------------- the whole run


def run_door(config: Config, options: DoorOptions, progress: Callable[[str], None] = lambda _: None) -> Dict[str, Any]:
    """Plan, build the gallery, run every day (in `options.workers` processes), score. A JSON-ready report."""
    from edge.detect import FaceDetector
    from edge.embed import Embedder
    from edge.recognize import Recognizer

    started = time.perf_counter()
    cache = options.cache or default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    several, few = catalogue(options.data)
    chosen, fillers, strangers = choose_people(several, few, options.size)
    bench = bench_config(config, options.workers)
    with ExitStack() as stack:
        workdir = options.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-door-")))
        workdir.mkdir(parents=True, exist_ok=True)
        gallery_db = workdir / "gallery.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{gallery_db}{suffix}").unlink(missing_ok=True)
        with ExitStack() as models:
            detector = models.enter_context(FaceDetector(config.detector))
            recognizer = Recognizer(
                detector, Embedder(config.embedder.models_path, config.embedder.num_threads), config.quality
            )
            progress(f"gallery: enrolling {options.size.people} people, {len(fillers)} fillers")
            enrolled, failed = build_gallery(recognizer, chosen, options.size.people, fillers, gallery_db, cache)
            plan = make_plan(enrolled, fillers, strangers, options.size)
            if options.dump is not None:
                dump_gallery(gallery_db, config, options.dump, enrolled)
            photos = sorted({w.photo for _, w in plan.walks()})
            key = hashlib.sha256(repr(config.detector).encode()).hexdigest()[:12]
            boxes, no_face = face_boxes(recognizer, photos, cache, key)
            hamilton = (
                hamilton_check(bench, recognizer, gallery_db, options.data, workdir)
                if options.hamilton
                else {"ok": None, "skipped": "--no-hamilton"}
            )
        verdict = "skipped" if hamilton.get("ok") is None else "ok" if hamilton["ok"] else f"FAILED {hamilton}"
        progress(f"hamilton check: {verdict}")
        outputs = run_days(plan, bench, gallery_db, workdir, boxes, options, progress)
    results = [r for o in outputs for r in o.results]
    stray = [e for o in outputs for e in o.stray]
    report = summarize(results, stray, config.tracker.min_votes, config.tracker.vote_share)
    frames = sum(o.frames for o in outputs)
    report.update(
        hamilton=hamilton,
        setup={
            "data": str(options.data),
            "seed": options.size.seed,
            "enrolled_people": len(enrolled),
            "enroll_photos": options.size.enroll_photos,
            "enrolled_from_photos": {str(k): sum(1 for e in enrolled if len(e.enroll_photos) == k)
                                     for k in sorted({len(e.enroll_photos) for e in enrolled})},  # fmt: skip
            "not_enrollable": failed,
            "gallery_people": len(enrolled) + len(fillers),
            "enrolled_passes": sum(1 for _, w in plan.walks() if w.enrolled),
            "stranger_passes": sum(1 for _, w in plan.walks() if not w.enrolled),
            "stranger_people": len({w.person_id for _, w in plan.walks() if not w.enrolled}),
            "days": len(plan.days),
            "conditions": list(options.size.conditions),
            "walk_photos_without_face": no_face,
            "matcher": {"threshold": config.matcher.threshold, "margin": config.matcher.margin},
            "note": "rendered walks (faces pasted on a synthetic corridor, synthetic masks); see edge/door/render.py",
        },
        cost={
            "frames": frames,
            "render_s": round(sum(o.render_s for o in outputs), 1),
            "replay_s": round(sum(o.replay_s for o in outputs), 1),
            "detect_ms_per_frame": round(sum(o.detect_ms for o in outputs) / max(frames, 1), 2),
            "embed_ms_per_embedding": round(sum(o.embed_ms for o in outputs) / max(sum(o.embeddings for o in outputs), 1), 2),
            "wall_s": round(time.perf_counter() - started, 1),
        },
    )  # fmt: skip
    return report


def run_days(plan: Plan, config: Config, gallery_db: Path, workdir: Path, boxes: Dict[Path, Detection],
             options: DoorOptions, progress: Callable[[str], None]) -> List[DayOutput]:  # fmt: skip
    tasks = []
    for day in plan.days:
        photos = {w.photo for s in day.segments for w in s.walks}
        boxes_of_day = {p: boxes[p] for p in photos}
        tasks.append(
            DayTask(day, config, gallery_db, workdir, boxes_of_day, options.keep is not None, options.all_frames,
                    options.dump)
        )  # fmt: skip
    outputs: List[DayOutput] = []
    if options.workers <= 1:
        for k, task in enumerate(tasks, 1):
            outputs.append(run_day(task))
            progress(f"day {k}/{len(tasks)} done")
        return outputs
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ProcessPoolExecutor(max_workers=options.workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_day, task) for task in tasks]
        for k, future in enumerate(as_completed(futures), 1):
            outputs.append(future.result())
            progress(f"day {k}/{len(tasks)} done")
    return outputs


# ------------------------------------------------------------------------------------------- the report


def format_report(report: Dict[str, Any]) -> str:
    setup, cost, ham = report["setup"], report["cost"], report["hamilton"]
    lines = [
        f"door benchmark: {setup['enrolled_passes']} passes of {setup['enrolled_people']} enrolled people, "
        f"{setup['stranger_passes']} stranger passes ({setup['stranger_people']} people), "
        f"gallery {setup['gallery_people']} people, {setup['days']} days, seed {setup['seed']}",
        f"matcher threshold {setup['matcher']['threshold']} margin {setup['matcher']['margin']}",
        "",
        f"{'condition':<12} {'passes':>6} {'recall':>7} {'false id':>8} {'unknown':>7} {'p50 s':>6} {'p95 s':>6} "
        f"{'emb/pass':>8} {'detected':>8} {'strangers':>9} {'named':>5}",
    ]
    rows = list(report["conditions"].items()) + [("all", report["all"])]
    for name, row in rows:
        lines.append(
            f"{name:<12} {row['passes']:>6} {_fmt(row['pass_recall']):>7} {row['false_identities']:>8} "
            f"{row['enrolled_reported_unknown']:>7} {_fmt(row['latency_p50_s']):>6} {_fmt(row['latency_p95_s']):>6} "
            f"{_fmt(row['embeddings_per_pass']):>8} {_fmt(row['detected_frame_share']):>8} "
            f"{row['stranger_passes']:>9} {row['stranger_named']:>5}"
        )
    lines += ["", "rules (expected -> produced for the right person):"]
    lines += [f"  {kind:<13} {c.get('produced', 0)}/{c.get('expected', 0)}" for kind, c in report["rules"].items()]
    lines += ["", "missed passes by cause (see edge/door/score.py):"]
    for name, row in rows:
        if row["failures"]:
            lines.append(f"  {name:<12} " + ", ".join(f"{k} {v}" for k, v in row["failures"].items()))
    lines += ["", "fused counterfactual (the plain normalised mean of each walk's embeddings, matched once with the fused threshold):"]
    for name, row in rows:
        lines.append(
            f"  {name:<12} names the walker {row['fused_would_name_walker']}/{row['passes']}, someone else "
            f"{row['fused_would_name_other']}, a stranger as someone {row['fused_would_name_stranger']}/{row['stranger_passes']}"
        )
    if "usable_frames_per_pass" in report["all"]:
        lines += ["", "every usable frame embedded (--all-frames): usable frames per pass; share of them the pipeline"]
        lines += ["  embedded; share matching the walker; fused over all of them names the walker / other / a stranger"]
        for name, row in rows:
            lines.append(
                f"  {name:<12} {_fmt(row['usable_frames_per_pass'])}; {_fmt(row['usable_frames_embedded_share'])}; "
                f"{_fmt(row['usable_frames_matching_walker_share'])}; {row['fused_all_would_name_walker']}/{row['passes']}"
                f", {row['fused_all_would_name_other']}, {row['fused_all_would_name_stranger']}/{row['stranger_passes']}"
            )
    lines += ["", "walkers' own gallery scores per embedding (p10 / p50 / p90):"]
    for name, g in report["genuine_scores"].items():
        lines.append(
            f"  {name:<12} {_fmt(g['p10'])} / {_fmt(g['p50'])} / {_fmt(g['p90'])}  ({g['embeddings']} embeddings)"
        )
    lines.append("")
    if ham.get("ok") is None:
        lines.append(f"hamilton clip: skipped ({ham.get('skipped')})")
    else:
        lines.append(
            f"hamilton clip: {'OK' if ham['ok'] else 'FAILED'}: named {ham['named_events']}, "
            f"{ham['unknown_faces']} unknown_face, entry at {ham['entry_at_s']} s (latency {ham['entry_latency_s']} s)"
        )
    lines.append(f"stray events (in no pass): {len(report['stray_events'])}")
    lines.append(
        f"cost: {cost['frames']} frames, render {cost['render_s']} s, replay {cost['replay_s']} s, detect "
        f"{cost['detect_ms_per_frame']} ms/frame, embed {cost['embed_ms_per_embedding']} ms, wall {cost['wall_s']} s"
    )
    return "\n".join(lines)


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
