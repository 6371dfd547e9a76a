"""Decode image bytes or files into a 2-D uint8 grayscale array, deciding by content.

MRI slices are single-channel; the dataset stores most of them as RGB with equal channels, so
everything is reduced to one channel here and expanded to the model's channels in preprocessing.
DICOM files are recognised by their bytes, whatever their name, and go to ``runtime.dicom``.
"""

from __future__ import annotations

import os
from pathlib import Path

# Only for picking files out of folders; decoding never looks at the name.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"})
# Decompression bombs: OpenCV refuses, from the header and before allocating, any image that
# declares more pixels than its limit, which it reads from the environment on first decode.
MAX_PIXELS = 64_000_000
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from brainedge.errors import ImageDecodeError  # noqa: E402
from runtime.dicom import decode_dicom, is_dicom  # noqa: E402


def is_image_name(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def decode_image(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode DICOM/PNG/JPEG/... bytes to a HxW uint8 grayscale array."""
    if not data:
        raise ImageDecodeError(f"{source}: the file is empty (0 bytes)")
    if is_dicom(data):
        return decode_dicom(data, source)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageDecodeError(
            f"{source}: refused by the decoder (over {MAX_PIXELS} pixels, or malformed)"
        ) from exc
    if image is None:
        raise ImageDecodeError(
            f"{source}: not a readable image (corrupt, truncated, or not PNG/JPEG/BMP/TIFF)"
        )
    # Also checked here: OpenCV's limit may have been set higher by whoever imported it first.
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageDecodeError(
            f"{source}: {image.shape[1]}x{image.shape[0]} pixels exceeds the limit of {MAX_PIXELS}"
        )
    return to_gray_uint8(image, source)


def read_image(path: Path) -> np.ndarray:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read ({exc.strerror})") from exc
    return decode_image(data, str(path))


def to_gray_uint8(image: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Any decoded array (gray, gray+alpha, BGR, BGRA; 8 or 16 bit) to HxW uint8."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 2:
            image = image[:, :, 0]
        elif channels in (3, 4):
            code = cv2.COLOR_BGR2GRAY if channels == 3 else cv2.COLOR_BGRA2GRAY
            image = cv2.cvtColor(image, code)
        else:
            raise ImageDecodeError(f"{source}: unsupported image with {channels} channels")
    if image.ndim != 2 or min(image.shape) < 8:
        raise ImageDecodeError(f"{source}: unsupported image shape {image.shape}")
    if image.dtype != np.uint8:
        # 16-bit PNGs (common for MRI exports): stretch the used range into 8 bits.
        image = image.astype(np.float32)
        lo, hi = float(image.min()), float(image.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        image = ((image - lo) * scale).round().astype(np.uint8)
    return np.ascontiguousarray(image)
