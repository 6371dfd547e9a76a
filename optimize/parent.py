"""The float32 parent of every artifact: a finished training run, its data splits and its model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainedge.errors import ConversionError, DatasetError, RunDirError
from brainedge.manifest import MANIFEST_NAME, Manifest, read_json, sha256_file
from runtime.preprocess import PreprocessSpec
from training.data import Sample, scan_dataset
from training.pipeline import PreparedSet, load_prepared, log_progress


@dataclass(frozen=True)
class Parent:
    run_dir: Path
    manifest: Manifest
    model: Any  # flat tf_keras model, float32
    spec: PreprocessSpec
    train: PreparedSet
    val: PreparedSet
    test: PreparedSet | None

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.manifest.class_names

    @property
    def reference(self) -> dict[str, str]:
        """How an artifact's manifest names its parent: the run and its manifest's sha256."""
        return {"run_dir": str(self.run_dir),
                "manifest_sha256": sha256_file(self.run_dir / MANIFEST_NAME)}


def _samples(paths: list[str], labels: dict[str, int], split: str) -> list[Sample]:
    missing = [p for p in paths if p not in labels]
    if missing:
        raise DatasetError(
            f"{len(missing)} {split} image(s) of the run are no longer in the dataset, e.g. "
            f"{missing[0]}; optimize needs the dataset the run was trained on (--data)"
        )
    return [Sample(Path(p), labels[p]) for p in paths]


def load_parent(run_dir: Path, data: Path | None = None, with_test: bool = False) -> Parent:
    """Load and verify a finished run; rebuild its model flat and check it still agrees."""
    from training.config import Arch
    from training.models import build_flat_model, copy_weights_by_name
    from training.train import load_trained

    run_dir = Path(run_dir)
    model, manifest = load_trained(run_dir)  # refuses a run whose files fail their sha256
    split = read_json(run_dir / "split.json")
    config = read_json(run_dir / "config.json")
    root = Path(data or manifest.extra.get("dataset_root", config["data"]))
    index = scan_dataset(root, seed=config["seed"])
    if index.class_names != manifest.class_names:
        raise DatasetError(f"{root} has classes {list(index.class_names)}, the run has "
                           f"{list(manifest.class_names)}")
    labels = {str(s.path): s.label for s in (*index.train, *index.test)}
    spec = PreprocessSpec.from_dict(manifest.preprocessing)
    train = load_prepared(_samples(split["train"], labels, "training"), spec,
                          progress=log_progress("training images"))
    val = load_prepared(_samples(split["val"], labels, "validation"), spec,
                        progress=log_progress("validation images"))
    test = load_prepared(index.test, spec, progress=log_progress("test images")) \
        if with_test else None

    flat = build_flat_model(Arch(manifest.model), spec.image_size, len(manifest.class_names))
    try:
        copy_weights_by_name(model, flat)
    except ValueError as exc:
        raise RunDirError(f"{run_dir}: the model does not match a {manifest.model}: {exc}") \
            from exc
    probe = np.random.default_rng(0).normal(size=(2, *flat.input_shape[1:])).astype(np.float32)
    if not np.allclose(flat.predict_on_batch(probe), model.predict_on_batch(probe), atol=1e-5):
        raise ConversionError(f"{run_dir}: the flattened model disagrees with the trained one")
    return Parent(run_dir, manifest, flat, spec, train, val, test)
