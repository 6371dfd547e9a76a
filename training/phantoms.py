"""Procedural MRI-like brain phantoms: the embedded default dataset for demos and tests.

NOT MEDICAL DATA. These images are drawn by a program from ellipses, blurred noise and blobs.
They only mimic the coarse look of axial T1 contrast-enhanced slices so that the whole pipeline
(train, optimize, benchmark, serve) runs end to end on a fresh clone in minutes. A model trained
on them knows nothing about real tumors and must never be used on patient images.

Each image is an axial head slice (scalp ring, brain with texture, sulci, midline, ventricles)
with random size, position, rotation, contrast, noise and blur, plus one class-specific lesion:

- ``glioma``: irregular, heterogeneous intra-axial mass in one hemisphere, often with a dark
  necrotic core, a bright enhancing rim and surrounding dark edema.
- ``meningioma``: homogeneous, sharply bounded bright dome attached to the inner skull.
- ``pituitary``: small bright round mass on the midline below the ventricles (sella region).
- ``notumor``: no lesion.

All classes share distractors (small bright vessel dots) so that "any bright spot" is not the
answer. The output uses the Kaggle layout ``OUT/Training/<class>/*.jpg`` and
``OUT/Testing/<class>/*.jpg``. This module needs only NumPy and OpenCV, never TensorFlow.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from brainedge.errors import ConfigError, DatasetError

CLASS_NAMES = ("glioma", "meningioma", "notumor", "pituitary")
SPLITS = (("Training", "train"), ("Testing", "test"))
MARKER_NAME = ".complete"
# Bump when drawing changes, so a folder made by older code is not mistaken for a current one.
GENERATOR_VERSION = 1
JPEG_QUALITY = 92

README_TEXT = """\
# Synthetic brain-MRI phantoms (NOT medical data)

Every image in this folder was drawn by `training/phantoms.py` from ellipses, blurred noise and
blobs. They imitate the coarse look of axial brain MRI slices with four classes (glioma,
meningioma, notumor, pituitary) so that BrainEdge can be trained, optimized and benchmarked end
to end without downloading anything.

They are for demos and tests only. They are not patient data, were not reviewed by anyone
medical, and a model trained on them must not be used on real MRI scans. For real work, point
the pipeline at the Brain Tumor MRI dataset instead (`make train DATA=...`).

