"""Near-OOD slices made from the dataset's own test split: the same anatomy and scanner, damaged
the ways an upload can be (inverted, cropped to a corner, rotated 90°, badly windowed, noisy).

Each transform gets its own fixed, stratified sample of test slices (``per_class`` per class),
drawn with a generator seeded from ``(seed, transform)``, so a slice's transform does not
depend on which other transforms exist and the same command gives the same files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from runtime.imageio import read_image
from training.data import DatasetIndex, Sample
from training.ood_set.image import OODImage

LICENCE = ("derived from the Brain Tumor MRI dataset test split, same licence as that "
           "dataset (listed on Kaggle under CC0, per the dataset's README)")
# Share of each side kept by the corner crop: a quadrant, mostly air and skull edge.
CORNER_FRACTION = 0.5
# Re-windowing: a window this many grey levels wide, centred on the head's median, sends
# most tissue to black or white.
WINDOW_WIDTH = 24
HEAD_LEVEL = 30  # pixels brighter than this count as head when finding its median
NOISE_SIGMA = 60.0  # grey levels: heavy, the anatomy is barely visible

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def invert(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 255 - gray


def corner_crop(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = gray.shape
    h, w = max(8, round(height * CORNER_FRACTION)), max(8, round(width * CORNER_FRACTION))
    top = 0 if rng.integers(2) == 0 else height - h
    left = 0 if rng.integers(2) == 0 else width - w
    return np.ascontiguousarray(gray[top:top + h, left:left + w])


def rotate90(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(gray, k=1 if rng.integers(2) == 0 else 3))


def rewindow(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    head = gray[gray > HEAD_LEVEL]
    centre = float(np.median(head)) if head.size else 128.0
    lo = centre - WINDOW_WIDTH / 2
    values = (gray.astype(np.float64) - lo) * (255.0 / WINDOW_WIDTH)
    return np.clip(values, 0, 255).round().astype(np.uint8)


def add_noise(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = gray.astype(np.float64) + rng.normal(0.0, NOISE_SIGMA, gray.shape)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


# kind -> (transform, what it does); the order fixes each transform's seed.
TRANSFORMS: dict[str, tuple[Transform, str]] = {
    "inverted": (invert, "grey levels inverted (255 - v)"),
    "corner-crop": (corner_crop, f"one corner kept ({CORNER_FRACTION:.0%} of each side)"),
    "rotated": (rotate90, "rotated by 90° (either way)"),
    "rewindowed": (rewindow, f"re-windowed to {WINDOW_WIDTH} grey levels around the head's "
                             "median"),
    "noisy": (add_noise, f"Gaussian noise, sigma {NOISE_SIGMA:.0f} grey levels"),
}


def stratified_sample(samples: Sequence[Sample], per_class: int,
                      rng: np.random.Generator) -> list[Sample]:
    """Up to ``per_class`` samples of each label, chosen by ``rng`` from the path-sorted list."""
    chosen: list[Sample] = []
    for label in sorted({s.label for s in samples}):
        members = sorted((s for s in samples if s.label == label), key=lambda s: str(s.path))
        picks = rng.choice(len(members), min(per_class, len(members)), replace=False)
        chosen += [members[i] for i in sorted(picks)]
    return chosen


def derived_slices(index: DatasetIndex, per_class: int, seed: int) -> Iterator[OODImage]:
    for number, (kind, (transform, description)) in enumerate(TRANSFORMS.items()):
        picked = stratified_sample(index.test, per_class, np.random.default_rng([seed, number]))
        for i, sample in enumerate(picked):
            # Per image, so an image's noise or corner does not shift when per_class changes.
            rng = np.random.default_rng([seed, number, sample.label, i])
            relative = _relative(sample.path, index.root)
            class_name = index.class_names[sample.label]
            yield OODImage(f"{class_name}-{sample.path.stem}", "near", kind,
                           f"dataset: {relative} ({description})",
                           f"test slice of class {class_name}, {description}", LICENCE,
                           transform(read_image(sample.path), rng))


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
