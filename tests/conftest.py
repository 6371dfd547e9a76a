"""Shared fixtures: a tiny phantom dataset, tiny configs and one trained tiny run per session.

TF-dependent fixtures import TensorFlow lazily, so the edge-only suite (-m "not tf") never
loads it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASET = PROJECT_ROOT.parent / "shared" / "datasets" / "brain-tumor-mri"


@pytest.fixture(scope="session")
def phantom_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small phantom dataset in the Kaggle layout (10 train / 4 test images per class)."""
    from training.phantoms import PhantomConfig, generate_phantoms

    out = tmp_path_factory.mktemp("phantoms") / "data"
    return generate_phantoms(out, PhantomConfig(train_per_class=10, test_per_class=4,
                                                image_size=64, seed=1))


@pytest.fixture(scope="session")
def shared_dataset() -> Path:
    if not (SHARED_DATASET / "Training").is_dir():
        reason = (f"the shared Brain Tumor MRI dataset is not at {SHARED_DATASET} "
                  "(only CI and the team's machines have it)")
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    return SHARED_DATASET


def tiny_train_config(data: Path, **overrides):
    """The smallest training job that still exercises the whole path."""
    from training.config import TrainConfig

    values = dict(arch="vgg16", image_size=32, epochs=2, batch_size=8, precision="float32",
                  tensorboard=False, early_stopping_patience=100)
    values.update(overrides)
    return TrainConfig.demo(str(data), **values)


@pytest.fixture(scope="session")
def trained_run(phantom_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "vgg16"
    train(tiny_train_config(phantom_data), run_dir)
    return run_dir


# Variants of the tiny run that tests share: the common formats plus pruning and clustering.
OPTIMIZED_VARIANTS = ("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8",
                      "pruned-tflite-int8", "pruned-clustered-tflite-int8")


@pytest.fixture(scope="session")
def optimized_run(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``brainedge optimize`` of the tiny run, once per session (the folder of variants)."""
    from click.testing import CliRunner

    from cli.main import main

    out = tmp_path_factory.mktemp("optimized")
    # No centroid fine-tuning (most of the clustering time): test_prune_qat checks that it
    # keeps the pruned zeros; here the clustered variant only needs to exist and deflate.
    args = ["optimize", str(trained_run), "--out", str(out), "--prune-epochs", "1",
            "--cluster-epochs", "0", "--batch-size", "8", "--calibration-size", "16",
            "--allow-failures"]
    for v in OPTIMIZED_VARIANTS:
        args += ["--variant", v]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out

