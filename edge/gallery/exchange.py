"""The gallery's JSON exchange format (export / import), validated field by field with the JSON path in errors.

Format (version 1):
{
  "format": "edge-gallery", "format_version": 1,
  "gallery_version": 12, "exported_at": "2026-11-22T04:00:00+00:00",
  "people": [
    {"person_id": "s1", "name": "Kim Minji", "metadata": {"group": "3A"},
     "embeddings": [{"model_id": "sface-...", "vector": [128 floats], "quality": 0.8, "source": "photo:1.jpg"}]}
  ]
}
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from edge.errors import GalleryError
from edge.gallery.store import Gallery, NewEmbedding, PersonRecord, check_person_id
from edge.jsoncheck import JsonRefused, load_json

FORMAT = "edge-gallery"
FORMAT_VERSION = 1
MAX_IMPORT_BYTES = 512 * 1024 * 1024


def export_document(gallery: Gallery) -> Dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gallery_version": gallery.version,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "people": list(gallery.iter_export()),
    }


def _fail(where: str, what: str) -> GalleryError:
    return GalleryError(f"{where}: {what}")


def parse_people(doc: Any, model_id: str, source: str) -> List[PersonRecord]:
    """Validate an export document; every embedding must be of `model_id` and of one size."""
    if not isinstance(doc, dict):
        raise _fail(source, "top level must be a JSON object")
    if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
        raise _fail(source, f"not an {FORMAT} v{FORMAT_VERSION} document (format/format_version)")
    people = doc.get("people")
    if not isinstance(people, list):
        raise _fail(f"{source}: people", "must be a list")
    records, seen = [], set()
    for i, person in enumerate(people):
        where = f"{source}: people[{i}]"
        if not isinstance(person, dict):
            raise _fail(where, "must be an object")
        try:
            pid = check_person_id(person.get("person_id"))  # type: ignore[arg-type]
        except GalleryError as exc:
            raise _fail(f"{where}.person_id", str(exc)) from None
        if pid in seen:
            raise _fail(f"{where}.person_id", f"{pid!r} appears twice")
        seen.add(pid)
        name = person.get("name", pid)
        metadata = person.get("metadata", {})
        if not isinstance(name, str) or not isinstance(metadata, dict):
            raise _fail(where, "name must be a string and metadata an object")
        embeddings = person.get("embeddings")
        if not isinstance(embeddings, list) or not embeddings:
            raise _fail(f"{where}.embeddings", "must be a non-empty list")
        parsed = []
        for j, emb in enumerate(embeddings):
            ewhere = f"{where}.embeddings[{j}]"
            if not isinstance(emb, dict):
                raise _fail(ewhere, "must be an object")
            if emb.get("model_id") != model_id:
                raise _fail(f"{ewhere}.model_id", f"is {emb.get('model_id')!r}; this box runs {model_id!r}")
            vector = emb.get("vector")
            if not isinstance(vector, list) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector
            ):
                raise _fail(f"{ewhere}.vector", "must be a list of numbers")
            vec = np.asarray(vector, dtype=np.float32)
            norm = float(np.linalg.norm(vec))
            if not np.all(np.isfinite(vec)) or not 0.5 < norm < 1.5:
                raise _fail(f"{ewhere}.vector", f"must be a finite unit-length vector (norm {norm:.3f})")
            quality = emb.get("quality", 0.0)
            if not isinstance(quality, (int, float)) or isinstance(quality, bool):
                raise _fail(f"{ewhere}.quality", "must be a number")
            parsed.append(NewEmbedding(vec / norm, model_id, float(quality), str(emb.get("source", "import"))))
        records.append(PersonRecord(pid, name, tuple(parsed), metadata))
    sizes = {e.vector.size for r in records for e in r.embeddings}
    if len(sizes) > 1:
        raise _fail(source, f"embeddings have mixed sizes {sorted(sizes)}")
    return records


def read_document(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_IMPORT_BYTES:
            raise _fail(str(path), f"file is {size / 1e6:.0f} MB, over the {MAX_IMPORT_BYTES / 1e6:.0f} MB limit")
        return load_json(path.read_bytes())  # no RecursionError on deep nesting, no NaN
    except FileNotFoundError:
        raise _fail(str(path), "no such file") from None
    except OSError as exc:
        raise _fail(str(path), f"cannot be read ({exc.strerror})") from None
    except JsonRefused as exc:
        raise _fail(str(path), f"not valid JSON ({exc})") from None
