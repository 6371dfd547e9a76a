"""Artifacts stored xz-compressed (brainedge ship --compress): loaded from memory, verified.

The ONNX artifacts are hand-written tiny classifiers; the LiteRT case is the shipped DenseNet121,
stored compressed, against a plain copy of it. Neither needs TensorFlow.
"""

from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path

import numpy as np
import pytest

from brainedge.errors import ArtifactIntegrityError
from brainedge.manifest import MANIFEST_NAME
from runtime import load_classifier
from runtime.compressed import COMPRESSED_KEY, store_compressed
from runtime.shipped import shipped_artifacts
from tests.test_webapp_support import REVERSED, make_artifact, need_onnxruntime, phantom


def compressed_copy(folder: Path, target: Path, model_name: str) -> Path:
    shutil.copytree(folder, target)
    store_compressed(target, model_name)
    return target


@pytest.mark.arm64
def test_a_compressed_onnx_artifact_answers_as_the_plain_one_from_memory(tmp_path: Path) -> None:
    need_onnxruntime()
    plain = make_artifact(tmp_path / "plain")
    packed = compressed_copy(plain, tmp_path / "packed", "model.onnx")
    assert sorted(p.name for p in packed.iterdir()) == [MANIFEST_NAME, "model.onnx.xz"]
    a, b = load_classifier(plain), load_classifier(packed)
    assert b.artifact.sha256 == a.artifact.sha256  # the model's sha256, however stored
    assert b.artifact.model_path.name == "model.onnx.xz" and b.artifact.content is not None
    assert b.artifact.size_bytes == a.artifact.size_bytes == (plain / "model.onnx").stat().st_size
    x = np.stack([a.prepare(phantom("glioma", s)) for s in range(3)])
    np.testing.assert_array_equal(b.predict_batch(x), a.predict_batch(x))
    # decompressed in memory only: nothing new appeared beside it
    assert sorted(p.name for p in packed.iterdir()) == [MANIFEST_NAME, "model.onnx.xz"]


def plain_copy(folder: Path, target: Path) -> Path:
    """``folder`` with its compressed model unpacked and the manifest saying so, as
    ``brainedge ship`` without ``--compress`` would have left it."""
    shutil.copytree(folder, target)
    data = json.loads((target / MANIFEST_NAME).read_text())
    entry = data["extra"].pop(COMPRESSED_KEY)
    packed = target / entry["file"]
    (target / entry["model_file"]).write_bytes(lzma.decompress(packed.read_bytes()))
    packed.unlink()
    del data["files"][entry["file"]]
    data["files"][entry["model_file"]] = entry["model_sha256"]
    (target / MANIFEST_NAME).write_text(json.dumps(data))
    return target


def test_the_compressed_shipped_tflite_loads_through_litert_with_the_plain_answers(
        tmp_path: Path) -> None:
    shipped = shipped_artifacts()["densenet121"]
    assert (shipped / "model.tflite.xz").is_file() and not (shipped / "model.tflite").exists()
    plain = plain_copy(shipped, tmp_path / "plain")
    a, b = load_classifier(plain), load_classifier(shipped)
    assert b.predictor.name == "litert" and b.artifact.sha256 == a.artifact.sha256
    assert (shipped / "model.tflite.xz").stat().st_size < (plain / "model.tflite").stat().st_size
    x = np.stack([a.prepare(phantom(label, 1)) for label in ("glioma", "pituitary")])
    np.testing.assert_array_equal(b.predict_batch(x), a.predict_batch(x))


def edit_manifest(folder: Path, change) -> None:
    data = json.loads((folder / MANIFEST_NAME).read_text())
    change(data)
    (folder / MANIFEST_NAME).write_text(json.dumps(data))


@pytest.mark.arm64
def test_damaged_or_mislabelled_compressed_models_are_refused(tmp_path: Path) -> None:
    need_onnxruntime()
    plain = make_artifact(tmp_path / "plain")

    tampered = compressed_copy(plain, tmp_path / "tampered", "model.onnx")
    blob = bytearray((tampered / "model.onnx.xz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (tampered / "model.onnx.xz").write_bytes(bytes(blob))
    with pytest.raises(ArtifactIntegrityError, match="does not match its manifest"):
        load_classifier(tampered)

    # A re-compressed different model whose manifest kept the old model sha256: the file's
    # own sha256 is updated to pass, so only the check of the model bytes can catch it.
    swapped = compressed_copy(plain, tmp_path / "swapped", "model.onnx")
    other = make_artifact(tmp_path / "other", REVERSED)
    data = (other / "model.onnx").read_bytes()
    (swapped / "model.onnx.xz").write_bytes(lzma.compress(data))

    def forge(m: dict) -> None:
        import hashlib

        m["files"]["model.onnx.xz"] = hashlib.sha256(
            (swapped / "model.onnx.xz").read_bytes()).hexdigest()
        m["extra"][COMPRESSED_KEY]["model_bytes"] = len(data)
    edit_manifest(swapped, forge)
    with pytest.raises(ArtifactIntegrityError, match="the model inside has sha256"):
        load_classifier(swapped)

    longer = compressed_copy(plain, tmp_path / "longer", "model.onnx")
    edit_manifest(longer, lambda m: m["extra"][COMPRESSED_KEY].update(model_bytes=100))
    with pytest.raises(ArtifactIntegrityError, match="decompresses to more than 100 bytes"):
        load_classifier(longer)

    codec = compressed_copy(plain, tmp_path / "codec", "model.onnx")
    edit_manifest(codec, lambda m: m["extra"][COMPRESSED_KEY].update(codec="zstd"))
    with pytest.raises(ArtifactIntegrityError, match="expected codec 'xz'"):
        load_classifier(codec)
