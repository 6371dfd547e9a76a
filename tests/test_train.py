"""Training end to end on a tiny model: the run folder, its manifest, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brainedge.errors import ArtifactIntegrityError, RunDirError, WeightsUnavailableError
from brainedge.manifest import load_manifest
from tests.conftest import LEARNED_VAL_ACCURACY, short_densenet_backbone, tiny_train_config

pytestmark = pytest.mark.tf


def test_run_folder_holds_model_config_history_and_verified_manifest(trained_run: Path) -> None:
    manifest = load_manifest(trained_run)  # verifies every sha256
    for name in ("config.json", "split.json", "history.json", "training_log.csv",
                 "model.keras", "saved_model/saved_model.pb", "checkpoints/best.weights.h5"):
        assert name in manifest.files, name
    assert manifest.class_names == ("glioma", "meningioma", "notumor", "pituitary")
    assert manifest.preprocessing["scaling"] == "caffe"
    assert manifest.preprocessing["image_size"] == 32
    assert manifest.input_spec["shape"] == [None, 32, 32, 3]
    assert 0.0 <= manifest.metrics["val_accuracy"] <= 1.0
    assert manifest.metrics["epochs_run"] == 2
    assert not (trained_run / "backup").exists()
    history = json.loads((trained_run / "history.json").read_text())
    assert [row["epoch"] for row in history] == [0, 1]
    assert all(row["epoch_seconds"] > 0 for row in history)


def test_a_seeded_phantom_run_learns(learned_run: Path) -> None:
    # A broken label mapping, a preprocessing path that loses the lesion or a training loop
    # that does not update the weights all leave validation near chance (0.25).
    manifest = load_manifest(learned_run)
    assert manifest.metrics["val_accuracy"] >= LEARNED_VAL_ACCURACY, manifest.metrics
    history = json.loads((learned_run / "history.json").read_text())
    assert history[0]["val_accuracy"] < LEARNED_VAL_ACCURACY  # it learned during the run


def test_saved_model_and_keras_file_give_the_same_probabilities(trained_run: Path) -> None:
    from brainedge.tf_compat import tf
    from training.train import load_trained

    model, _ = load_trained(trained_run)
    x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)
    keras_probs = model.predict_on_batch(x)
    saved = tf.saved_model.load(str(trained_run / "saved_model"))
    saved_probs = saved.signatures["serving_default"](tf.constant(x))
    np.testing.assert_allclose(next(iter(saved_probs.values())).numpy(), keras_probs, atol=1e-5)
    np.testing.assert_allclose(keras_probs.sum(axis=1), 1.0, atol=1e-5)


def test_model_is_saved_in_float32_even_when_trained_in_bfloat16(
    phantom_data: Path, tmp_path: Path
) -> None:
    from training.train import load_trained, train

    # One step on 8 images: bfloat16 is emulated on most CPUs, and slow.
    config = tiny_train_config(phantom_data, epochs=1, precision="mixed_bfloat16",
                               max_train_images=8)
    result = train(config, tmp_path / "bf16")
    model, manifest = load_trained(result.run_dir)
    assert manifest.extra["training_precision"] == "mixed_bfloat16"
    assert {w.dtype.name for w in model.weights} == {"float32"}


def test_finished_run_is_not_overwritten_without_consent(
    trained_run: Path, phantom_data: Path
) -> None:
    from training.train import train

    with pytest.raises(RunDirError, match="finished run"):
        train(tiny_train_config(phantom_data), trained_run)


def test_unfinished_run_with_other_config_is_refused(phantom_data: Path, tmp_path: Path) -> None:
    from training.train import prepare_run_dir

    prepare_run_dir(tmp_path / "run", tiny_train_config(phantom_data), overwrite=False)
    with pytest.raises(RunDirError, match="differs in \\['epochs'\\]"):
        prepare_run_dir(tmp_path / "run", tiny_train_config(phantom_data, epochs=5), False)
    assert prepare_run_dir(tmp_path / "run", tiny_train_config(phantom_data), False) is True


def test_tampered_model_file_is_refused(trained_run: Path, tmp_path: Path) -> None:
    import shutil

    from training.train import load_trained

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    with open(copy / "model.keras", "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(ArtifactIntegrityError, match=r"model\.keras"):
        load_trained(copy)


def test_backbone_loads_weights_from_a_local_file(tmp_path: Path) -> None:
    from training.config import Arch
    from training.keras3_weights import is_keras3_weights
    from training.models import build_backbone

    source = build_backbone(Arch.VGG16, 32, "none")
    path = tmp_path / "vgg16_notop.h5"
    source.save_weights(str(path))
    assert not is_keras3_weights(path)  # tf_keras's own layout goes to tf_keras's loader
    loaded = build_backbone(Arch.VGG16, 32, str(path))
    for a, b in zip(source.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unreachable_imagenet_weights_give_an_actionable_error(monkeypatch) -> None:
    from training import models
    from training.config import Arch

    def offline(**kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setitem(models._BACKBONES, Arch.DENSENET121, offline)
    with pytest.raises(WeightsUnavailableError, match="--weights PATH"):
        models.build_backbone(Arch.DENSENET121, 32, "imagenet")


def test_unavailable_weights_fail_before_a_run_folder_is_created(
    phantom_data: Path, tmp_path: Path, monkeypatch
) -> None:
    from training import models
    from training.config import Arch
    from training.train import train

    def offline(**kwargs):
        raise Exception("URL fetch failure")

    monkeypatch.setitem(models._BACKBONES, Arch.VGG16, offline)
    with pytest.raises(WeightsUnavailableError):
        train(tiny_train_config(phantom_data, weights="imagenet"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_wrong_weights_file_gives_an_actionable_error(tmp_path: Path) -> None:
    from training.config import Arch
    from training.models import build_backbone

    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"not an hdf5 file")
    with pytest.raises(WeightsUnavailableError, match="notop"):
        build_backbone(Arch.VGG16, 32, str(bogus))  # builds far faster than DenseNet121


def test_densenet_head_trains_with_frozen_pretrained_base_then_fine_tunes(
    phantom_data: Path, tmp_path: Path, monkeypatch
) -> None:
    from training import models
    from training.config import Arch
    from training.models import build_backbone
    from training.train import load_trained, train

    # DenseNet121's layer kinds in a seventh of its layers: a quarter of the CPU time (four
    # builds, two traced training phases, the SavedModel export), the same BatchNorms to keep
    # frozen.
    monkeypatch.setitem(models._BACKBONES, Arch.DENSENET121, short_densenet_backbone)

    weights = tmp_path / "densenet_notop.h5"
    base = build_backbone(Arch.DENSENET121, 32, "none")
    base.save_weights(str(weights))
    frozen_kernel = base.get_layer("conv1/conv").get_weights()[0]
    config = tiny_train_config(phantom_data, arch="densenet121", weights=str(weights), epochs=1,
                               fine_tune_epochs=1, fine_tune_layers=5)
    result = train(config, tmp_path / "dn")
    model, manifest = load_trained(result.run_dir)
    assert manifest.metrics["epochs_run"] == 2  # one head epoch, one fine-tuning epoch
    assert manifest.preprocessing["scaling"] == "torch"
    backbone = next(layer for layer in model.layers if hasattr(layer, "layers"))
    # The stem was never unfrozen: it still holds the pre-trained values.
    np.testing.assert_array_equal(backbone.get_layer("conv1/conv").get_weights()[0],
                                  frozen_kernel)


def test_precision_auto_picks_bfloat16_only_on_cpus_that_have_it(monkeypatch) -> None:
    from training import hardware
    from training.config import Precision

    monkeypatch.setattr(hardware.tf.config, "list_physical_devices", lambda kind: [])
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    assert hardware.resolve_precision(Precision.AUTO) is Precision.MIXED_BFLOAT16
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    assert hardware.resolve_precision(Precision.AUTO) is Precision.FLOAT32
    monkeypatch.setattr(hardware.tf.config, "list_physical_devices", lambda kind: ["gpu0"])
    assert hardware.resolve_precision(Precision.AUTO) is Precision.MIXED_FLOAT16
    assert hardware.resolve_precision(Precision.FLOAT32) is Precision.FLOAT32
