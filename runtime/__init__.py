"""What runs on the edge device. Importing this package must never import TensorFlow."""

from __future__ import annotations

from pathlib import Path

from brainedge.errors import ModelLoadError, UnknownBackendError
from runtime.base import Predictor, TensorSpec

BACKENDS = ("litert", "onnxruntime")
_SUFFIX_BACKENDS = {".tflite": "litert", ".onnx": "onnxruntime"}


def get_predictor(
    path: str | Path, backend: str | None = None, num_threads: int | None = None
) -> Predictor:
    """Load an artifact with ``backend``, or with the backend its file suffix implies."""
    path = Path(path)
    if backend is None:
        backend = _SUFFIX_BACKENDS.get(path.suffix.lower())
        if backend is None:
            raise ModelLoadError(
                f"{path}: cannot tell the runtime from the suffix {path.suffix!r}; expected "
                f"one of {', '.join(_SUFFIX_BACKENDS)}, or pass backend= one of "
                f"{', '.join(BACKENDS)}"
            )
    # Each backend is imported only in its branch: a device may have only one runtime.
    if backend == "litert":
        from runtime.litert import LiteRTPredictor

        return LiteRTPredictor(path, num_threads=num_threads)
    if backend == "onnxruntime":
        from runtime.onnx import OnnxPredictor

        return OnnxPredictor(path, num_threads=num_threads)
    raise UnknownBackendError(f"unknown backend {backend!r}; choose from: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Predictor", "TensorSpec", "get_predictor"]
