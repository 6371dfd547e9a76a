"""training.config.TrainConfig: presets, coercion, validation, serialisation, immutability."""

from __future__ import annotations

import dataclasses
import json

import pytest

from brainedge.errors import ConfigError
from training.config import (
    PRESETS,
    Arch,
    AugmentConfig,
    ClassWeight,
    LRSchedule,
    Precision,
    Strategy,
    TrainConfig,
)


def test_reference_preset_is_the_recipe_from_scratch():
    config = PRESETS["reference"]("data/x")

    assert (config.image_size, config.epochs, config.batch_size) == (150, 20, 32)
    assert config.learning_rate == pytest.approx(1e-3)
    assert config.weights == "none" and config.frozen_base is False
    assert config.arch is Arch.DENSENET121
    assert config.lr_schedule is LRSchedule.PLATEAU and config.reduce_lr_patience == 2
    assert config.warmup_epochs == 0.0 and config.label_smoothing == 0.0
    assert config.val_fraction == pytest.approx(0.1)
    assert config.augment == AugmentConfig(rotation_deg=18.0, brightness=0.1, shift=0.05)
    assert config.preprocess.bilateral_d == 2 and config.preprocess.scaling == "torch"


def test_reference_vgg16_starts_at_a_step_it_can_learn_at():
    assert PRESETS["reference"]("data/x", "vgg16").learning_rate == pytest.approx(1e-4)


@pytest.mark.parametrize(("changes", "message"), [
    ({"warmup_epochs": 20}, "warmup_epochs must be in"),
    ({"min_learning_rate": 1e-2}, "min_learning_rate must be in"),
    ({"label_smoothing": 0.5}, "label_smoothing must be in"),
    ({"bilateral_d": -1}, "bilateral_d must be >= 0"),
    ({"scaling": "imagenet"}, "scaling must be one of"),
    ({"lr_schedule": "step"}, "unknown learning-rate schedule 'step'"),
    ({"class_weight": "inverse"}, "unknown class weighting 'inverse'"),
])
def test_recipe_options_are_validated(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.reference("data/x", **changes)


def test_recipe_options_reach_the_preprocessing_and_round_trip():
    config = TrainConfig.reference("data/x", bilateral_d=0, scaling="unit",
                                   class_weight="balanced", lr_schedule="plateau")
    assert config.preprocess.bilateral_d == 0 and config.preprocess.scaling == "unit"
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.class_weight is ClassWeight.BALANCED


def test_demo_preset_is_small_and_needs_no_download():
    config = PRESETS["demo"]("data/x", "vgg16")

    assert config.arch is Arch.VGG16
    assert config.image_size <= 64
    assert config.epochs <= 12
    assert config.weights == "none"
    assert config.frozen_base is False


def test_preset_keyword_overrides_win_over_preset_defaults():
    config = TrainConfig.demo("data/x", epochs=3, image_size=96)
    assert (config.epochs, config.image_size, config.weights) == (3, 96, "none")


def test_strings_are_coerced_to_enums():
    config = TrainConfig(data="d", arch="vgg16", precision="mixed_bfloat16",
                         strategy="multi-worker")

    assert config.arch is Arch.VGG16
    assert config.precision is Precision.MIXED_BFLOAT16
    assert config.strategy is Strategy.MULTI_WORKER


def test_augment_given_as_a_mapping_becomes_an_augment_config():
    config = TrainConfig(data="d", augment={"rotation_deg": 5.0, "hflip": False})
    assert config.augment == AugmentConfig(rotation_deg=5.0, hflip=False)


@pytest.mark.parametrize(
    ("field", "value", "choices"),
    [
        ("arch", "resnet50", ("vgg16", "densenet121")),
        ("precision", "float64", ("auto", "float32", "mixed_bfloat16", "mixed_float16")),
        ("strategy", "tpu", ("auto", "mirrored", "multi-worker")),
    ],
)
def test_unknown_choice_is_a_config_error_listing_the_choices(field, value, choices):
    with pytest.raises(ConfigError) as info:
        TrainConfig(data="d", **{field: value})
    message = str(info.value)
    assert repr(value) in message
    assert all(choice in message for choice in choices)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("image_size", 31, "image_size must be 32..512"),
        ("image_size", 513, "image_size must be 32..512"),
        ("epochs", 0, "epochs must be >= 1"),
        ("batch_size", 0, "batch_size must be >= 1"),
        ("learning_rate", 0.0, "learning_rate must be in (0, 1)"),
        ("learning_rate", 1.0, "learning_rate must be in (0, 1)"),
        ("fine_tune_epochs", -1, "fine_tune_epochs must be >= 0"),
        ("fine_tune_layers", 0, "fine_tune_layers must be >= 1"),
        ("dropout", 1.0, "dropout must be in [0, 1)"),
        ("dropout", -0.1, "dropout must be in [0, 1)"),
        ("val_fraction", 0.0, "val_fraction must be in (0, 0.5)"),
        ("val_fraction", 0.5, "val_fraction must be in (0, 0.5)"),
        ("max_train_images", 7, "max_train_images must be >= 8"),
        ("augment", {"rotation_deg": 181}, "rotation must be 0..180"),
        ("augment", {"brightness": 1.0}, "brightness must be in [0, 1)"),
        ("augment", {"shift": 0.5}, "shift must be in [0, 0.5)"),
    ],
)
def test_out_of_range_value_is_a_config_error(field, value, fragment):
    with pytest.raises(ConfigError) as info:
        TrainConfig(data="d", **{field: value})
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("image_size", 32), ("image_size", 512), ("dropout", 0.0), ("max_train_images", 8),
     ("max_train_images", None), ("fine_tune_epochs", 0)],
)
def test_boundary_values_are_accepted(field, value):
    assert getattr(TrainConfig(data="d", **{field: value}), field) == value


