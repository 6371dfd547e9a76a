"""Decode image bytes or files once, by content, into a ``DecodedImage``.

MRI slices are single-channel; the dataset stores most of them as RGB with equal channels, so
the pixels are reduced to one channel here and expanded to the model's channels in
preprocessing. Before that reduction, the share of visibly coloured pixels is measured on the
decoded colours and kept in the record, so the out-of-distribution checks never decode the
file a second time. The format comes from the bytes (``runtime.image_format``): PNG, JPEG, BMP
and single-page TIFF go to OpenCV, DICOM to ``runtime.dicom``; anything else, and any file
holding several images, is refused with the reason.
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
from runtime import dicom, image_format  # noqa: E402
from runtime.decoded import DecodedImage  # noqa: E402

# A pixel is colourful when its HSV saturation exceeds a quarter and it is not nearly black
# (OpenCV's 8-bit HSV: S and V in 0..255).
_MIN_SATURATION = 64
_MIN_VALUE = 39
# The colour share is measured on at most about this many pixels (a regular subsample):
# a share needs no more, and a large colour photo then costs no more than a 256 px one.
_COLOUR_SAMPLE_PIXELS = 1 << 14


def is_image_name(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def decode(data: bytes, source: str = "<bytes>") -> DecodedImage:
    """Decode DICOM/PNG/JPEG/BMP/TIFF bytes once into the record every later step reads."""
    if not data:
        raise ImageDecodeError(f"{source}: the file is empty (0 bytes)")
    file_format = image_format.sniff(data)
    if file_format == "dicom":
        return dicom.decode(data, source)
    images = image_format.count_images(data, file_format) if file_format else 0
    if file_format not in ("png", "jpeg", "bmp", "tiff") or images > 1:
        raise ImageDecodeError(image_format.refusal(file_format, images, source))
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageDecodeError(
            f"{source}: refused by the decoder (over {MAX_PIXELS} pixels, or malformed)"
        ) from exc
    if image is None:
        raise ImageDecodeError(
            f"{source}: not a readable image (a corrupt or truncated "
            f"{file_format.upper()} file)"
        )
    # Also checked here: OpenCV's limit may have been set higher by whoever imported it first.
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageDecodeError(
            f"{source}: {image.shape[1]}x{image.shape[0]} pixels exceeds the limit of {MAX_PIXELS}"
        )
    colour = image.ndim == 3 and image.shape[2] in (3, 4)
    return DecodedImage(to_gray_uint8(image, source), file_format, colour=colour,
                        colourful_fraction=colourful_fraction(image) if colour else 0.0)


def decode_image(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Only the HxW uint8 greyscale pixels of ``decode`` (training, audit, accuracy runs)."""
    return decode(data, source).pixels


def read_decoded(path: Path) -> DecodedImage:
    """``decode`` of a file's bytes; a file that cannot be read is an ImageDecodeError too."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read ({exc.strerror})") from exc
    return decode(data, str(path))


def read_image(path: Path) -> np.ndarray:
    return read_decoded(path).pixels


def colourful_fraction(image: np.ndarray) -> float:
    """Share of visibly coloured pixels in a decoded BGR or BGRA image (8 or 16 bit)."""
    height, width = image.shape[:2]
    step = max(1, int(np.ceil(np.sqrt(height * width / _COLOUR_SAMPLE_PIXELS))))
    sample = image
    if step > 1:  # a regular subsample; OpenCV's nearest resize is 5x a NumPy copy
        sample = cv2.resize(image, (max(1, width // step), max(1, height // step)),
                            interpolation=cv2.INTER_NEAREST)
    if sample.dtype == np.uint16:  # 16-bit colour: the top byte decides saturation
        sample = (sample >> 8).astype(np.uint8)
    elif sample.dtype != np.uint8:  # float TIFFs: stretched into 8 bits, as the grey pixels are
        sample = cv2.normalize(sample, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)
    if sample.shape[2] == 4:  # BGRA: the alpha channel says nothing about colour
        sample = cv2.cvtColor(sample, cv2.COLOR_BGRA2BGR)
    hsv = cv2.cvtColor(sample, cv2.COLOR_BGR2HSV)
    coloured = cv2.inRange(hsv, (0, _MIN_SATURATION, _MIN_VALUE), (255, 255, 255))
    return cv2.countNonZero(coloured) / coloured.size


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
