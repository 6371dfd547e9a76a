"""Find a dataset on disk, name its classes, and split it, without loading TensorFlow.

Accepted layouts:
- Kaggle: ``ROOT/Training/<class>/`` and ``ROOT/Testing/<class>/`` (also ``train``/``test``).
- Any one-folder-per-class tree ``ROOT/<class>/``: a test split is carved from it, seeded.
Class folder names are canonicalised (``glioma_tumor`` -> ``glioma``, ``no_tumor`` -> ``notumor``).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainedge.errors import DatasetError
from runtime.imageio import is_image_name

log = logging.getLogger(__name__)

CLASS_NAMES = ("glioma", "meningioma", "notumor", "pituitary")
_ALIASES = {
    "glioma": "glioma",
    "meningioma": "meningioma",
    "notumor": "notumor",
    "no": "notumor",
    "none": "notumor",
    "normal": "notumor",
    "healthy": "notumor",
    "pituitary": "pituitary",
}
_TRAIN_NAMES = {"training", "train"}
_TEST_NAMES = {"testing", "test"}


def canonical_class(folder_name: str) -> str:
    """``Glioma_Tumor`` -> ``glioma``; other names become lower-case alphanumerics."""
    key = re.sub(r"[^a-z0-9]", "", folder_name.lower())
    key = key.removesuffix("tumour").removesuffix("tumor") or key
    return _ALIASES.get(key, key)


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


@dataclass(frozen=True)
class DatasetIndex:
    root: Path
    class_names: tuple[str, ...]
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]
    # True when the test split was carved from a one-folder-per-class tree, not given.
    carved_test: bool = False
    skipped_non_images: int = 0

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for split, samples in (("train", self.train), ("test", self.test)):
            tally = Counter(s.label for s in samples)
            out[split] = {name: tally.get(i, 0) for i, name in enumerate(self.class_names)}
        return out


def _class_folders(split_dir: Path) -> dict[str, list[Path]]:
    folders: dict[str, list[Path]] = {}
    for child in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if child.name.startswith("."):
            continue
        folders.setdefault(canonical_class(child.name), []).append(child)
    return folders


def _list_files(folders: list[Path]) -> tuple[list[Path], int]:
    images, skipped = [], 0
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if path.name.startswith("."):
                continue
            if is_image_name(path):
                images.append(path)
            else:
                skipped += 1
    return images, skipped


def _order_classes(names: set[str]) -> tuple[str, ...]:
    # The four known classes keep their canonical order (it is the models' output order).
    if names <= set(CLASS_NAMES) and len(names) == len(CLASS_NAMES):
        return CLASS_NAMES
    return tuple(sorted(names))


def _find_split_dirs(root: Path) -> tuple[Path | None, Path | None]:
    train = test = None
    for child in root.iterdir():
        if child.is_dir() and child.name.lower() in _TRAIN_NAMES:
            train = child
        elif child.is_dir() and child.name.lower() in _TEST_NAMES:
            test = child
    return train, test


def scan_dataset(root: Path, test_fraction: float = 0.2, seed: int = 0) -> DatasetIndex:
    """Index a dataset folder; raise ``DatasetError`` saying what is wrong with its layout."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(
            f"dataset folder {root} does not exist; pass --data with the folder that holds "
            "Training/ and Testing/ (or one sub-folder per class)"
        )
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not a dataset folder")
    train_dir, test_dir = _find_split_dirs(root)
    if (train_dir is None) != (test_dir is None):
        found = "Training" if train_dir else "Testing"
        raise DatasetError(f"{root} has a {found}/ folder but not the other split beside it")

    skipped = 0
    per_split: dict[str, dict[str, list[Path]]] = {}
    split_dirs = {"train": train_dir, "test": test_dir} if train_dir else {"all": root}
    for split, directory in split_dirs.items():
        folders = _class_folders(directory)
        if not folders:
            raise DatasetError(
                f"{directory} has no class sub-folders; expected one folder per class "
                f"({', '.join(CLASS_NAMES)}) holding .jpg/.jpeg/.png images"
            )
        per_split[split] = {}
        for name, dirs in folders.items():
            files, n_skip = _list_files(dirs)
            skipped += n_skip
            per_split[split][name] = files

    if train_dir:
        train_names = {n for n, f in per_split["train"].items() if f}
        test_names = {n for n, f in per_split["test"].items() if f}
        if train_names != test_names:
            raise DatasetError(
                f"Training classes {sorted(train_names)} differ from Testing classes "
                f"{sorted(test_names)}; both splits need the same class folders"
            )
    names = {n for split in per_split.values() for n, files in split.items() if files}
    empty = sorted({n for split in per_split.values() for n, f in split.items() if not f})
    if empty:
        raise DatasetError(f"class folder(s) {empty} under {root} contain no images")
    if len(names) < 2:
        raise DatasetError(f"{root} has {len(names)} class with images; at least 2 are needed")
    class_names = _order_classes(names)
    index = {n: i for i, n in enumerate(class_names)}

    def samples(split: str) -> list[Sample]:
        return [Sample(p, index[n]) for n, files in per_split[split].items() for p in files]

    if skipped:
        log.warning("skipped %d non-image file(s) under %s", skipped, root)
    if train_dir:
        return DatasetIndex(root, class_names, tuple(samples("train")), tuple(samples("test")),
                            skipped_non_images=skipped)
    pool = samples("all")
    train, test = stratified_split(pool, test_fraction, seed)
    return DatasetIndex(root, class_names, train, test, carved_test=True,
                        skipped_non_images=skipped)


def stratified_split(
    samples: Sequence[Sample], fraction: float, seed: int
) -> tuple[tuple[Sample, ...], tuple[Sample, ...]]:
    """Split off ``fraction`` of each class, seeded; every class keeps at least one sample."""
    if not 0.0 < fraction < 1.0:
        raise DatasetError(f"split fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for label in sorted({s.label for s in samples}):
        members = sorted((s for s in samples if s.label == label), key=lambda s: str(s.path))
        if len(members) < 2:
            raise DatasetError(
                f"class {members[0].path.parent.name!r} has {len(members)} image; a split "
                "needs at least 2 per class"
            )
        order = rng.permutation(len(members))
        n_held = min(max(1, round(fraction * len(members))), len(members) - 1)
        held += [members[i] for i in order[:n_held]]
        keep += [members[i] for i in order[n_held:]]
    return tuple(keep), tuple(held)


def read_path_list(path: Path, root: Path) -> set[Path]:
    """A list of image paths (one per line, relative to ``root`` or absolute), as resolved paths."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"path list {path} does not exist; create it with `brainedge audit`")
    entries = set()
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            entries.add((p if p.is_absolute() else Path(root) / p).resolve())
    return entries
