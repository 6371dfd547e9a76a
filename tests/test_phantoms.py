"""The embedded phantom dataset: reproducible, laid out like Kaggle, and actually learnable."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from brainedge.errors import ConfigError, DatasetError
from training.phantoms import (
    CLASS_NAMES,
    MARKER_NAME,
    PhantomConfig,
    draw_phantom,
    generate_phantoms,
)

SMALL = PhantomConfig(train_per_class=3, test_per_class=2, image_size=48, seed=7)


def _images(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jpg"))


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- drawing --------------------------------------------------------------------------------


@pytest.mark.parametrize("label", CLASS_NAMES)
def test_draw_phantom_is_byte_identical_for_the_same_seed(label: str) -> None:
    first = draw_phantom(label, _rng(123), 96)
    again = draw_phantom(label, _rng(123), 96)
    other = draw_phantom(label, _rng(124), 96)
    assert first.dtype == np.uint8 and first.shape == (96, 96)
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def test_draw_phantom_has_a_dark_background_and_a_bright_head() -> None:
    img = draw_phantom("notumor", _rng(0), 128).astype(np.float32)
    corners = np.concatenate([img[:8, :8].ravel(), img[-8:, -8:].ravel()])
    centre = img[48:80, 48:80]
    assert corners.mean() < 30
    assert centre.mean() > 3 * corners.mean() + 40


def test_draw_phantom_rejects_unknown_class_and_bad_size() -> None:
    with pytest.raises(ConfigError, match="unknown phantom class"):
        draw_phantom("glioma_tumor", _rng(0), 64)
    with pytest.raises(ConfigError, match="between 32 and 1024"):
        draw_phantom("glioma", _rng(0), 16)


# --- what makes the classes differ ----------------------------------------------------------


def _bright_fraction(img: np.ndarray) -> float:
    """Share of head pixels far brighter than the head's median tissue."""
    head = img > 40
    tissue = np.median(img[head])
    inner = cv2.erode(head.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    # Eroding the head mask drops the bright scalp ring, which every class has.
    return float(((img > tissue + 60) & inner).sum() / max(head.sum(), 1))


def _mean_bright_fraction(label: str, n: int = 24) -> float:
    return float(np.mean([_bright_fraction(draw_phantom(label, _rng(i), 96)) for i in range(n)]))


def test_every_tumor_class_adds_bright_tissue_that_notumor_lacks() -> None:
    baseline = _mean_bright_fraction("notumor")
    for label in ("glioma", "meningioma", "pituitary"):
        assert _mean_bright_fraction(label) > baseline + 0.002, label


def _smoothed(label: str, seed: int, size: int = 96) -> np.ndarray:
    # A light blur so single noisy pixels do not count as lesions.
    img = draw_phantom(label, _rng(seed), size).astype(np.float32)
    return cv2.GaussianBlur(img, (0, 0), 1.0)


def _sella_contrast(img: np.ndarray) -> float:
    """Brightest spot below the centre on the midline, relative to the head's median tissue."""
    size = img.shape[0]
    tissue = np.median(img[img > 40])
    region = img[int(size * 0.55) : int(size * 0.78), int(size * 0.38) : int(size * 0.62)]
    return float(region.max() - tissue)


def test_pituitary_lesion_is_a_bright_spot_below_the_centre_on_the_midline() -> None:
    pit = np.array([_sella_contrast(_smoothed("pituitary", i)) for i in range(40)])
    normal = np.array([_sella_contrast(_smoothed("notumor", i)) for i in range(40)])
    assert (pit > 60).mean() >= 0.8
    assert (normal > 60).mean() <= 0.25


def _bright_radius(img: np.ndarray) -> float:
    """Median distance of bright in-head pixels from the head centre (1 = head edge), or NaN."""
    head = img > 40
    inner = cv2.erode(head.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    bright = (img > np.median(img[head]) + 60) & inner
    if bright.sum() < 4:
        return float("nan")
    ys, xs = np.nonzero(head)
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    r = np.hypot(yy - ys.mean(), xx - xs.mean()) / np.sqrt(head.sum() / np.pi)
    return float(np.median(r[bright]))


def test_meningioma_sits_at_the_skull_while_glioma_and_pituitary_are_deeper() -> None:
    where = {
        label: np.nanmedian([_bright_radius(_smoothed(label, i)) for i in range(40)])
        for label in ("glioma", "meningioma", "pituitary")
    }
    assert where["meningioma"] > 0.65
    assert where["meningioma"] > where["glioma"] + 0.15
    assert where["pituitary"] < 0.5


def _features(img: np.ndarray) -> np.ndarray:
    """Pose-independent summary: intensity histogram of the head and where its bright bits are."""
    im = img.astype(np.float32) / 255.0
    head = im > 0.15
    hist, _ = np.histogram(im[head], bins=16, range=(0.0, 1.0))
    ys, xs = np.nonzero(head)
    yy, xx = np.mgrid[: im.shape[0], : im.shape[1]]
    r = np.hypot(yy - ys.mean(), xx - xs.mean()) / np.sqrt(head.sum() / np.pi)
    bright = im > np.percentile(im[head], 97)
    rings = [(bright & (r >= lo) & (r < lo + 0.2)).sum() for lo in np.arange(0.0, 1.2, 0.2)]
    return np.concatenate([hist, rings]) / head.sum()


def _split(split_seed: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    feats, labels = [], []
    for k, label in enumerate(CLASS_NAMES):
        for i in range(per_class):
            rng = np.random.default_rng([split_seed, k, i])
            feats.append(_features(draw_phantom(label, rng, 64)))
            labels.append(k)
    return np.array(feats), np.array(labels)


def test_a_nearest_centroid_classifier_beats_chance_on_held_out_phantoms() -> None:
    # Chance is 0.25. A CNN sees far more than these 22 numbers; if even they separate the
    # classes on unseen images, the labels are learnable rather than noise.
    x_train, y_train = _split(1, 50)
    x_test, y_test = _split(2, 25)
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    centroids = np.stack([x_train[y_train == k].mean(0) for k in range(len(CLASS_NAMES))])
    pred = ((x_test[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    accuracy = float((pred == y_test).mean())
    assert accuracy > 0.45, f"held-out accuracy {accuracy:.2f}"


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"train_per_class": 0}, ">= 1"),
        ({"test_per_class": -3}, ">= 1"),
        ({"image_size": 31}, "between 32 and 1024"),
        ({"image_size": 1025}, "between 32 and 1024"),
        ({"seed": -1}, "seed"),
        ({"image_size": 64.0}, "integer"),
        ({"train_per_class": True}, "integer"),
    ],
)
def test_invalid_config_raises_config_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PhantomConfig(**kwargs)


def test_default_config_is_valid_and_matches_the_documented_defaults() -> None:
    cfg = PhantomConfig()
    assert (cfg.train_per_class, cfg.test_per_class, cfg.image_size, cfg.seed) == (200, 50, 160, 0)


# --- dataset on disk ------------------------------------------------------------------------


def test_generate_writes_kaggle_layout_with_expected_counts(tmp_path: Path) -> None:
    out = generate_phantoms(tmp_path / "phantoms", SMALL)
    assert out == tmp_path / "phantoms"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["Testing", "Training"]
    for split, count in (("Training", 3), ("Testing", 2)):
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(CLASS_NAMES)
        for label in CLASS_NAMES:
            names = sorted(p.name for p in (out / split / label).iterdir())
            assert len(names) == count
            assert all(n.startswith(f"phantom-{label}-") and n.endswith(".jpg") for n in names)
    assert "NOT medical data" in (out / "README.md").read_text(encoding="utf-8")
    marker = json.loads((out / MARKER_NAME).read_text(encoding="utf-8"))
    assert marker["config"] == {
        "train_per_class": 3,
        "test_per_class": 2,
        "image_size": 48,
        "seed": 7,
    }
    # Nothing left behind next to it: the temporary folder was renamed, not copied.
    assert [p.name for p in tmp_path.iterdir()] == ["phantoms"]


def test_file_names_are_unique_and_avoid_the_kaggle_pattern(tmp_path: Path) -> None:
    out = generate_phantoms(tmp_path / "p", SMALL)
    names = [p.name for p in _images(out)]
    assert len(set(names)) == len(names)
    assert not any(n.startswith(("Tr-", "Te-")) for n in names)


def test_generated_images_decode_as_grayscale_of_the_requested_size(tmp_path: Path) -> None:
    out = generate_phantoms(tmp_path / "p", SMALL)
    for path in _images(out):
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert raw is not None, path
        assert raw.shape == (48, 48), path  # single channel, not BGR


def test_train_and_test_images_are_all_distinct(tmp_path: Path) -> None:
    out = generate_phantoms(tmp_path / "p", SMALL)
    pixels = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).tobytes() for p in _images(out)]
    assert len(set(pixels)) == len(pixels)


