"""Pruning and quantization-aware training on tiny models: 32 px inputs, a few random images.

Assertions are structural (sparsity, wrappers, tensor types, ranges) plus agreement within a
tolerance; how much accuracy pruning or QAT costs is measured by ``brainedge optimize``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytestmark = pytest.mark.tf

SIZE = 32
NUM_CLASSES = 4


def _prepared(n: int, seed: int = 0):
    from training.pipeline import PreparedSet

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % NUM_CLASSES
    return PreparedSet(images, labels, tuple(f"img{i}.png" for i in range(n)), ())


def _spec(model: str):
    from runtime.preprocess import PreprocessSpec

    return PreprocessSpec.for_model(model, image_size=SIZE)


def _head(inputs, features):
    """The BrainEdge head on top of ``features``: pool, dropout, 4-way softmax."""
    from brainedge.tf_compat import keras

    x = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    x = keras.layers.Dropout(0.3, name="dropout")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs)


def _flat_backbone_model(name: str):
    from brainedge.tf_compat import keras

    base = getattr(keras.applications, name)(include_top=False, weights=None,
                                             input_shape=(SIZE, SIZE, 3))
    return _head(base.input, base.output)


def _small_dense_style_model():
    """DenseNet's troublesome patterns in miniature: concat -> standalone BN -> ReLU, and a
    transition conv -> average pooling."""
    from brainedge.tf_compat import keras

    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    stem = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    branch = keras.layers.Conv2D(8, 3, padding="same", name="branch")(stem)
    x = keras.layers.Concatenate(name="concat")([stem, branch])
    x = keras.layers.BatchNormalization(name="pre_bn")(x)
    x = keras.layers.Activation("relu", name="pre_relu")(x)
    x = keras.layers.Conv2D(16, 1, name="transition")(x)
    x = keras.layers.AveragePooling2D(2, name="transition_pool")(x)
    return _head(inputs, x)


def _int8_tflite(model, calibration: np.ndarray) -> bytes:
    """Full-integer TFLite with int8 input and output, as ``optimize.convert`` makes it.

    Converted from a traced function with only the variables as the trackable object:
    ``from_keras_model`` would serialize every Keras layer first, which takes minutes on
    DenseNet121's QAT model.
    """
    from brainedge.tf_compat import tf

    holder = tf.Module()
    holder.variables_to_freeze = list(model.variables)
    function = tf.function(lambda images: model(images, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in calibration)
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        # The converter's legacy path asks QAT models for input statistics it does not need.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected",
                                category=UserWarning)
        return converter.convert()


def _run_int8(tflite: bytes, images: np.ndarray) -> tuple[np.ndarray, dict]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], images.shape)
    interpreter.allocate_tensors()
    scale, zero = inp["quantization"]
    interpreter.set_tensor(inp["index"],
                           np.clip(np.round(images / scale + zero), -128, 127).astype(np.int8))
    interpreter.invoke()
    out_scale, out_zero = out["quantization"]
    probs = (interpreter.get_tensor(out["index"]).astype(np.float32) - out_zero) * out_scale
    return probs, inp


@pytest.fixture(scope="module")
def data():
    return _prepared(24)


@pytest.fixture(scope="module")
def vgg16():
    return _flat_backbone_model("VGG16")


@pytest.fixture(scope="module")
def densenet121():
    return _flat_backbone_model("DenseNet121")


@pytest.fixture(scope="module")
def short_densenet():
    """DenseNet121 with fewer building blocks (conftest): QAT on the full network (wrapping, one
    training step, int8 conversion) costs minutes."""
    from tests.conftest import short_densenet_backbone

    base = short_densenet_backbone(include_top=False, weights=None,
                                   input_shape=(SIZE, SIZE, 3))
    return _head(base.input, base.output)


@pytest.fixture(scope="module")
def pruned_vgg16(vgg16, data):
    from optimize.config import PruneConfig
    from optimize.prune import prune_model

    parent_weights = [w.copy() for w in vgg16.get_weights()]
    config = PruneConfig(target_sparsity=0.5, fine_tune_epochs=1, batch_size=8)
    pruned = prune_model(vgg16, data, data, _spec("vgg16"), NUM_CLASSES, config)
    return pruned, parent_weights


# ---------------------------------------------------------------------------------- pruning


def test_pruned_vgg16_reaches_target_sparsity_and_keeps_the_classifier_dense(pruned_vgg16):
    from optimize.prune import sparsity_report

    report = sparsity_report(pruned_vgg16[0])

    assert report["sparsity"] >= 0.5 - 0.02
    assert report["layers"]["probabilities"] == 0.0
    assert all(report["layers"][name] >= 0.48 for name in ("block1_conv1", "block5_conv3"))
    assert report["zero_params"] <= report["prunable_params"] < report["params"]


def test_pruned_model_is_plain_keras_with_the_parents_layers(pruned_vgg16, vgg16):
    from brainedge.tf_compat import keras

    pruned = pruned_vgg16[0]

    assert not any(isinstance(layer, keras.layers.Wrapper) for layer in pruned.layers)
    assert [layer.name for layer in pruned.layers] == [layer.name for layer in vgg16.layers]
    assert pruned.output_shape == vgg16.output_shape == (None, NUM_CLASSES)
    assert all(w.dtype == np.float32 for w in pruned.get_weights())


def test_pruning_leaves_the_parent_model_unchanged(pruned_vgg16, vgg16):
    _, before = pruned_vgg16

    assert all(np.array_equal(a, b) for a, b in zip(before, vgg16.get_weights(), strict=True))


def test_target_sparsity_is_reached_not_exceeded():
    from optimize.config import PruneConfig
    from optimize.prune import prune_model, sparsity_report

    config = PruneConfig(target_sparsity=0.3, fine_tune_epochs=1, batch_size=4)
    pruned = prune_model(_small_dense_style_model(), _prepared(16), _prepared(8, seed=1),
                         _spec("densenet121"), NUM_CLASSES, config)

    assert sparsity_report(pruned)["sparsity"] == pytest.approx(0.3, abs=0.02)


def test_2_by_4_pruning_leaves_two_zeros_in_every_four_input_channels():
    from optimize.config import PruneConfig
    from optimize.prune import prune_model, sparsity_report

    parent = _small_dense_style_model()
    config = PruneConfig(fine_tune_epochs=1, batch_size=8)
    pruned = prune_model(parent, _prepared(16), _prepared(8, seed=1), _spec("densenet121"),
                         NUM_CLASSES, config, m_by_n=(2, 4))

    report = sparsity_report(pruned, m_by_n=(2, 4))
    assert report["m_by_n_ok"] is True
    assert report["sparsity"] >= 0.45  # 3 input channels in the stem: a zero-padded group
    assert sparsity_report(parent, m_by_n=(2, 4))["m_by_n_ok"] is False


# ------------------------------------------------------------------------------- clustering


def test_clustering_keeps_pruned_zeros_and_leaves_few_distinct_values(pruned_vgg16, data):
    from optimize.cluster import cluster_model, distinct_nonzero_values
    from optimize.config import ClusterConfig
    from optimize.prune import kernel_of, prunable_layers, sparsity_report

    pruned = pruned_vgg16[0]
    before = {layer.name: kernel_of(weights).copy() for layer, weights in prunable_layers(pruned)}
    clustered = cluster_model(pruned, data, data, _spec("vgg16"), NUM_CLASSES,
                              ClusterConfig(clusters=8, fine_tune_epochs=1, batch_size=8))

    counts = distinct_nonzero_values(clustered)
    assert set(counts) == set(before)
    assert all(1 <= n <= 8 for n in counts.values()), counts
    # The parent kept thousands of distinct values: the check above can fail.
    assert max(distinct_nonzero_values(pruned).values()) > 1000
    for layer, weights in prunable_layers(clustered):
        assert np.array_equal(kernel_of(weights) == 0, before[layer.name] == 0), layer.name
    assert sparsity_report(clustered)["sparsity"] == pytest.approx(
        sparsity_report(pruned)["sparsity"])
    assert [layer.name for layer in clustered.layers] == [layer.name for layer in pruned.layers]


def test_clustered_int8_tflite_deflates_smaller_than_pruned_int8(pruned_vgg16, data):
    import gzip

    from optimize.cluster import cluster_model
    from optimize.config import ClusterConfig

    pruned = pruned_vgg16[0]
    clustered = cluster_model(pruned, data, data, _spec("vgg16"), NUM_CLASSES,
                              ClusterConfig(clusters=16, fine_tune_epochs=0))
    calibration = data.images.astype(np.float32)
    # zlib's default level: within 1% of level 9's ratio here (0.69 vs 0.68), in a quarter of
    # its time on these 15 MB files; test_optimize checks the manifests' level-9 figures.
    sizes = {name: len(gzip.compress(_int8_tflite(model, calibration), 6))
             for name, model in (("pruned", pruned), ("clustered", clustered))}
    assert sizes["clustered"] < 0.85 * sizes["pruned"], sizes


@pytest.mark.parametrize("kwargs", [{"clusters": 1}, {"clusters": 300},
                                    {"fine_tune_epochs": -1}, {"learning_rate": 0}])
def test_cluster_config_rejects_impossible_settings(kwargs):
    from brainedge.errors import ConfigError
    from optimize.config import ClusterConfig

    with pytest.raises(ConfigError):
        ClusterConfig(**kwargs)


@pytest.mark.parametrize("m_by_n", [(4, 4), (0, 4), (3, 2)])
def test_m_by_n_needs_m_between_zero_and_n(m_by_n):
    from brainedge.errors import ConfigError
    from optimize.config import PruneConfig
    from optimize.prune import prune_model

    with pytest.raises(ConfigError, match="0 < m < n"):
        prune_model(None, _prepared(4), _prepared(4), _spec("vgg16"), NUM_CLASSES,
                    PruneConfig(), m_by_n=m_by_n)


def test_xnnpack_latency_policy_rejects_densenet121_and_says_why(densenet121):
    from optimize.prune import xnnpack_latency_policy

    ok, reason = xnnpack_latency_policy(densenet121)

    assert ok is False
    assert "ZeroPadding2D" in reason and "stride 2x2" in reason


def test_xnnpack_latency_policy_accepts_a_mobilenet_style_stem():
    from brainedge.tf_compat import keras
    from optimize.prune import xnnpack_latency_policy

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="valid")(x)
    x = keras.layers.Conv2D(16, 1)(x)
    x = keras.layers.ReLU()(x)

    assert xnnpack_latency_policy(_head(inputs, x)) == (True, "")


# ------------------------------------------------------------------------------------- QAT


def test_qat_model_starts_where_the_float_model_is():
    """Ranges come from the float activations, not TFMOT's [-6, 6] defaults: caffe-scaled
    inputs (about -124..152) would otherwise be clipped and the outputs meaningless."""
    from optimize.qat import OutputQuantizeConfig, build_qat_model
    from runtime.preprocess import scale

    images = scale(_brightness_ramp(16), _spec("vgg16"))
    model = _unsaturated(_small_dense_style_model(), images)

    qat = build_qat_model(model, images, batch_size=8)

    expected = model.predict_on_batch(images)
    assert np.ptp(expected, axis=0).max() > 0.2  # outputs vary, so the comparison means something
    np.testing.assert_allclose(qat.predict_on_batch(images), expected, atol=0.03)
    # Keras numbers the name ("quantize_layer_1") when another QAT model exists in the session.
    quantize_layer = next(layer for layer in qat.layers if layer.name.startswith("quantize_layer"))
    input_min = quantize_layer.non_trainable_weights[0].numpy()
    assert input_min <= images.min() < -100
    config = qat.get_layer("quant_pre_bn").quantize_config
    assert isinstance(config, OutputQuantizeConfig) and not config.quantize_output


def test_a_qat_model_saved_for_resuming_loads_with_its_quantizers(tmp_path):
    """``brainedge optimize`` keeps its QAT model between runs (optimize.source_cache)."""
    from optimize.config import OptimizeConfig, Source
    from optimize.qat import OutputQuantizeConfig, build_qat_model
    from optimize.source_cache import load_source, save_source, source_key
    from runtime.preprocess import scale

    images = scale(_brightness_ramp(16), _spec("vgg16"))
    qat = build_qat_model(_unsaturated(_small_dense_style_model(), images), images, batch_size=8)
    key = source_key(Source.QAT, "0" * 64, OptimizeConfig(run_dir=tmp_path))
    save_source(tmp_path, key, qat, {})

    loaded, _ = load_source(tmp_path, key)

    np.testing.assert_allclose(loaded.predict_on_batch(images), qat.predict_on_batch(images),
                               atol=1e-6)
    assert isinstance(loaded.get_layer("quant_pre_bn").quantize_config, OutputQuantizeConfig)


def _brightness_ramp(n: int) -> np.ndarray:
    """Noisy images from black to white: random models see features that differ per image."""
    noise = np.random.default_rng(0).uniform(0.5, 1.0, size=(n, SIZE, SIZE, 3))
    return (np.linspace(0, 255, n)[:, None, None, None] * noise).astype(np.uint8)


def _unsaturated(model, images: np.ndarray):
    """Rescale the random classifier so that its logits on ``images`` are of order 1.

    Random weights on caffe-scaled inputs give logits in the hundreds: every image then gets
    probability 1 for one class, and any two models agree.
    """
    from brainedge.tf_compat import keras

    features = keras.Model(model.input, model.get_layer("pool").output).predict_on_batch(images)
    classifier = model.get_layer("probabilities")
    kernel = np.random.default_rng(0).normal(size=classifier.kernel.shape)
    kernel /= (features @ kernel).std()
    classifier.set_weights([kernel.astype(np.float32), np.zeros(NUM_CLASSES, np.float32)])
    return model


def test_small_qat_model_converts_to_int8_tflite_that_agrees_with_it():
    from optimize.qat import build_qat_model
    from runtime.preprocess import scale

    images = scale(_brightness_ramp(16), _spec("densenet121"))
    qat = build_qat_model(_unsaturated(_small_dense_style_model(), images), images, batch_size=8)

    probs, _ = _run_int8(_int8_tflite(qat, images), images)

    np.testing.assert_allclose(probs, qat.predict_on_batch(images), atol=0.03)


def _qat_layer_kinds(model) -> set[tuple[str, tuple[str, ...], bool | None]]:
    """What QAT meets in ``model``: each layer's class, its producers' classes, and the
    quantize config ``optimize.qat`` gives it (None: TFMOT's default registry decides)."""
    from brainedge.tf_compat import tf
    from optimize.qat import _custom_configs

    configs = _custom_configs(model)
    kinds = set()
    for layer in model.layers:
        producers = tf.nest.flatten(layer.inbound_nodes[0].inbound_layers)
        config = configs.get(layer.name)
        kinds.add((type(layer).__name__, tuple(sorted({type(p).__name__ for p in producers})),
                   None if config is None else config.quantize_output))
    return kinds


def test_the_short_densenet_has_every_layer_kind_of_densenet121(densenet121, short_densenet):
    """It stands in for DenseNet121 in the QAT test below and in test_train's fine-tuning test:
    the same layer kinds, fed by the same kinds of layers, each quantized the same way."""
    assert _qat_layer_kinds(short_densenet) == _qat_layer_kinds(densenet121)


def test_densenet_qat_trains_a_step_and_converts_to_int8_tflite(short_densenet):
    from optimize.prune import sparsity_report
    from optimize.qat import OutputQuantizeConfig, quantize_aware
    from runtime.preprocess import scale

    spec = _spec("densenet121")
    one_batch = _prepared(8)

    qat = quantize_aware(short_densenet, one_batch, one_batch, spec, NUM_CLASSES, epochs=1,
                         learning_rate=1e-5, batch_size=8)

    # The standalone pre-activation BatchNorms carry our config; the ReLU after them
    # quantizes the fused output.
    config = qat.get_layer("quant_conv2_block1_0_bn").quantize_config
    assert isinstance(config, OutputQuantizeConfig) and not config.quantize_output
    trained, parent = sparsity_report(qat), sparsity_report(short_densenet)
    assert trained["params"] == parent["params"]  # the QAT wrappers' own variables not counted
    assert trained["layers"]["probabilities"] == 0.0
    assert not np.array_equal(qat.get_layer("quant_probabilities").get_weights()[0],
                              short_densenet.get_layer("probabilities").get_weights()[0])
    images = scale(one_batch.images, spec)
    probs, input_details = _run_int8(_int8_tflite(qat, images), images[:2])
    assert input_details["dtype"] == np.int8
    assert list(input_details["shape_signature"]) == [-1, SIZE, SIZE, 3]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.05)


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"learning_rate": 0.0}, {"batch_size": 0}])
def test_qat_rejects_impossible_training_settings(kwargs):
    from brainedge.errors import ConfigError
    from optimize.qat import quantize_aware

    settings = {"epochs": 1, "learning_rate": 1e-5, "batch_size": 8, **kwargs}
    with pytest.raises(ConfigError):
        quantize_aware(None, _prepared(4), _prepared(4), _spec("vgg16"), NUM_CLASSES, **settings)
