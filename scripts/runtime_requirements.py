#!/usr/bin/env python3
"""Print edge's runtime requirements (setup.cfg install_requires), one a line; --without NAME leaves one out.

scripts/install_box.sh --system-opencv installs them without opencv-python-headless, so that the distribution's
OpenCV (built with GStreamer) is the one `import cv2` finds. Standard library only: runs with any Python 3.
"""

from __future__ import annotations

import argparse
import configparser
import re
import sys
from pathlib import Path
from typing import List

SETUP_CFG = Path(__file__).resolve().parent.parent / "setup.cfg"


def requirements(setup_cfg: Path = SETUP_CFG) -> List[str]:
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    lines = (line.strip() for line in parser["options"]["install_requires"].splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def name_of(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    return re.sub(r"[-_.]+", "-", match.group(0)).lower() if match else ""


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--without", action="append", default=[], metavar="NAME", help="leave this package out")
    args = parser.parse_args(argv)
    skip = {name_of(n) for n in args.without}
    for requirement in requirements():
        if name_of(requirement) not in skip:
            print(requirement)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
