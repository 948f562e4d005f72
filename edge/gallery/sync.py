"""Gallery commands from the central server applied to the box's gallery: one command in, one result payload out.

    sync = GallerySync(gallery, recognizer, CommandVerifier(load_public_keys(key_file), "school-1/box-17"))
    result = sync.apply(command)      # a dict of schema edge.gallery_result/1, ready for contract.encode

Before anything else the command must be signed by the central for this box and valid now (edge.mqtt.signing), and its
request_id must not have been handled before (edge.gallery.command_log); a box without a central key refuses every command.
Then (the command is an `edge.gallery_command/1` object; it is checked against the schema again here):

- `upsert` and `remove` may carry `base_version`; when it differs from the gallery's version the command is refused
  with status `version_mismatch` and nothing changes (the central then sends a full `sync`). Without
  `base_version` they apply unconditionally. `sync` ignores `base_version`.
- `upsert` with `embeddings`: each must be of the model this box runs, of its embedding size, finite and of unit
  length (within NORM_TOLERANCE; stored renormalised). The person's embeddings are replaced in one transaction.
- `upsert` with `photos` (base64 JPEG/PNG): each photo is decoded, detected and embedded as `edge enroll` does;
  the result lists one outcome per photo; the person is written (replacing their embeddings) only if at least one
  photo gave a face.
- `remove`: erases the person and every embedding of theirs; an unknown person is refused.
- `timetable`: the central's timetable (edge/timetable.py: sessions, closures, one-off changes, tolerances), checked
  like the YAML schedule, is stored in the gallery database; from the next frame the box's `late` / `early_leave`
  follow it instead of its YAML `attendance.schedule`. A null timetable hands the box back to its YAML.
- `sync`: every person is checked first (embeddings or photos as above); then the gallery becomes exactly them in
  one transaction. One bad person refuses the whole sync and the gallery is unchanged.

Every refusal is a result with status `rejected` and a reason naming the person (and embedding or photo); apply()
never raises. Not thread-safe: call it on the thread that owns the gallery connection and the recognizer.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import sqlite3
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge.enroll import PhotoOutcome, pick_face, with_template
from edge.errors import EdgeError, GalleryError, ImageError
from edge.gallery.command_log import CommandLog
from edge.gallery.store import Gallery, NewEmbedding, PersonRecord, check_person_id
from edge.images import decode_image
from edge.mqtt.contract import gallery_result_payload, validate
from edge.mqtt.signing import CommandRefused, CommandVerifier
from edge.recognize import Recognizer
from edge.timetable import schedule_document, schedule_from_document

log = logging.getLogger(__name__)

COMMAND_SCHEMA = "edge.gallery_command/1"
NORM_TOLERANCE = 0.01
"""An embedding's L2 norm must be within 1 +- this."""


class VersionMismatch(EdgeError):
    """The command was based on another gallery version than the box's."""


@dataclass(frozen=True)
class PhotoReport:
    """What happened to one photo of a command (index = its position in the person's `photos` list)."""

    person_id: str
    index: int
    outcome: PhotoOutcome
    detail: str = ""
    quality: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"person_id": self.person_id, "index": self.index, "outcome": self.outcome.value}
        if self.detail:
            out["detail"] = self.detail
        if self.quality is not None:
            out["quality"] = round(float(self.quality), 4)
        return out


def decode_photo(text: str, name: str) -> np.ndarray:
    """A base64 JPEG/PNG (whitespace allowed) -> BGR image, or ImageError."""
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(f"{name}: not valid base64") from None
    if not raw:
        raise ImageError(f"{name}: empty photo")
    return decode_image(np.frombuffer(raw, dtype=np.uint8), name)


