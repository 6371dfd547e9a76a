"""A stopped ``brainedge optimize`` resumes: built variants and fine-tuned models are kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from brainedge.manifest import load_manifest
from cli.main import main
from tests.conftest import OPTIMIZED_VARIANTS, densenet_is_short, optimize_args

pytestmark = pytest.mark.tf


@pytest.fixture()
def converted(monkeypatch) -> list[str]:
    """The variants a run converts (rather than keeps), in order."""
    from optimize import pipeline

    names: list[str] = []
    real = pipeline._convert

    def recording(variant, *args, **kwargs):
        names.append(variant.name)
        return real(variant, *args, **kwargs)

    monkeypatch.setattr(pipeline, "_convert", recording)
    return names


def _forbid_fine_tuning(monkeypatch) -> None:
    from optimize import cluster, prune, qat

    def refuse(*args, **kwargs):
        raise AssertionError("a fine-tuned model was trained again")

    monkeypatch.setattr(prune, "prune_model", refuse)
    monkeypatch.setattr(cluster, "cluster_model", refuse)
    monkeypatch.setattr(qat, "quantize_aware", refuse)


def test_a_stopped_run_converts_what_is_missing_and_trains_nothing_again(
    optimized_run: Path, learned_run: Path, tmp_path: Path, converted: list[str], monkeypatch
) -> None:
    out = tmp_path / "optimized"
    shutil.copytree(optimized_run, out)
    first = {name: load_manifest(out / name).metrics for name in OPTIMIZED_VARIANTS}
    # Stopped before its last two variants: the pruned and clustered models were saved when
    # they were built, so only their conversions remain.
    missing = ["pruned-tflite-int8", "pruned-clustered-tflite-int8"]
    for name in missing:
        shutil.rmtree(out / name)
    _forbid_fine_tuning(monkeypatch)

    with densenet_is_short():
        result = CliRunner().invoke(main, optimize_args(learned_run, out))

    assert result.exit_code == 0, result.output
    assert converted == missing
    assert not list((optimized_run / ".sources").glob("*.backup"))  # finished: none left
    for name, status in OPTIMIZED_VARIANTS.items():
        metrics = load_manifest(out / name).metrics
        assert metrics["status"] == status, name
        # The same fine-tuned model and calibration images: the same artifact.
        assert metrics["val_accuracy"] == first[name]["val_accuracy"], name
    summary = json.loads((out / "summary.json").read_text())["variants"]
    assert {row["variant"]: row["status"] for row in summary} == OPTIMIZED_VARIANTS


def test_changed_settings_or_rebuild_build_a_variant_again(
    optimized_run: Path, learned_run: Path, tmp_path: Path, converted: list[str]
) -> None:
    out = tmp_path / "optimized"
    shutil.copytree(optimized_run, out)
    args = optimize_args(learned_run, out, variants=["tflite-fp32"])

    def run(*extra: str) -> None:
        with densenet_is_short():
            result = CliRunner().invoke(main, [*args, *extra])
        assert result.exit_code == 0, result.output

    run()
    assert converted == []  # same parent, same settings: kept
    run("--rebuild")
    assert converted == ["tflite-fp32"]
    run("--ood-false-flag-rate", "0.02")  # another threshold: not the artifact the first made
    assert converted == ["tflite-fp32", "tflite-fp32"]
    assert load_manifest(out / "tflite-fp32").extra["ood"]["false_flag_rate"] == 0.02


def _tiny_model():
    from brainedge.tf_compat import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))


def test_a_saved_source_is_used_only_with_its_key_and_its_bytes(tmp_path: Path) -> None:
    from optimize.config import OptimizeConfig, PruneConfig, Source
    from optimize.source_cache import CACHE_DIR, load_source, save_source, source_key

    model = _tiny_model()
    config = OptimizeConfig(run_dir=tmp_path / "run")
    key = source_key(Source.PRUNED, "a" * 64, config)
    save_source(tmp_path, key, model, {"build_seconds": 12.5})

    loaded, notes = load_source(tmp_path, key)
    images = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_on_batch(images), model.predict_on_batch(images))
    assert notes == {"build_seconds": 12.5}
    # Another parent, or other pruning settings, did not make this model.
    assert load_source(tmp_path, source_key(Source.PRUNED, "b" * 64, config)) is None
    sparser = OptimizeConfig(run_dir=tmp_path / "run", prune=PruneConfig(target_sparsity=0.7))
    assert load_source(tmp_path, source_key(Source.PRUNED, "a" * 64, sparser)) is None
    # Nor does a clustered model's key name the pruned one.
    assert load_source(tmp_path, source_key(Source.PRUNED_CLUSTERED, "a" * 64, config)) is None
    # Bytes that changed after saving are not trusted.
    saved = tmp_path / CACHE_DIR / "pruned.h5"
    saved.write_bytes(saved.read_bytes() + b"\0")
    assert load_source(tmp_path, key) is None


def test_clustering_settings_key_the_clustered_model_but_not_the_pruned_one(
    tmp_path: Path,
) -> None:
    from optimize.config import ClusterConfig, OptimizeConfig, Source
    from optimize.source_cache import source_key

    a = OptimizeConfig(run_dir=tmp_path)
    b = OptimizeConfig(run_dir=tmp_path, cluster=ClusterConfig(clusters=8))
    assert source_key(Source.PRUNED, "x", a) == source_key(Source.PRUNED, "x", b)
    assert source_key(Source.PRUNED_CLUSTERED, "x", a) != \
        source_key(Source.PRUNED_CLUSTERED, "x", b)


def test_a_fine_tune_key_keeps_its_backup_and_another_key_empties_it(tmp_path: Path) -> None:
    from optimize.config import OptimizeConfig, PruneConfig, Source
    from optimize.finetune_backup import backup_dir, clear_backup
    from optimize.source_cache import source_key

    key = source_key(Source.PRUNED, "a" * 64, OptimizeConfig(run_dir=tmp_path))
    folder = backup_dir(tmp_path, key)
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "epoch").write_text("1")

    assert backup_dir(tmp_path, key) == folder
    assert (folder / "checkpoints" / "epoch").is_file()  # the same fine-tune resumes from it
    sparser = OptimizeConfig(run_dir=tmp_path, prune=PruneConfig(target_sparsity=0.7))
    assert backup_dir(tmp_path, source_key(Source.PRUNED, "a" * 64, sparser)) == folder
    assert not (folder / "checkpoints").exists()  # another fine-tune starts over
    clear_backup(tmp_path, Source.PRUNED.value)
    assert not folder.exists()


def test_an_interrupted_pruning_fine_tune_resumes_at_its_next_epoch(
    tmp_path: Path, monkeypatch
) -> None:
    """Stopped after its first of three epochs, the fine-tune runs only the other two, with
    the pruning step (which drives the sparsity schedule) where the first epoch left it."""
    from brainedge.tf_compat import keras
    from optimize import prune
    from optimize.config import PruneConfig
    from tests.test_prune_qat import NUM_CLASSES, _prepared, _small_dense_style_model, _spec

    class Stop(Exception):
        pass

    class Probe(keras.callbacks.Callback):
        def __init__(self, stop_at: int | None) -> None:
            super().__init__()
            self.stop_at, self.epochs, self.first_step = stop_at, [], None

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == self.stop_at:
                raise Stop  # as a session's end would, after the previous epoch's backup
            self.epochs.append(epoch)

        def on_train_batch_begin(self, batch, logs=None):
            if self.first_step is None:
                layers = [layer for layer in self.model.layers if hasattr(layer, "pruning_step")]
                self.first_step = int(layers[0].pruning_step.numpy())

    real = prune.backup_callbacks
    config = PruneConfig(target_sparsity=0.5, fine_tune_epochs=3, batch_size=4)
    args = (_prepared(16), _prepared(8, seed=1), _spec("densenet121"), NUM_CLASSES, config)

    def run(probe: Probe) -> keras.Model:
        monkeypatch.setattr(prune, "backup_callbacks", lambda backup: [*real(backup), probe])
        return prune.prune_model(_small_dense_style_model(), *args, backup=tmp_path)

    stopped = Probe(stop_at=1)
    with pytest.raises(Stop):
        run(stopped)
    assert stopped.epochs == [0]

    resumed = Probe(stop_at=None)
    pruned = run(resumed)
    assert resumed.epochs == [1, 2]
    assert resumed.first_step == 16 // 4  # one epoch of 4 steps already counted
    assert prune.sparsity_report(pruned)["sparsity"] == pytest.approx(0.5, abs=0.02)