Regenerate with `brainedge data phantoms --out <folder>`; `.complete` records the settings.
"""

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class PhantomConfig:
    train_per_class: int = 200
    test_per_class: int = 50
    image_size: int = 160
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("train_per_class", "test_per_class", "image_size", "seed"):
            value = getattr(self, name)
            # bool is an int subclass; True as a count is a bug, not a request for one image.
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        if self.train_per_class < 1 or self.test_per_class < 1:
            raise ConfigError(
                "train_per_class and test_per_class must be >= 1, got "
                f"{self.train_per_class} and {self.test_per_class}"
            )
        if not 32 <= self.image_size <= 1024:
            raise ConfigError(f"image_size must be between 32 and 1024 px, got {self.image_size}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")


# --------------------------------------------------------------------------------------------
# Drawing. Everything is drawn in float32 [0, 1] in an upright "canonical" frame centred on the
# canvas (anterior up), then rotated and shifted as a whole, so lesion placement rules can be
# written in head coordinates and stay right whatever the pose.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Head:
    size: int
    cx: float
    cy: float
    a: float  # inner-skull semi-axis, left-right (px)
    b: float  # inner-skull semi-axis, anterior-posterior (px)
    xx: np.ndarray
    yy: np.ndarray

    def radius(self) -> np.ndarray:
        """Elliptic radius: < 1 inside the inner skull, 1 on it."""
        return np.sqrt(((self.xx - self.cx) / self.a) ** 2 + ((self.yy - self.cy) / self.b) ** 2)


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    """A uniform draw as a Python float, so it keeps float32 arrays float32."""
    return float(rng.uniform(low, high))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-std noise with about ``cells`` features across the image."""
    coarse = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    big = cv2.resize(coarse, (size + size // 4, size + size // 4), interpolation=cv2.INTER_CUBIC)
    # Crop off the border so cubic edge effects and the grid alignment vary between images.
    ox, oy = rng.integers(0, size // 4 + 1, size=2)
    field = big[oy : oy + size, ox : ox + size]
    return (field - field.mean()) / (field.std() + 1e-6)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.05:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigmaX=float(sigma))


# Parameters come from the rng as NumPy float64 scalars, which would silently promote the
# float32 grids to float64 and double the cost; hence the float() casts below.


def _ellipse_mask(
    head: _Head, cx: float, cy: float, a: float, b: float, deg: float = 0.0
) -> np.ndarray:
    t = np.deg2rad(float(deg))
    cos, sin = float(np.cos(t)), float(np.sin(t))
    dx, dy = head.xx - float(cx), head.yy - float(cy)
    u = (dx * cos + dy * sin) / float(a)
    v = (dy * cos - dx * sin) / float(b)
    return (u * u + v * v <= 1.0).astype(np.float32)


def _gauss(head: _Head, cx: float, cy: float, sigma: float) -> np.ndarray:
    d2 = (head.xx - float(cx)) ** 2 + (head.yy - float(cy)) ** 2
    return np.exp(d2 * float(-0.5 / (sigma * sigma)))


def _make_head(rng: np.random.Generator, size: int) -> _Head:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    a = size * _u(rng, 0.27, 0.32)
    b = a * _u(rng, 1.12, 1.28)  # heads are longer front-to-back than wide
    return _Head(size, size / 2.0, size / 2.0, a, b, xx, yy)


def _draw_anatomy(head: _Head, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return (image, brain mask) of a lesion-free slice in the canonical frame."""
    s = head.size
    r = head.radius()
    scalp_out = 1.0 + _u(rng, 0.10, 0.15)
    bone_out = 1.0 + _u(rng, 0.03, 0.06)
    img = np.zeros((s, s), np.float32)
    # Scalp fat is bright on T1; bone and CSF just inside it are dark.
    scalp = (r <= scalp_out) & (r > bone_out)
    scalp_level = _u(rng, 0.65, 0.85) + 0.06 * _smooth_noise(rng, s, 20)
    img[scalp] = scalp_level[scalp]
    img[(r <= bone_out) & (r > 1.0)] = _u(rng, 0.05, 0.15)

    brain = (r <= 0.97).astype(np.float32)
    tissue = _u(rng, 0.40, 0.50) + 0.05 * _smooth_noise(rng, s, 6)
    # White matter: slightly brighter core whose border wobbles like the gray-white junction.
    wm = _blur((r + 0.08 * _smooth_noise(rng, s, 10) < 0.72).astype(np.float32), s / 120)
    tissue = tissue + _u(rng, 0.06, 0.12) * wm
    # Sulci: thin dark lines where mid-frequency noise crosses zero, in the cortical band only.
    sulci = np.exp(-((_smooth_noise(rng, s, 14) / 0.12) ** 2)) * np.clip((r - 0.65) / 0.2, 0, 1)
    tissue = tissue - 0.22 * sulci
    # Interhemispheric fissure, front and back, thin and dark.
    fissure = np.exp(-(((head.xx - head.cx) / (0.012 * s)) ** 2)) * (np.abs(r) > 0.55)
    tissue = tissue - 0.25 * fissure
    img = img * (1 - brain) + tissue * brain

    vent = _ventricles(head, rng)
    img = img * (1 - vent) + _u(rng, 0.08, 0.16) * vent
    return img, brain


def _ventricles(head: _Head, rng: np.random.Generator) -> np.ndarray:
    """Two dark crescents either side of the midline, ")(": close mid-way, apart at the ends."""
    mask = np.zeros_like(head.xx)
    spread = head.a * _u(rng, 0.12, 0.18)
    la, lb = head.a * _u(rng, 0.10, 0.15), head.b * _u(rng, 0.24, 0.34)
    tilt = _u(rng, -6, 6)
    cy = head.cy - head.b * _u(rng, 0.02, 0.10)
    for side in (-1, 1):
        cx = head.cx + side * spread
        outer = _ellipse_mask(head, cx, cy, la, lb, side * tilt)
        # Carving a laterally shifted ellipse out of the outer one leaves a crescent that bows
        # towards the midline.
        inner = _ellipse_mask(head, cx + side * la * 0.75, cy, la, lb * 0.9, side * tilt)
        mask = np.maximum(mask, outer * (1 - inner))
    return _blur(mask, head.size / 200)


def _vessel_dots(head: _Head, rng: np.random.Generator, brain: np.ndarray) -> np.ndarray:
    """Tiny bright dots every class has, so a bright spot alone does not give the label away."""
    dots = np.zeros_like(head.xx)
    for _ in range(rng.integers(0, 4)):
        ang, rad = _u(rng, 0, 2 * np.pi), np.sqrt(_u(rng, 0.05, 0.7))
        x = head.cx + rad * head.a * np.cos(ang)
        y = head.cy + rad * head.b * np.sin(ang)
        dots = np.maximum(dots, _gauss(head, x, y, head.size * _u(rng, 0.004, 0.007)))
    return dots * brain


def _glioma(
    img: np.ndarray, head: _Head, rng: np.random.Generator, brain: np.ndarray
) -> np.ndarray:
    s = head.size
    # Off the midline, in one hemisphere, not in the cortex rim: rejection keeps it simple.
    while True:
        dx, dy = _u(rng, 0.22, 0.62), _u(rng, -0.6, 0.6)
        if dx * dx + dy * dy < 0.62**2:
            break
    cx = head.cx + rng.choice((-1, 1)) * dx * head.a
    cy = head.cy + dy * head.b
    size_r = head.a * _u(rng, 0.22, 0.34)
    # An infiltrative mass: several overlapping blobs plus noise, thresholded -> ragged outline.
    field = np.zeros_like(head.xx)
    for _ in range(rng.integers(3, 7)):
        ox, oy = rng.normal(0, 0.45 * size_r, size=2)
        field += _gauss(head, cx + ox, cy + oy, size_r * _u(rng, 0.30, 0.6))
    field = field / field.max() + 0.15 * _smooth_noise(rng, s, 20)
    mass = _blur((field > 0.35).astype(np.float32), s / 160) * brain
    # Vasogenic edema: a wider, fuzzy, darker halo around the mass.
    edema = _blur((field > 0.2).astype(np.float32), s / 30) * brain
    img = img - _u(rng, 0.08, 0.18) * edema * (1 - mass)

    # Patchy enhancement: intensity varies a lot inside the mass, unlike a meningioma.
    lesion = _u(rng, 0.62, 0.76) + 0.14 * _smooth_noise(rng, s, 28)
    if rng.random() < 0.7:
        # Necrotic core with an enhancing rim: the inner part of the mass goes dark.
        core = _blur((field > _u(rng, 0.65, 0.8)).astype(np.float32), s / 120)
        lesion = lesion * (1 - core) + _u(rng, 0.15, 0.28) * core
    return img * (1 - mass) + np.clip(lesion, 0, 1) * mass


def _meningioma(
    img: np.ndarray, head: _Head, rng: np.random.Generator, brain: np.ndarray
) -> np.ndarray:
    s = head.size
    ang = _u(rng, 0, 2 * np.pi)
    rr = head.a * _u(rng, 0.18, 0.30)
    # Centre just inside the inner skull so the dome sits on it with a broad base.
    depth = _u(rng, 0.15, 0.45) * rr
    bx, by = head.cx + head.a * np.cos(ang), head.cy + head.b * np.sin(ang)
    nx, ny = np.cos(ang) / head.a, np.sin(ang) / head.b  # outward normal of the ellipse
    norm = np.hypot(nx, ny)
    cx, cy = bx - depth * nx / norm, by - depth * ny / norm
    dome = _ellipse_mask(head, cx, cy, rr, rr * _u(rng, 0.8, 1.0), np.rad2deg(ang))
    inside = (head.radius() <= 1.0).astype(np.float32)
    dome = _blur(dome * inside, s / 250)
    level = _u(rng, 0.80, 0.92) + 0.02 * _smooth_noise(rng, s, 8)
    # The mass pushes on the brain: a thin dark CSF cleft around it.
    cleft = _blur(dome, s / 80) * (1 - dome) * brain
    img = img - 0.15 * cleft
    return img * (1 - dome) + level * dome


def _pituitary(
    img: np.ndarray, head: _Head, rng: np.random.Generator, brain: np.ndarray
) -> np.ndarray:
    s = head.size
    cx = head.cx + head.a * _u(rng, -0.04, 0.04)
    cy = head.cy + head.b * _u(rng, 0.30, 0.42)
    rr = head.a * _u(rng, 0.07, 0.12)
    mass = _blur(_ellipse_mask(head, cx, cy, rr, rr * _u(rng, 0.8, 1.1)), s / 200)
    return img * (1 - mass) + _u(rng, 0.80, 0.95) * mass


_LESIONS = {"glioma": _glioma, "meningioma": _meningioma, "pituitary": _pituitary}


def _pose_and_acquire(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate/shift the head, then apply scanner-like contrast, blur and noise."""
    s = img.shape[0]
    shift = rng.uniform(-0.04, 0.04, size=2) * s
    m = cv2.getRotationMatrix2D((s / 2.0, s / 2.0), _u(rng, -15, 15), _u(rng, 0.92, 1.05))
    m[:, 2] += shift
    img = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderValue=0.0)
    img = np.clip(img, 0, 1) ** _u(rng, 0.8, 1.25) * _u(rng, 0.85, 1.1)
    img = _blur(img, _u(rng, 0.3, 0.9) * s / 160)
    img = img + rng.normal(0, _u(rng, 0.01, 0.035), size=img.shape).astype(np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def draw_phantom(label: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A ``size`` x ``size`` uint8 grayscale slice of class ``label``; same rng, same bytes."""
    if label not in CLASS_NAMES:
        raise ConfigError(f"unknown phantom class {label!r}; expected one of {CLASS_NAMES}")
    if not 32 <= size <= 1024:
        raise ConfigError(f"size must be between 32 and 1024 px, got {size}")
    head = _make_head(rng, size)
    img, brain = _draw_anatomy(head, rng)
    img = np.maximum(img, _u(rng, 0.55, 0.8) * _vessel_dots(head, rng, brain))
    if label in _LESIONS:
        img = _LESIONS[label](img, head, rng, brain)
    return _pose_and_acquire(img, rng)


# --------------------------------------------------------------------------------------------
# Dataset on disk.
# --------------------------------------------------------------------------------------------


def _marker(config: PhantomConfig) -> dict:
    return {
        "generator": "training.phantoms",
        "version": GENERATOR_VERSION,
        "config": asdict(config),
        "classes": list(CLASS_NAMES),
        "medical_use": False,
    }


def _read_marker(out: Path) -> dict | None:
    try:
        return json.loads((out / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _image_rng(seed: int, split_id: int, class_id: int, index: int) -> np.random.Generator:
    # Seeding from the full tuple makes every image independent of the counts requested, and
    # train/test images distinct, while staying reproducible.
    return np.random.default_rng([seed, split_id, class_id, index])


def _write_images(root: Path, config: PhantomConfig, progress: ProgressFn | None) -> None:
    total = len(CLASS_NAMES) * (config.train_per_class + config.test_per_class)
    done = 0
    for split_id, (folder, tag) in enumerate(SPLITS):
        count = config.train_per_class if tag == "train" else config.test_per_class
        for class_id, label in enumerate(CLASS_NAMES):
            class_dir = root / folder / label
            class_dir.mkdir(parents=True)
            for i in range(count):
                rng = _image_rng(config.seed, split_id, class_id, i)
                img = draw_phantom(label, rng, config.image_size)
                ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if not ok:
                    raise DatasetError(f"OpenCV could not encode a JPEG for {label} #{i}")
                (class_dir / f"phantom-{label}-{tag}-{i + 1:05d}.jpg").write_bytes(buf.tobytes())
                done += 1
                if progress is not None:
                    progress(done, total)


def _check_existing(out: Path, config: PhantomConfig) -> bool:
    """True if ``out`` already holds this exact dataset; raise if it holds anything else."""
    if not out.exists():
        return False
    if out.is_dir() and not any(out.iterdir()):
        return False  # an empty folder (e.g. made by mkdir -p) is safe to fill
    if out.is_dir() and _read_marker(out) == _marker(config):
        return True
    raise DatasetError(
        f"{out} already exists and is not a complete phantom dataset made with these settings "
        f"({asdict(config)}); delete it or choose another --out"
    )


def generate_phantoms(
    out: Path, config: PhantomConfig = PhantomConfig(), progress: ProgressFn | None = None
) -> Path:
    """Write the phantom dataset to ``out`` and return it; a no-op if it is already there.

    Images go to a hidden temporary sibling that is renamed onto ``out`` only when complete, with
    the ``.complete`` marker written last inside it: an interrupted run leaves ``out`` absent,
    never half full.
    """
    out = Path(out)
    if _check_existing(out, config):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _write_images(tmp, config, progress)
        (tmp / "README.md").write_text(README_TEXT, encoding="utf-8")
        marker = json.dumps(_marker(config), indent=2, sort_keys=True) + "\n"
        (tmp / MARKER_NAME).write_text(marker, encoding="utf-8")
        if out.is_dir():
            out.rmdir()  # only reached when empty; os.replace cannot replace a dir on Windows
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
