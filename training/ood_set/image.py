"""One image of the out-of-distribution set, with where it came from and under which licence.

Every source module yields ``OODImage`` records; ``build`` writes them as PNG files and lists
their provenance in ``sources.json``. Sources that need a package or a file that is not on this
machine yield nothing and report why (``Skipped``), so the same command works on an edge
install, a training machine, or one with the optional Debian data package.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

# near: what a user could plausibly upload by mistake that is still an MRI (or an MRI slice
# damaged on the way). far: not an MRI at all. control: normal brain MRI from another source,
# in planes the dataset itself holds; kept apart because it is arguably in-distribution.
GROUPS = ("near", "far", "control")
GROUP_DESCRIPTIONS = {
    "near": "still MRI: dataset test slices transformed (inverted, corner crop, rotated 90°, "
            "re-windowed, heavy noise), MRI of other anatomy or species, oblique and "
            "skull-stripped brain MRI",
    "far": "not MRI: photographs, textures, microscopy, astronomy, text, graphics, noise, and "
           "other modalities (CT, ultrasound, nuclear medicine, X-ray, segmentation masks)",
    "control": "normal human brain MRI (an averaged T1 template) in the axial, coronal and "
               "sagittal planes that the dataset also holds: in-distribution-like, no target",
}


@dataclass(frozen=True, eq=False)
class OODImage:
    """``pixels``: HxW uint8 greyscale or HxWx3 uint8 RGB (RGB only where the source is
    colour). ``name`` is unique within its group and kind; the file is
    ``GROUP/KIND/NAME.png``."""

    name: str
    group: str
    kind: str
    source: str
    provenance: str
    licence: str
    pixels: np.ndarray

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"group must be one of {GROUPS}, got {self.group!r}")
        shape_ok = self.pixels.ndim == 2 or (self.pixels.ndim == 3 and self.pixels.shape[2] == 3)
        if not shape_ok or self.pixels.dtype != np.uint8:
            raise ValueError(f"{self.name}: pixels must be HxW or HxWx3 uint8, got "
                             f"{self.pixels.shape} {self.pixels.dtype}")

    @property
    def relpath(self) -> str:
        return f"{self.group}/{self.kind}/{self.name}.png"


@dataclass(frozen=True)
class Skipped:
    """A source that could not be used here, and why (a missing package or file)."""

    source: str
    reason: str


def fit(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink so the longer side is at most ``max_side`` (area interpolation); never enlarge.

    Keeps the set small on disk; the decode and preprocessing path sees the same kind of file.
    """
    height, width = image.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return image
    scale = max_side / longest
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] linearly onto 0..255, clipping outside."""
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((values.astype(np.float64) - lo) * scale, 0, 255).round().astype(np.uint8)


def skip(skipped: list[Skipped], source: str, reason: str) -> None:
    """Record a source that cannot be used here, with a log line (never an error: the set is
    built from what this machine has, and ``sources.json`` lists what was left out)."""
    log.info("OOD set: skipping %s: %s", source, reason)
    skipped.append(Skipped(source, reason))
