"""``brainedge optimize`` end to end on the learned phantom run: artifacts, manifests, the gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from brainedge.errors import CalibrationError, RunDirError
from brainedge.manifest import load_manifest
from cli.main import main
from tests.conftest import (
    LEARNED_VAL_ACCURACY,
    OPTIMIZED_TOLERANCE,
    OPTIMIZED_VARIANTS,
    densenet_is_short,
)

pytestmark = pytest.mark.tf

VARIANTS = list(OPTIMIZED_VARIANTS)


@pytest.fixture(scope="module")
def optimized(optimized_run: Path) -> Path:
    return optimized_run


def test_every_requested_variant_has_an_artifact_and_a_verified_manifest(
    optimized: Path, learned_run: Path
) -> None:
    for name in VARIANTS:
        manifest = load_manifest(optimized / name)  # sha256 checked
        assert manifest.extra["variant"] == name
        assert manifest.parent == str(learned_run)
        assert manifest.class_names == ("glioma", "meningioma", "notumor", "pituitary")
        assert manifest.preprocessing["image_size"] == 64
        assert manifest.metrics["val_n"] == 80
        assert 0 <= manifest.metrics["val_agreement"] <= 1


def test_every_variant_has_the_gate_status_its_accuracy_earns(optimized: Path) -> None:
    # Conversions of a model that learned pass; pruning and clustering a tiny network with
    # (almost) no fine-tuning lose several points and fail (conftest, OPTIMIZED_VARIANTS).
    for name, expected in OPTIMIZED_VARIANTS.items():
        metrics = load_manifest(optimized / name).metrics
        assert metrics["status"] == expected, (name, metrics["val_drop"], metrics["tolerance"])
        assert metrics["tolerance"] == pytest.approx(OPTIMIZED_TOLERANCE / 100)
        assert metrics["val_parent_accuracy"] >= LEARNED_VAL_ACCURACY
        assert (metrics["val_drop"] > metrics["tolerance"]) == (expected == "failed")


def test_full_integer_tflite_has_int8_input_with_quantization_parameters(
    optimized: Path,
) -> None:
    manifest = load_manifest(optimized / "tflite-int8")
    assert manifest.input_spec["dtype"] == "int8"
    assert manifest.input_spec["scale"] > 0
    assert manifest.metrics["size_ratio"] < 0.35


def test_float_artifacts_agree_with_their_parent(optimized: Path) -> None:
    for name in ("tflite-fp32", "onnx-fp32"):
        metrics = load_manifest(optimized / name).metrics
        assert metrics["val_agreement"] == 1.0, name
        assert metrics["val_max_abs_diff"] < 1e-4, name
        assert metrics["status"] == "passed"


def test_pruned_variant_reaches_its_target_sparsity(optimized: Path) -> None:
    metrics = load_manifest(optimized / "pruned-tflite-int8").metrics
    assert metrics["sparsity"] >= 0.45
    assert metrics["gzip_ratio"] < load_manifest(optimized / "tflite-int8").metrics["gzip_ratio"]


def test_clustered_variant_keeps_the_sparsity_and_deflates_further(optimized: Path) -> None:
    manifest = load_manifest(optimized / "pruned-clustered-tflite-int8")
    pruned = load_manifest(optimized / "pruned-tflite-int8").metrics
    assert manifest.metrics["sparsity"] == pytest.approx(pruned["sparsity"])
    assert manifest.metrics["gzip_ratio"] < pruned["gzip_ratio"]
    assert manifest.extra["clusters"] == 16


def test_summary_lists_every_variant_in_markdown_and_json(optimized: Path) -> None:
    rows = json.loads((optimized / "summary.json").read_text())["variants"]
    assert [r["variant"] for r in rows] == VARIANTS
    # Bytes in the JSON (as in each manifest), MB only in the Markdown table.
    for row in rows:
        assert row["size_bytes"] == load_manifest(optimized / row["variant"]).metrics["size_bytes"]
    markdown = (optimized / "summary.md").read_text()
    for name in VARIANTS:
        assert f"| {name} |" in markdown


def test_a_later_run_adds_its_variant_and_keeps_intact_earlier_ones_listed(
    optimized: Path, learned_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "optimized"
    shutil.copytree(optimized, out)
    truncated = out / "onnx-int8" / "model.onnx"
    truncated.write_bytes(truncated.read_bytes()[:100])

    with densenet_is_short():
        result = CliRunner().invoke(main, ["optimize", str(learned_run), "--out", str(out),
                                           "--variant", "tflite-fp16",
                                           "--tolerance", str(OPTIMIZED_TOLERANCE)])

    assert result.exit_code == 0, result.output
    rows = {r["variant"]: r for r in json.loads((out / "summary.json").read_text())["variants"]}
    expected = [v for v in VARIANTS if v != "onnx-int8"]
    assert list(rows) == [expected[0], "tflite-fp16", *expected[1:]]
    # Its size ratio is against the earlier float32 TFLite file, as in a full run.
    fp32 = load_manifest(out / "tflite-fp32").metrics["size_bytes"]
    assert rows["tflite-fp16"]["size_ratio"] == pytest.approx(
        rows["tflite-fp16"]["size_bytes"] / fp32)


def _sabotage_tflite(monkeypatch) -> None:
    """Convert a copy whose classifier is negated: the artifact disagrees with its parent."""
    from brainedge.tf_compat import keras
    from optimize import convert

    real = convert.to_tflite

    def broken(model, approach, calibration=None, int8_io="int8"):
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        dense = copy.get_layer("probabilities")
        kernel, bias = dense.get_weights()
        dense.set_weights([-kernel * 10, -bias])
        return real(copy, approach, calibration, int8_io)

    monkeypatch.setattr(convert, "to_tflite", broken)


def _parent_always_right(monkeypatch) -> None:
    """Relabel validation images with the parent's own predictions: parent accuracy is 1.0."""
    import dataclasses

    from optimize import parent as parent_module

    real = parent_module.load_parent

    def relabelled(*args, **kwargs):
        parent = real(*args, **kwargs)
        from training.pipeline import predict_prepared

        probs = predict_prepared(parent.model.predict_on_batch, parent.val, parent.spec, 4)
        val = dataclasses.replace(parent.val, labels=probs.argmax(1))
        return dataclasses.replace(parent, val=val)

    monkeypatch.setattr(parent_module, "load_parent", relabelled)


