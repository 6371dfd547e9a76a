"""Quantization-aware training (QAT) with TFMOT's default 8-bit scheme.

``quantize_aware`` turns a flat float32 model into a QAT model (fake-quantized weights and
activations), starts its ranges where post-training calibration would put them, fine-tunes
it, and returns it for the TFLite converter (``Optimize.DEFAULT``, int8 in and out).

Two things TFMOT does not do for us:

- **Unsupported layers.** The default registry quantizes BatchNormalization only when it folds
  into the convolution before it. DenseNet121's pre-activation blocks (concat -> BN -> ReLU ->
  conv) have standalone BatchNorms, which ``quantize_model`` refuses ("Layer conv2_block1_0_bn
  ... is not supported"). The documented way out is to annotate such layers with a
  ``QuantizeConfig`` of our own: ``OutputQuantizeConfig`` quantizes only the layer's output, or
  nothing when a ReLU follows (TFLite fuses BN -> ReLU into one op, whose output the ReLU's own
  quantizer already covers).
- **Starting ranges.** Activation ranges start at [-6, 6] and move by an exponential average
  with decay 0.999, i.e. 0.1% per step: one epoch of the real dataset (about 150 steps) covers
  14% of the way. Inputs scaled the caffe way span about [-124, 152] and would stay clipped
  (on the sanity test's small model, probabilities off by up to 0.34 instead of 0.01). So every
  activation range is first set from the float model's activations on training images, as
  post-training calibration does; fine-tuning then refines them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from brainedge.errors import ConfigError, ConversionError, requires
from brainedge.tf_compat import keras, tf
from optimize.finetune_backup import backup_callbacks
from optimize.prune import copy_with_frozen_batchnorm
from runtime.preprocess import PreprocessSpec, scale
from training.config import AugmentConfig
from training.pipeline import PreparedSet, keras_verbosity, to_tf_dataset

tfmot = requires("tensorflow_model_optimization", "train")
quantization = tfmot.quantization.keras

__all__ = ["OutputQuantizeConfig", "build_qat_model", "qat_scope", "quantize_aware"]

# Training images whose activations set the starting ranges (the TFLite converter's
# representative datasets are of this order too).
CALIBRATION_IMAGES = 256
# Layers whose BatchNorm successor TFMOT's 8-bit transforms fold into them.
_FOLDS_BATCHNORM = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
# TFLite's int8 kernels for these require the output scale to equal the input scale, but
# TFMOT's registry gives the output a range of its own, which the converter then rejects
# ("'tfl.average_pool_2d' op quantization parameters violate the same scale constraint", on
# DenseNet121's transition blocks). Left unquantized, the output inherits the input's scale.
_SAME_SCALE = (keras.layers.AveragePooling2D,)
# Range variables named "<prefix>_min"/"<prefix>_max" in a QuantizeWrapper: these prefixes
# quantize the wrapped layer's output; "pre_activation" its output before the activation
# (e.g. the logits of a softmax layer). Any other prefix is a weight's range.
_OUTPUT_RANGES = ("output", "post_activation")
_PRE_ACTIVATION = "pre_activation"


class OutputQuantizeConfig(quantization.QuantizeConfig):
    """Quantize a layer's output only (8-bit, per tensor, asymmetric), or nothing at all.

    For layers the default 8-bit registry does not support, such as a BatchNormalization that
    does not follow a convolution. Its weights stay float: TFLite folds them into neighbours.
    """

    def __init__(self, quantize_output: bool = True) -> None:
        self.quantize_output = quantize_output

    def get_weights_and_quantizers(self, layer: Any) -> list:
        return []

    def get_activations_and_quantizers(self, layer: Any) -> list:
        return []

    def set_quantize_weights(self, layer: Any, quantize_weights: list) -> None:
        pass

    def set_quantize_activations(self, layer: Any, quantize_activations: list) -> None:
        pass

    def get_output_quantizers(self, layer: Any) -> list:
        if not self.quantize_output:
            return []
        # The quantizer TFMOT's own default 8-bit output configs use.
        return [quantization.quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self) -> dict[str, Any]:
        return {"quantize_output": self.quantize_output}


def qat_scope() -> Any:
    """The scope in which a saved QAT model (or an annotated one) can be deserialized."""
    return quantization.quantize_scope({"OutputQuantizeConfig": OutputQuantizeConfig})


def quantize_aware(
    model: keras.Model,
    train: PreparedSet,
    val: PreparedSet,
    spec: PreprocessSpec,
    num_classes: int,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int = 0,
    backup: Path | None = None,
) -> keras.Model:
    """Build the QAT model of ``model`` and fine-tune it with the training augmentation.

    ``model`` itself is not modified. The result keeps TFMOT's wrappers; convert it with the
    TFLite converter (``Optimize.DEFAULT``, a representative dataset, int8 input/output).
    ``backup``: as in ``optimize.prune.prune_model``.
    """
    _check_training(epochs, learning_rate, batch_size)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(train), size=min(CALIBRATION_IMAGES, len(train)), replace=False)
    qat = build_qat_model(model, scale(train.images[np.sort(idx)], spec), batch_size)
    qat.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                loss="categorical_crossentropy", metrics=["accuracy"])
    qat.fit(
        to_tf_dataset(train, spec, num_classes, batch_size, AugmentConfig(), seed),
        validation_data=to_tf_dataset(val, spec, num_classes, batch_size, None, seed),
        epochs=epochs,
        callbacks=backup_callbacks(backup),
        verbose=keras_verbosity(),
    )
    return qat


def _check_training(epochs: int, learning_rate: float, batch_size: int) -> None:
    if epochs < 1:
        raise ConfigError(f"QAT needs at least 1 epoch, got {epochs}")
    if not 0 < learning_rate < 1:
        raise ConfigError(f"learning rate must be in (0, 1), got {learning_rate}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")


def build_qat_model(model: keras.Model, calibration: np.ndarray,
                    batch_size: int = 32) -> keras.Model:
    """The untrained QAT model of ``model``, its ranges set from ``calibration`` images.

    ``calibration`` holds preprocessed (scaled) float32 images. BatchNorm is frozen, as in the
    training stage's fine-tuning; ``model`` itself is not modified.
    """
    if len(calibration) == 0:
        raise ConfigError("QAT needs at least one calibration image to set its ranges")
    float_model = copy_with_frozen_batchnorm(model)
    try:
        with qat_scope():
            qat = quantization.quantize_apply(_annotate(float_model))
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ConversionError(f"TFMOT cannot quantize {model.name} for QAT: {exc}") from exc
    _set_ranges(qat, float_model, calibration, batch_size)
    return qat


def _annotate(model: keras.Model) -> keras.Model:
    """Annotate every layer: registry-supported ones by default, the rest with our config."""
    custom = _custom_configs(model)

    def annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in custom:
            return quantization.quantize_annotate_layer(layer, custom[layer.name])
        return layer

    # Returning the layer itself shares it with `model`, which is fine: quantize_apply copies.
    annotated = keras.models.clone_model(model, clone_function=annotate)
    return quantization.quantize_annotate_model(annotated)


def _custom_configs(model: keras.Model) -> dict[str, OutputQuantizeConfig]:
    registry = quantization.default_8bit.Default8BitQuantizeRegistry()
    configs = {}
    for layer in model.layers:
        if isinstance(layer, _SAME_SCALE):
            configs[layer.name] = OutputQuantizeConfig(quantize_output=False)
        elif (not isinstance(layer, keras.layers.InputLayer) and not registry.supports(layer)
              and not _folds_into_producer(layer)):
            configs[layer.name] = OutputQuantizeConfig(quantize_output=not _feeds_only_relu(layer))
    return configs


def _folds_into_producer(layer: keras.layers.Layer) -> bool:
    """A BatchNorm right after a linear convolution or Dense: TFMOT's transforms handle it."""
    if not isinstance(layer, keras.layers.BatchNormalization):
        return False
    producers = tf.nest.flatten(layer.inbound_nodes[0].inbound_layers)
    return (len(producers) == 1 and isinstance(producers[0], _FOLDS_BATCHNORM)
            and producers[0].get_config().get("activation") == "linear")


