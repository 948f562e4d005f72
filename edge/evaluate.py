"""Evaluation drivers: embed the images a protocol needs (I/O), then hand the scores to the pure protocol code."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np

from edge.errors import EdgeError, ImageError
from edge.faces import Box, Detection
from edge.images import read_image
from edge.recognize import Recognizer

# Where the keypoints of a face sit in a 250x250 deep-funneled LFW image (right eye, left eye, nose, mouth,
# right ear, left ear): the images are already aligned, so this is the fallback when no face is detected.
LFW_CANONICAL_KEYPOINTS = np.array(
    [[106.0, 113.0], [144.0, 113.0], [125.0, 136.0], [125.0, 157.0], [86.0, 120.0], [164.0, 120.0]],
    dtype=np.float32,
)


@dataclass
class EmbeddingRun:
    """Embeddings by image name, with how each image was handled."""

    embeddings: Dict[str, np.ndarray] = field(default_factory=dict)
    no_face: List[str] = field(default_factory=list)
    unreadable: List[str] = field(default_factory=list)
    several_faces: int = 0


def central_face(detections: Iterable[Detection], width: int, height: int) -> Optional[Detection]:
    """The detection whose box centre is nearest the image centre (LFW images are centred on their subject)."""
    best, best_d = None, float("inf")
    for det in detections:
        cx, cy = det.box.x + det.box.w / 2, det.box.y + det.box.h / 2
        d = (cx - width / 2) ** 2 + (cy - height / 2) ** 2
        if d < best_d:
            best, best_d = det, d
    return best


def canonical_detection(width: int, height: int) -> Detection:
    scale = np.array([width / 250.0, height / 250.0], dtype=np.float32)
    keypoints = LFW_CANONICAL_KEYPOINTS * scale
    return Detection(
        box=Box(75 * scale[0], 75 * scale[1], 100 * scale[0], 100 * scale[1]), score=0.0, keypoints=keypoints
    )


def embed_images(
    recognizer: Recognizer, root: Path, names: Iterable[str], progress: Optional[Callable[[int], None]] = None
) -> EmbeddingRun:
    """Embed each image's central face; with no face found, embed the canonical LFW crop and count it."""
    run = EmbeddingRun()
    for name in names:
        try:
            image = read_image(root / name)
        except ImageError as exc:
            run.unreadable.append(str(exc))
            continue
        height, width = image.shape[:2]
        detections = recognizer.detector.detect(image)
        if len(detections) > 1:
            run.several_faces += 1
        face = central_face(detections, width, height)
        if face is None:
            run.no_face.append(name)
            face = canonical_detection(width, height)
        observation = recognizer.observe(image, face, gate=False)
        assert observation.embedding is not None
        run.embeddings[name] = observation.embedding
        if progress:
            progress(1)
    if run.unreadable:
        raise EdgeError(f"{len(run.unreadable)} images could not be read, e.g. {run.unreadable[0]}")
    return run


def run_lfw(
    recognizer: Recognizer, pairs_path: Path, images: Path, train_path: Optional[Path], progress: bool = True
) -> Dict[str, object]:
    """The whole LFW report as a JSON-ready dict (see `edge eval lfw --help`)."""
    import click

    from edge import lfw

    test = lfw.parse_pairs(pairs_path)
    train = lfw.parse_pairs(train_path) if train_path else None
    names = sorted({n for f in (test, train) if f for p in f.pairs for n in (p.left, p.right)})
    missing = [n for n in names if not (images / n).is_file()]
    if missing:
        raise EdgeError(f"{len(missing)} images named in the pairs files are not under {images}, e.g. {missing[0]}")
    with click.progressbar(length=len(names), label="embedding", file=sys.stderr, hidden=not progress) as bar:
        run = embed_images(recognizer, images, names, progress=bar.update)
    scores, same = lfw.pair_scores(test.pairs, run.embeddings)
    result: Dict[str, object] = {
        "model_id": recognizer.embedder.model_id,
        "pairs": str(pairs_path),
        "pairs_count": len(test.pairs),
        "images": len(names),
        "no_face": len(run.no_face),
        "no_face_handling": "embedded the canonical deep-funneled LFW crop (the image centre) instead",
        "no_face_images": run.no_face,
        "several_faces": run.several_faces,
        "several_faces_handling": "used the face nearest the image centre",
    }
    if train is not None:
        train_scores, train_same = lfw.pair_scores(train.pairs, run.embeddings)
        threshold = lfw.best_threshold(train_scores, train_same)
        result.update(
            protocol="threshold picked on --train-pairs, accuracy on --pairs",
            train_pairs=str(train_path),
            train_accuracy=lfw.accuracy(train_scores, train_same, threshold),
            accuracy=lfw.accuracy(scores, same, threshold),
            threshold=threshold,
        )
    elif test.folds > 1:
        accs, thresholds = lfw.k_fold(scores, same, test.folds, test.per_fold)
        result.update(
            protocol=f"{test.folds}-fold cross-validation",
            accuracy=float(np.mean(accs)),
            accuracy_std=float(np.std(accs)),
            fold_accuracies=accs,
            threshold=float(np.mean(thresholds)),
            fold_thresholds=thresholds,
        )
    else:
        threshold = lfw.best_threshold(scores, same)
        result.update(
            protocol="threshold picked on the same pairs (optimistic: give --train-pairs)",
            accuracy=lfw.accuracy(scores, same, threshold),
            threshold=threshold,
        )
    tar, far_threshold = lfw.tar_at_far(scores, same, 1e-3)
    negatives = int((~same).sum())
    result.update(
        {
            "tar_at_far_1e-3": tar,
            "far_1e-3_threshold": far_threshold,
            "far_note": f"{negatives} impostor pairs: FAR <= 1e-3 allows {int(np.floor(1e-3 * negatives))} false accepts",
        }
    )
    return result


def format_result(result: Dict[str, object]) -> str:
    lines = [
        f"model        {result['model_id']}",
        f"protocol     {result['protocol']}",
        f"pairs        {result['pairs_count']} from {result['pairs']} ({result['images']} images)",
    ]
    if "fold_accuracies" in result:
        lines.append(f"accuracy     {result['accuracy']:.4f} +- {result['accuracy_std']:.4f} (10-fold)")
    else:
        lines.append(f"accuracy     {result['accuracy']:.4f}")
    if "train_accuracy" in result:
        lines.append(f"train acc.   {result['train_accuracy']:.4f} on {result['train_pairs']}")
    lines += [
        f"threshold    {result['threshold']:.4f} (cosine similarity)",
        f"TAR@FAR=1e-3 {result['tar_at_far_1e-3']:.4f} (threshold {result['far_1e-3_threshold']:.4f}; {result['far_note']})",
        f"no face      {result['no_face']} images: {result['no_face_handling']}",
        f"several      {result['several_faces']} images with several faces: {result['several_faces_handling']}",
    ]
    return "\n".join(lines)
