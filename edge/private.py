"""Faces are biometric data: the files that hold them (the gallery and events database, face crops) are created
readable by their owner only, whatever the process umask. SQLite gives its -wal and -shm files the database file's
permissions, so creating the database file private is enough. Existing files keep the permissions an admin gave them.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists (parents are created as needed; OSError as raised)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def private_dir(path: Path) -> None:
    """Create the folder `path` with mode 0700 unless it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to a new file with mode 0600 (replacing one that exists)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
