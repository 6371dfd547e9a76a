"""The ``brainedge`` command line, driven with click's CliRunner; no TensorFlow is loaded.

``brainedge train`` imports ``training.train`` (which imports TensorFlow) inside the command, so
the tests put a fake ``training.train`` module into ``sys.modules`` and check what it receives.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from brainedge import __version__
from brainedge.errors import DatasetError
from cli.main import main
from training.config import Arch, AugmentConfig, TrainConfig


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


class FakeTraining:
    """Stands in for ``training.train.train``: records its arguments, returns a result."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[TrainConfig, Path, bool]] = []
        self.finish_now: list[bool] = []
        self.error = error

    def __call__(self, config: TrainConfig, run_dir: Path, overwrite: bool = False,
                 finish_now: bool = False) -> Any:
        self.calls.append((config, Path(run_dir), overwrite))
        self.finish_now.append(finish_now)
        if self.error is not None:
            raise self.error
        return types.SimpleNamespace(run_dir=run_dir, val_accuracy=0.875, epochs_run=3,
                                     seconds_per_epoch=1.5, precision="float32")


@pytest.fixture
def fake_train(monkeypatch: pytest.MonkeyPatch) -> FakeTraining:
    fake = FakeTraining()
    module = types.ModuleType("training.train")
    module.train = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "training.train", module)
    return fake


# --- help -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "purpose"),
    [
        ([], "brain-tumor MRI classification"),
        (["train"], "Train VGG16 or DenseNet121 and write a self-describing run folder"),
        (["audit"], "near-duplicate images"),
        (["evaluate"], "Test-split metrics of a trained run"),
        (["compare"], "Compare trained runs"),
        (["data"], "Datasets"),
        (["data", "phantoms"], "Generate procedural MRI-like phantoms"),
    ],
)
def test_help_of_every_command_exits_zero_and_states_its_purpose(runner, args, purpose):
    result = runner.invoke(main, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    assert purpose in " ".join(result.output.split())  # help text is re-wrapped


def test_main_help_lists_every_step(runner):
    result = runner.invoke(main, ["-h"])
    assert result.exit_code == 0
    for command in ("data", "audit", "train", "evaluate", "compare"):
        assert command in result.output


def test_version_option_prints_the_package_version(runner):
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


# --- train: options become a TrainConfig --------------------------------------------------------


def test_train_builds_the_config_from_the_preset_with_cli_overrides(runner, fake_train, tmp_path):
    result = runner.invoke(main, ["train", "--data", str(tmp_path), "--preset", "demo",
                                  "--epochs", "3", "--rotation", "5"])

    assert result.exit_code == 0, result.output
    [(config, run_dir, overwrite)] = fake_train.calls
    assert config.epochs == 3
    assert config.image_size == 64  # from the demo preset
    assert config.weights == "none"
    assert config.augment.rotation_deg == 5.0
    defaults = AugmentConfig()
    assert (config.augment.brightness, config.augment.hflip) == (defaults.brightness,
                                                                 defaults.hflip)
    assert config.data == str(tmp_path)
    assert config.arch is Arch.DENSENET121
    assert run_dir == Path("runs") / "densenet121"
    assert overwrite is False
    assert "validation accuracy 0.8750 after 3 epochs" in result.output


def test_train_reference_preset_without_overrides_is_the_reference_config(runner, fake_train,
                                                                          tmp_path):
    result = runner.invoke(main, ["train", "--data", str(tmp_path), "--model", "vgg16"])

    assert result.exit_code == 0, result.output
    [(config, run_dir, _)] = fake_train.calls
    assert config == TrainConfig.reference(str(tmp_path), "vgg16")
    assert run_dir == Path("runs") / "vgg16"


def test_train_passes_run_dir_overwrite_and_flag_options(runner, fake_train, tmp_path):
    result = runner.invoke(main, [
        "train", "--data", str(tmp_path), "--preset", "demo", "--run-dir", str(tmp_path / "r"),
        "--overwrite", "--no-hflip", "--vflip", "--no-crop-brain", "--freeze-base",
        "--precision", "float32", "--strategy", "mirrored", "--batch-size", "4",
        "--learning-rate", "0.01", "--max-train-images", "40",
    ])

    assert result.exit_code == 0, result.output
    [(config, run_dir, overwrite)] = fake_train.calls
    assert run_dir == tmp_path / "r"
    assert overwrite is True
    assert (config.augment.hflip, config.augment.vflip) == (False, True)
    assert config.crop_brain is False
    assert config.frozen_base is True  # explicit, although the demo preset has no weights
    assert config.precision.value == "float32"
    assert config.strategy.value == "mirrored"
    assert (config.batch_size, config.learning_rate, config.max_train_images) == (4, 0.01, 40)


def test_train_passes_every_recipe_option_into_the_config(runner, fake_train, tmp_path):
    result = runner.invoke(main, [
        "train", "--data", str(tmp_path), "--lr-schedule", "plateau", "--warmup-epochs", "2",
        "--min-learning-rate", "1e-5", "--label-smoothing", "0.05", "--class-weight",
        "balanced", "--bilateral-d", "0", "--scaling", "unit", "--finish-now"])

    assert result.exit_code == 0, result.output
    [(config, _, _)] = fake_train.calls
    assert (config.lr_schedule.value, config.warmup_epochs, config.min_learning_rate) == (
        "plateau", 2.0, 1e-5)
    assert (config.label_smoothing, config.class_weight.value) == (0.05, "balanced")
    assert (config.preprocess.bilateral_d, config.preprocess.scaling) == (0, "unit")
    assert fake_train.finish_now == [True]


# --- errors -------------------------------------------------------------------------------------


def test_a_brainedge_error_in_a_command_is_one_line_and_exit_code_1(runner, monkeypatch,
                                                                    tmp_path):
    fake = FakeTraining(error=DatasetError("Training/glioma holds no images"))
    module = types.ModuleType("training.train")
    module.train = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "training.train", module)

    result = runner.invoke(main, ["train", "--data", str(tmp_path), "--preset", "demo"])

    assert result.exit_code == 1
    assert "Error: Training/glioma holds no images" in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_an_unexpected_error_is_not_hidden_as_a_user_error(runner, monkeypatch, tmp_path):
    module = types.ModuleType("training.train")
    module.train = FakeTraining(error=ZeroDivisionError("bug"))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "training.train", module)

    result = runner.invoke(main, ["train", "--data", str(tmp_path), "--preset", "demo"])

    assert result.exit_code == 1
    assert isinstance(result.exception, ZeroDivisionError)


