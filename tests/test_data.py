"""training.data.scan_dataset (layouts, class names, carved splits, errors) and
training.pipeline.load_prepared (unreadable files, odd image formats). No TensorFlow needed."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from brainedge.errors import DatasetError
from runtime.preprocess import PreprocessSpec
from training.data import (
    CLASS_NAMES,
    DatasetIndex,
    Sample,
    canonical_class,
    scan_dataset,
    stratified_split,
)
from training.pipeline import load_prepared

SPEC = PreprocessSpec(image_size=32, scaling="torch")


def _png_bytes(image: np.ndarray | None = None, ext: str = ".png") -> bytes:
    if image is None:
        image = np.zeros((16, 16), np.uint8)
        cv2.circle(image, (8, 8), 5, 200, -1)
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


_TINY_PNG = _png_bytes()


def _put(folder: Path, n: int, ext: str = ".png", prefix: str = "img") -> list[Path]:
    """``n`` tiny valid images in ``folder`` (PNG content; the name's suffix is ``ext``)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{prefix}{i:03d}{ext}"
        path.write_bytes(_TINY_PNG)
        paths.append(path)
    return paths


def _kaggle(root: Path, train: str = "Training", test: str = "Testing",
            classes: tuple[str, ...] = ("glioma", "meningioma", "notumor", "pituitary"),
            n_train: int = 3, n_test: int = 2) -> Path:
    for name in classes:
        _put(root / train / name, n_train)
        _put(root / test / name, n_test)
    return root


def _paths(samples: tuple[Sample, ...]) -> set[Path]:
    return {s.path for s in samples}


def _labels_by_folder(index: DatasetIndex) -> dict[str, set[str]]:
    """Folder name -> the set of class names its samples were labelled with."""
    out: dict[str, set[str]] = {}
    for sample in index.train + index.test:
        out.setdefault(sample.path.parent.name, set()).add(index.class_names[sample.label])
    return out


# --- layouts --------------------------------------------------------------------------------


def test_kaggle_layout_is_indexed_with_given_splits_and_canonical_class_order(tmp_path):
    root = _kaggle(tmp_path, n_train=3, n_test=2)

    index = scan_dataset(root)

    assert index.class_names == CLASS_NAMES
    assert not index.carved_test
    assert index.counts() == {
        "train": dict.fromkeys(CLASS_NAMES, 3),
        "test": dict.fromkeys(CLASS_NAMES, 2),
    }
    assert all("Training" in s.path.parts for s in index.train)
    assert all("Testing" in s.path.parts for s in index.test)
    assert _labels_by_folder(index) == {name: {name} for name in CLASS_NAMES}


@pytest.mark.parametrize(("train", "test"), [("train", "test"), ("TRAIN", "Test")])
def test_lower_and_mixed_case_split_folder_names_are_recognised(tmp_path, train, test):
    root = _kaggle(tmp_path, train=train, test=test)

    index = scan_dataset(root)

    assert not index.carved_test
    assert all(train in s.path.parts for s in index.train)
    assert all(test in s.path.parts for s in index.test)
    assert len(index.train) == 4 * 3 and len(index.test) == 4 * 2


@pytest.mark.parametrize(
    ("folder", "canonical"),
    [
        ("glioma_tumor", "glioma"),
        ("Glioma", "glioma"),
        ("meningioma_tumor", "meningioma"),
        ("no_tumor", "notumor"),
        ("notumor", "notumor"),
        ("pituitary_tumor", "pituitary"),
        ("Pituitary-Tumour", "pituitary"),
    ],
)
def test_class_folder_aliases_are_canonicalised(folder, canonical):
    assert canonical_class(folder) == canonical


def test_aliased_class_folders_get_the_canonical_names_labels_and_order(tmp_path):
    folders = ("Glioma", "meningioma_tumor", "no_tumor", "pituitary_tumor")
    root = _kaggle(tmp_path, classes=folders)

    index = scan_dataset(root)

    assert index.class_names == ("glioma", "meningioma", "notumor", "pituitary")
    assert _labels_by_folder(index) == {
        "Glioma": {"glioma"},
        "meningioma_tumor": {"meningioma"},
        "no_tumor": {"notumor"},
        "pituitary_tumor": {"pituitary"},
    }


def test_two_folders_that_alias_the_same_class_are_merged(tmp_path):
    root = _kaggle(tmp_path, classes=("glioma", "meningioma", "notumor", "pituitary"))
    _put(root / "Training" / "glioma_tumor", 2, prefix="extra")

    index = scan_dataset(root)

    assert index.class_names == CLASS_NAMES
    assert index.counts()["train"]["glioma"] == 3 + 2


def test_hidden_folders_such_as_notebook_checkpoints_are_not_classes(tmp_path):
    root = _kaggle(tmp_path)
    _put(root / "Training" / ".ipynb_checkpoints", 2)
    _put(root / "Testing" / ".ipynb_checkpoints", 2)

    index = scan_dataset(root)

    assert index.class_names == CLASS_NAMES


# --- one folder per class: a carved, stratified, seeded test split ---------------------------


def _per_class(root: Path, n: int = 10) -> Path:
    for name in ("glioma", "meningioma", "notumor", "pituitary"):
        _put(root / name, n)
    return root


def test_one_folder_per_class_tree_gets_a_carved_stratified_test_split(tmp_path):
    root = _per_class(tmp_path, n=10)

    index = scan_dataset(root, test_fraction=0.2, seed=0)

    assert index.carved_test
    assert index.class_names == CLASS_NAMES
    assert index.counts() == {
        "train": dict.fromkeys(CLASS_NAMES, 8),
        "test": dict.fromkeys(CLASS_NAMES, 2),
    }
    assert not _paths(index.train) & _paths(index.test)
    assert _paths(index.train) | _paths(index.test) == set(root.rglob("*.png"))


def test_carved_split_is_reproducible_for_the_same_seed(tmp_path):
    root = _per_class(tmp_path)

    first = scan_dataset(root, seed=3)
    again = scan_dataset(root, seed=3)

    assert first.train == again.train
    assert first.test == again.test


def test_carved_split_differs_for_a_different_seed(tmp_path):
    root = _per_class(tmp_path)

    assert _paths(scan_dataset(root, seed=1).test) != _paths(scan_dataset(root, seed=2).test)


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.99])
def test_every_class_keeps_at_least_one_sample_in_each_split(fraction):
    samples = [Sample(Path(f"c{label}/{i}.png"), label) for label in range(3) for i in range(3)]

    train, test = stratified_split(samples, fraction, seed=0)

    assert {s.label for s in train} == {0, 1, 2}
    assert {s.label for s in test} == {0, 1, 2}
    assert not set(train) & set(test)
    assert len(train) + len(test) == len(samples)


