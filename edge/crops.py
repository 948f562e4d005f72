"""Face crops of unknown visitors (and of liveness-flagged events), only when the config asks for them, and never
kept past a retention limit.

Faces are biometric data: by default nothing here runs and no image is ever written. With `crops.enabled`, each
`unknown_face` event, and each event a liveness check flagged for review, gets the best aligned 112x112 crop of its
track as `<folder>/<event_id>.jpg`; files older than `retention_days` are deleted at start and then every hour.

With `crops.upload` as well, the same JPEG goes to the central server (topic `<root>/crop`, edge.crop/1) when it is
at most `max_upload_bytes`: the crop is handed to a sink (the MQTT link's bounded side queue, edge.mqtt.link) that never
blocks and may drop it. A crop lost is acceptable; the event never depends on it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import cv2
import numpy as np

from edge.private import private_dir, write_private

log = logging.getLogger("edge.crops")
PURGE_INTERVAL_S = 3600.0
UPLOAD_LIMIT_BYTES = 1024 * 1024
"""Largest `max_upload_bytes` accepted: a 112x112 JPEG is a few KiB, far below."""


@dataclass(frozen=True)
class CropsConfig:
    """Whether to keep a face crop with each unknown_face (or liveness-flagged) event, where, for how long, and
    whether to send it to the central server."""

    enabled: bool = False
    folder: Path = Path("var/crops")
    retention_days: float = 7.0
    upload: bool = False
    """Also send each crop to the central server (needs enabled and mqtt.host); off by default."""
    max_upload_bytes: int = 65536
    """Largest JPEG sent to the central server; a larger crop stays on the box only."""

    def __post_init__(self) -> None:
        if not 0 < self.retention_days <= 366:
            raise ValueError(f"retention_days must be within 0..366 (exclusive of 0), got {self.retention_days}")
        if not 1024 <= self.max_upload_bytes <= UPLOAD_LIMIT_BYTES:
            raise ValueError(f"max_upload_bytes must be within 1024..{UPLOAD_LIMIT_BYTES}, got {self.max_upload_bytes}")
        if self.upload and not self.enabled:
            raise ValueError("upload needs enabled: true (a crop is sent only when it is kept on the box too)")


@dataclass(frozen=True)
class CropUpload:
    """One crop for the central server: the JPEG of the event `event_id`."""

    event_id: str
    event_type: str
    at: str
    """The event's time (ISO 8601), as in the event."""
    jpeg: bytes


CropSink = Callable[[CropUpload], None]
"""Takes a crop to send; must not block (edge.mqtt.link.Link.offer_crop)."""


def wants_crop(event: Any) -> bool:
    """An attendance event that gets a crop: an unknown face, or an event the liveness check flagged for review."""
    return str(getattr(event.type, "value", event.type)) == "unknown_face" or bool(getattr(event, "review", False))


class CropStore:
    """Writes and expires the crops, and hands them to the upload sink (I/O at the edge; the pipeline decides what
    to keep)."""

    def __init__(self, config: CropsConfig) -> None:
        self.config = config
        self._last_purge: Optional[float] = None
        self._sink: Optional[CropSink] = None
        self.too_large = 0
        """Crops over max_upload_bytes, kept on the box only."""
        if config.enabled:
            private_dir(config.folder)

    def send_to(self, sink: Optional[CropSink]) -> None:
        """Where crops go when `upload` is on (the daemon wires the MQTT link here); None: nowhere."""
        self._sink = sink if self.config.upload else None

    def save(self, event_id: str, crop: np.ndarray, event_type: str = "unknown_face", at: str = "") -> Optional[Path]:
        """Write one crop (and offer it for upload); a failure (disk full, permissions) is logged, never raised: the
        event is what matters."""
        path = self.config.folder / f"{event_id}.jpg"
        try:
            ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:
                raise OSError("the JPEG encoder refused it")
        except cv2.error as exc:
            log.warning("could not encode the crop of %s: %s", event_id, exc)
            return None
        jpeg = encoded.tobytes()
        self._offer(CropUpload(event_id, event_type, at or datetime.now(timezone.utc).isoformat(), jpeg))
        try:
            write_private(path, jpeg)
        except OSError as exc:
            log.warning("could not write the crop of %s to %s: %s", event_id, path, exc)
            return None
        return path

    def _offer(self, upload: CropUpload) -> None:
        if self._sink is None:
            return
        if len(upload.jpeg) > self.config.max_upload_bytes:
            self.too_large += 1
            log.debug("crop of %s is %d bytes, over crops.max_upload_bytes: not sent", upload.event_id, len(upload.jpeg))
            return
        self._sink(upload)

    def purge(self, now: Optional[float] = None, force: bool = False) -> int:
        """Delete crops older than the retention limit (at most hourly unless `force`); returns how many."""
        now = time.time() if now is None else now
        if not force and self._last_purge is not None and now - self._last_purge < PURGE_INTERVAL_S:
            return 0
        self._last_purge = now
        limit = now - self.config.retention_days * 86400.0
        removed = 0
        for path in self.config.folder.glob("*.jpg"):
            try:
                if path.stat().st_mtime < limit:
                    path.unlink()
                    removed += 1
            except OSError as exc:
                log.warning("could not expire the crop %s: %s", path, exc)
        if removed:
            log.info("deleted %d face crops older than %g days", removed, self.config.retention_days)
        return removed
