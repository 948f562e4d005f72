"""install_box.sh releases: each install builds /opt/edge/releases/<version>; venv and models are symlinks to the
active one; an upgrade keeps the previous release, --rollback returns to it, --version re-activates a release (or
builds a tag or commit from git). Run with EDGE_HOME in a temporary folder and --release-only (no root, nothing
else installed), from a clone of this checkout with two commits."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict

import pytest
from support import REPO

PYTHON = "/usr/bin/python3"


def git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def install(repo: Path, home: Path, *args: str) -> str:
    env: Dict[str, str] = {"PATH": "/usr/bin:/bin", "EDGE_HOME": str(home), "PYTHON": PYTHON, "HOME": str(home.parent)}
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE"):
        if name in os.environ:
            env[name] = os.environ[name]
    done = subprocess.run(
        ["bash", "scripts/install_box.sh", "--release-only", *args],
        cwd=repo, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if done.returncode and ("NewConnectionError" in done.stderr or "No matching distribution" in done.stderr):
        pytest.skip(f"the package index is unreachable: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def version(home: Path) -> str:
    return subprocess.run([str(home / "venv" / "bin" / "edge"), "--version"], capture_output=True, text=True).stdout


def test_upgrade_keeps_the_previous_release_and_rollback_returns_to_it(tmp_path: Path) -> None:
    if shutil.which("git") is None or not Path(PYTHON).is_file():
        pytest.skip(f"needs git and {PYTHON}")
    repo, home = tmp_path / "repo", tmp_path / "opt-edge"
    subprocess.run(["git", "clone", "-q", str(REPO), str(repo)], check=True)
    for script in ("install_box.sh", "runtime_requirements.py"):  # the scripts as they are here, under test
        shutil.copy(REPO / "scripts" / script, repo / "scripts" / script)
    git(repo, "commit", "-qam", "the scripts under test", "--allow-empty")
    first = git(repo, "rev-parse", "--short=7", "HEAD")
    assert f"release {first}" in install(repo, home)
    assert f"+g{first}" in version(home)
    assert os.readlink(home / "venv") == f"releases/{first}/venv"
    assert (home / "models" / "manifest.yml").is_file() and (home / "models" / "face_detection_short_range.tflite").is_file()
    # an upgrade: a new commit, a new release; the first one is kept as the previous
    (repo / "CHANGELOG.md").write_text((repo / "CHANGELOG.md").read_text() + "\n- a change\n")
    git(repo, "commit", "-qam", "a second release")
    second = git(repo, "rev-parse", "--short=7", "HEAD")
    assert f"release {second} is active (previous: {first})" in install(repo, home)
    assert f"+g{second}" in version(home) and os.readlink(home / "previous") == f"releases/{first}"
    # rollback: the first release again, without building anything
    assert f"release {first} is active (previous: {second})" in install(repo, home, "--rollback")
    assert f"+g{first}" in version(home)
    # a given version: the release already built is re-activated
    out = install(repo, home, "--version", second)
    assert f"release {second} is already built" in out and f"+g{second}" in version(home)
    listed = subprocess.run(
        ["bash", "scripts/install_box.sh", "--releases"], cwd=repo, env={"PATH": "/usr/bin:/bin", "EDGE_HOME": str(home)},
        capture_output=True, text=True,
    ).stdout.split("\n")  # fmt: skip
    assert f"{second} (active)" in listed and f"{first} (previous)" in listed


def test_a_venv_from_before_releases_is_kept_as_legacy(tmp_path: Path) -> None:
    home = tmp_path / "opt-edge"
    (home / "venv" / "bin").mkdir(parents=True)
    (home / "models").mkdir()
    (home / "venv" / "bin" / "edge").write_text("#!/bin/sh\necho legacy\n")
    (home / "venv" / "bin" / "edge").chmod(0o755)
    (home / "releases" / "r2" / "venv" / "bin").mkdir(parents=True)
    (home / "releases" / "r2" / "models").mkdir()
    script = REPO / "scripts" / "install_box.sh"
    # the activation functions alone, from the script (no build: release r2 is already there)
    code = f"set -euo pipefail; EDGE_HOME={home}; eval \"$(sed -n '/^relink()/,/^}}/p;/^active_release()/,/^}}/p;/^previous_release()/,/^}}/p;/^activate()/,/^}}/p;/^rollback()/,/^}}/p' {script})\"; activate r2; rollback"
    done = subprocess.run(["bash", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "release r2 is active (previous: legacy)" in done.stdout
    assert "release legacy is active (previous: r2)" in done.stdout
    assert os.readlink(home / "venv") == "releases/legacy/venv"
    assert subprocess.run([str(home / "venv" / "bin" / "edge")], capture_output=True, text=True).stdout == "legacy\n"