def test_a_class_with_one_image_cannot_be_split(tmp_path):
    root = _per_class(tmp_path, n=5)
    lonely = tmp_path / "glioma"
    for path in sorted(lonely.iterdir())[1:]:
        path.unlink()

    with pytest.raises(DatasetError, match="at least 2 per class"):
        scan_dataset(root)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_fraction_outside_zero_one_is_refused(fraction):
    samples = [Sample(Path(f"{i}.png"), i % 2) for i in range(6)]
    with pytest.raises(DatasetError, match="between 0 and 1"):
        stratified_split(samples, fraction, seed=0)


# --- layout errors ----------------------------------------------------------------------------


def test_missing_dataset_folder_is_a_dataset_error_naming_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError, match="does not exist") as info:
        scan_dataset(missing)
    assert str(missing) in str(info.value)


def test_a_file_instead_of_a_folder_is_a_dataset_error(tmp_path):
    path = tmp_path / "data.zip"
    path.write_bytes(b"PK")
    with pytest.raises(DatasetError, match="is a file"):
        scan_dataset(path)


def test_a_folder_without_class_sub_folders_is_a_dataset_error(tmp_path):
    _put(tmp_path, 4)  # images directly in the root, no class folders
    with pytest.raises(DatasetError, match="no class sub-folders"):
        scan_dataset(tmp_path)


def test_training_without_testing_is_a_dataset_error(tmp_path):
    for name in CLASS_NAMES:
        _put(tmp_path / "Training" / name, 2)
    with pytest.raises(DatasetError, match="Training/ folder but not the other split"):
        scan_dataset(tmp_path)


def test_testing_without_training_is_a_dataset_error(tmp_path):
    for name in CLASS_NAMES:
        _put(tmp_path / "Testing" / name, 2)
    with pytest.raises(DatasetError, match="Testing/ folder but not the other split"):
        scan_dataset(tmp_path)


