"""Resize a uint8 grayscale slice with the same result on every CPU (x86, arm64, ...).

OpenCV's ``cv2.resize`` takes architecture-specific SIMD paths: on aarch64 it differs from x86
by up to one grey level on 0.7% (INTER_AREA) to 38% (INTER_LINEAR) of the pixels, and a
slice near a decision boundary can change class. Here every interpolation weight is an
integer multiple of 2**-16 and every pixel an integer, so each product and each partial sum
is exactly representable in float64: the sum is exact in any order, whichever BLAS, SIMD
width or FMA the machine uses, and the final rounding sees the same number everywhere.

Weights follow OpenCV's conventions (area averaging when shrinking, bilinear with half-pixel
centres when enlarging), so results are within one grey level of ``cv2.resize``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

_ONE = 1 << 16  # the weight denominator: weights are k / 2**16


def _to_fixed_point(rows: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel, (source index, real weight) -> padded index and integer weight arrays.

    Each row's integer weights sum to exactly 2**16 (largest-remainder rounding), so a
    uniform image stays uniform.
    """
    width = max(len(r) for r in rows)
    index = np.zeros((len(rows), width), np.int64)
    weight = np.zeros((len(rows), width), np.int64)
    for o, row in enumerate(rows):
        total = sum(w for _, w in row)
        scaled = [w / total * _ONE for _, w in row]
        ints = [math.floor(s) for s in scaled]
        order = sorted(range(len(row)), key=lambda k: (ints[k] - scaled[k], k))
        for k in order[: _ONE - sum(ints)]:
            ints[k] += 1
        for k, ((src, _), w) in enumerate(zip(row, ints, strict=True)):
            index[o, k] = src
            weight[o, k] = w
    return index, weight


def _area_rows(src: int, dst: int) -> list[list[tuple[int, float]]]:
    scale = src / dst
    rows = []
    for o in range(dst):
        start, end = o * scale, (o + 1) * scale
        row = []
        for s in range(math.floor(start), min(math.ceil(end), src)):
            overlap = min(end, s + 1) - max(start, s)
            if overlap > 1e-12:
                row.append((s, overlap))
        rows.append(row)
    return rows


def _linear_rows(src: int, dst: int) -> list[list[tuple[int, float]]]:
    scale = src / dst
    rows = []
    for o in range(dst):
        x = min(max((o + 0.5) * scale - 0.5, 0.0), src - 1.0)
        left = math.floor(x)
        frac = x - left
        right = min(left + 1, src - 1)
        rows.append([(left, 1.0 - frac), (right, frac)] if frac > 0 else [(left, 1.0)])
    return rows


@lru_cache(maxsize=64)
def _weights(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    rows = _area_rows(src, dst) if dst < src else _linear_rows(src, dst)
    index, weight = _to_fixed_point(rows)
    return index, weight.astype(np.float64) / _ONE


def _resample_rows(image: np.ndarray, dst: int) -> np.ndarray:
    """Resample axis 0 of a float64 array to ``dst`` rows, exactly (see module docstring)."""
    index, weight = _weights(image.shape[0], dst)
    # out[o, x] = sum_k weight[o, k] * image[index[o, k], x]: a few taps per output row, so the
    # cost is dst * taps * width, not a dense matrix product over the source size.
    out = np.zeros((dst, image.shape[1]), np.float64)
    for k in range(index.shape[1]):
        out += weight[:, k, None] * image[index[:, k]]
    return out


def resize_exact(gray: np.ndarray, width: int, height: int) -> np.ndarray:
    """HxW uint8 -> (height, width) uint8, identical on every architecture."""
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"resize_exact expects a 2-D uint8 image, got {gray.dtype} {gray.shape}")
    if width < 1 or height < 1:
        raise ValueError(f"resize_exact needs a positive size, got {width}x{height}")
    x = gray.astype(np.float64)
    if x.shape[0] != height:
        x = _resample_rows(x, height)
    if x.shape[1] != width:
        x = _resample_rows(x.T, width).T
    # x is an exact multiple of 2**-32 in [0, 255]: floor(x + 0.5) rounds half up everywhere.
    return np.floor(x + 0.5).astype(np.uint8)
