"""The predictor protocol every runtime backend implements (no TensorFlow, NumPy only).

A predictor takes what ``runtime.preprocess.scale`` produces, a float32 (N, H, W, 3) batch, and
returns float32 (N, K) probabilities, whatever the artifact stores inside: quantizing the input
and dequantizing the output of an integer model happens here, so callers never see integers.
Backends supply the specs read from the model file and ``_run``, one call of the runtime.

An artifact made by ``brainedge optimize`` has a second output: the penultimate features
(N, D), the input of the classification layer, which the out-of-distribution score reads
(``runtime.ood_score``). The two are told apart by shape, the same way for every format: the
probabilities are the narrower output (K classes against D features, D >> K).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from brainedge.errors import ConfigError, ModelLoadError, ShapeMismatchError

SUPPORTED_DTYPES = ("float32", "float16", "float64", "int8", "uint8")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the file declares it; ``None`` marks a dynamic dimension.

    ``scale`` and ``zero_point`` are set only for quantized tensors:
    ``real = (stored - zero_point) * scale``.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None


class Predictor(ABC):
    """A loaded artifact. Subclasses set the attributes in ``__init__`` and implement ``_run``."""

    name: ClassVar[str]  # backend name, one of runtime.BACKENDS
    version: str  # version of the runtime library
    path: Path
    input_spec: TensorSpec
    output_spec: TensorSpec  # the probabilities
    feature_spec: TensorSpec | None = None  # the penultimate features, when the model has them

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed float32 (N, H, W, 3) batch -> float32 (N, K) probabilities."""
        return self.predict_with_features(batch)[0]

    def predict_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, K) and features (N, D) as float32; features are ``None`` when the
        model has no features output (a model exported before they were added)."""
        x = self._check_batch(batch)
        raw = self._run(to_model_dtype(x, self.input_spec))
        probs_raw, feats_raw = raw if isinstance(raw, tuple) else (raw, None)
        probs = from_model_dtype(probs_raw, self.output_spec)
        if feats_raw is None or self.feature_spec is None:
            return probs, None
        return probs, from_model_dtype(feats_raw, self.feature_spec)

    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Run the model on a batch already in the input's dtype; return its raw output, or
        (probabilities, features) when ``feature_spec`` is set."""

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        expected = self.input_spec.shape[1:]
        shown = "(N, " + ", ".join("?" if d is None else str(d) for d in expected) + ")"
        x = np.asarray(batch)
        # Integers here mean unscaled pixels: runtime.preprocess.scale was skipped.
        if x.dtype.kind != "f":
            raise ShapeMismatchError(
                f"{self.path.name}: expected a float32 batch {shown} from "
                f"runtime.preprocess.scale, received {x.dtype} {x.shape}"
            )
        fits = x.ndim == len(expected) + 1 and x.shape[0] > 0 and all(
            want is None or got == want for want, got in zip(expected, x.shape[1:], strict=True)
        )
        if not fits:
            raise ShapeMismatchError(
                f"{self.path.name}: expected a batch of shape {shown} with N >= 1, "
                f"received {x.shape}"
            )
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise ShapeMismatchError(
                f"{self.path.name}: expected finite values, received {bad} NaN/inf values "
                f"in a batch of shape {x.shape}"
            )
        return x

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, {self.name} {self.version}, "
                f"input={self.input_spec.dtype}{list(self.input_spec.shape)})")


def to_model_dtype(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float32 values -> the tensor's dtype, quantizing with its scale and zero point."""
    if not spec.quantized:
        return x.astype(spec.dtype, copy=False)
    info = np.iinfo(spec.dtype)
    q = np.rint(x / np.float32(spec.scale)) + spec.zero_point
    return np.clip(q, info.min, info.max).astype(spec.dtype)


def from_model_dtype(y: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if not spec.quantized:
        return np.asarray(y, dtype=np.float32)
    return ((y.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)).astype(np.float32)


def check_io_spec(spec: TensorSpec, path: Path) -> TensorSpec:
    """Refuse at load time what ``predict`` could not convert, rather than at the first call."""
    if spec.dtype not in SUPPORTED_DTYPES:
        raise ModelLoadError(
            f"{path}: tensor {spec.name!r} is {spec.dtype}; BrainEdge runs models whose input "
            f"and output are one of {', '.join(SUPPORTED_DTYPES)}"
        )
    if spec.dtype in ("int8", "uint8") and not spec.quantized:
        raise ModelLoadError(
            f"{path}: tensor {spec.name!r} is {spec.dtype} without a scale and zero point, so "
            "float values cannot be mapped onto it; re-export the model with float input/output"
        )
    return spec


def assign_outputs(specs: list[TensorSpec], path: Path) -> tuple[int, int | None]:
    """Indices of the probabilities and the features among a model's outputs.

    One output: the probabilities. Two: the narrower is the probabilities (K classes), the
    wider the features (D >> K); two of equal width cannot be told apart and are refused.
    """
    widths = [spec.shape[-1] if spec.shape else None for spec in specs]
    if len(specs) == 1:
        return 0, None
    if len(specs) == 2 and None not in widths and widths[0] != widths[1]:
        probs = int(np.argmin(widths))
        return probs, 1 - probs
    raise ModelLoadError(
        f"{path}: expected a classifier with one output (probabilities) or two (probabilities "
        f"and features of different widths), found {len(specs)} outputs of widths {widths}"
    )


def check_num_threads(num_threads: int | None) -> int | None:
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise ConfigError(f"num_threads must be a positive integer or None, got {num_threads!r}")
    return num_threads


def check_model_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such model file")
    return path
