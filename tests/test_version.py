"""Versions come from git tags (setuptools-scm): two commits report two software_versions."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.cli import main
from edge.version import FALLBACK, software_version, version_from_git

REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("setuptools_scm", reason="setuptools-scm is in the dev extra (make setup)")
if shutil.which("git") is None:
    pytest.skip("git is not installed", allow_module_level=True)


def git(root: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def commit(root: Path, text: str) -> str:
    (root / "file.txt").write_text(text)
    git(root, "add", "file.txt")
    git(root, "commit", "-q", "-m", text)
    return git(root, "rev-parse", "--short=9", "HEAD")


def test_each_commit_has_its_own_version_and_a_tag_names_a_release(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    first = commit(tmp_path, "one")
    v1 = version_from_git(tmp_path)
    second = commit(tmp_path, "two")
    v2 = version_from_git(tmp_path)
    assert v1 and v2 and v1 != v2
    assert first[:7] in v1 and second[:7] in v2 and ".dev" in v2
    git(tmp_path, "tag", "v0.3.0")
    assert version_from_git(tmp_path) == "0.3.0"
    commit(tmp_path, "three")
    assert str(version_from_git(tmp_path)).startswith("0.3.1.dev1+g")
    (tmp_path / "file.txt").write_text("uncommitted")
    assert ".d" in str(version_from_git(tmp_path))  # a dirty tree is told apart from its commit


def test_a_copy_without_git_gets_the_fallback(tmp_path: Path) -> None:
    assert version_from_git(tmp_path) == FALLBACK


def test_this_checkout_reports_its_commit_at_the_cli() -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    head = git(REPO, "rev-parse", "--short=7", "HEAD")
    assert head in software_version()
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"edge, version {software_version()}"