def test_parity_gate_fails_an_artifact_that_loses_accuracy(
    trained_run: Path, tmp_path: Path, monkeypatch
) -> None:
    _parent_always_right(monkeypatch)
    _sabotage_tflite(monkeypatch)
    args = ["optimize", str(trained_run), "--out", str(tmp_path), "--variant", "tflite-fp32"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "did not pass: tflite-fp32" in result.output
    manifest = load_manifest(tmp_path / "tflite-fp32")
    assert manifest.metrics["status"] == "failed"
    assert manifest.metrics["val_parent_accuracy"] == 1.0
    assert manifest.metrics["val_drop"] > 0.01
    assert "| failed |" in (tmp_path / "summary.md").read_text()

    allowed = CliRunner().invoke(main, [*args, "--allow-failures"])
    assert allowed.exit_code == 0
    assert "warning" in allowed.output


def test_too_small_calibration_set_is_refused_before_any_artifact(
    trained_run: Path, tmp_path: Path
) -> None:
    from optimize.config import OptimizeConfig, Variant
    from optimize.pipeline import optimize_run

    # The tiny run has about 34 training images; ask for at least 100.
    config = OptimizeConfig(run_dir=trained_run, out_dir=tmp_path, calibration_size=200,
                            min_calibration_size=100, variants=(Variant.parse("tflite-int8"),))
    with pytest.raises(CalibrationError, match="100"):
        optimize_run(config)
    assert not (tmp_path / "tflite-int8").exists()


def test_run_folder_with_a_missing_file_is_refused(trained_run: Path, tmp_path: Path) -> None:
    broken = tmp_path / "run"
    shutil.copytree(trained_run, broken)
    (broken / "split.json").unlink()
    result = CliRunner().invoke(main, ["optimize", str(broken), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "split.json" in result.output


def test_flattened_parent_predicts_like_the_trained_model(trained_run: Path) -> None:
    from optimize.parent import load_parent
    from training.train import load_trained

    parent = load_parent(trained_run)
    nested, _ = load_trained(trained_run)
    x = np.random.default_rng(1).normal(size=(4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(parent.model.predict_on_batch(x), nested.predict_on_batch(x),
                               atol=1e-5)
    assert not any(hasattr(layer, "layers") for layer in parent.model.layers)
    with pytest.raises(RunDirError):
        load_parent(trained_run.parent / "nowhere")
