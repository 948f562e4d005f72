"""The one place that reaches the TFLite runtime: ai_edge_litert first, tflite_runtime as the fallback."""

from __future__ import annotations

from typing import Any

from edge.errors import ModelError


def load_interpreter(model_path: str, num_threads: int) -> Any:
    """Return an allocated TFLite Interpreter for `model_path` using `num_threads` CPU threads."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
        except ImportError as exc:
            raise ModelError(
                "no TFLite runtime installed: pip install ai-edge-litert (or tflite-runtime on old boxes)"
            ) from exc
    try:
        interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{model_path}: not a loadable TFLite model ({exc})") from exc
    return interpreter
