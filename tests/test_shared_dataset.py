"""The real dataset, where it is present (CI and the team's machines; not a fresh clone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data import scan_dataset

pytestmark = pytest.mark.dataset


def test_shared_dataset_is_indexed_in_the_kaggle_layout(shared_dataset: Path) -> None:
    index = scan_dataset(shared_dataset)
    assert index.class_names == ("glioma", "meningioma", "notumor", "pituitary")
    assert len(index.train) == 5708
    assert len(index.test) == 1311
    assert index.counts()["test"] == {"glioma": 300, "meningioma": 306, "notumor": 405,
                                      "pituitary": 300}


@pytest.mark.tf
def test_training_runs_on_a_subset_of_the_shared_dataset(
    shared_dataset: Path, tmp_path: Path
) -> None:
    from brainedge.manifest import load_manifest
    from tests.conftest import tiny_train_config
    from training.train import train

    # The tiny VGG16 run: what is tested here is the real data, not the architecture
    # (test_train trains a DenseNet, frozen base then fine-tuning, on the phantoms).
    config = tiny_train_config(shared_dataset, epochs=1, max_train_images=64)
    result = train(config, tmp_path / "shared")
    manifest = load_manifest(result.run_dir)
    assert manifest.extra["dataset_counts"]["train"]["glioma"] > 1000
    assert manifest.metrics["val_images"] >= 8
