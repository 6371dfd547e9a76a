"""Shared fixtures: a tiny phantom dataset, tiny configs and one trained tiny run per session.

TF-dependent fixtures import TensorFlow lazily, so the edge-only suite (-m "not tf") never
loads it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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


def short_densenet_backbone(**kwargs):
    """``keras.applications.DenseNet121`` with 2/1/1/1 building blocks per dense block instead
    of 6/12/24/16 (two in the first, for a concatenation of a concatenation).

    Keras's own DenseNet construction, layer names and layer kinds in a seventh of the layers,
    for tests about DenseNet's structure rather than its depth: building, tracing and saving
    the full network costs minutes. Takes DenseNet121's arguments; test_prune_qat checks that it
    has every layer kind of DenseNet121.
    """
    from tf_keras.src.applications.densenet import DenseNet

    return DenseNet([2, 1, 1, 1], **kwargs)


@contextmanager
def densenet_is_short() -> Iterator[None]:
    """Within it, the pipeline builds ``short_densenet_backbone`` for DenseNet121: training, and
    optimize, which rebuilds the run's architecture flat (``training.models.build_flat_model``).
    """
    from training import models
    from training.config import Arch

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(models._BACKBONES, Arch.DENSENET121, short_densenet_backbone)
        yield


@pytest.fixture(scope="session")
def trained_run(phantom_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "vgg16"
    train(tiny_train_config(phantom_data), run_dir)
    return run_dir


# The validation accuracy the seeded phantom run must reach (chance is 0.25): below it, labels,
# preprocessing or training are broken. Measured here: 0.96 at its last epoch.
LEARNED_VAL_ACCURACY = 0.8


@pytest.fixture(scope="session")
def learned_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded phantom run that learns: the check that labels, preprocessing and training fit.

    DenseNet121's own construction in a seventh of its layers (``short_densenet_backbone``) at
    64 px, 80 phantoms per class, no augmentation, 12 epochs of batch 8: about a minute on two
    cores. Batch 8 for the step count: with fewer steps the batch norms' moving averages (momentum
    0.99) lag the weights and validation stays at chance while training accuracy climbs. VGG16,
    with no batch norm, was still near chance after 10 epochs at 32 px and costs 8 times more
    per epoch. A quarter of the images validate, so the accuracy is over 80 slices.
    """
    from training.config import Arch, AugmentConfig, TrainConfig
    from training.phantoms import PhantomConfig, generate_phantoms
    from training.train import train

    data = generate_phantoms(tmp_path_factory.mktemp("learning") / "data",
                             PhantomConfig(train_per_class=80, test_per_class=4, image_size=64,
                                           seed=1))
    config = TrainConfig.demo(str(data), arch=Arch.DENSENET121, image_size=64, epochs=12,
                              batch_size=8, precision="float32", tensorboard=False,
                              early_stopping_patience=100, val_fraction=0.25,
                              augment=AugmentConfig(rotation_deg=0.0, brightness=0.0, shift=0.0,
                                                    hflip=False))
    run_dir = tmp_path_factory.mktemp("runs") / "densenet121"
    with densenet_is_short():
        train(config, run_dir)
    return run_dir


# Variants of the learned run that tests share (the common formats plus pruning and
# clustering), each with the gate status test_optimize asserts. The four conversions keep the
# accuracy of a model that learned (measured drops: 0, 1.25, 0 and 0 points). Pruning half the
# weights of this 260k-parameter network with one epoch of fine-tuning, and clustering it with
# none, lose 6 and 10 points (30% sparsity or 5 epochs lost 4 to 6 as well): the gate must
# fail them.
OPTIMIZED_VARIANTS = {"tflite-fp32": "passed", "tflite-int8": "passed", "onnx-fp32": "passed",
                      "onnx-int8": "passed", "pruned-tflite-int8": "failed",
                      "pruned-clustered-tflite-int8": "failed"}
# The gate's tolerance, in points: the validation split has 80 slices, so one slice is 1.25
# points and the default 1 point would fail a variant that flips a single one.
OPTIMIZED_TOLERANCE = 2.5


@pytest.fixture(scope="session")
def optimized_run(learned_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``brainedge optimize`` of the learned run, once per session (the folder of variants).

    A model that learned, so the parity gate means something: ``--allow-failures`` only lets
    the expected failures through, and test_optimize asserts each variant's status.
    """
    from click.testing import CliRunner

    from cli.main import main

    out = tmp_path_factory.mktemp("optimized")
    with densenet_is_short():
        result = CliRunner().invoke(main, optimize_args(learned_run, out))
    assert result.exit_code == 0, result.output
    return out


def optimize_args(run: Path, out: Path, variants: Iterable[str] = OPTIMIZED_VARIANTS) -> list[str]:
    """The ``brainedge optimize`` command line of ``optimized_run`` (its settings, and by
    default its variants)."""
    # No centroid fine-tuning (most of the clustering time): test_prune_qat checks that it
    # keeps the pruned zeros; here the clustered variant only needs to exist and deflate.
    args = ["optimize", str(run), "--out", str(out), "--prune-epochs", "1",
            "--cluster-epochs", "0", "--batch-size", "8", "--calibration-size", "16",
            "--tolerance", str(OPTIMIZED_TOLERANCE), "--allow-failures"]
    for v in variants:
        args += ["--variant", v]
    return args

