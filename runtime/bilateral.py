"""An edge-preserving bilateral filter in integer arithmetic: the same result on every CPU.

It follows ``cv2.bilateralFilter`` for a grayscale image (a disc of radius ``d // 2``, a
Gaussian in space and one in intensity, reflected borders), but ``cv2``'s float SIMD code is
not guaranteed to round alike on x86 and arm64. Here the weights are looked up in a table of
integers and the weighted mean is an integer division, so nothing depends on the machine.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_WEIGHT_BITS = 16


@lru_cache(maxsize=16)
def _kernel(d: int, sigma_color: float, sigma_space: float) -> tuple[tuple, np.ndarray]:
    """Offsets inside the disc, and an integer weight table [offset, |intensity difference|]."""
    radius = max(d // 2, 1)
    offsets = tuple((dy, dx) for dy in range(-radius, radius + 1)
                    for dx in range(-radius, radius + 1) if dy * dy + dx * dx <= radius * radius)
    diffs = np.arange(256, dtype=np.float64)
    table = np.empty((len(offsets), 256), np.int64)
    for k, (dy, dx) in enumerate(offsets):
        space = (dy * dy + dx * dx) / (2.0 * sigma_space * sigma_space)
        color = diffs * diffs / (2.0 * sigma_color * sigma_color)
        # Rounded to integers: a last-bit difference in exp() between C libraries vanishes.
        table[k] = np.round(np.exp(-(space + color)) * (1 << _WEIGHT_BITS)).astype(np.int64)
    return offsets, table


def bilateral_exact(gray: np.ndarray, d: int, sigma_color: float, sigma_space: float) -> np.ndarray:
    """HxW uint8 -> HxW uint8, filtered; ``d`` is the neighbourhood diameter as in OpenCV."""
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"bilateral_exact expects 2-D uint8, got {gray.dtype} {gray.shape}")
    if d < 1 or sigma_color <= 0 or sigma_space <= 0:
        raise ValueError(f"bilateral filter needs d >= 1 and positive sigmas, got "
                         f"d={d}, sigma_color={sigma_color}, sigma_space={sigma_space}")
    offsets, table = _kernel(d, float(sigma_color), float(sigma_space))
    radius = max(abs(dy) for dy, _ in offsets)
    h, w = gray.shape
    # numpy's "reflect" is OpenCV's BORDER_REFLECT_101 (the edge pixel is not repeated).
    mode = "reflect" if min(h, w) > radius else "edge"
    padded = np.pad(gray, radius, mode=mode).astype(np.int64)
    centre = gray.astype(np.int64)
    numerator = np.zeros((h, w), np.int64)
    denominator = np.zeros((h, w), np.int64)
    for k, (dy, dx) in enumerate(offsets):
        neighbour = padded[radius + dy: radius + dy + h, radius + dx: radius + dx + w]
        weight = table[k][np.abs(neighbour - centre)]
        numerator += weight * neighbour
        denominator += weight
    # Round half up, in integers; the centre's own weight (2**16) keeps the denominator > 0.
    # Largest numerator: (2r+1)**2 offsets * 2**16 * 255, far below 2**63.
    return ((2 * numerator + denominator) // (2 * denominator)).astype(np.uint8)

