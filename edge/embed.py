"""Face embedder: an aligned 112x112 face in, an L2-normalised embedding out (quantized TFLite)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.litert import load_interpreter
from edge.manifest import DEFAULT_MODELS_DIR, ModelManifest, load_manifest, verify_model_file


class Embedder:
    """Runs the model named by the manifest; checks its sha256 at load."""

    def __init__(self, models_dir: Path = DEFAULT_MODELS_DIR, num_threads: int = 2) -> None:
        if num_threads < 1:
            raise ValueError(f"embedder.num_threads must be >= 1, got {num_threads}")
        self.manifest: ModelManifest = load_manifest(models_dir)
        verify_model_file(self.manifest)
        self._interpreter = load_interpreter(str(self.manifest.path), num_threads)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        height, width = self.manifest.input_size
        expected = (1, height, width, 3)
        if tuple(self._input["shape"]) != expected:
            raise ValueError(f"model input is {tuple(self._input['shape'])}, manifest says {expected}")

    @property
    def model_id(self) -> str:
        return self.manifest.id

    def embed(self, aligned_bgr: np.ndarray) -> np.ndarray:
        """Return the unit-length float32 embedding of one aligned face (BGR uint8, model input size)."""
        rgb = cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2RGB)
        tensor = rgb.astype(np.float32)[np.newaxis]  # 0..255 as is: normalisation is inside the graph
        self._interpreter.set_tensor(self._input["index"], tensor)
        self._interpreter.invoke()
        vector = self._interpreter.get_tensor(self._output["index"])[0].astype(np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector
