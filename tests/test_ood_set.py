"""The OOD evaluation set (``brainedge data ood``) and its AUROC evaluation, without TensorFlow:
the builder on a tiny fake dataset, NIfTI reslicing, AUROC against a brute-force count, and
``evaluate_ood`` with a stand-in score function."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from brainedge.errors import DatasetError
from cli.main import main
from runtime.decoded import DecodedImage
from runtime.imageio import decode
from training.ood_eval import (
    OODItem,
    auroc,
    bootstrap_auroc_ci,
    evaluate_ood,
    load_ood_set,
)
from training.ood_set import OODSetConfig, build_ood_set
from training.ood_set import volumes as ood_volumes
from training.ood_set.derived import TRANSFORMS
from training.phantoms import CLASS_NAMES, draw_phantom

PER_CLASS = 2


def _fake_dataset(root: Path) -> Path:
    """Kaggle layout with synthetic PNG slices: 3 test and 1 training slice per class."""
    for split, count in (("Training", 1), ("Testing", 3)):
        for class_id, label in enumerate(CLASS_NAMES):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                rng = np.random.default_rng([class_id, i, split == "Testing"])
                ok, buf = cv2.imencode(".png", draw_phantom(label, rng, 64))
                assert ok
                (folder / f"{split[:2]}-{label}-{i}.png").write_bytes(buf.tobytes())
    return root


def _write_nifti(path: Path, volume: np.ndarray, flip_x: bool) -> None:
    """A minimal NIfTI-1 .nii.gz (uint8, 1 mm), its x axis stored left-to-right if flip_x."""
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *volume.shape, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 2, 8)  # uint8, 8 bits
    struct.pack_into("<8f", header, 76, 1, 1, 1, 1, 0, 0, 0, 0)
    struct.pack_into("<3f", header, 108, 352, 1, 0)  # vox_offset, slope, intercept
    struct.pack_into("<h", header, 254, 1)  # sform_code
    sx = -1.0 if flip_x else 1.0
    struct.pack_into("<12f", header, 280, sx, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0)
    header[344:348] = b"n+1\x00"
    stored = volume[::-1] if flip_x else volume
    path.write_bytes(gzip.compress(bytes(header) + stored.transpose(2, 1, 0).tobytes()))


def _head_volume() -> np.ndarray:
    """An ellipsoid head whose right half (high x) is brighter, to see the orientation."""
    x, y, z = np.mgrid[0:40, 0:48, 0:36]
    head = ((x - 19.5) / 17) ** 2 + ((y - 23.5) / 21) ** 2 + ((z - 17.5) / 15) ** 2 <= 1
    return (head * np.where(x >= 20, 200, 100)).astype(np.uint8)


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("templates")
    _write_nifti(folder / "ch2.nii.gz", _head_volume(), flip_x=True)
    return folder


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fake_dataset(tmp_path_factory.mktemp("dataset"))


@pytest.fixture(scope="module")
def built(fake_data: Path, templates: Path, tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ood_volumes, "TEMPLATES", templates)
        out = tmp_path_factory.mktemp("ood") / "set"
        manifest = build_ood_set(fake_data, out, OODSetConfig(per_class=PER_CLASS, seed=3))
    return out, manifest


# --- the builder ------------------------------------------------------------------------------


def test_builder_writes_near_and_far_files_that_all_decode_on_the_upload_path(built) -> None:
    out, manifest = built
    listed = {entry["file"] for entry in manifest["files"]}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert listed == on_disk
    assert {entry["group"] for entry in manifest["files"]} >= {"near", "far"}
    for entry in manifest["files"]:
        decoded = decode((out / entry["file"]).read_bytes(), entry["file"])
        assert decoded.file_format == "png"
        assert decoded.colour == (entry["channels"] == 3)
        assert (decoded.width, decoded.height) == (entry["width"], entry["height"])


def test_every_file_states_group_kind_source_provenance_and_licence(built) -> None:
    out, manifest = built
    on_disk = json.loads((out / "sources.json").read_text("utf-8"))
    assert on_disk == manifest
    for entry in manifest["files"]:
        assert entry["group"] in ("near", "far", "control")
        for key in ("kind", "source", "provenance", "licence"):
            assert isinstance(entry[key], str) and entry[key].strip(), (entry["file"], key)
        data = (out / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    total = sum(n for kinds in manifest["counts"].values() for n in kinds.values())
    assert total == len(manifest["files"])
    readme = (out / "README.md").read_text("utf-8")
    assert "| near | inverted |" in readme and "never commit" in readme


def test_each_transform_takes_a_stratified_sample_of_test_slices(built) -> None:
    _, manifest = built
    for kind in TRANSFORMS:
        entries = [e for e in manifest["files"] if e["group"] == "near" and e["kind"] == kind]
        assert len(entries) == PER_CLASS * len(CLASS_NAMES)
        assert all(e["source"].startswith("dataset: Testing/") for e in entries)
        classes = [e["file"].split("/")[-1].split("-")[0] for e in entries]
        assert sorted(set(classes)) == sorted(CLASS_NAMES)
        assert "same licence as that dataset" in entries[0]["licence"]


def test_drawn_far_images_and_volume_slices_are_in_the_set(built) -> None:
    _, manifest = built
    kinds = {(e["group"], e["kind"]) for e in manifest["files"]}
    assert {("far", "noise"), ("far", "text"), ("far", "structured-noise")} <= kinds
    # The fake templates folder holds ch2 only: control planes and oblique slices from it.
    assert {("control", "mri-standard-plane"), ("near", "mri-oblique")} <= kinds
    skipped = {s["source"] for s in manifest["skipped"]}
    assert any("ch2bet" in s for s in skipped) and any("inia19" in s for s in skipped)


def test_the_same_command_gives_byte_identical_files(built, fake_data, templates, tmp_path,
                                                     monkeypatch) -> None:
    out, manifest = built
    monkeypatch.setattr(ood_volumes, "TEMPLATES", templates)
    again = build_ood_set(fake_data, tmp_path / "again", OODSetConfig(per_class=PER_CLASS,
                                                                     seed=3))
    assert again == manifest
    assert (tmp_path / "again" / "sources.json").read_bytes() == (out / "sources.json"
                                                                  ).read_bytes()
    other = build_ood_set(fake_data, tmp_path / "other", OODSetConfig(per_class=PER_CLASS,
                                                                     seed=4))
    near = {e["file"]: e["sha256"] for e in manifest["files"] if e["kind"] == "noisy"}
    assert near != {e["file"]: e["sha256"] for e in other["files"] if e["kind"] == "noisy"}


def test_rebuilding_replaces_its_own_set_but_never_another_folder(fake_data, tmp_path,
                                                                  monkeypatch) -> None:
    monkeypatch.setattr(ood_volumes, "TEMPLATES", tmp_path / "none")
    out = tmp_path / "set"
    build_ood_set(fake_data, out, OODSetConfig(per_class=1))
    (out / "stale.png").write_bytes(b"x")
    build_ood_set(fake_data, out, OODSetConfig(per_class=1))
    assert not (out / "stale.png").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(DatasetError, match="not an OOD set"):
        build_ood_set(fake_data, foreign, OODSetConfig(per_class=1))
    assert (foreign / "notes.txt").read_text() == "keep"


def test_a_missing_package_is_skipped_with_its_reason(fake_data, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ood_volumes, "TEMPLATES", tmp_path / "none")
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage now raises ImportError
    manifest = build_ood_set(fake_data, tmp_path / "set", OODSetConfig(per_class=1))
    assert {"source": "scikit-image", "reason": "not installed (pip install "
            "'brainedge[train]')"} in manifest["skipped"]
    assert not any(e["source"].startswith("scikit-image") for e in manifest["files"])
    assert any(e["group"] == "far" for e in manifest["files"])


def test_a_missing_dataset_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DatasetError, match="does not exist; pass --data"):
        build_ood_set(tmp_path / "absent", tmp_path / "out")
    result = CliRunner().invoke(main, ["data", "ood", "--data", str(tmp_path / "absent"),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "does not exist; pass --data" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_cli_passes_its_options_to_the_builder(tmp_path, monkeypatch) -> None:
    import training.ood_set

    seen = {}

    def fake_build(data, out, config):
        seen.update(data=data, out=out, config=config)
        return {"counts": {"far": {"noise": 2}}, "skipped": []}

    monkeypatch.setattr(training.ood_set, "build_ood_set", fake_build)
    result = CliRunner().invoke(main, ["data", "ood", "--data", str(tmp_path), "--out",
                                       str(tmp_path / "o"), "--per-class", "4", "--seed", "9"])
    assert result.exit_code == 0, result.output
    assert seen == {"data": tmp_path, "out": tmp_path / "o",
                    "config": OODSetConfig(per_class=4, seed=9)}
    assert "far: 2 images (noise 2)" in result.output
    help_text = CliRunner().invoke(main, ["data", "ood", "--help"])
    assert help_text.exit_code == 0 and "out-of-distribution" in help_text.output


# --- NIfTI volumes ----------------------------------------------------------------------------


def test_nifti_is_read_in_ras_order_whatever_the_stored_direction(tmp_path) -> None:
    head = _head_volume()
    for flip in (False, True):
        _write_nifti(tmp_path / f"v{flip}.nii.gz", head, flip_x=flip)
        volume = ood_volumes.read_nifti(tmp_path / f"v{flip}.nii.gz")
        assert volume.spacing == (1.0, 1.0, 1.0)
        np.testing.assert_array_equal(volume.voxels, head.astype(np.float32))


def test_axial_slice_shows_the_patients_right_on_the_images_left(tmp_path) -> None:
    _write_nifti(tmp_path / "v.nii.gz", _head_volume(), flip_x=True)
    axial = ood_volumes.reslice(ood_volumes.read_nifti(tmp_path / "v.nii.gz"), "axial")
    middle = axial.shape[0] // 2
    left, right = axial[middle, : axial.shape[1] // 2], axial[middle, axial.shape[1] // 2:]
    assert left.max() == pytest.approx(200) and right.max() == pytest.approx(100)


# --- AUROC ------------------------------------------------------------------------------------


def test_auroc_is_one_for_separated_half_for_identical_zero_for_reversed() -> None:
    low, high = np.array([0.1, 0.2, 0.3]), np.array([0.7, 0.8, 0.9, 1.0])
    assert auroc(low, high) == 1.0
    assert auroc(low, low.copy()) == 0.5
    assert auroc(np.full(5, 2.0), np.full(3, 2.0)) == 0.5
    assert auroc(high, low) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_a_brute_force_pairwise_count_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    id_scores = rng.integers(0, 12, 57).astype(float)  # few levels: many ties
    ood_scores = rng.integers(3, 15, 41).astype(float)
    diff = ood_scores[:, None] - id_scores[None, :]
    expected = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert auroc(id_scores, ood_scores) == pytest.approx(expected, abs=1e-12)


def test_auroc_rejects_empty_or_non_finite_scores() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        auroc(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        auroc(np.array([1.0, np.nan]), np.array([1.0]))


def test_bootstrap_interval_holds_the_estimate_and_is_seeded() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(0, 1, 200), rng.normal(1, 1, 80)
    lo, hi = bootstrap_auroc_ci(x, y, n_bootstrap=300, seed=1)
    assert lo < auroc(x, y) < hi and 0.0 <= lo < hi <= 1.0
    assert bootstrap_auroc_ci(x, y, n_bootstrap=300, seed=1) == (lo, hi)
    assert bootstrap_auroc_ci(np.zeros(5), np.ones(4), n_bootstrap=50) == (1.0, 1.0)


# --- evaluate_ood -----------------------------------------------------------------------------


def _decoded(value: int, colour: float = 0.0) -> DecodedImage:
    rng = np.random.default_rng(value)
    pixels = np.zeros((64, 64), np.uint8)
    pixels[8:56, 8:56] = np.clip(rng.normal(value, 20, (48, 48)), 0, 255).astype(np.uint8)
    return DecodedImage(pixels, "png", colour=colour > 0, colourful_fraction=colour)


def _mean_scores(grays):
    means = np.array([g.mean() for g in grays])
    return {"mean": means, "negated": -means}


def test_evaluate_ood_reports_auroc_per_group_and_kind_and_shares_flagged() -> None:
    id_images = [_decoded(60 + i) for i in range(20)]
    groups = {
        "far": [OODItem(_decoded(200, colour=0.5), "far", "photo", f"f{i}") for i in range(4)],
        "near": [OODItem(_decoded(150), "near", "inverted", "n0"),
                 OODItem(_decoded(70), "near", "noisy", "n1")],
    }
    calls = []

    def score_fn(grays):
        calls.append(len(grays))
        return _mean_scores(grays)

    threshold = float(np.quantile([im.pixels.mean() for im in id_images], 0.95))
    result = evaluate_ood(score_fn, id_images, groups, threshold, "mean", n_bootstrap=100,
                          batch_size=8)
    assert max(calls) <= 8
    assert [r.name for r in result.rows] == ["near", "near/inverted", "near/noisy", "far",
                                             "far/photo"]
    far = result.row("far")
    assert far.auroc["mean"] == 1.0 and far.auroc["negated"] == 0.0
    assert far.flagged == 1.0 and far.rules_flagged == 1.0 and far.rules_only == 0.0
    assert result.row("near/noisy").flagged == 0.0
    assert result.id_flagged == pytest.approx(0.05) and result.id_rules_flagged == 0.0
    targets = result.targets()
    assert targets["auroc_far"]["met"] is True and targets["id_flagged"]["met"] is False
    report = result.to_dict()
    assert json.loads(json.dumps(report)) == report
    markdown = result.to_markdown()
    assert "AUROC mean [95% CI]" in markdown and "| far/photo |" in markdown
    assert "id_flagged (mean): 5.0%, target ≤ 2%: MISSED" in markdown


def test_evaluate_ood_without_threshold_reports_auroc_only() -> None:
    id_images = [_decoded(60 + i) for i in range(6)]
    groups = {"far": [OODItem(_decoded(220), "far", "noise", "x")]}
    result = evaluate_ood(_mean_scores, id_images, groups, None, "mean", n_bootstrap=20)
    assert result.id_flagged is None and result.row("far").flagged is None
    assert "not measured" in result.to_markdown()


def test_evaluate_ood_rejects_an_unknown_method_and_a_wrong_number_of_scores() -> None:
    id_images = [_decoded(60), _decoded(61)]
    groups = {"far": [OODItem(_decoded(220), "far", "noise", "x")]}
    with pytest.raises(ValueError, match="method 'energy' is not among"):
        evaluate_ood(_mean_scores, id_images, groups, 1.0, "energy")
    with pytest.raises(ValueError, match="1 scores for 2 images"):
        evaluate_ood(lambda grays: {"mean": np.zeros(1)}, id_images, groups, 1.0, "mean")


def test_load_ood_set_reads_the_built_folder_by_group(built) -> None:
    out, manifest = built
    groups = load_ood_set(out)
    assert sum(len(items) for items in groups.values()) == len(manifest["files"])
    assert {item.kind for item in groups["near"]} >= set(TRANSFORMS)
    with pytest.raises(DatasetError, match="brainedge data ood"):
        load_ood_set(out / "near")


# --- brainedge evaluate-ood: an artifact's own score on the set ------------------------------

def test_evaluate_ood_scores_an_artifact_against_the_test_split(built, fake_data,
                                                                tmp_path) -> None:
    from click.testing import CliRunner

    from cli.main import main
    from runtime import load_classifier
    from tests.test_trust import with_trust
    from tests.test_webapp_support import make_artifact, need_onnxruntime

    need_onnxruntime()
    artifact = with_trust(make_artifact(tmp_path / "onnx-trusted", features=True), 2.0, 0.4)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["evaluate-ood", str(artifact), "--ood-set",
                                       str(built[0]), "--data", str(fake_data), "--out",
                                       str(out), "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "ood.json").read_text())
    assert report["method"] == "mahalanobis" and report["threshold"] == 0.4
    # The share of test slices flagged is the artifact's own score against its threshold.
    classifier = load_classifier(artifact)
    tests = sorted((fake_data / "Testing").rglob("*.png"))
    scores = classifier.ood_scores([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in tests])
    assert report["id_flagged"] == pytest.approx(np.mean(scores["mahalanobis"] > 0.4))
    assert {"near", "far"} <= {row["name"] for row in report["rows"]}
    assert "AUROC" in (out / "ood.md").read_text()
    # An artifact without statistics cannot be evaluated, and the message says what to do.
    plain = make_artifact(tmp_path / "onnx-plain")
    refused = CliRunner().invoke(main, ["evaluate-ood", str(plain), "--ood-set", str(built[0]),
                                        "--data", str(fake_data), "--out", str(out)])
    assert refused.exit_code == 1 and "carries no out-of-distribution" in refused.output


def test_the_reference_test_split_defaults_to_the_training_data_and_refuses_the_phantoms(
        tmp_path) -> None:
    from brainedge.manifest import write_json
    from training.ood_eval import reference_data
    from training.phantoms import MARKER_NAME

    real, phantoms = tmp_path / "brain-tumor-mri", tmp_path / "phantoms"
    real.mkdir()
    phantoms.mkdir()
    (phantoms / MARKER_NAME).write_text("{}")
    run, variant = tmp_path / "runs" / "densenet121", tmp_path / "int8"
    run.mkdir(parents=True)
    variant.mkdir()
    write_json(run / "manifest.json", {"format": "keras", "extra": {"dataset_root": str(real)}})
    write_json(variant / "manifest.json", {"format": "tflite", "parent": str(run), "extra": {}})

    assert reference_data(run, None) == real
    assert reference_data(variant, None) == real
    copy = tmp_path / "copy-of-the-dataset"  # the same data elsewhere, e.g. on a Pi
    copy.mkdir()
    assert reference_data(variant, copy) == copy
    with pytest.raises(DatasetError, match=r"synthetic phantoms, but .* was trained on"):
        reference_data(variant, phantoms)
    orphan = tmp_path / "orphan"  # copied without its parent run
    orphan.mkdir()
    write_json(orphan / "manifest.json", {"format": "tflite", "parent": "gone", "extra": {}})
    assert reference_data(orphan, copy) == copy
    with pytest.raises(DatasetError, match="pass --data"):
        reference_data(orphan, None)