def _feeds_only_relu(layer: keras.layers.Layer) -> bool:
    consumers = [node.outbound_layer for node in layer.outbound_nodes]
    return bool(consumers) and all(_is_relu(c) for c in consumers)


def _is_relu(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, keras.layers.ReLU):
        return True
    return (isinstance(layer, keras.layers.Activation)
            and keras.activations.serialize(layer.activation) == "relu")


def _set_ranges(qat: keras.Model, float_model: keras.Model, images: np.ndarray,
                batch_size: int) -> None:
    """Weight ranges from the weights; activation ranges from the float model's activations."""
    # One training-mode pass lets TFMOT set every weight range from the current weights (its
    # weight quantizers keep the last value, whatever the image); it also nudges the activation
    # ranges by 0.1%, which the assignment below overwrites.
    qat(images[:1], training=True)
    targets = _range_targets(qat)
    ranges = _float_ranges(float_model, {key for key, _, _ in targets}, images, batch_size)
    for key, min_var, max_var in targets:
        low, high = ranges[key]
        # TFLite requires 0 inside every range, as TFMOT's own range updates ensure.
        min_var.assign(np.full(min_var.shape, min(low, 0.0), np.float32))
        max_var.assign(np.full(max_var.shape, max(high, 0.0), np.float32))


