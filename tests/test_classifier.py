"""Manifest-driven loading (runtime.load_classifier) and ``brainedge predict`` on the tiny run's
artifacts: sha256 refusal, unsafe formats, the Keras baseline, pooled LiteRT under threads."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from brainedge.errors import (
    ArtifactIntegrityError,
    ConfigError,
    ModelLoadError,
    UnknownBackendError,
)
from cli.main import main
from runtime import load_classifier
from runtime.imageio import read_image

pytestmark = pytest.mark.tf  # the artifacts come from a trained run


def _test_images(phantom_data: Path, n: int = 8) -> list[Path]:
    return sorted((phantom_data / "Testing").rglob("*.jpg"))[:n]


def _copy(artifact: Path, tmp_path: Path) -> Path:
    target = tmp_path / artifact.name
    shutil.copytree(artifact, target)
    return target


@pytest.mark.parametrize("variant", ["tflite-fp32", "onnx-fp32", "tflite-int8", "onnx-int8"])
def test_artifacts_classify_like_the_keras_parent(optimized_run, learned_run, phantom_data,
                                                  variant):
    parent = load_classifier(learned_run)
    child = load_classifier(optimized_run / variant)
    assert child.class_names == parent.class_names
    assert child.spec == parent.spec  # preprocessing comes from the manifests, identical
    for path in _test_images(phantom_data):
        gray = read_image(path)
        want, got = parent.classify(gray), child.classify(gray)
        tolerance = 1e-4 if variant.endswith("fp32") else 0.1
        for name in parent.class_names:
            assert got.probabilities[name] == pytest.approx(want.probabilities[name],
                                                            abs=tolerance), (path, name)


def test_model_file_path_inside_an_artifact_loads_the_same(optimized_run):
    by_folder = load_classifier(optimized_run / "tflite-fp32")
    by_file = load_classifier(optimized_run / "tflite-fp32" / "model.tflite")
    assert by_file.artifact == by_folder.artifact


def test_a_changed_model_file_is_refused_before_loading(optimized_run, tmp_path):
    artifact = _copy(optimized_run / "tflite-int8", tmp_path)
    model = artifact / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match=r"sha256.*Refusing to load"):
        load_classifier(artifact)


def test_a_manifest_without_the_models_hash_is_refused(optimized_run, tmp_path):
    artifact = _copy(optimized_run / "onnx-fp32", tmp_path)
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["files"] = {}
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactIntegrityError, match="no sha256"):
        load_classifier(artifact)


def test_a_model_without_a_manifest_is_refused_with_the_remedy(optimized_run, tmp_path):
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(optimized_run / "tflite-fp32" / "model.tflite", lone)
    with pytest.raises(ModelLoadError, match=r"has no manifest\.json.*brainedge optimize"):
        load_classifier(lone / "model.tflite")


@pytest.mark.parametrize("name", ["model.h5", "weights.hdf5", "model.pkl", "clf.joblib"])
def test_formats_that_can_run_code_are_refused_unopened(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not even read")
    with pytest.raises(ModelLoadError, match="can execute code"):
        load_classifier(path)


def test_manifest_class_names_must_match_the_models_outputs(optimized_run, tmp_path):
    artifact = _copy(optimized_run / "tflite-fp32", tmp_path)
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["class_names"] = manifest["class_names"][:3]
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="outputs 4 scores but its manifest names 3"):
        load_classifier(artifact)


def test_backend_must_fit_the_artifact(optimized_run):
    with pytest.raises(UnknownBackendError, match="run by litert, not onnxruntime"):
        load_classifier(optimized_run / "tflite-fp32", backend="onnxruntime")


def test_keras_thread_count_is_fixed_once_tensorflow_runs(trained_run):
    load_classifier(trained_run).predict_batch(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ConfigError, match="start a new process"):
        load_classifier(trained_run, num_threads=3)


def test_pooled_litert_answers_concurrent_callers_like_sequential_ones(optimized_run,
                                                                       phantom_data):
    classifier = load_classifier(optimized_run / "tflite-int8", pool_size=3)
    grays = [read_image(p) for p in _test_images(phantom_data, 12)]
    expected = [classifier.classify(g).probabilities for g in grays]
    results: dict[int, list] = {}

    def client(k: int) -> None:
        results[k] = [classifier.classify(g).probabilities for g in grays * 3]

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    for got in results.values():
        assert got == expected * 3


def test_pool_size_must_be_positive(optimized_run):
    with pytest.raises(ConfigError, match="pool_size"):
        load_classifier(optimized_run / "tflite-fp32", pool_size=0)


def test_classify_bytes_decodes_by_content_like_reading_the_file(optimized_run, phantom_data,
                                                                 tmp_path):
    classifier = load_classifier(optimized_run / "tflite-fp32")
    path = _test_images(phantom_data, 1)[0]
    png = tmp_path / "slice.bin"  # no image suffix: decided by content
    png.write_bytes(cv2.imencode(".png", read_image(path))[1].tobytes())
    from_bytes = classifier.classify_bytes(png.read_bytes())
    from_array = classifier.classify(read_image(path))
    assert from_bytes.probabilities == pytest.approx(from_array.probabilities, abs=1e-6)
    assert from_bytes.decode_ms > 0


# ------------------------------------------------------------------------- brainedge predict


@pytest.fixture
def folder_with_a_corrupt_file(phantom_data: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "slices"
    folder.mkdir()
    for path in _test_images(phantom_data, 3):
        shutil.copy(path, folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


def test_predict_json_reports_every_file_and_the_failure(optimized_run,
                                                         folder_with_a_corrupt_file):
    result = CliRunner().invoke(main, ["predict", str(folder_with_a_corrupt_file), "--model",
                                       str(optimized_run / "tflite-int8"), "--format", "json"])
    assert result.exit_code == 1
    assert "1 of 4 file(s) could not be classified" in result.output
    document = json.loads(result.stdout)
    assert "not a diagnosis" in document["notice"]
    assert document["model"]["variant"] == "tflite-int8"
    rows = {Path(r["file"]).name: r for r in document["predictions"]}
    assert len(rows) == 4
    assert "broken.jpg" in rows and "not a readable image" in rows["broken.jpg"]["error"]
    good = [r for name, r in rows.items() if name != "broken.jpg"]
    for row in good:
        assert row["error"] is None
        assert row["label"] in ("glioma", "meningioma", "notumor", "pituitary")
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=0.02)
        assert row["timing_ms"]["total"] > 0


def test_predict_csv_and_table_carry_probabilities_and_the_notice(optimized_run, phantom_data,
                                                                  tmp_path):
    image = _test_images(phantom_data, 1)[0]
    out = tmp_path / "out.csv"
    csv_run = CliRunner().invoke(main, ["predict", str(image), "--model",
                                        str(optimized_run / "onnx-fp32"), "--format", "csv",
                                        "--output", str(out), "--threads", "1"])
    assert csv_run.exit_code == 0, csv_run.output
    header, row = out.read_text().splitlines()
    assert header.startswith("file,label,confidence,p_glioma,p_meningioma,p_notumor,p_pituitary")
    assert row.split(",")[0] == str(image)
    assert "not a diagnosis" in csv_run.stderr

    table = CliRunner().invoke(main, ["predict", str(image), "--model",
                                      str(optimized_run / "tflite-fp32")])
    assert table.exit_code == 0, table.output
    assert image.name in table.stdout and "tflite fp32 on litert" in table.stdout


def test_predict_on_a_missing_path_or_an_empty_folder_says_so(optimized_run, tmp_path):
    model = str(optimized_run / "tflite-fp32")
    missing = CliRunner().invoke(main, ["predict", str(tmp_path / "nope"), "--model", model])
    assert missing.exit_code == 1 and "no such file or folder" in missing.output
    empty = CliRunner().invoke(main, ["predict", str(tmp_path), "--model", model])
    assert empty.exit_code == 1 and "no image files" in empty.output
