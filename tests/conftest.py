"""Shared fixtures. Real face data is found through one setting, EDGE_TEST_DATA (default ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
from support import CentralKeys, Mosquitto, RtspServer, free_port, mosquitto_unavailable, rtsp_unavailable

REPO = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    return Path(os.environ.get("EDGE_TEST_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data() -> Path:
    """The real face data folder; tests that need it skip with a clear reason when it is absent."""
    root = data_root()
    if not (root / "README.md").is_file():
        pytest.skip(f"face data not found at {root}: set EDGE_TEST_DATA to the shared data folder")
    return root


@pytest.fixture()
def central_keys(tmp_path: Path) -> CentralKeys:
    """A fresh central key pair in tmp_path/keys (central.key, central.pub): see support.CentralKeys."""
    return CentralKeys(tmp_path / "keys")


@pytest.fixture
def rtsp(data: Path) -> Iterator[RtspServer]:
    """A real RTSP server (gst-rtsp-server) looping the Hamilton clip; skips with the reason when it cannot run."""
    reason = rtsp_unavailable()
    if reason:
        pytest.skip(reason)
    server = RtspServer(data / "hamilton" / "short_hamilton_clip.mp4", free_port(), loop=True)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free port (Debian's package, from scripts/install_system_deps.sh), killed after the
    test; skips with the reason when mosquitto is not installed."""
    reason = mosquitto_unavailable()
    if reason:
        pytest.skip(str(reason))
    # as root mosquitto switches to the user "mosquitto", who cannot write pytest's 0700 folders (no persistence)
    server = Mosquitto(tmp_path / "broker", free_port()).start()
    try:
        yield server
    finally:
        server.kill()
