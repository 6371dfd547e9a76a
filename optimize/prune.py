"""Magnitude pruning with TFMOT: unstructured to a target sparsity, or structured m:n (2:4).

``prune_model`` wraps the Conv2D and Dense layers of a flat float32 model, fine-tunes it with
the training augmentation, strips the wrappers and returns a plain Keras model whose pruned
kernels hold exact zeros. The model's output layer (the 4-way classifier) is left dense: it is
tiny, so pruning it saves nothing, and every weight in it moves a class score directly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from brainedge.errors import ConfigError, ConversionError, requires
from brainedge.tf_compat import keras
from optimize.config import PruneConfig
from optimize.finetune_backup import backup_callbacks
from runtime.preprocess import PreprocessSpec
from training.config import AugmentConfig
from training.pipeline import PreparedSet, keras_verbosity, to_tf_dataset

tfmot = requires("tensorflow_model_optimization", "train")
sparsity = tfmot.sparsity.keras

__all__ = ["copy_with_frozen_batchnorm", "prune_model", "sparsity_report", "xnnpack_latency_policy"]

# TFMOT's default pruning registry prunes these kernels; BatchNorm, pooling etc. have none.
_PRUNABLE = (keras.layers.Conv2D, keras.layers.Dense)
# Fraction of the fine-tuning steps over which sparsity ramps up; the rest lets the surviving
# weights recover at the final sparsity.
_RAMP_FRACTION = 0.7
# Mask updates per ramp: TFMOT's default frequency (100 steps) would skip the ramp entirely on
# a short fine-tune, so it is derived from the step count instead.
_RAMP_UPDATES = 10


def prune_model(
    model: keras.Model,
    train: PreparedSet,
    val: PreparedSet,
    spec: PreprocessSpec,
    num_classes: int,
    config: PruneConfig,
    m_by_n: tuple[int, int] | None = None,
    seed: int = 0,
    backup: Path | None = None,
) -> keras.Model:
    """Prune and fine-tune a copy of ``model``; return it stripped of pruning wrappers.

    Without ``m_by_n``, sparsity ramps from 0 to ``config.target_sparsity`` with a polynomial
    schedule; with it (e.g. ``(2, 4)``), every group of n consecutive input-channel weights
    keeps its n - m largest. ``model`` itself is not modified. With ``backup``, each epoch is
    saved there and an interrupted fine-tune resumes from its last finished epoch
    (``optimize.finetune_backup``).
    """
    if m_by_n is not None:
        _check_m_by_n(m_by_n)
    steps = config.fine_tune_epochs * math.ceil(len(train) / config.batch_size)
    wrapped = _wrap(copy_with_frozen_batchnorm(model), _schedule(config, steps, m_by_n),
                    m_by_n)
    wrapped.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
                    loss="categorical_crossentropy", metrics=["accuracy"])
    wrapped.fit(
        to_tf_dataset(train, spec, num_classes, config.batch_size, AugmentConfig(), seed),
        validation_data=to_tf_dataset(val, spec, num_classes, config.batch_size, None, seed),
        epochs=config.fine_tune_epochs,
        callbacks=[*backup_callbacks(backup), sparsity.UpdatePruningStep()],
        verbose=keras_verbosity(),
    )
    try:
        return sparsity.strip_pruning(wrapped)
    except (ValueError, NotImplementedError) as exc:
        raise ConversionError(f"cannot strip the pruning wrappers from {model.name}: {exc}") \
            from exc


def _check_m_by_n(m_by_n: tuple[int, int]) -> None:
    m, n = m_by_n
    if not 0 < m < n:
        raise ConfigError(f"m_by_n must be (m, n) with 0 < m < n, e.g. (2, 4); got {m_by_n}")


def _schedule(config: PruneConfig, steps: int, m_by_n: tuple[int, int] | None) -> Any:
    if m_by_n is not None:
        # TFMOT computes the m:n mask once, at the first step, and ignores the schedule; a
        # constant one at the resulting sparsity keeps the wrapper's config truthful.
        return sparsity.ConstantSparsity(m_by_n[0] / m_by_n[1], begin_step=0)
    end_step = max(1, round(_RAMP_FRACTION * steps))
    frequency = max(1, end_step // _RAMP_UPDATES)
    # Masks update only on multiples of `frequency`; ending on one makes the last update
    # reach the final sparsity.
    end_step = frequency * (end_step // frequency)
    return sparsity.PolynomialDecay(initial_sparsity=0.0,
                                    final_sparsity=config.target_sparsity,
                                    begin_step=0, end_step=end_step, frequency=frequency)


def copy_with_frozen_batchnorm(model: keras.Model) -> keras.Model:
    """An independent copy, so fine-tuning never edits the caller's (shared) parent model.

    BatchNorm is frozen as in the training stage's fine-tuning: a short, low learning-rate
    fine-tune should adapt the weights to the mask, not re-estimate statistics from a few
    augmented batches.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return copy


def prunable_layers(model: keras.Model) -> list[tuple[keras.layers.Layer, list]]:
    """Conv2D and Dense layers (and their variables), except those that produce an output."""
    outputs = set(model.output_names)
    return [(layer, weights) for layer, weights in leaf_layers(model)
            if isinstance(layer, _PRUNABLE) and layer.name not in outputs]