def test_audit_of_a_missing_dataset_is_a_clear_error(runner, tmp_path):
    missing = tmp_path / "no-such-dataset"

    result = runner.invoke(main, ["audit", "--data", str(missing), "--out", str(tmp_path / "a")])

    assert result.exit_code == 1
    assert "does not exist" in result.output
    assert str(missing) in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--image-size", "20"], "image_size must be 32..512"),
        (["--learning-rate", "2"], "learning_rate must be in (0, 1)"),
        (["--rotation", "400"], "rotation must be 0..180"),
        (["--weights", "/nonexistent/backbone.h5"],
         "neither 'imagenet', 'none', 'hed' (VGG16) nor"),
    ],
)
def test_train_with_an_out_of_range_value_fails_with_a_clear_message(runner, fake_train,
                                                                      tmp_path, args, fragment):
    result = runner.invoke(main, ["train", "--data", str(tmp_path), *args])

    assert result.exit_code == 1
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert fake_train.calls == []  # validation happens before training starts


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--model", "resnet50"], "'resnet50' is not one of"),
        (["--epochs", "many"], "'many' is not a valid integer"),
        (["--precision", "float8"], "'float8' is not one of"),
        (["--preset", "huge"], "'huge' is not one of"),
    ],
)
def test_train_with_an_invalid_option_is_a_usage_error(runner, fake_train, args, fragment):
    result = runner.invoke(main, ["train", *args])

    assert result.exit_code == 2
    assert fragment in result.output
    assert fake_train.calls == []


def test_data_phantoms_rejects_a_too_small_image_size(runner, tmp_path):
    result = runner.invoke(main, ["data", "phantoms", "--out", str(tmp_path),
                                  "--image-size", "8"])
    assert result.exit_code == 2
    assert "--image-size" in result.output
    assert list(tmp_path.iterdir()) == []


def test_audit_command_writes_reports_and_prints_the_summary(tmp_path: Path) -> None:
    pytest.importorskip("imagehash", reason="imagehash is not installed (brainedge[train])")
    from training.phantoms import PhantomConfig, generate_phantoms

    data = generate_phantoms(tmp_path / "data", PhantomConfig(train_per_class=3,
                                                              test_per_class=2, image_size=64))
    # One leaked test image: a byte copy of a training image.
    leaked = sorted((data / "Training" / "glioma").glob("*.jpg"))[0]
    (data / "Testing" / "glioma" / "copy.jpg").write_bytes(leaked.read_bytes())
    result = CliRunner().invoke(main, ["audit", "--data", str(data), "--out",
                                       str(tmp_path / "audit")])
    assert result.exit_code == 0, result.output
    clean = (tmp_path / "audit" / "clean_test.txt").read_text()
    assert "copy.jpg" not in clean
    assert clean.count(".jpg") == 8
    assert json.loads((tmp_path / "audit" / "audit.json").read_text())