def test_split_folders_without_class_folders_are_a_dataset_error(tmp_path):
    (tmp_path / "Training").mkdir()
    (tmp_path / "Testing").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        scan_dataset(tmp_path)


def test_different_classes_in_training_and_testing_is_a_dataset_error(tmp_path):
    root = _kaggle(tmp_path, classes=("glioma", "meningioma", "notumor"))
    _put(root / "Training" / "pituitary", 2)

    with pytest.raises(DatasetError, match="differ from Testing classes") as info:
        scan_dataset(root)
    assert "pituitary" in str(info.value)


def test_an_empty_class_folder_is_a_dataset_error_naming_the_class(tmp_path):
    root = _per_class(tmp_path, n=3)
    (root / "Extra").mkdir()

    with pytest.raises(DatasetError, match="contain no images") as info:
        scan_dataset(root)
    assert "'extra'" in str(info.value)


def test_a_class_folder_in_both_splits_without_images_is_a_dataset_error(tmp_path):
    root = _kaggle(tmp_path)
    (root / "Training" / "other").mkdir()
    (root / "Testing" / "other").mkdir()
    (root / "Testing" / "other" / "readme.txt").write_text("nothing here")

    with pytest.raises(DatasetError, match="contain no images") as info:
        scan_dataset(root)
    assert "other" in str(info.value)


def test_a_single_class_is_a_dataset_error(tmp_path):
    _put(tmp_path / "glioma", 5)
    with pytest.raises(DatasetError, match="at least 2 are needed"):
        scan_dataset(tmp_path)


# --- which files count as images --------------------------------------------------------------


def test_non_image_files_are_skipped_and_counted(tmp_path, caplog):
    root = _kaggle(tmp_path)
    (root / "Training" / "glioma" / "notes.txt").write_text("not an image")
    (root / "Testing" / "notumor" / "labels.csv").write_text("a,b\n")
    (root / "Training" / "pituitary" / "report.pdf").write_bytes(b"%PDF-1.7")
    # DICOM slices are images (decoded by content, like the others).
    (root / "Training" / "pituitary" / "scan.dcm").write_bytes(b"\0" * 128 + b"DICM")

    with caplog.at_level(logging.WARNING, logger="training.data"):
        index = scan_dataset(root)

    assert index.skipped_non_images == 3
    assert index.counts()["train"]["glioma"] == 3
    indexed = {s.path.suffix for s in index.train + index.test}
    assert indexed == {".png", ".dcm"}
    assert "skipped 3 non-image file(s)" in caplog.text


def test_a_clean_dataset_reports_no_skipped_files(tmp_path):
    assert scan_dataset(_kaggle(tmp_path)).skipped_non_images == 0


def test_hidden_os_files_are_never_indexed(tmp_path):
    # .DS_Store (Finder) and ._name.jpg (macOS AppleDouble) must not become samples; hidden
    # files are ignored outright and not counted as skipped non-images.
    root = _kaggle(tmp_path)
    (root / "Training" / "glioma" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "Testing" / "glioma" / "._img000.png").write_bytes(b"\x00\x05\x16\x07")

    index = scan_dataset(root)

    names = {s.path.name for s in index.train + index.test}
    assert ".DS_Store" not in names
    assert "._img000.png" not in names
    assert index.counts()["test"]["glioma"] == 2


@pytest.mark.parametrize("ext", [".JPG", ".Png", ".jpeg", ".JPEG", ".jpg", ".bmp", ".TIF"])
def test_image_extensions_are_recognised_in_any_case(tmp_path, ext):
    root = _kaggle(tmp_path, n_train=1, n_test=1)
    _put(root / "Training" / "glioma", 2, ext=ext, prefix="cased")

    index = scan_dataset(root)

    assert index.counts()["train"]["glioma"] == 1 + 2
    assert sum(s.path.suffix == ext for s in index.train) == 2
    assert index.skipped_non_images == 0


def test_images_in_nested_sub_folders_of_a_class_are_found(tmp_path):
    root = _kaggle(tmp_path, n_train=1)
    _put(root / "Training" / "meningioma" / "patient7" / "series2", 2, prefix="deep")

    assert scan_dataset(root).counts()["train"]["meningioma"] == 1 + 2


