"""Sparsity-preserving weight clustering with TFMOT, applied to an already pruned model.

Pruning alone leaves about half the int8 weights non-zero, each carrying close to 7 bits, so
gzip saves little on them (a 50%-pruned int8 DenseNet121 deflates to about 65% of its size).
Clustering each kernel's non-zero weights onto a few shared values (16 by default) lowers
their entropy to at most 4 bits, which deflate then realises; ``preserve_sparsity`` keeps the
pruned zeros at exactly zero. This is TFMOT's "collaborative optimization" path (prune, then
cluster preserving sparsity, then quantize).

The same layers are clustered as are pruned: every Conv2D and Dense except the output layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from brainedge.errors import ConversionError, requires
from brainedge.tf_compat import keras
from optimize.config import ClusterConfig
from optimize.finetune_backup import backup_callbacks
from optimize.prune import copy_with_frozen_batchnorm, kernel_of, leaf_layers, prunable_layers
from runtime.preprocess import PreprocessSpec
from training.config import AugmentConfig
from training.pipeline import PreparedSet, keras_verbosity, to_tf_dataset

tfmot = requires("tensorflow_model_optimization", "train")
clustering = tfmot.clustering.keras

__all__ = ["cluster_model", "distinct_nonzero_values"]


def cluster_model(
    model: keras.Model,
    train: PreparedSet,
    val: PreparedSet,
    spec: PreprocessSpec,
    num_classes: int,
    config: ClusterConfig,
    seed: int = 0,
    backup: Path | None = None,
) -> keras.Model:
    """Cluster a copy of ``model``'s prunable kernels, fine-tune the centroids, strip.

    Zeros stay zeros; the returned plain Keras model has at most ``config.clusters`` distinct
    non-zero values per clustered kernel. ``model`` itself is not modified. ``backup``: as
    in ``prune_model``.
    """
    wrapped = _wrap(copy_with_frozen_batchnorm(model), config)
    wrapped.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
                    loss="categorical_crossentropy", metrics=["accuracy"])
    if config.fine_tune_epochs:
        wrapped.fit(
            to_tf_dataset(train, spec, num_classes, config.batch_size, AugmentConfig(), seed),
            validation_data=to_tf_dataset(val, spec, num_classes, config.batch_size, None,
                                          seed),
            epochs=config.fine_tune_epochs,
            callbacks=backup_callbacks(backup),
            verbose=keras_verbosity(),
        )
    try:
        return clustering.strip_clustering(wrapped)
    except (ValueError, NotImplementedError) as exc:
        raise ConversionError(f"cannot strip the clustering wrappers from {model.name}: "
                              f"{exc}") from exc


def _wrap(model: keras.Model, config: ClusterConfig) -> keras.Model:
    names = {layer.name for layer, _ in prunable_layers(model)}

    def wrap_clusterable(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name not in names:
            return layer
        return clustering.cluster_weights(
            layer, number_of_clusters=config.clusters,
            cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS,
            preserve_sparsity=True)

    try:
        return keras.models.clone_model(model, clone_function=wrap_clusterable)
    except ValueError as exc:
        raise ConversionError(f"TFMOT cannot wrap {model.name} for clustering: {exc}") from exc


def distinct_nonzero_values(model: keras.Model) -> dict[str, int]:
    """Number of distinct non-zero values in each prunable (hence clustered) kernel."""
    names = {layer.name for layer, _ in prunable_layers(model)}
    counts: dict[str, int] = {}
    for layer, weights in leaf_layers(model):
        if layer.name in names:
            kernel = kernel_of(weights)
            counts[layer.name] = int(np.unique(kernel[kernel != 0]).size)
    return counts


def describe(config: ClusterConfig) -> dict[str, Any]:
    """What goes into the manifest of a clustered variant."""
    return {"clusters": config.clusters, "cluster_fine_tune_epochs": config.fine_tune_epochs,
            "cluster_learning_rate": config.learning_rate, "preserve_sparsity": True}
