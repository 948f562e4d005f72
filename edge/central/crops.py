"""The central's copy of the face crops boxes send (edge.crop/1, only from boxes with `crops.upload`): one JPEG file
per event in a private folder (default: beside a SQLite file; central.crops with PostgreSQL), one row each in the
table `crops` of the central's store (its own migrations, "edge.central.crops"), bounded per crop and in total, deleted after a retention limit like the box's own crops.

    crops = CentralCrops(store, CropRules(folder=Path("/var/lib/edge-central/crops"), retention_days=7))
    crops.add("school-1", "box-17", payload)         # CropRefused: too large, not a JPEG, its sides unreasonable
    crops.between(start, end)                         # the console's unknown faces of a day
    crops.read(event_id)                              # the JPEG bytes
    crops.purge()                                     # files and rows older than the retention limit

Faces are biometric data: the folder is mode 0700, each file 0600, nothing is kept past `retention_days`, and when
the total would pass `max_total_bytes` the oldest crops are deleted first (the newest are the ones staff look at).
A crop may arrive before its event (two topics): it is kept by event_id whether or not the event is here yet.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

from edge.central.backend import Ddl, Schema
from edge.central.store import CentralError, CentralStore
from edge.imageheader import HeaderError, read_header
from edge.private import private_dir, write_private

log = logging.getLogger("edge.central.crops")
migrations = Schema("edge.central.crops")
PURGE_INTERVAL_S = 3600.0
MAX_SIDE = 1024
"""Largest side of a crop accepted (a box sends 112x112 aligned faces)."""


@migrations()
def m001_crops(db: Ddl) -> None:
    db.execute(
        """
        CREATE TABLE crops (
            event_id TEXT PRIMARY KEY,
            site TEXT NOT NULL,
            device_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            at TEXT NOT NULL,
            at_utc TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            received_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX idx_crops_at_utc ON crops (at_utc)")
    db.execute("CREATE INDEX idx_crops_received ON crops (received_at)")


class CropRefused(CentralError):
    """A crop the central does not keep: too large, not a JPEG, or sides out of reason."""


@dataclass(frozen=True)
class CropRules:
    """Where the central keeps crops, how large they may be and for how long."""

    folder: Optional[Path] = None
    """None: `<database>.crops` beside the central's database."""
    max_bytes: int = 256 * 1024
    """Largest JPEG accepted; larger ones are refused (a box sends at most crops.max_upload_bytes)."""
    max_total_bytes: int = 1024 * 1024 * 1024
    """All crops together; beyond it the oldest are deleted first."""
    retention_days: float = 7.0

    def __post_init__(self) -> None:
        if not 1024 <= self.max_bytes <= 16 * 1024 * 1024:
            raise ValueError(f"max_bytes must be within 1 KiB..16 MiB, got {self.max_bytes}")
        if self.max_total_bytes < self.max_bytes:
            raise ValueError(f"max_total_bytes ({self.max_total_bytes}) must be at least max_bytes ({self.max_bytes})")
        if not 0 < self.retention_days <= 366:
            raise ValueError(f"retention_days must be within 0..366 (exclusive of 0), got {self.retention_days}")


@dataclass(frozen=True)
class Crop:
    """One stored crop (the JPEG itself: CentralCrops.read)."""

    event_id: str
    site: str
    device_id: str
    event_type: str
    at: str
    bytes: int
    received_at: str


_COLUMNS = ("event_id", "site", "device_id", "event_type", "at", "bytes", "received_at")


def _utc(text: str) -> str:
    moment = datetime.fromisoformat(text)
    if moment.utcoffset() is None:
        raise CropRefused(f"at {text!r} has no UTC offset")
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def decode_jpeg(payload: Dict[str, Any], max_bytes: int) -> bytes:
    """The JPEG of an edge.crop/1 payload, checked: size first, then that it is a JPEG of reasonable sides."""
    text = payload["jpeg"]
    if len(text) > 4 * ((max_bytes + 2) // 3):
        raise CropRefused(f"crop of {payload['event_id']} is over the {max_bytes:,} byte limit")
    try:
        jpeg = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CropRefused(f"crop of {payload['event_id']} is not base64") from None
    if len(jpeg) > max_bytes:
        raise CropRefused(f"crop of {payload['event_id']} is {len(jpeg):,} bytes, over the {max_bytes:,} byte limit")
    try:
        header = read_header(jpeg)
    except HeaderError as exc:
        raise CropRefused(f"crop of {payload['event_id']}: {exc}") from None
    if header.format != "jpeg":
        raise CropRefused(f"crop of {payload['event_id']} is a {header.format.upper()}, not a JPEG")
    if max(header.width, header.height) > MAX_SIDE:
        raise CropRefused(f"crop of {payload['event_id']} is {header.width}x{header.height}, over {MAX_SIDE} px")
    return jpeg


class CentralCrops:
    """The crops table and folder of one central store. Thread-safe through the store's lock (the MQTT thread adds
    while the console reads)."""

    def __init__(self, store: CentralStore, rules: Optional[CropRules] = None) -> None:
        self.store, self.rules = store, rules or CropRules()
        default = Path(f"{store.path}.crops") if store.kind == "sqlite" else Path("central.crops")
        self.folder = self.rules.folder or default
        self._lock = store.lock
        self._last_purge: Optional[float] = None
        store.backend.apply(migrations)
        try:
            private_dir(self.folder)
        except OSError as exc:
            raise CentralError(f"{self.folder}: cannot create the crops folder ({exc.strerror})") from None

    def path_of(self, event_id: str) -> Path:
        return self.folder / f"{event_id}.jpg"

    def add(self, site: str, device: str, payload: Dict[str, Any], now: Optional[float] = None) -> Crop:
        """Keep the crop of an edge.crop/1 payload (already checked against its schema and its topic's box); a crop
        sent again replaces the first. CropRefused when it breaks the rules."""
        jpeg = decode_jpeg(payload, self.rules.max_bytes)
        at_utc = _utc(payload["at"])
        now = time.time() if now is None else now
        self.purge(now)
        received = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds")
        crop = Crop(payload["event_id"], site, device, payload["event_type"], payload["at"], len(jpeg), received)
        with self._lock:
            self._make_room(len(jpeg), crop.event_id)
            write_private(self.path_of(crop.event_id), jpeg)
            with self.store.backend.transaction() as tx:
                tx.execute(
                    "INSERT INTO crops (event_id, site, device_id, event_type, at, at_utc, bytes, sha256, "
                    "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO UPDATE SET "
                    "site = excluded.site, device_id = excluded.device_id, event_type = excluded.event_type, "
                    "at = excluded.at, at_utc = excluded.at_utc, bytes = excluded.bytes, sha256 = excluded.sha256, "
                    "received_at = excluded.received_at",
                    [crop.event_id, site, device, crop.event_type, crop.at, at_utc, crop.bytes,
                     hashlib.sha256(jpeg).hexdigest(), received],
                )  # fmt: skip
        return crop

    def _make_room(self, size: int, event_id: str) -> None:
        """Delete the oldest crops until `size` more bytes fit under max_total_bytes (caller holds the lock)."""
        query = self.store.backend.query
        total = query("SELECT coalesce(sum(bytes), 0) FROM crops WHERE event_id != ?", [event_id])[0][0]
        excess = int(total) + size - self.rules.max_total_bytes
        if excess <= 0:
            return
        freed, gone = 0, []
        for old_id, old_bytes in query(
            "SELECT event_id, bytes FROM crops WHERE event_id != ? ORDER BY received_at, event_id", [event_id]
        ):
            if freed >= excess:
                break
            gone.append(old_id)
            freed += int(old_bytes)
        self._delete(gone)
        log.warning("crops over %d bytes in all: deleted the %d oldest", self.rules.max_total_bytes, len(gone))

    def _delete(self, event_ids: List[str]) -> None:
        if event_ids:
            with self.store.backend.transaction() as tx:
                tx.executemany("DELETE FROM crops WHERE event_id = ?", [[e] for e in event_ids])
        for event_id in event_ids:
            try:
                self.path_of(event_id).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not delete the crop file of %s: %s", event_id, exc)

    def purge(self, now: Optional[float] = None, force: bool = False) -> int:
        """Delete the crops received more than retention_days ago (at most hourly unless `force`); how many."""
        now = time.time() if now is None else now
        if not force and self._last_purge is not None and now - self._last_purge < PURGE_INTERVAL_S:
            return 0
        self._last_purge = now
        limit = datetime.fromtimestamp(now, timezone.utc) - timedelta(days=self.rules.retention_days)
        with self._lock:
            rows = self.store.backend.query(
                "SELECT event_id FROM crops WHERE received_at < ?", [limit.isoformat(timespec="milliseconds")]
            )
            self._delete([r[0] for r in rows])
        if rows:
            log.info("deleted %d face crops older than %g days", len(rows), self.rules.retention_days)
        return len(rows)

    def get(self, event_id: str) -> Optional[Crop]:
        row = self.store.backend.one(f"SELECT {', '.join(_COLUMNS)} FROM crops WHERE event_id = ?", [event_id])
        return Crop(*row) if row else None

    def read(self, event_id: str) -> Optional[bytes]:
        """The JPEG of an event's crop, None when there is none (never sent, refused or expired)."""
        if self.get(event_id) is None:
            return None
        try:
            return self.path_of(event_id).read_bytes()
        except OSError:
            return None

    def between(self, start: datetime, end: datetime, event_type: Optional[str] = None) -> List[Crop]:
        """Crops of events at `start` <= at < `end` (aware datetimes), oldest first; optionally of one event type."""
        where, args = ["at_utc >= ?", "at_utc < ?"], [_utc(start.isoformat()), _utc(end.isoformat())]
        if event_type is not None:
            where.append("event_type = ?")
            args.append(event_type)
        rows = self.store.backend.query(
            f"SELECT {', '.join(_COLUMNS)} FROM crops WHERE {' AND '.join(where)} ORDER BY at_utc, event_id", args
        )
        return [Crop(*r) for r in rows]

    def total_bytes(self) -> int:
        return int(self.store.backend.query("SELECT coalesce(sum(bytes), 0) FROM crops")[0][0])