def test_a_config_error_is_also_a_value_error():
    with pytest.raises(ValueError):
        TrainConfig(data="d", epochs=0)


def test_weights_path_that_does_not_exist_is_a_config_error(tmp_path):
    missing = tmp_path / "densenet_notop.h5"
    with pytest.raises(ConfigError,
                       match=r"neither 'imagenet', 'none', 'hed' \(VGG16\) nor an existing file"):
        TrainConfig(data="d", weights=str(missing))


def test_weights_path_that_exists_is_accepted_and_counts_as_pretrained(tmp_path):
    weights = tmp_path / "densenet_notop.h5"
    weights.write_bytes(b"\x89HDF")

    config = TrainConfig(data="d", weights=str(weights))

    assert config.pretrained is True
    assert config.frozen_base is True


def test_dict_json_round_trip_gives_an_equal_config():
    config = TrainConfig(
        data="data/phantoms", arch="vgg16", image_size=96, epochs=3, precision="float32",
        strategy="mirrored", augment=AugmentConfig(rotation_deg=5.0, vflip=True),
        max_train_images=64, freeze_base=False,
    )

    text = json.dumps(config.to_dict())
    again = TrainConfig.from_dict(json.loads(text))

    assert again == config
    assert json.loads(text)["arch"] == "vgg16"
    assert json.loads(text)["augment"]["rotation_deg"] == 5.0


def test_config_is_frozen():
    config = TrainConfig(data="d")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.augment.rotation_deg = 0.0  # type: ignore[misc]


def test_with_returns_a_validated_copy():
    config = TrainConfig(data="d")
    changed = config.with_(epochs=2)
    assert (config.epochs, changed.epochs) == (20, 2)
    with pytest.raises(ConfigError, match="epochs"):
        config.with_(epochs=0)


@pytest.mark.parametrize(
    ("weights", "freeze_base", "frozen"),
    [
        ("imagenet", None, True),  # pre-trained: freeze the backbone
        ("none", None, False),  # random init: train everything
        ("imagenet", False, False),  # an explicit choice wins
        ("none", True, True),
    ],
)
def test_frozen_base_follows_the_weights_unless_given(weights, freeze_base, frozen):
    config = TrainConfig(data="d", weights=weights, freeze_base=freeze_base)
    assert config.frozen_base is frozen


@pytest.mark.parametrize(("arch", "scaling"), [("vgg16", "caffe"), ("densenet121", "torch")])
def test_preprocess_spec_follows_arch_size_and_crop(arch, scaling):
    spec = TrainConfig(data="d", arch=arch, image_size=64, crop_brain=False).preprocess
    assert (spec.scaling, spec.image_size, spec.crop_brain) == (scaling, 64, False)
