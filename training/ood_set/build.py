"""Write the OOD set: ``GROUP/KIND/NAME.png`` files, ``sources.json`` and ``README.md``.

The folder is built in a hidden temporary sibling and renamed onto ``out`` when complete, so an
interrupted run never leaves half a set. An existing folder is replaced only when it is an OOD
set made by this command (its ``sources.json`` says so) or empty; anything else is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from brainedge.errors import ConfigError, DatasetError
from training.data import scan_dataset
from training.ood_set.derived import derived_slices
from training.ood_set.image import GROUP_DESCRIPTIONS, GROUPS, OODImage, Skipped
from training.ood_set.packaged import pydicom_images, skimage_images
from training.ood_set.synthetic import synthetic_images
from training.ood_set.volumes import template_slices

log = logging.getLogger(__name__)

GENERATOR = "training.ood_set"
# Bump when the images change, so a report can tell which set it was measured on.
VERSION = 1
SOURCES_NAME = "sources.json"
PNG_COMPRESSION = 6


@dataclass(frozen=True)
class OODSetConfig:
    """``per_class``: dataset test slices per class for each transform. ``max_side``: larger
    package images are shrunk to this (area interpolation) to keep the set small."""

    per_class: int = 15
    seed: int = 0
    max_side: int = 512

    def __post_init__(self) -> None:
        for name in ("per_class", "seed", "max_side"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        if self.per_class < 1:
            raise ConfigError(f"per_class must be >= 1, got {self.per_class}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.max_side < 64:
            raise ConfigError(f"max_side must be >= 64 px, got {self.max_side}")


def build_ood_set(data: Path, out: Path, config: OODSetConfig = OODSetConfig()) -> dict[str, Any]:
    """Build the set from the dataset at ``data`` (its test split) and what this machine has
    installed; return the manifest written as ``sources.json``."""
    index = scan_dataset(Path(data))  # raises DatasetError saying what to pass
    if index.carved_test:
        log.warning("%s has no Testing/ folder: using the test split carved from it", data)
    out = Path(out)
    _check_out(out)
    skipped: list[Skipped] = []
    images = [*derived_slices(index, config.per_class, config.seed),
              *synthetic_images(config.seed),
              *skimage_images(config.max_side, skipped),
              *pydicom_images(config.max_side, skipped),
              *template_slices(skipped)]
    images.sort(key=lambda im: (GROUPS.index(im.group), im.kind, im.name))
    _check_unique(images)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        files = [_write_png(tmp, image) for image in images]
        manifest = _manifest(str(data), config, files, skipped)
        text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        (tmp / SOURCES_NAME).write_text(text, encoding="utf-8")
        (tmp / "README.md").write_text(readme(manifest), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _check_out(out: Path) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    try:
        made_here = json.loads((out / SOURCES_NAME).read_text("utf-8"))["generator"] == GENERATOR
    except (OSError, ValueError, KeyError, TypeError):
        made_here = False
    if not made_here:
        raise DatasetError(f"{out} already exists and is not an OOD set made by `brainedge data "
                           "ood`; delete it or choose another --out")


def _check_unique(images: list[OODImage]) -> None:
    repeated = [p for p, n in Counter(im.relpath for im in images).items() if n > 1]
    if repeated:  # two test slices with the same stem in one class folder, say
        raise DatasetError(f"two OOD images would be written to the same file: {repeated[:3]}")


def _write_png(root: Path, image: OODImage) -> dict[str, Any]:
    pixels = image.pixels
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR
    ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise DatasetError(f"OpenCV could not encode {image.relpath}")
    path = root / image.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    data = buf.tobytes()
    path.write_bytes(data)
    return {"file": image.relpath, "group": image.group, "kind": image.kind,
            "source": image.source, "provenance": image.provenance, "licence": image.licence,
            "width": int(image.pixels.shape[1]), "height": int(image.pixels.shape[0]),
            "channels": 1 if image.pixels.ndim == 2 else 3,
            "sha256": hashlib.sha256(data).hexdigest()}


def _manifest(data: str, config: OODSetConfig, files: list[dict[str, Any]],
              skipped: list[Skipped]) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {}
    for entry in files:
        counts.setdefault(entry["group"], {}).setdefault(entry["kind"], 0)
        counts[entry["group"]][entry["kind"]] += 1
    return {"generator": GENERATOR, "version": VERSION, "dataset": data,
            "config": asdict(config), "groups": dict(GROUP_DESCRIPTIONS),
            "counts": counts, "skipped": [asdict(s) for s in skipped], "files": files}


def readme(manifest: dict[str, Any]) -> str:
    """The folder's README: what each group is, how many images of each kind, and how to
    rebuild it."""
    config = manifest["config"]
    lines = ["# Out-of-distribution evaluation set (not committed)", "",
             "Made by `brainedge data ood --data DATA --out OUT "
             f"--per-class {config['per_class']} --seed {config['seed']}` from the dataset's "
             "test split and from images that installed packages ship; the same command on "
             "the same installation gives byte-identical files. `sources.json` lists, for "
             "every file, its group, kind, source, provenance, licence and sha256.", "",
             "| group | kind | images |", "| --- | --- | ---: |"]
    for group in GROUPS:
        kinds = manifest["counts"].get(group, {})
        for kind, n in sorted(kinds.items()):
            lines.append(f"| {group} | {kind} | {n} |")
        lines.append(f"| **{group}** | all | **{sum(kinds.values())}** |")
    lines += ["", *(f"- **{g}**: {GROUP_DESCRIPTIONS[g]}." for g in GROUPS)]
    if manifest["skipped"]:
        lines += ["", "Skipped on this machine (not installed, or not shipped offline):", ""]
        lines += [f"- {s['source']}: {s['reason']}" for s in manifest["skipped"]]
    lines += ["", "Dataset-derived files are transforms of the Brain Tumor MRI dataset's test "
              "slices and carry that dataset's licence; never commit this folder.", ""]
    return "\n".join(lines)