def embed_photo_texts(
    recognizer: Recognizer, person_id: str, photos: Sequence[str]
) -> Tuple[List[PhotoReport], List[NewEmbedding]]:
    """`edge.enroll.embed_photos` for base64 photos: one report per photo, one embedding per usable face."""
    reports: List[PhotoReport] = []
    embeddings: List[NewEmbedding] = []
    for index, text in enumerate(photos):
        name = f"photo {index}"
        try:
            image = decode_photo(text, name)
        except ImageError as exc:
            reports.append(PhotoReport(person_id, index, PhotoOutcome.UNREADABLE, str(exc)))
            continue
        face, outcome, detail = pick_face(recognizer.analyze(image))
        if face is not None and face.embedding is not None:
            model_id = recognizer.embedder.model_id
            embeddings.append(NewEmbedding(face.embedding, model_id, face.quality.value, f"central:{name}"))
            reports.append(PhotoReport(person_id, index, outcome, detail, face.quality.value))
        else:
            reports.append(PhotoReport(person_id, index, outcome, detail))
    return reports, embeddings


def check_embeddings(person_id: str, items: Sequence[Dict[str, Any]], model_id: str, size: int) -> List[NewEmbedding]:
    """Embeddings of a command -> NewEmbedding values, or GalleryError naming the first bad one."""
    out = []
    for j, item in enumerate(items):
        where = f"person {person_id!r} embedding {j}"
        if item.get("model_id") != model_id:
            raise GalleryError(f"{where}: model id {item.get('model_id')!r}, this box runs {model_id!r}")
        vector = item.get("vector")
        if not isinstance(vector, list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector
        ):
            raise GalleryError(f"{where}: vector must be a list of numbers")
        if len(vector) != size:
            raise GalleryError(f"{where}: vector has {len(vector)} values, model {model_id} gives {size}")
        vec = np.asarray(vector, dtype=np.float64)
        if not np.all(np.isfinite(vec)):
            raise GalleryError(f"{where}: vector has non-finite values")
        norm = float(np.linalg.norm(vec))
        if abs(norm - 1.0) > NORM_TOLERANCE:
            raise GalleryError(f"{where}: vector is not unit length (norm {norm:.4f})")
        quality = item.get("quality", 0.0)
        if not isinstance(quality, (int, float)) or isinstance(quality, bool) or not math.isfinite(quality):
            raise GalleryError(f"{where}: quality must be a finite number")
        source = str(item.get("source", "central"))
        out.append(NewEmbedding((vec / norm).astype(np.float32), model_id, float(quality), source))
    return out


