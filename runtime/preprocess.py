"""The one preprocessing path, shared by training and every runtime (pure NumPy/OpenCV).

``prepare`` turns a decoded grayscale slice into the model's RGB uint8 input (brain crop,
resize, bilateral filter, gray to RGB); ``scale`` applies the scaling the backbone was
pre-trained with. Training augments between the two; serving calls ``preprocess`` (both).
The spec travels in every artifact's manifest, so a runtime never guesses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from brainedge.errors import ConfigError
from runtime.bilateral import bilateral_exact
from runtime.resize import resize_exact

# name -> (channel order, mean, std, divide by 255 first); the conventions of
# tf_keras.applications.*.preprocess_input ("caffe" for VGG16, "torch" for DenseNet121).
SCALINGS: dict[str, tuple[str, tuple[float, ...], tuple[float, ...], bool]] = {
    "caffe": ("BGR", (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), False),
    "torch": ("RGB", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), True),
    "unit": ("RGB", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), True),
}
MODEL_SCALING = {"vgg16": "caffe", "densenet121": "torch"}


@dataclass(frozen=True)
class PreprocessSpec:
    image_size: int = 150
    crop_brain: bool = True
    # As cv2.bilateralFilter(d, sigmaColor, sigmaSpace), at the model's size; d=0 disables it.
    bilateral_d: int = 2
    bilateral_sigma_color: float = 50.0
    bilateral_sigma_space: float = 50.0
    scaling: str = "caffe"

    def __post_init__(self) -> None:
        if not 32 <= self.image_size <= 1024:
            raise ConfigError(f"image_size must be 32..1024 pixels, got {self.image_size}")
        if self.bilateral_d < 0:
            raise ConfigError(f"bilateral_d must be >= 0, got {self.bilateral_d}")
        if self.scaling not in SCALINGS:
            raise ConfigError(f"scaling must be one of {sorted(SCALINGS)}, got {self.scaling!r}")

    @classmethod
    def for_model(cls, model: str, **overrides: Any) -> PreprocessSpec:
        if model not in MODEL_SCALING:
            raise ConfigError(f"unknown model {model!r}; expected one of {sorted(MODEL_SCALING)}")
        return cls(scaling=MODEL_SCALING[model], **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessSpec:
        return cls(**dict(data))


def crop_to_brain(gray: np.ndarray, threshold: int = 25, margin: float = 0.02) -> np.ndarray:
    """Crop to the bounding box of the largest bright region (the head), plus a small margin.

    Returns the image unchanged when no plausible region is found (blank or all-bright input),
    so that a crop never discards the whole slice.
    """
    blurred = cv2.GaussianBlur(gray, (5, 5), 0)
    _, mask = cv2.threshold(blurred, threshold, 255, cv2.THRESH_BINARY)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8), iterations=2)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return gray
    x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
    height, width = gray.shape
    if w * h < 0.05 * height * width:
        return gray
    pad_x, pad_y = int(margin * width), int(margin * height)
    x0, y0 = max(x - pad_x, 0), max(y - pad_y, 0)
    x1, y1 = min(x + w + pad_x, width), min(y + h + pad_y, height)
    return gray[y0:y1, x0:x1]


def prepare(gray: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """HxW uint8 grayscale -> (size, size, 3) uint8 RGB, ready for augmentation or scaling."""
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"prepare expects a 2-D uint8 image, got {gray.dtype} {gray.shape}")
    if spec.crop_brain:
        gray = crop_to_brain(gray)
    # Resized first, then filtered at the model's resolution: cheaper, whatever the upload's
    # size. Both steps are exact integer arithmetic, identical on x86 and arm64 (cv2's are not).
    gray = resize_exact(gray, spec.image_size, spec.image_size)
    if spec.bilateral_d > 0:
        gray = bilateral_exact(
            gray, spec.bilateral_d, spec.bilateral_sigma_color, spec.bilateral_sigma_space
        )
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


def scale(images: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """RGB images in 0..255 (uint8 or float, ...xHxWx3) -> float32 backbone input."""
    order, mean, std, unit = SCALINGS[spec.scaling]
    x = np.asarray(images, dtype=np.float32)
    if order == "BGR":
        x = x[..., ::-1]
    if unit:
        x = x / 255.0
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def preprocess(gray: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Decoded grayscale slice -> (size, size, 3) float32 model input: what serving calls."""
    return scale(prepare(gray, spec), spec)
