"""Which code this box runs: the version the daemon reports as software_version, and `edge --version` prints.

Versions come from git tags through setuptools-scm (pyproject.toml): `v0.2.0` tagged -> 0.2.0; three commits later
-> 0.2.1.dev3+g<commit>; uncommitted changes add .d<date>. An installed box (install_box.sh, a normal pip install)
reads the version written into edge/_version.py when it was installed. A development checkout asks git each time
the process starts, because an editable install's _version.py keeps the version of the day it was installed.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Optional

from edge import __version__

FALLBACK = "0.1.0"
"""The version before the first tag (and of a copy without git): see pyproject.toml's [tool.setuptools_scm]."""


@cache
def software_version() -> str:
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        version = version_from_git(root)
        if version is not None:
            return version
    return __version__


def version_from_git(root: Path) -> Optional[str]:
    """setuptools-scm's version of the checkout at `root`, or None (no git, or setuptools-scm not installed)."""
    try:
        from setuptools_scm import get_version
    except ImportError:
        return None
    try:
        return str(get_version(root=str(root), fallback_version=FALLBACK))
    except (LookupError, OSError, ValueError):
        return None