class GallerySync:
    """Applies gallery commands from the central server to the box's gallery (see the module docstring)."""

    def __init__(self, gallery: Gallery, recognizer: Recognizer, verifier: Optional[CommandVerifier]) -> None:
        self.gallery = gallery
        self.recognizer = recognizer
        self.verifier = verifier
        self.log = CommandLog(gallery.db.conn)

    @property
    def model_id(self) -> str:
        return self.recognizer.embedder.model_id

    @property
    def embedding_size(self) -> int:
        return int(self.recognizer.embedder.manifest.embedding_size)

    def apply(self, command: Dict[str, Any]) -> Dict[str, Any]:
        """Apply one command; returns its edge.gallery_result/1 payload. Never raises."""
        request_id = command.get("request_id") if isinstance(command, dict) else None
        op = command.get("op") if isinstance(command, dict) else None
        request_id = request_id if isinstance(request_id, str) else None
        op = op if isinstance(op, str) else None
        reports: List[PhotoReport] = []
        try:
            self._admit(command)
            validate(COMMAND_SCHEMA, command)
            reason = self._dispatch(command, reports)
            status = "ok"
        except VersionMismatch as exc:
            status, reason = "version_mismatch", str(exc)
        except EdgeError as exc:  # MessageError and GalleryError among them
            status, reason = "rejected", str(exc)
        except sqlite3.Error as exc:
            status, reason = "rejected", f"gallery database error: {exc}"
        except Exception as exc:  # a bug must not take the MQTT link down: report it instead
            log.exception("gallery command %s (%s) failed", request_id, op)
            status, reason = "rejected", f"internal error: {type(exc).__name__}: {exc}"
        if status != "ok":
            log.warning("gallery command %s (%s) %s: %s", request_id, op, status, reason)
        extra: Dict[str, Any] = {"people": self._people_count()}
        if reports:
            extra["photos"] = [r.to_dict() for r in reports]
        return gallery_result_payload(request_id, op, status, reason, self._version(), **extra)

    def _admit(self, command: Any) -> None:
        """CommandRefused unless the command is a dict signed by the central for this box, valid now, and new."""
        if self.verifier is None:
            raise CommandRefused("no central key configured (mqtt.central_key_file): every gallery command is refused")
        if not isinstance(command, dict):
            raise CommandRefused("command is not a JSON object")
        expires = self.verifier.check(command)
        request_id = command.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise CommandRefused("command has no request_id")
        if not self.log.record(request_id, expires):
            raise CommandRefused(f"request {request_id} was handled before: a repeated command is not applied again")

    # ops ---------------------------------------------------------------------------------------------------------
    def _dispatch(self, command: Dict[str, Any], reports: List[PhotoReport]) -> str:
        op = command["op"]
        if op in ("upsert", "remove") and "base_version" in command:
            current = self.gallery.version
            if command["base_version"] != current:
                raise VersionMismatch(
                    f"command is based on gallery version {command['base_version']}, the box has version {current}; "
                    "send a full sync"
                )
        if op == "upsert":
            record = self._record(command["person"], reports)
            version = self.gallery.put_person(
                record.person_id, record.name, record.embeddings, metadata=record.metadata, replace=True
            )
            return f"person {record.person_id!r} stored with {len(record.embeddings)} embeddings (version {version})"
        if op == "remove":
            person_id = check_person_id(command["person_id"])
            version = self.gallery.remove_person(person_id)
            return f"person {person_id!r} and their embeddings erased (version {version})"
        if op == "timetable":
            return self._timetable(command["timetable"])
        if op == "sync":
            records = self._records(command["people"], reports)
            version = self.gallery.put_people(records, replace_all=True)
            return f"gallery replaced by {len(records)} people (version {version})"
        raise GalleryError(f"unknown op {op!r}")

    def _timetable(self, document: Optional[Dict[str, Any]]) -> str:
        """Store the central's timetable (checked like the YAML schedule first), or forget it (None)."""
        if document is None:
            version = self.gallery.put_timetable(None)
            return f"timetable forgotten: the box follows its own schedule again (version {version})"
        schedule = schedule_from_document(document)  # ConfigError (an EdgeError): rejected, nothing stored
        version = self.gallery.put_timetable(schedule_document(schedule))
        return (
            f"timetable stored: {len(schedule.sessions)} sessions, {len(schedule.closures)} closures, "
            f"{len(schedule.changes)} changes (version {version})"
        )

    def _records(self, people: Sequence[Dict[str, Any]], reports: List[PhotoReport]) -> List[PersonRecord]:
        records, seen = [], set()
        for person in people:
            record = self._record(person, reports)
            if record.person_id in seen:
                raise GalleryError(f"person {record.person_id!r} appears twice; nothing was changed")
            seen.add(record.person_id)
            records.append(record)
        return records

    def _record(self, person: Dict[str, Any], reports: List[PhotoReport]) -> PersonRecord:
        person_id = check_person_id(person["person_id"])
        name = person.get("name", person_id)
        metadata = person.get("metadata", {})
        if "embeddings" in person:
            embeddings = check_embeddings(person_id, person["embeddings"], self.model_id, self.embedding_size)
        else:
            photo_reports, embeddings = embed_photo_texts(self.recognizer, person_id, person["photos"])
            reports.extend(photo_reports)
            if not embeddings:
                outcomes = ", ".join(f"photo {r.index}: {r.outcome.value}" for r in photo_reports)
                raise GalleryError(f"person {person_id!r}: no photo gave a usable face ({outcomes}); nothing written")
            embeddings = with_template(embeddings)  # several photos: their fused template too, as `edge enroll` does
        return PersonRecord(person_id, name, tuple(embeddings), dict(metadata))

    # reading back ------------------------------------------------------------------------------------------------
    def _version(self) -> int:
        try:
            return self.gallery.version
        except sqlite3.Error:
            return 0

    def _people_count(self) -> int:
        try:
            return len(self.gallery.people())
        except sqlite3.Error:
            return 0
