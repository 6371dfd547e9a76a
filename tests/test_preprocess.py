"""runtime.preprocess, runtime.imageio and training.pipeline's augmentation and batches.

Everything here is NumPy/OpenCV; only the one test that compares ``scale`` with tf_keras'
``preprocess_input`` needs TensorFlow (marked ``tf``).
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

import runtime.imageio
from brainedge.errors import ConfigError, ImageDecodeError
from runtime.imageio import decode_image, read_image
from runtime.preprocess import PreprocessSpec, crop_to_brain, prepare, preprocess, scale
from training.config import AugmentConfig
from training.pipeline import PreparedSet, augment, iterate_batches

NO_AUGMENT = AugmentConfig(rotation_deg=0.0, brightness=0.0, shift=0.0, hflip=False,
                           vflip=False)


def _head(h: int = 200, w: int = 300, value: int = 180, axes: tuple[int, int] = (60, 40),
          center: tuple[int, int] | None = None) -> np.ndarray:
    """A bright ellipse (the head) on a black background."""
    image = np.zeros((h, w), np.uint8)
    cv2.ellipse(image, center or (w // 2, h // 2), axes, 0, 0, 360, value, -1)
    return image


def _encode(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


# --- prepare / crop -----------------------------------------------------------------------------


@pytest.mark.arm64
@pytest.mark.parametrize("shape", [(200, 300), (37, 300), (600, 512), (40, 40)])
def test_prepare_gives_a_square_rgb_uint8_image_with_equal_channels(shape):
    spec = PreprocessSpec(image_size=64)
    gray = _head(*shape, axes=(shape[1] // 3, shape[0] // 3))

    out = prepare(gray, spec)

    assert out.shape == (64, 64, 3)
    assert out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1])
    assert np.array_equal(out[..., 1], out[..., 2])


def test_prepare_refuses_a_colour_or_float_array():
    spec = PreprocessSpec(image_size=32)
    with pytest.raises(ValueError, match="2-D uint8"):
        prepare(np.zeros((40, 40, 3), np.uint8), spec)
    with pytest.raises(ValueError, match="2-D uint8"):
        prepare(np.zeros((40, 40), np.float32), spec)


@pytest.mark.arm64
def test_crop_to_brain_removes_the_black_border_around_the_head():
    gray = _head(200, 300, axes=(60, 40), center=(120, 110))  # head spans x 60..180, y 70..150

    cropped = crop_to_brain(gray)

    h, w = cropped.shape
    assert 81 <= h <= 81 + 2 * 4 + 4  # ellipse height plus a 2 % margin on each side
    assert 121 <= w <= 121 + 2 * 6 + 4
    # Nothing of the head is lost: the crop holds all of its bright pixels.
    assert int((cropped > 100).sum()) == int((gray > 100).sum())


@pytest.mark.arm64
def test_crop_to_brain_leaves_a_blank_image_untouched():
    blank = np.zeros((120, 90), np.uint8)
    assert crop_to_brain(blank) is blank


@pytest.mark.arm64
def test_crop_to_brain_leaves_an_image_with_only_a_speck_untouched():
    speck = np.zeros((200, 200), np.uint8)
    cv2.circle(speck, (100, 100), 6, 255, -1)  # far below 5 % of the area
    assert crop_to_brain(speck) is speck


@pytest.mark.arm64
def test_prepare_with_cropping_zooms_in_on_the_head():
    gray = _head(200, 200, axes=(40, 40))
    cropped = prepare(gray, PreprocessSpec(image_size=64, crop_brain=True, bilateral_d=0))
    uncropped = prepare(gray, PreprocessSpec(image_size=64, crop_brain=False, bilateral_d=0))
    assert (cropped[..., 0] > 100).mean() > 2 * (uncropped[..., 0] > 100).mean()


# --- scale ------------------------------------------------------------------------------------


@pytest.mark.arm64
def test_caffe_scaling_is_bgr_mean_subtraction():
    image = np.zeros((1, 4, 4, 3), np.uint8)
    image[0, 1, 2] = (10, 20, 30)  # RGB

    out = scale(image, PreprocessSpec(scaling="caffe"))

    assert out.dtype == np.float32
    assert out.shape == image.shape
    expected = np.array([30 - 103.939, 20 - 116.779, 10 - 123.68], np.float32)  # B, G, R
    np.testing.assert_allclose(out[0, 1, 2], expected, atol=1e-4)
    np.testing.assert_allclose(out[0, 0, 0], [-103.939, -116.779, -123.68], atol=1e-4)


@pytest.mark.arm64
def test_torch_scaling_is_unit_range_then_imagenet_mean_and_std():
    image = np.zeros((4, 4, 3), np.uint8)
    image[3, 0] = (10, 20, 30)  # RGB

    out = scale(image, PreprocessSpec(scaling="torch"))

    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = (np.array([10, 20, 30]) / 255.0 - mean) / std  # channel order stays RGB
    np.testing.assert_allclose(out[3, 0], expected, atol=1e-5)


def test_unit_scaling_maps_0_255_to_0_1():
    image = np.array([[[0, 128, 255]]], np.uint8)
    np.testing.assert_allclose(scale(image, PreprocessSpec(scaling="unit")),
                               [[[0.0, 128 / 255, 1.0]]], atol=1e-6)


def test_scale_accepts_float_input_and_does_not_modify_it():
    image = np.full((8, 8, 3), 100.0, np.float32)
    before = image.copy()
    out = scale(image, PreprocessSpec(scaling="torch"))
    np.testing.assert_array_equal(image, before)
    np.testing.assert_allclose(out, scale(image.astype(np.uint8), PreprocessSpec(scaling="torch")))


@pytest.mark.arm64
@pytest.mark.parametrize("scaling", ["caffe", "torch"])
def test_preprocess_is_scale_of_prepare(scaling):
    spec = PreprocessSpec(image_size=48, scaling=scaling)
    gray = _head(120, 100, axes=(30, 40))

    np.testing.assert_array_equal(preprocess(gray, spec), scale(prepare(gray, spec), spec))
    assert preprocess(gray, spec).shape == (48, 48, 3)


@pytest.mark.tf
@pytest.mark.parametrize(("scaling", "module"), [("caffe", "vgg16"), ("torch", "densenet")])
def test_scale_matches_tf_keras_preprocess_input(monkeypatch, scaling, module):
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    pytest.importorskip("tf_keras")
    import importlib

    applications = importlib.import_module(f"tf_keras.applications.{module}")
    images = np.random.default_rng(7).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)

    ours = scale(images, PreprocessSpec(scaling=scaling))
    theirs = np.asarray(applications.preprocess_input(images.astype(np.float32)))

    np.testing.assert_allclose(ours, theirs, atol=1e-4)


# --- PreprocessSpec ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"image_size": 10}, "image_size must be 32..1024"),
        ({"image_size": 2048}, "image_size must be 32..1024"),
        ({"scaling": "tensorflow"}, "scaling must be one of"),
        ({"bilateral_d": -1}, "bilateral_d must be >= 0"),
    ],
)
def test_invalid_preprocess_spec_is_a_config_error(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        PreprocessSpec(**kwargs)


def test_unknown_scaling_error_lists_the_choices():
    with pytest.raises(ConfigError) as info:
        PreprocessSpec(scaling="inception")
    assert all(name in str(info.value) for name in ("caffe", "torch", "unit"))


def test_preprocess_spec_round_trips_through_a_dict():
    spec = PreprocessSpec(image_size=96, crop_brain=False, bilateral_d=0, scaling="torch")
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["scaling"] == "torch"


def test_for_model_picks_the_backbones_scaling():
    assert PreprocessSpec.for_model("vgg16").scaling == "caffe"
    assert PreprocessSpec.for_model("densenet121").scaling == "torch"
    assert PreprocessSpec.for_model("vgg16", image_size=64).image_size == 64


def test_for_model_refuses_an_unknown_model():
    with pytest.raises(ConfigError, match="unknown model 'resnet50'"):
        PreprocessSpec.for_model("resnet50")


# --- decoding ---------------------------------------------------------------------------------


def test_decode_image_refuses_empty_bytes():
    with pytest.raises(ImageDecodeError, match=r"empty \(0 bytes\)"):
        decode_image(b"", "upload.jpg")


@pytest.mark.arm64
def test_decode_image_refuses_garbage_with_a_message_naming_the_source():
    garbage = np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes()
    with pytest.raises(ImageDecodeError, match=r"scan42\.jpg: not a readable image"):
        decode_image(garbage, "scan42.jpg")


@pytest.mark.arm64
def test_decode_image_refuses_a_truncated_png():
    data = _encode(_head(64, 64))
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(data[: len(data) // 2])


@pytest.mark.arm64
@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tiff"])
def test_decode_image_decides_by_content_and_returns_2d_uint8(ext):
    gray = _head(64, 80)
    out = decode_image(_encode(gray, ext))
    assert out.shape == (64, 80)
    assert out.dtype == np.uint8
    assert np.abs(out.astype(int) - gray).mean() < 3  # lossless, or nearly for JPEG


@pytest.mark.arm64
def test_decode_image_reduces_colour_to_gray():
    bgr = np.zeros((32, 32, 3), np.uint8)
    bgr[..., 2] = 200  # pure red
    out = decode_image(_encode(bgr))
    assert out.shape == (32, 32)
    assert abs(int(out[0, 0]) - round(0.299 * 200)) <= 1


@pytest.mark.arm64
def test_decode_image_refuses_images_above_the_pixel_limit(monkeypatch):
    data = _encode(_head(64, 64))
    monkeypatch.setattr(runtime.imageio, "MAX_PIXELS", 1000)

    with pytest.raises(ImageDecodeError, match="64x64 pixels exceeds the limit of 1000"):
        decode_image(data, "bomb.png")


@pytest.mark.arm64
def test_decode_image_accepts_an_image_at_the_pixel_limit(monkeypatch):
    monkeypatch.setattr(runtime.imageio, "MAX_PIXELS", 64 * 64)
    assert decode_image(_encode(_head(64, 64))).shape == (64, 64)


def test_decode_image_refuses_a_tiny_image():
    with pytest.raises(ImageDecodeError, match="unsupported image shape"):
        decode_image(_encode(np.zeros((4, 50), np.uint8)))


def test_read_image_of_a_missing_file_is_an_image_decode_error(tmp_path):
    with pytest.raises(ImageDecodeError, match="cannot read"):
        read_image(tmp_path / "missing.png")


# --- augmentation -------------------------------------------------------------------------------


def _rgb_head(size: int = 48) -> np.ndarray:
    gray = _head(size, size, axes=(size // 3, size // 4), center=(size // 2 - 3, size // 2 + 2))
    gray[5:9, 5:20] = 250  # an asymmetric mark so flips and rotations show
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


STRONG = AugmentConfig(rotation_deg=30.0, brightness=0.3, shift=0.2, hflip=True, vflip=True)


def test_augment_keeps_the_shape_and_the_0_255_range():
    image = _rgb_head()
    for seed in range(10):
        out = augment(image, np.random.default_rng(seed), STRONG)
        assert out.shape == image.shape
        assert out.dtype == np.float32
        assert out.min() >= 0.0
        assert out.max() <= 255.0


def test_augment_is_deterministic_for_the_same_seed():
    image = _rgb_head()
    first = augment(image, np.random.default_rng(5), STRONG)
    again = augment(image, np.random.default_rng(5), STRONG)
    np.testing.assert_array_equal(first, again)


def test_augment_differs_for_different_seeds():
    image = _rgb_head()
    first = augment(image, np.random.default_rng(5), STRONG)
    other = augment(image, np.random.default_rng(6), STRONG)
    assert not np.array_equal(first, other)


def test_augment_changes_the_image():
    image = _rgb_head()
    assert not np.array_equal(augment(image, np.random.default_rng(0), STRONG), image)


def test_augment_with_everything_off_returns_the_input_unchanged():
    image = _rgb_head()
    for seed in range(3):
        out = augment(image, np.random.default_rng(seed), NO_AUGMENT)
        np.testing.assert_array_equal(out, image.astype(np.float32))


def test_augment_with_only_a_flip_mirrors_the_image_exactly():
    image = _rgb_head()
    flip = AugmentConfig(rotation_deg=0.0, brightness=0.0, shift=0.0, hflip=True, vflip=False)
    outputs = [augment(image, np.random.default_rng(seed), flip) for seed in range(16)]
    mirrored = [np.array_equal(out, image[:, ::-1].astype(np.float32)) for out in outputs]
    unchanged = [np.array_equal(out, image.astype(np.float32)) for out in outputs]
    assert all(m or u for m, u in zip(mirrored, unchanged, strict=True))
    assert any(mirrored) and any(unchanged)


# --- batches ------------------------------------------------------------------------------------


def _prepared(n: int = 10, size: int = 32, num_classes: int | None = None) -> PreparedSet:
    """Images whose pixel value encodes their index; labels 0..n-1 unless ``num_classes``."""
    images = np.stack([np.full((size, size, 3), 10 * i + 5, np.uint8) for i in range(n)])
    labels = np.arange(n) if num_classes is None else np.arange(n) % num_classes
    return PreparedSet(images, labels.astype(np.int64), tuple(f"{i}.png" for i in range(n)), ())


def test_batches_without_augmentation_keep_order_and_are_scaled():
    data = _prepared(10, num_classes=4)
    spec = PreprocessSpec(image_size=32, scaling="torch")

    batches = list(iterate_batches(data, spec, 4, batch_size=4, augment_cfg=None, seed=0))

    assert [len(y) for _, y in batches] == [4, 4, 2]
    x = np.concatenate([b for b, _ in batches])
    y = np.concatenate([lab for _, lab in batches])
    np.testing.assert_array_equal(x, scale(data.images, spec))
    assert x.dtype == np.float32 and y.dtype == np.float32
    np.testing.assert_array_equal(y, np.eye(4)[data.labels])


def test_batch_labels_are_one_hot():
    data = _prepared(9, num_classes=3)
    spec = PreprocessSpec(image_size=32, scaling="caffe")
    for _, y in iterate_batches(data, spec, 3, batch_size=4, augment_cfg=STRONG, seed=1):
        assert y.shape[1] == 3
        assert set(np.unique(y)) <= {0.0, 1.0}
        np.testing.assert_array_equal(y.sum(axis=1), 1.0)


def test_an_augmented_epoch_covers_every_sample_exactly_once_shuffled():
    n = 11
    data = _prepared(n)  # label i for sample i: the one-hot row names the sample
    spec = PreprocessSpec(image_size=32, scaling="unit")

    batches = list(iterate_batches(data, spec, n, batch_size=3, augment_cfg=NO_AUGMENT, seed=2))

    order = np.concatenate([y.argmax(axis=1) for _, y in batches])
    assert sorted(order.tolist()) == list(range(n))
    assert order.tolist() != list(range(n))  # training batches are shuffled
    # Each image travels with its own label (no augmentation: the pixel value says which).
    x = np.concatenate([b for b, _ in batches])
    np.testing.assert_allclose(x[:, 0, 0, 0], (10 * order + 5) / 255.0, atol=1e-6)


def test_each_epoch_is_shuffled_differently_but_reproducibly():
    data = _prepared(12)
    spec = PreprocessSpec(image_size=32, scaling="unit")

    def order(epoch: int, seed: int = 3) -> list[int]:
        return np.concatenate([
            y.argmax(axis=1)
            for _, y in iterate_batches(data, spec, 12, 5, NO_AUGMENT, seed, epoch)
        ]).tolist()

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert order(0, seed=3) != order(0, seed=4)


def test_predict_prepared_keeps_order_and_refuses_a_wrong_output_shape():
    from brainedge.errors import ShapeMismatchError
    from training.pipeline import PreparedSet, predict_prepared

    images = np.stack([np.full((32, 32, 3), v, np.uint8) for v in (0, 100, 200, 250, 30)])
    data = PreparedSet(images, np.array([0, 1, 2, 3, 0]), tuple("abcde"), ())
    spec = PreprocessSpec(image_size=32, scaling="unit")

    def mean_as_probs(x):
        m = x.mean(axis=(1, 2, 3))
        return np.stack([m, 1 - m, m, 1 - m], axis=1)

    probs = predict_prepared(mean_as_probs, data, spec, 4, batch_size=2)
    np.testing.assert_allclose(probs[:, 0], images.mean(axis=(1, 2, 3)) / 255.0, atol=1e-6)
    with pytest.raises(ShapeMismatchError, match=r"expected \(2, 4\)"):
        predict_prepared(lambda x: np.zeros((len(x), 3)), data, spec, 4, batch_size=2)
