"""brainedge.manifest: atomic writes, manifests with sha256 sums, and refusing bad folders."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from brainedge.errors import ArtifactIntegrityError, RunDirError
from brainedge.manifest import (
    MANIFEST_NAME,
    Manifest,
    atomic_path,
    hash_files,
    load_manifest,
    read_json,
    write_json,
    write_manifest,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _artifact(folder: Path) -> Manifest:
    """A small artifact: one file and one SavedModel-like folder, with its manifest written."""
    (folder / "model.keras").write_bytes(b"weights" * 100)
    (folder / "saved_model" / "variables").mkdir(parents=True)
    (folder / "saved_model" / "saved_model.pb").write_bytes(b"graph")
    (folder / "saved_model" / "variables" / "variables.index").write_bytes(b"index")
    manifest = Manifest(
        model="densenet121",
        format="keras",
        precision="float32",
        input_spec={"shape": [None, 64, 64, 3], "dtype": "float32"},
        class_names=("glioma", "meningioma", "notumor", "pituitary"),
        preprocessing={"image_size": 64, "scaling": "torch"},
        files=hash_files(folder, ["model.keras", "saved_model"]),
        metrics={"val_accuracy": 0.9},
        parent=None,
        extra={"epochs_run": 3},
    )
    write_manifest(folder, manifest)
    return manifest


# --- atomic writes ----------------------------------------------------------------------------


def test_atomic_path_replaces_the_target_when_the_block_succeeds(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    with atomic_path(target) as tmp:
        assert tmp != target
        assert tmp.parent == target.parent
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible until the block ends

    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_path_leaves_the_target_untouched_and_no_temp_file_when_the_block_raises(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_path_does_not_create_the_target_when_the_block_raises(tmp_path):
    target = tmp_path / "sub" / "out.json"

    with pytest.raises(KeyError), atomic_path(target) as tmp:
        tmp.write_text("{")
        raise KeyError("boom")

    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_written_files_are_readable_by_others(tmp_path):
    target = tmp_path / "report.json"
    write_json(target, {"a": 1})
    assert _mode(target) == 0o644

    with atomic_path(tmp_path / "model.bin") as tmp:
        tmp.write_bytes(b"\x00")
    assert _mode(tmp_path / "model.bin") == 0o644


def test_write_json_and_read_json_round_trip(tmp_path):
    data = {"name": "run", "values": [1, 2.5, None], "nested": {"ok": True}}
    write_json(tmp_path / "x.json", data)
    assert read_json(tmp_path / "x.json") == data


# --- manifests --------------------------------------------------------------------------------


def test_write_and_load_manifest_round_trip(tmp_path):
    manifest = _artifact(tmp_path)

    loaded = load_manifest(tmp_path)

    assert loaded == manifest
    assert loaded.class_names == ("glioma", "meningioma", "notumor", "pituitary")
    assert (tmp_path / MANIFEST_NAME).is_file()
    assert _mode(tmp_path / MANIFEST_NAME) == 0o644


def test_manifest_lists_every_file_of_a_folder_artifact(tmp_path):
    manifest = _artifact(tmp_path)
    assert set(manifest.files) == {
        "model.keras",
        "saved_model/saved_model.pb",
        "saved_model/variables/variables.index",
    }


def test_a_tampered_file_raises_an_integrity_error_naming_it(tmp_path):
    _artifact(tmp_path)
    (tmp_path / "saved_model" / "saved_model.pb").write_bytes(b"graph, edited")

    with pytest.raises(ArtifactIntegrityError) as info:
        load_manifest(tmp_path)
    message = str(info.value)
    assert "saved_model/saved_model.pb" in message
    assert "sha256" in message
    assert "model.keras" not in message  # the intact file is not blamed


def test_a_missing_file_raises_an_integrity_error_naming_it(tmp_path):
    _artifact(tmp_path)
    (tmp_path / "model.keras").unlink()

    with pytest.raises(ArtifactIntegrityError, match=r"model\.keras: missing"):
        load_manifest(tmp_path)


def test_verification_can_be_skipped(tmp_path):
    manifest = _artifact(tmp_path)
    (tmp_path / "model.keras").unlink()
    assert load_manifest(tmp_path, verify=False) == manifest


def test_a_folder_without_a_manifest_is_a_run_dir_error(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"weights")
    with pytest.raises(RunDirError, match=r"has no manifest\.json"):
        load_manifest(tmp_path)


def test_a_half_written_manifest_is_a_run_dir_error(tmp_path):
    manifest = _artifact(tmp_path)
    text = json.dumps(manifest.to_dict())
    (tmp_path / MANIFEST_NAME).write_text(text[: len(text) // 2])

    with pytest.raises(RunDirError, match="not valid JSON"):
        load_manifest(tmp_path)


def test_a_manifest_with_unknown_fields_is_refused(tmp_path):
    manifest = _artifact(tmp_path)
    data = manifest.to_dict() | {"quantized_by": "someone"}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))

    with pytest.raises(ArtifactIntegrityError, match="quantized_by"):
        load_manifest(tmp_path)


# --- hashing ----------------------------------------------------------------------------------


def test_hash_files_hashes_a_file_and_every_file_inside_a_folder(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"alpha")
    (tmp_path / "dir" / "deep").mkdir(parents=True)
    (tmp_path / "dir" / "one.txt").write_bytes(b"one")
    (tmp_path / "dir" / "deep" / "two.txt").write_bytes(b"two")

    hashes = hash_files(tmp_path, ["a.bin", "dir"])

    assert hashes == {
        "a.bin": hashlib.sha256(b"alpha").hexdigest(),
        "dir/deep/two.txt": hashlib.sha256(b"two").hexdigest(),
        "dir/one.txt": hashlib.sha256(b"one").hexdigest(),
    }


def test_hash_files_of_a_missing_path_is_a_run_dir_error(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        hash_files(tmp_path, ["nothing.h5"])
