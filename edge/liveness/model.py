"""The liveness scorer (I/O: loads the two MiniFASNet models named by models/manifest.yml ``liveness:``).

Each model sees its own context crop of the FULL frame (edge.liveness.crop); p_real is the mean of the two
models' softmax over their three logits, class 1 (= real), as Silent-Face-Anti-Spoofing fuses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np
import yaml

from edge.errors import ModelError
from edge.faces import Box
from edge.litert import load_interpreter
from edge.liveness.crop import context_crop
from edge.manifest import DEFAULT_MODELS_DIR, file_sha256, require_key

REBUILD = "reinstall it or run scripts/build_model.sh --liveness-only"


@dataclass(frozen=True)
class LivenessModelFile:
    """One model of the manifest's liveness section: file, checksum and the crop it wants."""

    id: str
    path: Path
    sha256: str
    crop_scale: float
    input_size: int


@dataclass(frozen=True)
class LivenessManifest:
    id: str
    models: Tuple[LivenessModelFile, ...]


def load_liveness_manifest(models_dir: Path = DEFAULT_MODELS_DIR) -> LivenessManifest:
    """The ``liveness:`` section of ``models_dir/manifest.yml`` (files not checked: see ``verify``)."""
    path = Path(models_dir) / "manifest.yml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: model manifest not found (the liveness models are listed there)") from exc
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: not valid YAML ({exc})") from exc
    where = f"{path}: liveness"
    section = require_key(data, "liveness", str(path))
    entries = require_key(section, "models", where)
    if not isinstance(entries, list) or not entries:
        raise ModelError(f"{where}.models: must be a non-empty list")
    models: List[LivenessModelFile] = []
    for i, entry in enumerate(entries):
        at = f"{where}.models[{i}]"
        try:
            shape = require_key(require_key(entry, "input", at), "shape", f"{at}.input")
            if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or shape[1] != shape[2]:
                raise ModelError(f"{at}.input.shape: expected [1, S, S, 3], got {shape}")
            models.append(
                LivenessModelFile(
                    id=str(require_key(entry, "id", at)),
                    path=Path(models_dir) / str(require_key(entry, "file", at)),
                    sha256=str(require_key(entry, "sha256", at)).lower(),
                    crop_scale=float(require_key(entry, "crop_scale", at)),
                    input_size=int(shape[1]),
                )
            )
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{at}: crop_scale must be a number and input.shape a list of integers") from exc
    return LivenessManifest(id=str(require_key(section, "id", where)), models=tuple(models))


def verify(model: LivenessModelFile) -> None:
    """Fail with a clear message naming the file when it is missing or is not the one the manifest names."""
    if not model.path.is_file():
        raise ModelError(f"liveness model {model.path} is missing (manifest id {model.id}); {REBUILD}")
    actual = file_sha256(model.path)
    if actual != model.sha256:
        raise ModelError(
            f"liveness model {model.path} has sha256 {actual}, but the manifest expects {model.sha256}: "
            f"the file is corrupt or was replaced; {REBUILD}"
        )


class _Net:
    """One MiniFASNet: its crop scale and interpreter; ``p_real`` of one context crop."""

    def __init__(self, model: LivenessModelFile, num_threads: int) -> None:
        self.scale = model.crop_scale
        self.size = model.input_size
        self._interpreter = load_interpreter(str(model.path), num_threads)
        (inp,) = self._interpreter.get_input_details()
        (out,) = self._interpreter.get_output_details()
        if tuple(inp["shape"]) != (1, self.size, self.size, 3) or tuple(out["shape"]) != (1, 3):
            raise ModelError(
                f"{model.path}: expected input (1, {self.size}, {self.size}, 3) and output (1, 3), "
                f"got {tuple(inp['shape'])} and {tuple(out['shape'])}"
            )
        self._input, self._output = inp["index"], out["index"]

    def p_real(self, image_bgr: np.ndarray, box: Box) -> float:
        crop = context_crop(image_bgr, box, self.scale, self.size)
        self._interpreter.set_tensor(self._input, crop.astype(np.float32)[np.newaxis])  # BGR 0..255 as is
        self._interpreter.invoke()
        logits = self._interpreter.get_tensor(self._output)[0].astype(np.float64)
        exp = np.exp(logits - logits.max())
        return float(exp[1] / exp.sum())


class LivenessModel:
    """p_real (0..1) of a face in a full camera frame. Not thread-safe: one per thread.

    >>> with LivenessModel(models_dir) as liveness:
    ...     p_real = liveness.score(frame.image, detection.box)
    """

    def __init__(self, models_dir: Path = DEFAULT_MODELS_DIR, num_threads: int = 1) -> None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads: must be an integer >= 1, got {num_threads!r}")
        manifest = load_liveness_manifest(models_dir)
        for model in manifest.models:
            verify(model)
        self.model_id: str = manifest.id
        self._nets: List[_Net] = [_Net(model, num_threads) for model in manifest.models]
        self._closed = False

    def __enter__(self) -> LivenessModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the interpreters. Idempotent; score() afterwards raises RuntimeError."""
        self._nets = []
        self._closed = True

    def score_each(self, image_bgr: np.ndarray, box: Box) -> Tuple[float, ...]:
        """Each model's p_real, in manifest order (for evaluation and debugging)."""
        if self._closed:
            raise RuntimeError("LivenessModel is closed")
        return tuple(net.p_real(image_bgr, box) for net in self._nets)

    def score(self, image_bgr: np.ndarray, box: Box) -> float:
        """Fused p_real of the face in ``box`` of the full frame ``image_bgr`` (HxWx3 BGR uint8)."""
        each = self.score_each(image_bgr, box)
        return float(sum(each) / len(each))
