"""The box install: the systemd unit is valid and hardened, and install_box.sh writes a valid config with box paths.

systemd is not PID 1 here, so the unit is checked offline with `systemd-analyze` (Debian package systemd)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import load_config
from tests.support import REPO

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not found (Debian package systemd)")
INSTALLED_EDGE = "/opt/edge/venv/bin/edge"
MAX_EXPOSURE = 2.5
"""`systemd-analyze security` scores 0 (locked down) to 10 (exposed); the unit scored 2.2 when this was written."""


def unit_here(tmp_path: Path, edge: str = "") -> Path:
    """The unit with its ExecStart pointed at this environment's `edge` (verify checks that the binary exists)."""
    text = (REPO / "systemd" / "edge.service").read_text()
    assert INSTALLED_EDGE in text
    unit = tmp_path / "edge.service"
    unit.write_text(text.replace(INSTALLED_EDGE, edge or str(Path(sys.executable).parent / "edge")))
    return unit


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=60)


@needs_analyze
def test_the_unit_verifies(tmp_path: Path) -> None:
    done = analyze("verify", str(unit_here(tmp_path)))
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@needs_analyze
def test_a_unit_pointing_at_no_program_does_not_verify(tmp_path: Path) -> None:
    done = analyze("verify", str(unit_here(tmp_path, edge=str(tmp_path / "no-such-edge"))))
    assert done.returncode != 0 and "no-such-edge" in done.stderr


@needs_analyze
def test_the_unit_is_hardened_and_keeps_biometric_files_private(tmp_path: Path) -> None:
    done = analyze("security", "--offline=true", str(unit_here(tmp_path)))
    assert done.returncode == 0, done.stderr
    found = re.search(r"Overall exposure level for edge\.service: (\d+\.\d+)", done.stdout)
    assert found, done.stdout[-2000:]
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout
    checks = {line.split()[1]: line.startswith("✓") for line in done.stdout.splitlines() if line.startswith(("✓", "✗"))}
    # files the daemon creates (gallery, events, crops) are its own; no capabilities; a read-only system
    for setting in ("UMask=", "CapabilityBoundingSet=~CAP_SYS_ADMIN", "ProtectSystem=", "NoNewPrivileges="):
        assert checks.get(setting) is True, (setting, done.stdout)
    # devices stay reachable: USB cameras and hardware decoders
    assert checks.get("PrivateDevices=") is False and checks.get("DeviceAllow=") is False


def test_the_installed_config_is_the_example_with_the_box_paths(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_box.sh"), "--print-config"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    path = tmp_path / "edge.yml"
    path.write_text(done.stdout)
    config = load_config(path)
    assert config.storage.database == Path("/var/lib/edge/edge.db")
    assert config.embedder.models_dir == Path("/opt/edge/models")
    example = load_config(REPO / "config" / "edge.example.yml")
    assert config.cameras == example.cameras and config.attendance == example.attendance
