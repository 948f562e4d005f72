"""`edge eval liveness FOLDER`: APCER per attack source and BPCER, per frame and per track, with 95% intervals.

Folder layout (file names and depth below these folders are free):

    FOLDER/real/**                    genuine presentations (bona fide)
    FOLDER/spoof/<attack source>/**   attacks, grouped by source (e.g. spoof/phone, spoof/print, spoof/monitor);
                                      files directly in spoof/ count as source "unspecified"

or a ``FOLDER/labels.csv`` with a header ``path,label,source`` (path relative to FOLDER, label real|spoof, source
empty for real), which then replaces the layout. Files are images (.jpg .jpeg .png .bmp .webp) or videos (.mp4 .avi
.mov .mkv .webm .m4v).

Each image is one frame; each video is one track (the largest face of each frame). As in the daemon, a frame is
scored only when its face passes ``frontal()`` (size and yaw; ``all_faces`` scores every face), on the FULL frame.
Frame level: every scored frame (video frames sampled every ``every`` frames). Track level (videos only): the
first ``config.frames`` scored frames of the video, ``decide()``; undecided tracks are counted apart, the rates are
over decided tracks. APCER of a source = share of its attack presentations called real; BPCER = share of genuine
presentations called spoof (ISO/IEC 30107-3). Intervals: Wilson score, 95%.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge.errors import EdgeError
from edge.faces import Detection
from edge.liveness.decide import LivenessConfig, decide, frontal

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
REAL = "real"
SPOOF = "spoof"
UNSPECIFIED = "unspecified"


@dataclass(frozen=True)
class Item:
    """One labelled file: ``source`` names the attack source (None for genuine)."""

    path: Path
    label: str
    source: Optional[str]

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES


@dataclass
class ItemResult:
    """What scoring one file gave: p_real of each scored frame, frames skipped and why, the track verdict."""

    item: Item
    scores: List[float] = field(default_factory=list)
    no_face: int = 0
    not_frontal: int = 0
    track: Optional[Any] = None  # Verdict (videos only)


def wilson(k: int, n: int, z: float = 1.959964) -> Optional[Tuple[float, float]]:
    """Wilson score interval of a proportion k/n (95% by default); None when n == 0."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def discover(folder: Path) -> List[Item]:
    """The labelled files of ``folder`` (labels.csv if present, else the real/ and spoof/<source>/ layout)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeError(f"{folder}: not a folder")
    labels = folder / "labels.csv"
    if labels.is_file():
        return _from_csv(folder, labels)
    items: List[Item] = []
    real, spoof = folder / REAL, folder / SPOOF
    if not real.is_dir() and not spoof.is_dir():
        raise EdgeError(f"{folder}: expected real/ and/or spoof/<attack source>/ folders, or a labels.csv")
    for path in _media(real):
        items.append(Item(path, REAL, None))
    for path in _media(spoof):
        rel = path.relative_to(spoof)
        source = rel.parts[0] if len(rel.parts) > 1 else UNSPECIFIED
        items.append(Item(path, SPOOF, source))
    if not items:
        raise EdgeError(f"{folder}: no images or videos under real/ or spoof/")
    return items


def _media(root: Path) -> List[Path]:
    if not root.is_dir():
        return []
    suffixes = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _from_csv(folder: Path, labels: Path) -> List[Item]:
    items: List[Item] = []
    with open(labels, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise EdgeError(f"{labels}: needs a header with path,label[,source]")
        for line, row in enumerate(reader, start=2):
            label = (row.get("label") or "").strip().lower()
            if label not in (REAL, SPOOF):
                raise EdgeError(f"{labels}:{line}: label must be real or spoof, got {row.get('label')!r}")
            path = folder / (row.get("path") or "").strip()
            if not path.is_file():
                raise EdgeError(f"{labels}:{line}: {path} not found")
            source = (row.get("source") or "").strip() or UNSPECIFIED
            items.append(Item(path, label, source if label == SPOOF else None))
    if not items:
        raise EdgeError(f"{labels}: no rows")
    return items


def frames_of(item: Item, every: int) -> Iterator[np.ndarray]:
    """The BGR frames of an image (one) or a video (every ``every``-th frame)."""
    if not item.is_video:
        from edge.images import read_image

        yield read_image(item.path)
        return
    capture = cv2.VideoCapture(str(item.path))
    if not capture.isOpened():
        raise EdgeError(f"{item.path}: cannot open the video")
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % every == 0:
                yield frame
            index += 1
    finally:
        capture.release()


Detect = Callable[[np.ndarray], List[Detection]]
Score = Callable[[np.ndarray, Any], float]


def score_item(
    item: Item, detect: Detect, score: Score, config: LivenessConfig, every: int = 1, all_faces: bool = False
) -> ItemResult:
    """Score the largest face of each frame of one file (those passing ``frontal`` unless ``all_faces``)."""
    result = ItemResult(item)
    for frame in frames_of(item, every):
        faces = detect(frame)
        if not faces:
            result.no_face += 1
            continue
        face = max(faces, key=lambda d: d.box.area)
        if not all_faces and not frontal(face, config):
            result.not_frontal += 1
            continue
        result.scores.append(score(frame, face.box))
    if item.is_video:
        result.track = decide(result.scores[: config.frames], config)
    return result


def _rate(k: int, n: int) -> Dict[str, Any]:
    interval = wilson(k, n)
    return {
        "errors": k,
        "n": n,
        "rate": (k / n) if n else None,
        "ci95": [round(interval[0], 4), round(interval[1], 4)] if interval else None,
    }


def summarise(results: Sequence[ItemResult], config: LivenessConfig) -> Dict[str, Any]:
    """APCER per attack source and BPCER, per frame and per track, with Wilson 95% intervals."""
    t = config.threshold
    sources = sorted({r.item.source for r in results if r.item.label == SPOOF and r.item.source})
    genuine = [r for r in results if r.item.label == REAL]
    frame: Dict[str, Any] = {"bpcer": _rate(sum(s < t for r in genuine for s in r.scores), _n(genuine))}
    track: Dict[str, Any] = {"bpcer": _track_rate(genuine, "spoof")}
    frame["apcer"], track["apcer"] = {}, {}
    for source in sources:
        attacks = [r for r in results if r.item.label == SPOOF and r.item.source == source]
        frame["apcer"][source] = _rate(sum(s >= t for r in attacks for s in r.scores), _n(attacks))
        # an attack never scored (turned, too small) is no verdict at all: under every policy it counts as usual
        frame["apcer"][source]["frames_not_scored"] = sum(r.not_frontal + r.no_face for r in attacks)
        track["apcer"][source] = _track_rate(attacks, "real")
    rated = [v["rate"] for v in frame["apcer"].values() if v["rate"] is not None]
    frame["apcer_max"] = max(rated) if rated else None
    return {
        "threshold": t,
        "config": {
            "frames": config.frames,
            "min_frames": config.min_frames,
            "max_yaw_deg": config.max_yaw_deg,
            "min_face_px": config.min_face_px,
        },
        "files": {REAL: len(genuine), SPOOF: len(results) - len(genuine)},
        "skipped_frames": {
            "no_face": sum(r.no_face for r in results),
            "not_frontal": sum(r.not_frontal for r in results),
        },
        "frame": frame,
        "track": track,
    }


def _n(results: Sequence[ItemResult]) -> int:
    return sum(len(r.scores) for r in results)


def _track_rate(results: Sequence[ItemResult], wrong: str) -> Dict[str, Any]:
    tracks = [r.track for r in results if r.track is not None]
    decided = [v for v in tracks if v.verdict != "undecided"]
    out = _rate(sum(v.verdict == wrong for v in decided), len(decided))
    out["undecided"] = len(tracks) - len(decided)
    return out


def per_file(results: Sequence[ItemResult]) -> List[Dict[str, Any]]:
    """One row per file: label, source, frames scored and skipped, median p_real, the track verdict."""
    rows = []
    for r in results:
        rows.append(
            {
                "path": str(r.item.path),
                "label": r.item.label,
                "source": r.item.source,
                "frames_scored": len(r.scores),
                "no_face": r.no_face,
                "not_frontal": r.not_frontal,
                "p_real_median": round(float(np.median(r.scores)), 4) if r.scores else None,
                "verdict": r.track.verdict if r.track is not None else None,
            }
        )
    return rows


def format_summary(summary: Dict[str, Any]) -> str:
    """The summary as a few readable lines."""

    def show(r: Dict[str, Any]) -> str:
        if r["rate"] is None:
            if r.get("frames_not_scored"):
                return f"n/a ({r['frames_not_scored']} frames not scored: turned, too small or no face)"
            if "undecided" in r:
                return f"n/a ({r['undecided']} undecided tracks)" if r["undecided"] else "n/a (no videos)"
            return "n/a (no frame scored)"
        lo, hi = r["ci95"]
        extra = f", {r['undecided']} undecided" if "undecided" in r else ""
        if r.get("frames_not_scored"):
            extra += f", {r['frames_not_scored']} frames not scored"
        return f"{r['rate']:.3f} ({r['errors']}/{r['n']}; 95% CI {lo:.3f}-{hi:.3f}{extra})"

    lines = [
        f"threshold {summary['threshold']}: files {summary['files'][REAL]} real, {summary['files'][SPOOF]} spoof; "
        f"frames skipped: {summary['skipped_frames']['no_face']} no face, "
        f"{summary['skipped_frames']['not_frontal']} not frontal/too small",
        f"BPCER per frame: {show(summary['frame']['bpcer'])}",
        f"BPCER per track: {show(summary['track']['bpcer'])}",
    ]
    for source, r in summary["frame"]["apcer"].items():
        lines.append(f"APCER {source} per frame: {show(r)}")
        lines.append(f"APCER {source} per track: {show(summary['track']['apcer'][source])}")
    return "\n".join(lines)
