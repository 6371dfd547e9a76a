"""``runtime.gradcam``: Grad-CAM of the float32 Keras models BrainEdge trains.

The wiring is checked three ways: on a network whose head is global pooling then one dense
layer (BrainEdge's head), Grad-CAM of the last feature map equals the class activation map
(Zhou et al. 2016) computed by hand from the feature map and the dense kernel; a synthetic
model that cannot see the right half of its input gets its heat on the left; and the nested
(``build_model``) and flat (``build_flat_model``) builds of one network give the same map.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from brainedge.errors import ModelLoadError, ShapeMismatchError
from runtime.gradcam import GradCam, overlay
from runtime.preprocess import prepare, scale
from tests.test_webapp_support import phantom

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def keras() -> Any:
    from brainedge.tf_compat import keras

    return keras


@pytest.fixture(scope="module")
def vgg_run(trained_run: Path) -> tuple[Any, GradCam]:
    from runtime import load_classifier

    classifier = load_classifier(trained_run)
    return classifier, GradCam(classifier.predictor.model)


def _model_input(classifier: Any, label: str = "glioma", seed: int = 3) -> np.ndarray:
    return scale(prepare(phantom(label, seed, 64), classifier.spec), classifier.spec)


def _check_range(heat: np.ndarray, shape: tuple[int, int]) -> None:
    assert heat.shape == shape and heat.dtype == np.float32
    assert np.isfinite(heat).all()
    assert heat.min() >= 0.0 and heat.max() <= 1.0


# --- the session's trained VGG16 run (nested backbone, loaded from model.keras) -------------

def test_vgg16_run_explains_block5_conv3_with_a_map_of_the_input_size(vgg_run) -> None:
    classifier, cam = vgg_run
    # The last feature map before the head, skipping block5_pool, which only downsamples.
    assert cam.layer_name == "block5_conv3"
    x = _model_input(classifier)
    predicted = int(np.argmax(classifier.predict_batch(x[None])[0]))
    for class_index in range(len(classifier.class_names)):
        _check_range(cam.heatmap(x, class_index), (32, 32))
    heat = cam.heatmap(x, predicted)
    assert heat.max() == pytest.approx(1.0)  # normalised
    assert heat.max() - heat.min() > 0.1  # a map, not a constant


def test_vgg16_run_map_matches_one_computed_by_hand_through_block5_pool(vgg_run, keras) -> None:
    # At 32 px block5_conv3 is 2 x 2 and block5_pool takes the max of those 4 positions, so
    # the logit's gradient is the dense weight at the maximum and 0 at the 3 others: its mean
    # over the positions (Grad-CAM's channel weight) is the dense weight / 4 in every channel.
    # A max instead of the mean, a softmax gradient or the wrong class would not match.
    classifier, cam = vgg_run
    model = classifier.predictor.model
    backbone = model.get_layer("vgg16")
    conv = keras.Model(backbone.inputs, backbone.get_layer("block5_conv3").output)
    kernel = model.get_layer("probabilities").get_weights()[0].astype(np.float64)
    checked = 0
    for label in ("glioma", "meningioma", "notumor", "pituitary"):
        x = _model_input(classifier, label, 4)
        fmap = conv(x[None], training=False).numpy()[0].astype(np.float64)
        assert fmap.shape == (2, 2, 512)
        for c in range(kernel.shape[1]):
            reference = np.maximum(fmap @ (kernel[:, c] / 4), 0.0)
            heat = cam.heatmap(x, c)
            if reference.max() <= 0:
                assert not heat.any()
                continue
            checked += 1
            expected = cv2.resize(reference / reference.max(), (32, 32),
                                  interpolation=cv2.INTER_LINEAR)
            np.testing.assert_allclose(heat, expected, atol=1e-3)
    assert checked >= 4, "the reference maps are degenerate; the check proves nothing"


def test_building_a_gradcam_leaves_the_served_model_unchanged(trained_run: Path) -> None:
    # The logits come from a copy of the dense layer: switching off the softmax of the shared
    # layer itself would silently change the predictions of the model being served.
    from runtime import load_classifier

    classifier = load_classifier(trained_run)
    x = np.stack([_model_input(classifier, label, 1) for label in ("glioma", "notumor")])
    before = classifier.predict_batch(x)
    GradCam(classifier.predictor.model)
    after = classifier.predict_batch(x)
    np.testing.assert_allclose(after, before, atol=1e-6)
    np.testing.assert_allclose(after.sum(axis=1), 1.0, atol=1e-5)


def test_concurrent_heatmaps_equal_sequential_ones(vgg_run) -> None:
    classifier, cam = vgg_run
    inputs = [_model_input(classifier, label, 2) for label in ("glioma", "pituitary")]
    jobs = [(x, c) for x in inputs for c in range(len(classifier.class_names))]
    sequential = [cam.heatmap(x, c) for x, c in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(lambda job: cam.heatmap(*job), jobs * 2))
    for i, heat in enumerate(concurrent):
        np.testing.assert_allclose(heat, sequential[i % len(jobs)], atol=1e-6)


def test_heatmap_refuses_a_wrong_input_or_class(vgg_run) -> None:
    classifier, cam = vgg_run
    x = _model_input(classifier)
    with pytest.raises(ShapeMismatchError, match=r"\(32, 32, 3\)"):
        cam.heatmap(x[:16], 0)
    with pytest.raises(ShapeMismatchError, match="float32"):
        cam.heatmap(prepare(phantom(), classifier.spec), 0)  # unscaled uint8 pixels
    with pytest.raises(ShapeMismatchError, match="finite"):
        cam.heatmap(np.full_like(x, np.nan), 0)
    with pytest.raises(ValueError, match="class_index"):
        cam.heatmap(x, len(classifier.class_names))


# --- DenseNet121 as build_model nests it: Grad-CAM equals the class activation map ----------

@pytest.fixture(scope="module")
def densenet(keras) -> Any:
    from training.config import TrainConfig
    from training.models import build_model

    # 96 px gives a 3 x 3 final feature map: small, but a map (32 px would give 1 x 1).
    config = TrainConfig(data="unused", arch="densenet121", image_size=96, weights="none")
    model = build_model(config, 4)
    # Random dense weights large enough that every class has evidence somewhere.
    dense = model.get_layer("probabilities")
    kernel = np.random.default_rng(7).normal(0, 1, dense.kernel.shape).astype(np.float32)
    dense.set_weights([kernel, np.zeros(dense.bias.shape, np.float32)])
    return model


def _densenet_input() -> np.ndarray:
    return np.random.default_rng(11).normal(0.0, 1.0, (96, 96, 3)).astype(np.float32)


def test_densenet121_gradcam_equals_the_class_activation_map(keras, densenet) -> None:
    cam = GradCam(densenet)
    assert cam.layer_name == "relu"  # DenseNet121's last feature map, the backbone's output
    x = _densenet_input()
    backbone = densenet.get_layer("densenet121")
    fmap = backbone(x[None], training=False).numpy()[0].astype(np.float64)
    kernel = densenet.get_layer("probabilities").get_weights()[0].astype(np.float64)
    nonzero = 0
    for c in range(4):
        # CAM: the dense kernel's column for c weighs the channels of the pooled feature map.
        # Grad-CAM of the logit reduces to it for a pooling + dense head (up to a factor).
        reference = np.maximum(fmap @ kernel[:, c], 0.0)
        heat = cam.heatmap(x, c)
        _check_range(heat, (96, 96))
        if reference.max() <= 0:
            assert not heat.any()
            continue
        nonzero += 1
        expected = cv2.resize(reference / reference.max(), (96, 96),
                              interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(heat, expected, atol=1e-3)
    assert nonzero >= 2, "the reference maps are degenerate; the check proves nothing"


def test_flat_and_nested_builds_of_one_network_give_the_same_map(keras, densenet) -> None:
    from training.models import build_flat_model, copy_weights_by_name

    flat = build_flat_model("densenet121", 96, 4)
    copy_weights_by_name(densenet, flat)
    nested_cam, flat_cam = GradCam(densenet), GradCam(flat)
    assert flat_cam.layer_name == nested_cam.layer_name == "relu"
    x = _densenet_input()
    for c in range(4):
        np.testing.assert_allclose(flat_cam.heatmap(x, c), nested_cam.heatmap(x, c), atol=1e-3)


# --- a synthetic model that sees only the left half of its input ----------------------------

@pytest.fixture(scope="module")
def left_half_model(keras) -> Any:
    size, half = 32, 16
    image = keras.Input((size, size, 3), name="image")
    # Crop away the right half and pad it back with zeros: nothing there reaches the output.
    x = keras.layers.Cropping2D(((0, 0), (0, half)))(image)
    x = keras.layers.ZeroPadding2D(((0, 0), (0, half)))(x)
    positive = keras.initializers.RandomUniform(0.0, 0.1, seed=3)
    # No biases: a zero input gives zero features, so the right half's map is zero too.
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, activation="relu",
                            kernel_initializer=positive)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, activation="relu",
                            kernel_initializer=positive, name="last_conv")(x)
    backbone = keras.Model(image, x, name="leftnet")
    # The head build_model puts on a backbone: nested base, pooling, dropout, softmax.
    inputs = keras.Input((size, size, 3), name="image")
    y = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(inputs))
    y = keras.layers.Dropout(0.3, name="dropout")(y)
    outputs = keras.layers.Dense(3, activation="softmax", name="probabilities")(y)
    model = keras.Model(inputs, outputs)
    # Class 0: evidence for it everywhere the features fire; class 1: only against it;
    # class 2: a zero column, so its score does not depend on the image at all.
    kernel = np.stack([np.ones(8), -np.ones(8), np.zeros(8)], axis=1).astype(np.float32)
    model.get_layer("probabilities").set_weights([kernel, np.zeros(3, np.float32)])
    return model


def test_the_synthetic_model_really_ignores_the_right_half(left_half_model) -> None:
    rng = np.random.default_rng(5)
    x = rng.uniform(0.5, 1.5, (2, 32, 32, 3)).astype(np.float32)
    changed = x.copy()
    changed[:, :, 16:] = rng.uniform(-5, 5, changed[:, :, 16:].shape)
    np.testing.assert_allclose(left_half_model(changed).numpy(), left_half_model(x).numpy(),
                               atol=1e-6)
    changed[:, :, :16] = 0.0
    assert not np.allclose(left_half_model(changed).numpy(), left_half_model(x).numpy())


def test_heat_lies_where_the_model_looks_and_nowhere_else(left_half_model) -> None:
    cam = GradCam(left_half_model)
    assert cam.layer_name == "last_conv"
    x = np.random.default_rng(6).uniform(0.5, 1.5, (32, 32, 3)).astype(np.float32)
    heat = cam.heatmap(x, 0)
    _check_range(heat, (32, 32))
    # Two 3 x 3 convolutions reach 2 columns into the zeroed half; beyond, nothing.
    assert not heat[:, 18:].any()
    assert heat[:, :16].mean() > 0.3
    assert heat[:, :16].sum() > 0.95 * heat.sum()


def test_a_class_without_evidence_or_gradient_gets_an_all_zero_map(left_half_model) -> None:
    cam = GradCam(left_half_model)
    x = np.random.default_rng(6).uniform(0.5, 1.5, (32, 32, 3)).astype(np.float32)
    for class_index in (1, 2):  # evidence only against it; a score independent of the image
        heat = cam.heatmap(x, class_index)
        _check_range(heat, (32, 32))
        assert not heat.any(), class_index


def test_gradcam_refuses_a_model_without_a_feature_map(keras) -> None:
    inputs = keras.Input((32, 32, 3))
    flat = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(flat))
    with pytest.raises(ModelLoadError, match="4-D feature map"):
        GradCam(model)


# --- overlay ----------------------------------------------------------------------------------

def test_overlay_blends_a_colour_map_in_rgb_order() -> None:
    image = np.full((8, 8, 3), 100, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[:2, :2] = 1.0
    out = overlay(image, heat, alpha=0.5)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    hot, cold = out[0, 0].astype(int), out[7, 7].astype(int)
    assert hot[0] > hot[2]  # red (the JET colour map's top) in the first channel: RGB
    assert cold[2] > cold[0]  # blue where there is no heat
    np.testing.assert_array_equal(overlay(image, heat, alpha=0.0), image)


def test_overlay_refuses_mismatched_inputs() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="does not match"):
        overlay(image, np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        overlay(image[..., 0], np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, np.zeros((8, 8), np.float32), alpha=2.0)
