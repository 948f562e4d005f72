"""models/manifest.yml: which embedding model the box runs, which detector models, and the facts needed to check
and feed them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Tuple

import yaml

from edge.errors import ModelError

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class ModelManifest:
    """The shipped embedding model: identity, file and checksum, input geometry and output size."""

    id: str
    path: Path
    sha256: str
    input_size: Tuple[int, int]
    embedding_size: int


def require_key(data: Any, key: str, where: str) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise ModelError(f"{where}: missing key '{key}'")
    return data[key]


def load_manifest(models_dir: Path = DEFAULT_MODELS_DIR) -> ModelManifest:
    """Read and check `models_dir/manifest.yml` (not the model file itself: see `verify_model_file`)."""
    path = Path(models_dir) / "manifest.yml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: model manifest not found") from exc
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: not valid YAML ({exc})") from exc
    where = str(path)
    size = require_key(require_key(data, "input", where), "size", f"{where}: input")
    try:
        input_size = (int(size[0]), int(size[1]))
        embedding_size = int(require_key(data, "embedding_size", where))
    except (TypeError, ValueError, IndexError) as exc:
        raise ModelError(f"{where}: input.size must be [height, width] and embedding_size an integer") from exc
    return ModelManifest(
        id=str(require_key(data, "id", where)),
        path=Path(models_dir) / str(require_key(data, "file", where)),
        sha256=str(require_key(data, "sha256", where)).lower(),
        input_size=input_size,
        embedding_size=embedding_size,
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_model_file(manifest: ModelManifest) -> None:
    """Fail with a clear message when the model file is missing or is not the one the manifest names."""
    if not manifest.path.is_file():
        raise ModelError(f"model file {manifest.path} is missing (manifest id {manifest.id}); reinstall or rebuild it")
    actual = file_sha256(manifest.path)
    if actual != manifest.sha256:
        raise ModelError(
            f"model file {manifest.path} has sha256 {actual}, but the manifest expects {manifest.sha256}: "
            "the file is corrupt or was replaced; reinstall it or run scripts/build_model.sh"
        )


@dataclass(frozen=True)
class DetectorModel:
    """One BlazeFace file of the manifest's detector section (extracted from the mediapipe wheel at build time)."""

    id: str
    path: Path
    sha256: str
    input_size: int


def load_detector_models(models_dir: Path = DEFAULT_MODELS_DIR) -> Dict[str, DetectorModel]:
    """The detector models `models_dir/manifest.yml` names, by file name (not checked on disk: see `verify_file`)."""
    path = Path(models_dir) / "manifest.yml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: model manifest not found (the face-detection models are listed there)") from exc
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: not valid YAML ({exc})") from exc
    where = f"{path}: detector"
    models = require_key(require_key(data, "detector", str(path)), "models", where)
    if not isinstance(models, list):
        raise ModelError(f"{where}.models: must be a list")
    out: Dict[str, DetectorModel] = {}
    for i, entry in enumerate(models):
        at = f"{where}.models[{i}]"
        try:
            name = str(require_key(entry, "file", at))
            out[name] = DetectorModel(
                id=str(require_key(entry, "id", at)),
                path=Path(models_dir) / name,
                sha256=str(require_key(entry, "sha256", at)).lower(),
                input_size=int(require_key(entry, "input_size", at)),
            )
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{at}: input_size must be an integer") from exc
    return out


def verify_file(path: Path, sha256: str, what: str) -> None:
    """Fail with a clear message when `path` is missing or its sha256 is not the manifest's."""
    if not path.is_file():
        raise ModelError(f"{what} {path} is missing; reinstall it or run scripts/build_model.sh --detector-only")
    actual = file_sha256(path)
    if actual != sha256:
        raise ModelError(
            f"{what} {path} has sha256 {actual}, but the manifest expects {sha256}: "
            "the file is corrupt or was replaced; reinstall it or run scripts/build_model.sh --detector-only"
        )
