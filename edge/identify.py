"""Identify every face in a photo against the gallery: a JSON-ready report per photo."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from edge.errors import ImageError
from edge.gallery.store import Gallery
from edge.images import read_image
from edge.match import MatcherConfig
from edge.recognize import Recognizer


def identify_photo(gallery: Gallery, recognizer: Recognizer, matcher: MatcherConfig, photo: Path) -> Dict[str, Any]:
    try:
        image = read_image(photo)
    except ImageError as exc:
        return {"photo": str(photo), "error": str(exc), "faces": []}
    index = gallery.index(recognizer.embedder.model_id)
    faces = []
    for obs in recognizer.analyze(image):
        box = obs.detection.box
        face: Dict[str, Any] = {
            "box": [round(box.x, 1), round(box.y, 1), round(box.w, 1), round(box.h, 1)],
            "detector_score": round(obs.detection.score, 4),
            "quality": round(obs.quality.value, 4),
            "yaw_deg": round(obs.quality.yaw_deg, 1),
            "rejection": obs.quality.rejection.value if obs.quality.rejection else None,
            "person_id": None,
            "score": None,
            "margin": None,
            "candidates": [],
        }
        if obs.embedding is not None:
            match = index.match(obs.embedding, matcher)
            face.update(
                person_id=match.person_id,
                score=round(match.score, 4),
                margin=round(match.margin, 4),
                candidates=[{"person_id": c.person_id, "score": round(c.score, 4)} for c in match.candidates],
            )
        faces.append(face)
    return {
        "photo": str(photo),
        "gallery_version": index.version,
        "model_id": recognizer.embedder.model_id,
        "faces": faces,
    }
