"""What runs on the edge device. Importing this package must never import TensorFlow."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from brainedge.errors import ModelLoadError, UnknownBackendError
from runtime.artifact import FORMATS
from runtime.base import Predictor, TensorSpec

# One table (runtime.artifact.FORMATS) says which file each format keeps and what runs it.
BACKENDS = tuple(backend for _, backend in FORMATS.values())
_SUFFIX_BACKENDS = {Path(model_file).suffix: backend for model_file, backend in FORMATS.values()}


def get_predictor(
    path: str | Path,
    backend: str | None = None,
    num_threads: int | None = None,
    providers: Sequence[str] | None = None,
    pool_size: int = 1,
    content: bytes | None = None,
) -> Predictor:
    """Load a model file with ``backend``, or with the backend its file suffix implies.
    ``content``: the model bytes, already read and verified (a compressed artifact).

    This is the low-level loader and checks no manifest; ``runtime.load_classifier`` is the
    one to use on artifacts (it verifies the sha256 and applies the manifest).
    """
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

        return LiteRTPredictor(path, num_threads=num_threads, pool_size=pool_size,
                               content=content)
    if backend == "onnxruntime":
        from runtime.onnx import OnnxPredictor

        return OnnxPredictor(path, num_threads=num_threads, providers=providers,
                             content=content)
    if backend == "keras":
        from runtime.keras import KerasPredictor

        if content is not None:
            raise ModelLoadError(f"{path}: a Keras model cannot be loaded from bytes; store "
                                 "it uncompressed")

        return KerasPredictor(path, num_threads=num_threads)
    raise UnknownBackendError(f"unknown backend {backend!r}; choose from: {', '.join(BACKENDS)}")


from runtime.classifier import Classifier, Prediction, load_classifier  # noqa: E402

__all__ = ["BACKENDS", "Classifier", "Prediction", "Predictor", "TensorSpec", "get_predictor",
           "load_classifier"]
