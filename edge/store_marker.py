"""The marker file beside the event database: what lets a box notice that its database is gone or went back in time.

SQLite silently creates a database that is missing. A box whose database vanished (a wiped card, a wrong path, a
0-byte file after a crash) would start at seq 1 again and lose its gallery and its unsent events without a word. So
the first open of a database writes `<database>.id` beside it:

    {"device_id": "box-17", "epoch": "3f9c0a1b2c3d4e5f", "created_at": "2026-03-02T08:00:00+00:00", "hwm": 1234}

- `epoch`: the database's current epoch (edge/store.py): event ids carry it, so they never repeat across a reset.
- `hwm`: a seq high-water the database is known to have committed. The outbox raises it (to the database's high
  water at that moment, so rarely) before it publishes a seq above it. A database whose high water is below it at
  start lost committed rows (a lost or damaged WAL after a crash) and would hand their seqs out again.
- The file is replaced atomically (temp file, fsync, rename, fsync of the folder): it is either the old or the new.

At start (`EventStore(..., init=False)`): marker present and the database missing, empty, replaced by another one, or
behind the marker's hwm -> StoreError telling `edge run --init`. `--init` starts a new database (or a new epoch on
the one that is there) and rewrites the marker.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from edge.errors import StoreError

EPOCH_PATTERN = re.compile(r"^[0-9a-f]{16}$")
MAX_SEQ = 2**53 - 1
"""The largest seq the contract carries (a JSON integer every language reads exactly)."""


@dataclass(frozen=True)
class Marker:
    device_id: str
    epoch: str
    created_at: str
    hwm: int

    def __post_init__(self) -> None:
        if not isinstance(self.epoch, str) or not EPOCH_PATTERN.match(self.epoch):
            raise ValueError(f"epoch must be 16 lowercase hex digits, got {self.epoch!r}")
        if type(self.hwm) is not int or not 0 <= self.hwm <= MAX_SEQ:
            raise ValueError(f"hwm must be an integer within 0..{MAX_SEQ}, got {self.hwm!r}")
        if not isinstance(self.device_id, str) or not isinstance(self.created_at, str):
            raise ValueError("device_id and created_at must be strings")


def marker_path(database: Path) -> Path:
    return database.with_name(database.name + ".id")


def read_marker(database: Path) -> Optional[Marker]:
    """The marker of `database`, None when there is none; StoreError when it cannot be read."""
    path = marker_path(database)
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None  # a path that cannot exist: creating the database says why
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the database marker ({exc})") from exc
    try:
        body = json.loads(raw.decode("utf-8"))
        return Marker(body["device_id"], body["epoch"], body["created_at"], body["hwm"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(
            f"{path}: the database marker is damaged ({type(exc).__name__}); check the database beside it, then "
            "start once with `edge run --init` to write a new marker"
        ) from None


def write_marker(database: Path, marker: Marker) -> None:
    """Replace the marker atomically and durably; StoreError (naming the file) when the folder is not writable."""
    path = marker_path(database)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    data = (json.dumps(asdict(marker), sort_keys=True) + "\n").encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StoreError(f"{path}: cannot write the database marker ({exc}); is the folder read-only?") from exc


def new_marker(device_id: str, epoch: str, hwm: int) -> Marker:
    return Marker(device_id, epoch, datetime.now(timezone.utc).isoformat(timespec="seconds"), hwm)


def lost_database(database: Path, marker: Optional[Marker]) -> Optional[str]:
    """Why a database the marker says existed is unusable before opening it ("missing", "empty"), else None."""
    if marker is None:
        return None
    try:
        size = database.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError:
        return None  # opening it will say what is wrong
    return "empty (0 bytes)" if size == 0 else None


def refusal(database: Path, marker: Marker, what: str) -> StoreError:
    return StoreError(
        f"{database}: the event database {what}, but this box had one (created {marker.created_at}, epoch "
        f"{marker.epoch}, events up to seq {marker.hwm} committed; see {marker_path(database).name}). Refusing to "
        "start: restore the file, or run `edge run --init` to start a new database with a new epoch (unsent events "
        "in the lost one are gone, and so is the gallery: the central server must sync it again)"
    )


def set_aside(database: Path) -> None:
    """--init on a lost database: move what is left of it (a 0-byte file, a stale -wal/-shm) out of the way."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for suffix in ("", "-wal", "-shm", "-journal"):
        old = database.with_name(database.name + suffix)
        if old.exists():
            try:
                old.rename(old.with_name(f"{old.name}.lost-{stamp}"))
            except OSError as exc:
                raise StoreError(f"{old}: cannot move the remains of the lost database aside ({exc})") from exc


def folder_unwritable(database: Path) -> Optional[str]:
    """Why no file can be created beside `database` (SQLite needs its -wal and -shm there), or None."""
    probe = database.with_name(f".{database.name}.{os.getpid()}.probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    with contextlib.suppress(OSError):
        probe.unlink()
    return None
