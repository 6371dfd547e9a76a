"""VGG16 and DenseNet121 backbones from tf_keras.applications with a new classification head."""

from __future__ import annotations

import logging
from pathlib import Path

from brainedge.errors import WeightsUnavailableError
from training.config import Arch, TrainConfig
from training.tf_compat import keras

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
    """The convolutional base; ``weights`` is 'imagenet', 'none' or a local notop .h5 file."""
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
        path = Path(weights)
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
