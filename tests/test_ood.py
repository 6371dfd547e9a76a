"""runtime.ood: the out-of-distribution heuristics on synthetic images, phantoms and, where the
shared dataset is present, real MRI slices (none of which may be flagged); they read the decoded
record only, and their histogram arithmetic equals NumPy's on the pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime import ood
from runtime.decoded import DecodedImage
from runtime.imageio import decode
from runtime.ood import DARK_CAP, DARK_LEVEL, IntensityStats, check_image, check_probabilities
from tests.test_webapp_support import dicom_bytes, encode, phantom

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")


def reasons_for(image: np.ndarray, ext: str = ".png") -> tuple[str, ...]:
    data = encode(image, ext)
    return check_image(decode(data)).reasons


@pytest.mark.parametrize("label", CLASSES)
@pytest.mark.parametrize("size", [64, 160, 256])
def test_phantom_slices_are_not_flagged(label: str, size: int) -> None:
    for seed in range(5):
        image = phantom(label, seed, size)
        for ext in (".png", ".jpg"):
            assert reasons_for(image, ext) == (), (label, size, seed, ext)


def test_a_phantom_stored_as_rgb_jpeg_is_not_colour() -> None:
    # The dataset stores grey slices as RGB JPEGs: equal channels are not colour.
    rgb = cv2.cvtColor(phantom("meningioma", 1, 200), cv2.COLOR_GRAY2BGR)
    data = encode(rgb, ".jpg")
    report = check_image(decode(data))
    assert report.reasons == ()
    assert report.measures["colourful_fraction"] == pytest.approx(0.0, abs=0.01)


def test_a_random_colour_photo_like_image_is_flagged_as_colour() -> None:
    rng = np.random.default_rng(0)
    photo = cv2.resize(rng.integers(0, 256, (9, 12, 3), np.uint8), (480, 360),
                       interpolation=cv2.INTER_CUBIC)
    photo = cv2.GaussianBlur(photo, (0, 0), 3)
    reasons = reasons_for(photo, ".jpg")
    assert any("in colour" in r for r in reasons), reasons


def test_a_colour_tinted_mri_is_flagged_too() -> None:
    gray = phantom("glioma", 2, 160).astype(np.float32) / 255
    tinted = np.stack([gray * 40, gray * 120, gray * 255], axis=-1).astype(np.uint8)
    assert any("in colour" in r for r in reasons_for(tinted))


@pytest.mark.parametrize("value", [0, 90, 255])
def test_a_blank_image_is_flagged_as_uniform(value: int) -> None:
    reasons = reasons_for(np.full((128, 128), value, np.uint8))
    assert len(reasons) == 1 and "nearly uniform" in reasons[0]


def test_a_nearly_constant_noisy_image_is_flagged_as_uniform() -> None:
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(120, 2, (128, 128)), 0, 255).astype(np.uint8)
    assert any("nearly uniform" in r for r in reasons_for(image))


def test_a_bright_grey_picture_without_dark_background_is_flagged() -> None:
    # A grey, textured, well-lit picture: varied enough, but no dark air around anything.
    rng = np.random.default_rng(0)
    texture = cv2.resize(rng.integers(90, 250, (16, 16), np.uint8), (200, 200),
                         interpolation=cv2.INTER_CUBIC)
    reasons = reasons_for(texture)
    assert len(reasons) == 1 and "dark background" in reasons[0], reasons


@pytest.mark.parametrize("shape", [(64, 200), (300, 100)])
def test_an_extreme_aspect_ratio_is_flagged(shape: tuple[int, int]) -> None:
    image = cv2.resize(phantom("glioma", 0, 128), (shape[1], shape[0]))
    reasons = reasons_for(image)
    assert any("aspect ratio" in r for r in reasons), reasons


def test_an_aspect_ratio_within_two_to_one_is_accepted() -> None:
    image = cv2.resize(phantom("pituitary", 0, 128), (200, 128))
    assert reasons_for(image) == ()


def test_a_dicom_of_another_modality_is_flagged_and_an_mr_one_is_not() -> None:
    slice_ = phantom("glioma", 0, 96)
    mr = dicom_bytes(slice_)
    assert check_image(decode(mr)).reasons == ()
    ct = dicom_bytes(slice_, Modality="CT")
    reasons = check_image(decode(ct)).reasons
    assert any("modality is CT" in r for r in reasons), reasons


def test_measures_are_reported_for_every_check() -> None:
    data = encode(phantom("glioma", 0, 96))
    measures = check_image(decode(data)).measures
    assert set(measures) >= {"std", "entropy_bits", "dark_fraction", "colourful_fraction",
                             "aspect_ratio", "width", "height"}
    assert measures["width"] == measures["height"] == 96


def test_model_signal_marks_a_flat_answer_uncertain_but_never_flags_alone() -> None:
    clean = check_image(DecodedImage(phantom("glioma", 0, 96), "png"))
    flat = check_probabilities(clean, dict.fromkeys(CLASSES, 0.25))
    assert flat.model_uncertain and not flat.flagged and "25%" in flat.model_note
    assert flat.measures["normalized_entropy"] == pytest.approx(1.0)
    sure = check_probabilities(clean, {"glioma": 0.97, "meningioma": 0.01, "notumor": 0.01,
                                       "pituitary": 0.01})
    assert not sure.model_uncertain and sure.model_note is None
    split = check_probabilities(clean, {"glioma": 0.45, "meningioma": 0.45, "notumor": 0.05,
                                        "pituitary": 0.05})
    assert split.model_uncertain  # top probability under MIN_TOP_PROBABILITY


def test_report_serialises_to_the_documented_json_shape() -> None:
    report = check_image(DecodedImage(np.zeros((64, 64), np.uint8), "png"))
    data = report.to_dict()
    assert data["flagged"] is True and isinstance(data["reasons"], list)
    assert set(data) == {"flagged", "reasons", "rules_flagged", "score_flagged", "score",
                         "model_uncertain", "model_note", "measures"}


@pytest.mark.dataset
def test_real_dataset_slices_are_not_flagged(shared_dataset: Path) -> None:
    files = []
    for class_dir in sorted((shared_dataset / "Testing").iterdir()):
        files += sorted(class_dir.glob("*.jpg"))[::10]  # every 10th: about 130 slices
    assert len(files) > 100
    flagged = {}
    for path in files:
        data = path.read_bytes()
        report = check_image(decode(data, str(path)))
        if report.flagged:
            flagged[path.name] = report.reasons
    assert flagged == {}


def test_thresholds_are_where_the_module_docstring_says() -> None:
    # The docstring's dataset figures justify these margins; change both together.
    assert ood.MIN_DARK_FRACTION < 0.10 and ood.MAX_COLOURFUL_FRACTION > 0.052
    assert ood.MIN_STD < 20 and ood.MIN_ENTROPY_BITS < 2.2


def _pixel_stats(gray: np.ndarray) -> tuple[float, float, float]:
    """The measures computed the direct way, on the pixels, as the checks once did."""
    counts = np.bincount(gray.ravel(), minlength=256)
    p = counts[counts > 0] / gray.size
    lo, hi = np.percentile(gray, [0.5, 99.5])
    dark = float(np.mean(gray <= min(DARK_CAP, lo + DARK_LEVEL * (hi - lo))))
    return float(gray.std()), float(-(p * np.log2(p)).sum()), dark


@pytest.mark.parametrize("case", ["phantom", "uniform noise", "constant", "two levels",
                                  "dark grey background", "odd size", "one hot pixel"])
def test_histogram_measures_equal_numpy_on_the_pixels(case: str) -> None:
    rng = np.random.default_rng(7)
    gray = {
        "phantom": lambda: phantom("meningioma", 3, 150),
        "uniform noise": lambda: rng.integers(0, 256, (97, 131), np.uint8),
        "constant": lambda: np.full((40, 40), 77, np.uint8),
        "two levels": lambda: np.tile(np.array([[0, 255]], np.uint8), (33, 17)),
        "dark grey background": lambda: np.clip(phantom("glioma", 1, 128).astype(int) + 40, 0,
                                                255).astype(np.uint8),
        "odd size": lambda: rng.integers(20, 60, (9, 211), np.uint8),
        "one hot pixel": lambda: np.pad(np.full((1, 1), 255, np.uint8), 30),
    }[case]()
    stats = IntensityStats.of(gray)
    std, entropy, dark = _pixel_stats(gray)
    assert stats.std == pytest.approx(std, abs=1e-9)
    assert stats.entropy_bits == pytest.approx(entropy, abs=1e-12)
    assert stats.dark_fraction == dark  # a share of whole pixels: exactly equal


def test_checks_read_the_record_and_never_decode_the_file_again(monkeypatch) -> None:
    colour = cv2.cvtColor(phantom("glioma", 0, 128), cv2.COLOR_GRAY2BGR)
    colour[:40, :40] = (0, 0, 255)  # a red corner: 10% of the image, visibly coloured
    record = decode(encode(colour, ".png"))
    ct = decode(dicom_bytes(phantom("glioma", 0, 64), Modality="CT"))

    def refuse(*args, **kwargs):
        raise AssertionError("a check decoded the file again")

    monkeypatch.setattr(cv2, "imdecode", refuse)
    pydicom = pytest.importorskip("pydicom")
    monkeypatch.setattr(pydicom, "dcmread", refuse)
    assert record.colour and record.colourful_fraction == pytest.approx(1600 / 128**2, abs=0.01)
    assert check_image(record).measures["colourful_fraction"] == pytest.approx(0.0977, abs=0.01)
    assert any("modality is CT" in r for r in check_image(ct).reasons)


def test_a_greyscale_file_has_no_colour_to_measure_and_dicom_says_it_in_its_header() -> None:
    gray = decode(encode(phantom("glioma", 0, 64), ".png"))
    assert not gray.colour and gray.colourful_fraction == 0.0
    mr = decode(dicom_bytes(phantom("glioma", 0, 64)))
    assert (mr.file_format, mr.modality, mr.photometric) == ("dicom", "MR", "MONOCHROME2")
    assert mr.colourful_fraction is None and mr.frames == 1


@pytest.mark.parametrize("kind", ["bgr", "bgra", "16-bit bgr", "large bgr"])
def test_the_colour_share_is_measured_whatever_the_depth_channels_or_size(kind: str) -> None:
    size = 1024 if kind == "large bgr" else 128  # large: measured on a regular subsample
    image = cv2.cvtColor(phantom("glioma", 0, size), cv2.COLOR_GRAY2BGR)
    image[: size // 2, : size // 2] = (0, 0, 255)  # a quarter of the image is red
    if kind == "bgra":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
    if kind == "16-bit bgr":
        image = image.astype(np.uint16) * 257
    record = decode(encode(image, ".png"))
    assert record.colour and record.colourful_fraction == pytest.approx(0.25, abs=0.01)
    assert any("in colour (25% of it" in r for r in check_image(record).reasons)