def _range_targets(qat: keras.Model) -> list[tuple[tuple[str, str], Any, Any]]:
    """(("out" | "pre", float layer name), min variable, max variable) for each activation range.

    "out" is the float layer's output; for a QuantizeLayer (which quantizes its input) it is
    the output of the layer that feeds it.
    """
    targets = []
    for layer in qat.layers:
        for prefix, (min_var, max_var) in _range_variables(layer).items():
            if isinstance(layer, quantization.QuantizeWrapperV2):
                if prefix in _OUTPUT_RANGES:
                    targets.append((("out", layer.layer.name), min_var, max_var))
                elif prefix == _PRE_ACTIVATION:
                    targets.append((("pre", layer.layer.name), min_var, max_var))
            elif prefix == layer.name:  # a QuantizeLayer
                (producer,) = tf.nest.flatten(layer.inbound_nodes[0].inbound_layers)
                targets.append((("out", producer.name), min_var, max_var))
    return targets


def _range_variables(layer: keras.layers.Layer) -> dict[str, tuple[Any, Any]]:
    """TFMOT's range variables of ``layer`` by prefix: "<prefix>_min" and "<prefix>_max"."""
    by_name = {v.name.split(":")[0].split("/")[-1]: v for v in layer.non_trainable_weights}
    return {name[:-4]: (var, by_name[name[:-4] + "_max"]) for name, var in by_name.items()
            if name.endswith("_min") and name[:-4] + "_max" in by_name}


def _float_ranges(float_model: keras.Model, keys: set[tuple[str, str]], images: np.ndarray,
                  batch_size: int) -> dict[tuple[str, str], tuple[float, float]]:
    """Min and max of each requested float tensor over ``images``."""
    keys_in_order = sorted(keys)
    tensors = [_float_tensor(float_model, kind, name) for kind, name in keys_in_order]
    probe = keras.Model(float_model.inputs, tensors)

    # Reduce inside the graph: the activations themselves never leave it, which keeps memory
    # bounded at full resolution (DenseNet121 has hundreds of them).
    @tf.function
    def extremes(batch: tf.Tensor) -> list[tf.Tensor]:
        outputs = tf.nest.flatten(probe(batch, training=False))
        return [tf.stack([tf.reduce_min(t), tf.reduce_max(t)]) for t in outputs]

    low = np.full(len(tensors), np.inf)
    high = np.full(len(tensors), -np.inf)
    for batch in _batches(images, batch_size):
        found = np.array([e.numpy() for e in extremes(tf.constant(batch))])
        low, high = np.minimum(low, found[:, 0]), np.maximum(high, found[:, 1])
    return {key: (float(lo), float(hi)) for key, lo, hi in zip(keys_in_order, low, high,
                                                                 strict=True)}


def _float_tensor(float_model: keras.Model, kind: str, name: str) -> Any:
    layer = float_model.get_layer(name)
    if kind == "out":
        return layer.output
    # A copy of the layer without its activation, e.g. for the softmax's logits.
    linear = layer.__class__.from_config({**layer.get_config(), "activation": "linear",
                                          "name": f"{name}_pre_activation"})
    output = linear(layer.input)
    linear.set_weights(layer.get_weights())
    return output


def _batches(images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(images), batch_size):
        yield images[start:start + batch_size].astype(np.float32)
