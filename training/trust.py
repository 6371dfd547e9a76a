"""Fit what makes an artifact's answers trustworthy: its temperature and its out-of-distribution
statistics, from the same data splits the model was trained and selected on.

Called for every artifact that can be deployed: the training run (``brainedge train``) and each
optimized variant (``brainedge optimize``), so an int8 model is calibrated and scored with its
own outputs, not its parent's. What it fits is read back by ``runtime.trust``.

- Temperature: fitted on the validation split (NLL), ``runtime.temperature``.
- Out-of-distribution statistics: class means and one shared covariance of the penultimate
  features of (a stratified sample of) the training split, shrunk towards a scaled identity by
  Ledoit-Wolf (1024 features from a few thousand images would give a singular covariance).
- Threshold: on the validation split, the score that at most ``false_flag_rate`` of its slices
  exceed; the rate actually measured on the test split is reported by ``brainedge evaluate-ood``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainedge.errors import ConfigError
from runtime.ood_score import METHODS, OOD_FILE, FeatureStats, scores
from runtime.preprocess import PreprocessSpec
from runtime.temperature import apply_temperature, fit_temperature, negative_log_likelihood
from training.metrics import expected_calibration_error
from training.pipeline import PreparedSet, iterate_batches

log = logging.getLogger(__name__)

DEFAULT_METHOD = "mahalanobis"
DEFAULT_FALSE_FLAG_RATE = 0.01
DEFAULT_FIT_IMAGES = 2000

PredictWithFeatures = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


@dataclass(frozen=True, eq=False)
class TrustFit:
    temperature: float
    stats: FeatureStats
    method: str
    threshold: float
    calibration: dict[str, Any]  # the manifest's "calibration" entry
    ood: dict[str, Any]  # the manifest's "ood" entry

    def write(self, folder: Path) -> tuple[list[str], dict[str, Any]]:
        """Save ``ood.npz`` into ``folder``; the files to hash and the manifest's extra."""
        self.stats.save(Path(folder) / OOD_FILE)
        return [OOD_FILE], {"calibration": self.calibration, "ood": self.ood}


