"""One calibration source for int8 quantization, with an adapter for each converter.

A ``CalibrationSet`` holds images that went through ``runtime.preprocess.scale`` (the same path
as training and serving), so the ranges TFLite and ONNX Runtime calibrate on are the ranges the
deployed model sees. ``representative_dataset`` feeds ``TFLiteConverter``; ``ort_reader`` feeds
``onnxruntime.quantization.quantize_static``. Neither TensorFlow nor onnxruntime is imported here
until an adapter is asked for.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brainedge.errors import CalibrationError
from runtime.preprocess import PreprocessSpec, scale

if TYPE_CHECKING:
    # The real class subclasses it and is built on first use (see ``_ort_reader_class``).
    from onnxruntime.quantization import CalibrationDataReader as OrtCalibrationReader

    from training.pipeline import PreparedSet

__all__ = ["CalibrationSet", "OrtCalibrationReader", "stratified_indices"]


class CalibrationSet:
    """Preprocessed float32 images (N, H, W, 3) that calibrate int8 activation ranges."""

    def __init__(self, images: np.ndarray, min_size: int = 10) -> None:
        images = np.asarray(images)
        _check_images(images, min_size)
        self._images = np.ascontiguousarray(images)
        self._images.flags.writeable = False  # shared by both adapters; nobody may edit it

    @classmethod
    def from_prepared(
        cls,
        prepared: PreparedSet,
        spec: PreprocessSpec,
        size: int,
        seed: int,
        min_size: int = 10,
    ) -> CalibrationSet:
        """A stratified, seeded sample of up to ``size`` prepared images, scaled for the model.

        Stratified so that a small sample still covers every class's intensity range.
        """
        if size < 1:
            raise CalibrationError(f"calibration size must be >= 1, got {size}; "
                                   "raise --calibration-size")
        idx = stratified_indices(prepared.labels, size, seed)
        return cls(scale(prepared.images[idx], spec), min_size=min_size)

    def __len__(self) -> int:
        return len(self._images)

    @property
    def images(self) -> np.ndarray:
        return self._images

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of one image."""
        return tuple(self._images.shape[1:])  # type: ignore[return-value]

    def batches(self) -> Iterator[np.ndarray]:
        """One (1, H, W, 3) float32 batch per image: what both converters consume."""
        for i in range(len(self._images)):
            yield self._images[i:i + 1]

    def representative_dataset(self) -> Callable[[], Iterator[list[np.ndarray]]]:
        """For ``TFLiteConverter.representative_dataset``: a fresh generator on every call."""

        def generate() -> Iterator[list[np.ndarray]]:
            for batch in self.batches():
                yield [batch]

        return generate

    def ort_reader(self, input_name: str) -> OrtCalibrationReader:
        """For ``onnxruntime.quantization.quantize_static``; feeds ``input_name``."""
        return _ort_reader_class()(self, input_name)

    def ort_reader_for(self, onnx_model: str | Path | bytes) -> OrtCalibrationReader:
        """A reader whose input name and shape come from the model itself, not from a guess."""
        return self.ort_reader(onnx_input_name(onnx_model, self.input_shape))


def _check_images(images: np.ndarray, min_size: int) -> None:
    count = len(images) if images.ndim else 0
    if count == 0 or count < min_size:
        raise CalibrationError(
            f"int8 calibration got {count} image(s) but needs at least {max(min_size, 1)}; "
            "raise --calibration-size or check the training split (it may be empty or "
            "mostly unreadable)")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise CalibrationError(f"calibration images must be (N, H, W, 3), got shape "
                               f"{images.shape}")
    if images.dtype != np.float32:
        raise CalibrationError(f"calibration images must be float32 (the output of "
                               f"runtime.preprocess.scale), got {images.dtype}")
    if not np.isfinite(images).all():
        raise CalibrationError("calibration images contain NaN or infinity; check the "
                               "preprocessing spec and the source images")


def stratified_indices(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of ``min(size, len(labels))`` items, in class proportion.

    Per-class quotas use the largest-remainder rule, so they add up to exactly ``size``.
    """
    labels = np.asarray(labels)
    if size >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels)
    quota = np.floor(exact).astype(int)
    remainder_order = np.argsort(-(exact - quota), kind="stable")
    quota[remainder_order[:size - quota.sum()]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q]
              for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(chosen))


def onnx_input_name(onnx_model: str | Path | bytes, expected_shape: tuple[int, ...]) -> str:
    """The model's single input name, after checking it takes (batch, H, W, 3) images."""
    import onnxruntime as ort

    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise CalibrationError(f"expected an ONNX model with one image input, got "
                               f"{[i.name for i in inputs]}")
    model_shape = tuple(inputs[0].shape[1:])
    if model_shape != tuple(expected_shape):
        raise CalibrationError(f"the ONNX model takes images of shape {model_shape}, but the "
                               f"calibration set holds {tuple(expected_shape)}; calibrate with "
                               "the model's preprocessing spec")
    return inputs[0].name


@functools.cache
def _ort_reader_class() -> type:
    """Build the reader class on first use: onnxruntime stays out of module import."""
    from onnxruntime.quantization import CalibrationDataReader

    class OrtCalibrationReader(CalibrationDataReader):
        """Feeds one (1, H, W, 3) image per ``get_next()``, then ``None``; ``rewind()`` restarts."""

        def __init__(self, calibration: CalibrationSet, input_name: str) -> None:
            self.calibration = calibration
            self.input_name = input_name
            self._batches: Iterator[np.ndarray] = calibration.batches()

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {self.input_name: batch}

        def rewind(self) -> None:
            self._batches = self.calibration.batches()

        def __len__(self) -> int:
            return len(self.calibration)

    OrtCalibrationReader.__module__ = __name__
    OrtCalibrationReader.__qualname__ = "OrtCalibrationReader"
    return OrtCalibrationReader


def __getattr__(name: str) -> Any:
    # ``from optimize.calibration import OrtCalibrationReader`` works, and only then loads ORT.
    if name == "OrtCalibrationReader":
        return _ort_reader_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