def leaf_layers(model: keras.Model) -> list[tuple[keras.layers.Layer, list]]:
    """(layer, its own variables) for every layer, looking inside nested models and through
    pruning and quantization wrappers, whose masks and ranges are not counted."""
    leaves: list[tuple[keras.layers.Layer, list]] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            leaves.extend(leaf_layers(layer))
        elif isinstance(layer, keras.layers.Wrapper):
            # Not `layer.layer.weights`: a QAT wrapper re-points the inner `kernel` at its
            # fake-quantized tensor, which drops the variable from the inner layer's list.
            prefix = f"{layer.layer.name}/"
            leaves.append((layer.layer, [w for w in layer.weights if w.name.startswith(prefix)]))
        elif type(layer).__module__.startswith("tensorflow_model_optimization."):
            continue  # a layer TFMOT inserted (QAT's input QuantizeLayer): bookkeeping only
        else:
            leaves.append((layer, layer.weights))
    return leaves


def _wrap(model: keras.Model, schedule: Any, m_by_n: tuple[int, int] | None) -> keras.Model:
    names = {layer.name for layer, _ in prunable_layers(model)}

    def wrap_prunable(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name not in names:
            return layer
        return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule,
                                            sparsity_m_by_n=m_by_n)

    try:
        return keras.models.clone_model(model, clone_function=wrap_prunable)
    except ValueError as exc:
        raise ConversionError(f"TFMOT cannot wrap {model.name} for pruning: {exc}") from exc


def sparsity_report(model: keras.Model, m_by_n: tuple[int, int] | None = (2, 4)) -> dict:
    """Zeros in the prunable kernels (Conv2D and Dense, except the output layer) of ``model``.

    Returns ``sparsity`` (zeros / weights over those kernels), ``prunable_params`` and
    ``zero_params`` (their counts), ``params`` (every weight of the model, wrappers' own
    variables excluded, so a base, pruned and QAT model report the same), ``layers`` (zero
    fraction of every Conv2D/Dense kernel, the output layer included) and, when ``m_by_n`` is
    given, ``m_by_n_ok``: whether every prunable kernel has at least m zeros in each group of n
    consecutive input-channel weights (TFLite's layout for structured sparsity).
    """
    leaves = leaf_layers(model)
    kernels = {layer.name: kernel_of(weights) for layer, weights in leaves
               if isinstance(layer, _PRUNABLE)}
    prunable = [kernels[layer.name] for layer, _ in prunable_layers(model)]
    total = sum(k.size for k in prunable)
    zeros = sum(int(np.count_nonzero(k == 0)) for k in prunable)
    report: dict[str, Any] = {
        "sparsity": zeros / total if total else 0.0,
        "prunable_params": total,
        "zero_params": zeros,
        "params": sum(int(np.prod(w.shape)) for _, weights in leaves for w in weights),
        "layers": {name: float(np.mean(k == 0)) for name, k in kernels.items()},
    }
    if m_by_n is not None:
        report["m_by_n"] = list(m_by_n)
        report["m_by_n_ok"] = bool(prunable) and all(_is_m_by_n(k, m_by_n) for k in prunable)
    return report


def kernel_of(weights: list) -> np.ndarray:
    """The kernel among a layer's variables, named ``.../kernel:0`` or, once TFMOT's
    clustering wrapper is stripped, plain ``kernel:0``."""
    (kernel,) = (w for w in weights if w.name.split(":")[0].split("/")[-1] == "kernel")
    return kernel.numpy()


def _is_m_by_n(kernel: np.ndarray, m_by_n: tuple[int, int]) -> bool:
    """Vectorised twin of TFMOT's ``pruning_utils.is_pruned_m_by_n`` (a Python loop per group,
    minutes on VGG16). Groups run along the input channels, as in TFLite's
    [out, (h, w,) in] layout; a short last group counts as zero-padded, as TFMOT pads it."""
    m, n = m_by_n
    rows = np.moveaxis(kernel, -1, 0).reshape(-1, kernel.shape[-2])
    rows = np.pad(rows, ((0, 0), (0, -rows.shape[1] % n)))
    nonzero = np.count_nonzero(rows.reshape(-1, n), axis=1)
    return bool(np.all(nonzero <= n - m))


def xnnpack_latency_policy(model: keras.Model) -> tuple[bool, str]:
    """Whether XNNPack's sparse inference could speed up ``model`` once pruned.

    TFMOT's ``PruneForLatencyOnXNNPack`` policy accepts only networks that start with a
    stride-2 3x3 VALID convolution behind a ZeroPadding2D of 1, followed by layers XNNPack
    runs sparsely (1x1 convolutions, depthwise convolutions, ...). VGG16 and DenseNet121 do
    not, so their sparsity shrinks the compressed file but not the latency. Returns
    ``(False, TFMOT's reason)`` then, ``(True, "")`` otherwise.
    """
    try:
        # The check `prune_low_magnitude(model, pruning_policy=...)` runs before wrapping;
        # calling it alone spares building (and wiring into `model`'s layers) a wrapped copy.
        sparsity.PruneForLatencyOnXNNPack().ensure_model_supports_pruning(model)
    except ValueError as exc:
        return False, str(exc)
    return True, ""
