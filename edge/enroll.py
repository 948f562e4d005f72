"""Enrollment: photos of a person -> accepted embeddings -> one atomic gallery write, with a per-photo report.

With several photos, the person also gets a fused template (the quality-weighted mean of the normalised photo
embeddings, stored beside them with source `template`: the gallery matches a face against the best of a person's
rows, so the photos still count one by one), and a consistency report: each photo's mean similarity to the
person's other photos; a photo too unlike the others (another person, a bad crop) is flagged and left out of the
template (it is still stored: the operator decides).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from dataclasses import replace as replaced
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from edge.errors import EdgeError, GalleryError, ImageError
from edge.gallery.store import Gallery, NewEmbedding, check_person_id
from edge.images import read_image
from edge.recognize import FaceObservation, Recognizer

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp", ".tif", ".tiff"}
# When a photo shows several faces, the largest is used only if it is this many times the area of the next.
DOMINANT_FACE_RATIO = 2.5
UNLIKE_OTHERS = 0.30
"""A photo whose mean similarity to the person's other photos is below this is flagged (different photos of one
person score 0.40-0.70 with the shipped model; other people rarely above 0.35)."""
TEMPLATE_SOURCE = "template"


class PhotoOutcome(str, enum.Enum):
    ENROLLED = "enrolled"
    NO_FACE = "no_face"
    SEVERAL_FACES = "several_faces"
    LOW_QUALITY = "low_quality"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class PhotoResult:
    path: str
    outcome: PhotoOutcome
    detail: str = ""
    quality: Optional[float] = None
    similarity: Optional[float] = None
    """Mean cosine similarity to the person's other enrolled photos (None with a single photo)."""
    flagged: bool = False
    """Too unlike the person's other photos: check it is the right person."""


@dataclass(frozen=True)
class EnrollResult:
    """What happened to one person: per-photo results and whether the person was written (all or nothing)."""

    person_id: str
    photos: Tuple[PhotoResult, ...]
    written: bool
    gallery_version: Optional[int] = None

    template: bool = False
    """A fused template was stored beside the photos."""

    @property
    def enrolled(self) -> int:
        return sum(1 for p in self.photos if p.outcome is PhotoOutcome.ENROLLED)

    @property
    def flagged(self) -> List[str]:
        return [p.path for p in self.photos if p.flagged]


def consistency(embeddings: Sequence[NewEmbedding]) -> List[Optional[float]]:
    """Each embedding's mean cosine similarity to the others (None when there is only one)."""
    if len(embeddings) < 2:
        return [None] * len(embeddings)
    vectors = np.stack([e.vector / max(float(np.linalg.norm(e.vector)), 1e-9) for e in embeddings])
    sims = vectors @ vectors.T
    n = len(vectors)
    return [float((sims[i].sum() - sims[i, i]) / (n - 1)) for i in range(n)]


def fused_template(embeddings: Sequence[NewEmbedding]) -> NewEmbedding:
    """The quality-weighted mean of the normalised embeddings, normalised (as a track's template is fused)."""
    weights = np.asarray([max(e.quality, 1e-3) ** 2 for e in embeddings])
    vectors = np.stack([e.vector / max(float(np.linalg.norm(e.vector)), 1e-9) for e in embeddings])
    mean = (weights[:, None] * vectors).sum(axis=0)
    mean = mean / max(float(np.linalg.norm(mean)), 1e-9)
    return NewEmbedding(mean.astype(np.float32), embeddings[0].model_id, max(e.quality for e in embeddings), TEMPLATE_SOURCE)


def template_sources(embeddings: Sequence[NewEmbedding]) -> List[NewEmbedding]:
    """The embeddings a person's template is fused from: all but those unlike the others (mean cosine to them below
    UNLIKE_OTHERS); none when two photos are unlike each other (which one is wrong is unknown)."""
    similarities = consistency(embeddings)
    flags = [s is not None and s < UNLIKE_OTHERS for s in similarities]
    if len(embeddings) == 2 and any(flags):
        return []
    return [e for e, flag in zip(embeddings, flags) if not flag]


def with_template(embeddings: Sequence[NewEmbedding]) -> List[NewEmbedding]:
    """The embeddings, plus their fused template when two or more agree (`template_sources`)."""
    kept = template_sources(embeddings)
    return list(embeddings) + ([fused_template(kept)] if len(kept) >= 2 else [])