def test_generation_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = generate_phantoms(tmp_path / "a", SMALL)
    b = generate_phantoms(tmp_path / "b", SMALL)
    c = generate_phantoms(tmp_path / "c", PhantomConfig(3, 2, 48, seed=8))
    files_a = [p.relative_to(a) for p in _images(a)]
    assert files_a == [p.relative_to(b) for p in _images(b)]
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files_a)


def test_progress_reports_every_image_up_to_the_total(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate_phantoms(
        tmp_path / "p", SMALL, progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(i, 20) for i in range(1, 21)]


def test_rerun_with_the_same_config_is_a_no_op(tmp_path: Path) -> None:
    out = generate_phantoms(tmp_path / "p", SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in _images(out)}
    calls: list[int] = []
    again = generate_phantoms(out, SMALL, progress=lambda done, total: calls.append(done))
    assert again == out
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in _images(out)} == stamps


def test_existing_folder_with_another_config_raises_dataset_error(tmp_path: Path) -> None:
    out = generate_phantoms(tmp_path / "p", SMALL)
    with pytest.raises(DatasetError, match="delete it or choose another --out"):
        generate_phantoms(out, PhantomConfig(3, 2, 48, seed=8))
    assert len(_images(out)) == 20  # untouched


def test_existing_unrelated_or_unfinished_folder_raises_dataset_error(tmp_path: Path) -> None:
    unrelated = tmp_path / "mine"
    (unrelated / "Training" / "glioma").mkdir(parents=True)
    (unrelated / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(DatasetError, match="delete it or choose another --out"):
        generate_phantoms(unrelated, SMALL)
    assert (unrelated / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_existing_empty_folder_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    generate_phantoms(out, SMALL)
    assert (out / MARKER_NAME).is_file()
    assert len(_images(out)) == 20


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    def boom(done: int, total: int) -> None:
        if done == 7:
            raise KeyboardInterrupt

    out = tmp_path / "p"
    with pytest.raises(KeyboardInterrupt):
        generate_phantoms(out, SMALL, progress=boom)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    # A later run starts cleanly instead of tripping over the remains.
    generate_phantoms(out, SMALL)
    assert (out / MARKER_NAME).is_file()


def test_phantoms_module_does_not_import_tensorflow() -> None:
    # Checked in a fresh interpreter: other tests in this session may have loaded TensorFlow.
    import subprocess

    code = "import sys, training.phantoms; sys.exit('tensorflow' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, timeout=60)
    assert result.returncode == 0