def outputs_of(predict: PredictWithFeatures, data: PreparedSet, spec: PreprocessSpec,
               num_classes: int, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and features of every image of ``data``, in order, through the shared
    scaling. A model without a features output cannot be scored: ``ConfigError``."""
    probs, feats = [], []
    for x, _ in iterate_batches(data, spec, num_classes, batch_size, None, 0):
        p, f = predict(x)
        if f is None:
            raise ConfigError("the model has no features output, so no out-of-distribution "
                              "score can be fitted; re-export it with brainedge optimize")
        probs.append(np.asarray(p, np.float64))
        feats.append(np.asarray(f, np.float64))
    return np.concatenate(probs), np.concatenate(feats)


def stratified_subset(data: PreparedSet, limit: int, seed: int) -> PreparedSet:
    """At most ``limit`` images, each class keeping its share; all of them if fewer."""
    if len(data) <= limit:
        return data
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for label in np.unique(data.labels):
        members = np.flatnonzero(data.labels == label)
        share = max(1, round(limit * len(members) / len(data)))
        keep.extend(rng.choice(members, size=min(share, len(members)), replace=False))
    idx = np.sort(np.array(keep))
    return PreparedSet(data.images[idx], data.labels[idx],
                       tuple(data.paths[i] for i in idx), ())


def fit_feature_stats(features: np.ndarray, labels: np.ndarray, weight: np.ndarray,
                      bias: np.ndarray) -> FeatureStats:
    from sklearn.covariance import LedoitWolf

    classes = np.unique(labels)
    k = int(weight.shape[1])
    if len(classes) != k:
        raise ConfigError(f"the out-of-distribution statistics need training images of all "
                          f"{k} classes; got {len(classes)}")
    means = np.stack([features[labels == c].mean(axis=0) for c in range(k)])
    centred = features - means[labels]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    # pinvh leaves the precision symmetric only to rounding; made exact, it is stored as its
    # upper triangle (runtime.ood_score), and the threshold is set on the very matrix stored.
    precision = (precision + precision.T) / 2
    return FeatureStats(means.astype(np.float32), precision.astype(np.float32),
                        np.asarray(weight, np.float32), np.asarray(bias, np.float32))


def threshold_for(val_scores: np.ndarray, false_flag_rate: float) -> float:
    """The smallest observed score that at most ``false_flag_rate`` of validation slices
    exceed (flagged means strictly above the threshold)."""
    ordered = np.sort(np.asarray(val_scores, np.float64))
    allowed = int(np.floor(false_flag_rate * len(ordered)))
    return float(ordered[len(ordered) - 1 - allowed])


def fit_trust(
    predict: PredictWithFeatures,
    train: PreparedSet,
    val: PreparedSet,
    spec: PreprocessSpec,
    classifier: tuple[np.ndarray, np.ndarray],
    method: str = DEFAULT_METHOD,
    false_flag_rate: float = DEFAULT_FALSE_FLAG_RATE,
    fit_images: int = DEFAULT_FIT_IMAGES,
    seed: int = 0,
) -> TrustFit:
    """Run the model over a training sample and the validation split; fit both.

    ``classifier`` is the classification layer's (weight (D, K), bias (K,)), for the energy
    score. ``predict`` is the artifact's own ``predict_with_features`` (or the Keras model's).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown out-of-distribution method {method!r}; choose from "
                          f"{', '.join(METHODS)}")
    if not 0 < false_flag_rate < 0.5:
        raise ConfigError(f"false_flag_rate must be in (0, 0.5), got {false_flag_rate}")
    weight, bias = classifier
    k = int(weight.shape[1])
    sample = stratified_subset(train, fit_images, seed)
    _, train_feats = outputs_of(predict, sample, spec, k)
    val_raw, val_feats = outputs_of(predict, val, spec, k)

    temperature = fit_temperature(val_raw, val.labels)
    val_probs = apply_temperature(val_raw, temperature)
    stats = fit_feature_stats(train_feats, sample.labels, weight, bias)
    val_scores = scores(stats, val_feats, val_probs)[method]
    threshold = threshold_for(val_scores, false_flag_rate)
    calibration = {
        "temperature": temperature, "fitted_on": "validation", "n": len(val),
        "nll_before": negative_log_likelihood(val_raw, val.labels),
        "nll_after": negative_log_likelihood(val_probs, val.labels),
        "ece_before": expected_calibration_error(val.labels, val_raw),
        "ece_after": expected_calibration_error(val.labels, val_probs),
    }
    ood = {
        "method": method, "file": OOD_FILE, "threshold": threshold,
        "false_flag_rate": false_flag_rate,
        "validation_flagged": float(np.mean(val_scores > threshold)),
        "fit_images": len(sample), "threshold_images": len(val),
        "features": stats.width, "covariance": "shared, Ledoit-Wolf shrinkage",
    }
    log.info("calibration: T=%.3f (val NLL %.4f -> %.4f, ECE %.4f -> %.4f); OOD %s threshold "
             "%.2f (%.2f%% of validation flagged)", temperature, calibration["nll_before"],
             calibration["nll_after"], calibration["ece_before"], calibration["ece_after"],
             method, threshold, 100 * ood["validation_flagged"])
    return TrustFit(temperature, stats, method, threshold, calibration, ood)


def classifier_weights(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of a Keras model's classification layer, unwrapping TFMOT wrappers."""
    from runtime.keras import head_layer

    layer = head_layer(model)
    layer = getattr(layer, "layer", layer)  # pruning / quantization wrappers keep it here
    kernel, bias = layer.kernel, layer.bias
    return np.asarray(kernel.numpy(), np.float32), np.asarray(bias.numpy(), np.float32)


def keras_with_features(model: Any) -> PredictWithFeatures:
    """A Keras classifier as ``predict_with_features``: its output and its head's input."""
    from brainedge.tf_compat import keras
    from runtime.keras import head_input

    both = keras.Model(model.inputs, [model.output, head_input(model)])

    def predict(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, feats = both(x, training=False)
        return np.asarray(probs), np.asarray(feats)

    return predict