def pick_face(observations: Sequence[FaceObservation]) -> Tuple[Optional[FaceObservation], PhotoOutcome, str]:
    """Choose the one face of an enrollment photo, or say why there is none (observations are largest first)."""
    if not observations:
        return None, PhotoOutcome.NO_FACE, "no face found"
    if len(observations) > 1:
        first, second = observations[0].detection.box.area, observations[1].detection.box.area
        if first < DOMINANT_FACE_RATIO * second:
            return None, PhotoOutcome.SEVERAL_FACES, f"{len(observations)} faces of similar size; expected one"
    face = observations[0]
    if face.embedding is None:
        reason = face.quality.rejection.value if face.quality.rejection else "rejected"
        q = face.quality
        detail = f"{reason} (size {q.face_px:.0f}px, yaw {q.yaw_deg:.0f}deg, sharpness {q.sharpness:.0f}, score {q.score:.2f})"
        return None, PhotoOutcome.LOW_QUALITY, detail
    return face, PhotoOutcome.ENROLLED, ""


def embed_photos(
    recognizer: Recognizer, photos: Iterable[Path], on_photo: Optional[Callable[[PhotoResult], None]] = None
) -> Tuple[List[PhotoResult], List[NewEmbedding]]:
    results: List[PhotoResult] = []
    embeddings: List[NewEmbedding] = []
    for path in photos:
        try:
            image = read_image(path)
        except ImageError as exc:
            result = PhotoResult(str(path), PhotoOutcome.UNREADABLE, str(exc))
        else:
            face, outcome, detail = pick_face(recognizer.analyze(image))
            if face is not None and face.embedding is not None:
                embeddings.append(
                    NewEmbedding(face.embedding, recognizer.embedder.model_id, face.quality.value, f"photo:{path.name}")
                )
                result = PhotoResult(str(path), outcome, detail, face.quality.value)
            else:
                result = PhotoResult(str(path), outcome, detail)
        results.append(result)
        if on_photo:
            on_photo(result)
    return results, embeddings


def enroll_person(
    gallery: Gallery,
    recognizer: Recognizer,
    person_id: str,
    name: str,
    photos: Sequence[Path],
    metadata: Optional[Dict[str, str]] = None,
    replace: bool = False,
    on_photo: Optional[Callable[[PhotoResult], None]] = None,
) -> EnrollResult:
    """Enroll one person from photos; the person is written only if at least one photo gave an embedding."""
    check_person_id(person_id)
    if not photos:
        raise EdgeError(f"person {person_id!r}: no photos given")
    results, embeddings = embed_photos(recognizer, photos, on_photo)
    if not embeddings:
        return EnrollResult(person_id, tuple(results), written=False)
    results, kept = judged(results, embeddings)
    rows = list(embeddings) + ([fused_template(kept)] if len(kept) >= 2 else [])
    version = gallery.put_person(person_id, name, rows, metadata=metadata, replace=replace)
    return EnrollResult(person_id, tuple(results), written=True, gallery_version=version, template=len(kept) >= 2)


def judged(results: List[PhotoResult], embeddings: List[NewEmbedding]) -> Tuple[List[PhotoResult], List[NewEmbedding]]:
    """The photo results with their consistency (and flags), and the embeddings the template is fused from."""
    similarities = consistency(embeddings)
    flags = [s is not None and s < UNLIKE_OTHERS for s in similarities]
    if len(embeddings) == 2 and any(flags):
        flags = [False, False]  # two photos unlike each other: which one is wrong is unknown; both flagged below
        both = True
    else:
        both = False
    enrolled = iter(zip(similarities, flags))
    out = []
    for r in results:
        if r.outcome is PhotoOutcome.ENROLLED:
            similarity, flag = next(enrolled)
            out.append(replaced(r, similarity=similarity, flagged=flag or both))
        else:
            out.append(r)
    kept = [e for e, flag in zip(embeddings, flags) if not flag]
    return out, (kept if not both else [])


def photos_in(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def scan_tree(root: Path) -> List[Tuple[str, List[Path]]]:
    """A folder tree `root/person_id/*.jpg` -> [(person_id, photos)], sorted; bad folder names are errors."""
    if not root.is_dir():
        raise EdgeError(f"{root}: not a folder")
    people = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            check_person_id(folder.name)
        except GalleryError as exc:
            raise EdgeError(f"{folder}: folder name is not a valid person id ({exc})") from None
        people.append((folder.name, photos_in(folder)))
    if not people:
        raise EdgeError(f"{root}: no person folders inside (expected {root}/<person_id>/*.jpg)")
    return people


def enroll_tree(
    gallery: Gallery,
    recognizer: Recognizer,
    root: Path,
    replace: bool = False,
    on_photo: Optional[Callable[[PhotoResult], None]] = None,
) -> List[EnrollResult]:
    """Enroll every person folder under `root`, each written all at once or not at all."""
    results = []
    for person_id, photos in scan_tree(root):
        if photos:
            results.append(
                enroll_person(gallery, recognizer, person_id, person_id, photos, replace=replace, on_photo=on_photo)
            )
        else:
            results.append(EnrollResult(person_id, (), written=False))
    return results
