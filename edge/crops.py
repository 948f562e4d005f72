"""Face crops of unknown visitors, only when the config asks for them, and never kept past a retention limit.

Faces are biometric data: by default nothing here runs and no image is ever written. With `crops.enabled`, each
`unknown_face` event gets the best aligned 112x112 crop of its track as `<folder>/<event_id>.jpg`; files older than
`retention_days` are deleted at start and then every hour.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from edge.private import private_dir, write_private

log = logging.getLogger("edge.crops")
PURGE_INTERVAL_S = 3600.0


@dataclass(frozen=True)
class CropsConfig:
    """Whether to keep a face crop with each unknown_face event, where, and for how long."""

    enabled: bool = False
    folder: Path = Path("var/crops")
    retention_days: float = 7.0

    def __post_init__(self) -> None:
        if not 0 < self.retention_days <= 366:
            raise ValueError(f"retention_days must be within 0..366 (exclusive of 0), got {self.retention_days}")


class CropStore:
    """Writes and expires the crops (I/O at the edge; the pipeline decides what to keep)."""

    def __init__(self, config: CropsConfig) -> None:
        self.config = config
        self._last_purge: Optional[float] = None
        if config.enabled:
            private_dir(config.folder)

    def save(self, event_id: str, crop: np.ndarray) -> Optional[Path]:
        """Write one crop; a failure (disk full, permissions) is logged, never raised: the event is what matters."""
        path = self.config.folder / f"{event_id}.jpg"
        try:
            ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:
                raise OSError("the JPEG encoder refused it")
            write_private(path, jpeg.tobytes())
        except (OSError, cv2.error) as exc:
            log.warning("could not write the crop of %s to %s: %s", event_id, path, exc)
            return None
        return path

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