# --- load_prepared: unreadable files and odd formats ------------------------------------------


def _head(size: tuple[int, int] = (64, 64), value: int = 180) -> np.ndarray:
    """A bright ellipse on black: something ``crop_to_brain`` keeps."""
    h, w = size
    image = np.zeros((h, w), np.uint8)
    cv2.ellipse(image, (w // 2, h // 2), (max(w // 3, 2), max(h // 3, 2)), 0, 0, 360, value, -1)
    return image


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def test_corrupt_empty_and_truncated_files_are_skipped_and_counted_with_a_warning(
    tmp_path, caplog
):
    good = [_write(tmp_path / f"good{i}.png", _head()) for i in range(3)]
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, np.uint8).tobytes())
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    jpeg = _png_bytes(_head((96, 96)), ext=".jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    bad = [garbage, empty, truncated]
    samples = [Sample(p, i % 2) for i, p in enumerate(good + bad)]

    with caplog.at_level(logging.WARNING, logger="training.pipeline"):
        prepared = load_prepared(samples, SPEC, workers=2)

    assert len(prepared) == 3
    assert prepared.images.shape == (3, 32, 32, 3)
    assert prepared.paths == tuple(str(p) for p in good)
    assert prepared.labels.tolist() == [0, 1, 0]
    assert {Path(path) for path, _ in prepared.skipped} == set(bad)
    reasons = dict(prepared.skipped)
    assert "empty" in reasons[str(empty)]
    assert "not a readable image" in reasons[str(garbage)]
    assert "skipped 3 unreadable image(s)" in caplog.text


def test_a_file_that_vanished_after_the_scan_is_skipped(tmp_path):
    good = _write(tmp_path / "good.png", _head())
    gone = tmp_path / "gone.png"

    prepared = load_prepared([Sample(good, 0), Sample(gone, 1)], SPEC, workers=1)

    assert prepared.paths == (str(good),)
    assert [Path(p) for p, _ in prepared.skipped] == [gone]


def test_all_files_unreadable_is_a_dataset_error(tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"bad{i}.jpg"
        path.write_bytes(b"not a jpeg at all" * i)
        paths.append(path)

    with pytest.raises(DatasetError, match="none of the 3 images could be read"):
        load_prepared([Sample(p, 0) for p in paths], SPEC, workers=1)


def _odd_images() -> dict[str, np.ndarray]:
    gray = _head((300, 37))
    rgb = cv2.cvtColor(_head((512, 600)), cv2.COLOR_GRAY2BGR)
    rgb[..., 0] //= 2  # not equal channels: a real colour image
    rgba = cv2.cvtColor(_head((80, 120)), cv2.COLOR_GRAY2BGRA)
    rgba[..., 3] = 255
    deep = _head((90, 70)).astype(np.uint16) * 200  # 16-bit, values up to 36000
    return {"tall_gray.png": gray, "wide_rgb.jpg": rgb, "rgba.png": rgba, "deep16.png": deep}


def test_images_of_any_size_and_format_come_out_square_rgb_uint8(tmp_path):
    images = _odd_images()
    paths = [_write(tmp_path / name, image) for name, image in images.items()]
    assert cv2.imread(str(tmp_path / "deep16.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert cv2.imread(str(tmp_path / "rgba.png"), cv2.IMREAD_UNCHANGED).shape[2] == 4

    prepared = load_prepared([Sample(p, 0) for p in paths], SPEC, workers=2)

    assert prepared.skipped == ()
    assert prepared.images.shape == (len(paths), 32, 32, 3)
    assert prepared.images.dtype == np.uint8
    for image in prepared.images:
        # Every format is reduced to gray, so the three channels are equal, and the head shows.
        assert np.array_equal(image[..., 0], image[..., 1])
        assert np.array_equal(image[..., 0], image[..., 2])
        assert image.max() > 100


def test_a_16_bit_image_is_stretched_not_clipped(tmp_path):
    path = _write(tmp_path / "deep16.png", _head((64, 64), value=1).astype(np.uint16) * 3000)

    prepared = load_prepared([Sample(path, 0)], PreprocessSpec(image_size=64, crop_brain=False,
                                                              bilateral_d=0), workers=1)

    assert prepared.images.max() == 255
    assert prepared.images.min() == 0
