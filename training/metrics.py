"""Classification metrics over predicted probabilities (pure NumPy / scikit-learn, no TensorFlow).

Every function takes integer labels ``y_true`` of shape (N,) and class probabilities ``probs`` of
shape (N, K), so the same code scores a Keras model, a TFLite/ONNX artifact or a saved
predictions file. ``classification_metrics`` returns plain Python types only, ready for
``json.dumps`` and the Markdown reports in ``training.reports``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

ECE_BINS = 15
# Quantized (int8/uint8) heads dequantize to values a rounding step off, so [0, 1] is checked
# with a little slack rather than exactly.
_PROB_TOLERANCE = 1e-6
# Upper bound on bootstrap indices drawn at once (~32 MB of int64), whatever N is.
_BOOTSTRAP_BLOCK = 4_000_000


def classification_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy with a bootstrap 95% CI, per-class P/R/F1, OvR macro ROC-AUC, ECE, confusion.

    Predictions are the arg-max of ``probs``. Precision/recall/F1 of a class with no predicted
    (or no true) samples count as 0 rather than warning. ROC-AUC is None, with
    ``roc_auc_ovr_macro_reason`` saying why, when it is undefined for some class.
    """
    y, p = _validate(y_true, probs, n_classes=len(class_names))
    k = p.shape[1]
    labels = list(range(k))
    pred = p.argmax(axis=1)
    correct = pred == y

    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, average=None, zero_division=0.0
    )
    auc, auc_reason = _roc_auc_ovr_macro(y, p, class_names)
    lo, hi = bootstrap_accuracy_ci(correct, n_bootstrap=n_bootstrap, seed=seed)
    recall_ci, ece_ci = bootstrap_recall_and_ece_ci(y, p, n_bootstrap=n_bootstrap, seed=seed)
    return {
        "n": int(y.size),
        "accuracy": float(correct.mean()),
        "accuracy_ci95": [lo, hi],
        "n_bootstrap": int(n_bootstrap),
        "macro_f1": _macro_f1(f1, support, pred, k),
        "per_class": {
            str(name): {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "recall_ci95": recall_ci[i],
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "roc_auc_ovr_macro": auc,
        "roc_auc_ovr_macro_reason": auc_reason,
        "ece": expected_calibration_error(y, p, n_bins=ECE_BINS),
        "ece_ci95": ece_ci,
        "ece_n_bins": ECE_BINS,
        "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
        "class_names": [str(name) for name in class_names],
    }


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: sum over equal-width confidence bins of |accuracy - confidence| × share.

    Bins are right-closed, (lo, hi], as in Guo et al. 2017; a confidence of exactly 0 joins the
    first bin.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    y, p = _validate(y_true, probs)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted against the same edges the bins are defined by, so a confidence that sits
    # exactly on an edge lands in the bin below it instead of depending on float rounding.
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    correct_per_bin = np.bincount(bins, weights=correct, minlength=n_bins)
    confidence_per_bin = np.bincount(bins, weights=confidence, minlength=n_bins)
    # |n_b·acc_b − n_b·conf_b| / N is the usual weighted gap, without dividing by empty bins.
    return float(np.abs(correct_per_bin - confidence_per_bin).sum() / y.size)


def bootstrap_accuracy_ci(
    correct: np.ndarray, n_bootstrap: int, seed: int, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile-bootstrap (1 − alpha) interval of the mean of ``correct``, resampling samples."""
    hits = _as_bool_vector(correct)
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)):
        raise ValueError(f"n_bootstrap must be an integer, got {n_bootstrap!r}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    n = hits.size
    means = np.empty(n_bootstrap)
    block = max(1, _BOOTSTRAP_BLOCK // n)
    for start in range(0, n_bootstrap, block):
        stop = min(start + block, n_bootstrap)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = hits[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_recall_and_ece_ci(
    y: np.ndarray, probs: np.ndarray, n_bootstrap: int, seed: int, alpha: float = 0.05
) -> tuple[list[list[float] | None], list[float]]:
    """Percentile-bootstrap intervals of each class's recall and of the ECE, resampling images.

    A class absent from a resample contributes nothing to that resample's recall; a class with
    no true sample at all gets ``None``.
    """
    y, p = _validate(y, probs)
    rng = np.random.default_rng(seed + 1)  # not the accuracy CI's resamples, independent ones
    k, n = p.shape[1], y.size
    hit = (p.argmax(axis=1) == y)
    recalls: list[list[float]] = [[] for _ in range(k)]
    eces = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        idx = rng.integers(0, n, size=n)
        yb, hb = y[idx], hit[idx]
        for c in range(k):
            members = yb == c
            if members.any():
                recalls[c].append(float(hb[members].mean()))
        eces[b] = expected_calibration_error(yb, p[idx], n_bins=ECE_BINS)
    q = [alpha / 2, 1 - alpha / 2]
    recall_ci = [[float(v) for v in np.quantile(r, q)] if r else None for r in recalls]
    return recall_ci, [float(v) for v in np.quantile(eces, q)]


def _macro_f1(f1: np.ndarray, support: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Mean F1 over classes that occur in y_true or in the predictions (scikit-learn's default).

    A class absent from both has F1 0/0; counting it as 0 would penalise a subset merely for not
    containing that class, while a class that is only predicted still counts (as 0).
    """
    seen = (support > 0) | (np.bincount(pred, minlength=k) > 0)
    return float(np.mean(f1[seen]))


def _roc_auc_ovr_macro(
    y: np.ndarray, p: np.ndarray, class_names: Sequence[str]
) -> tuple[float | None, str | None]:
    """Mean of per-class one-vs-rest AUCs, or (None, reason) if any of them is undefined.

    Computed class by class rather than with ``multi_class="ovr"`` because scikit-learn rejects
    rows that do not sum to 1 within 1e-5, which dequantized int8 outputs routinely miss.
    """
    positives = np.bincount(y, minlength=p.shape[1])
    absent = [str(class_names[i]) for i in np.flatnonzero(positives == 0)]
    if absent:
        return None, (
            f"class(es) absent from y_true: {', '.join(absent)}; one-vs-rest ROC-AUC needs at "
            "least one positive sample per class"
        )
    if p.shape[1] < 2:
        return None, "ROC-AUC needs at least two classes"
    aucs = [roc_auc_score(y == i, p[:, i]) for i in range(p.shape[1])]
    return float(np.mean(aucs)), None


def _validate(
    y_true: np.ndarray, probs: np.ndarray, n_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes, dtypes and ranges; return (labels as int64, probs as float64)."""
    y = np.asarray(y_true)
    p = np.asarray(probs)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (N, K), got shape {p.shape}")
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D (N,), got shape {y.shape}")
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} samples but probs has {p.shape[0]} rows")
    if y.size == 0:
        raise ValueError("need at least one sample, got N = 0")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(f"probs has {p.shape[1]} columns but there are {n_classes} class names")
    if p.shape[1] < 1:
        raise ValueError("probs must have at least one class column")
    if not np.issubdtype(p.dtype, np.number) or np.issubdtype(p.dtype, np.complexfloating):
        raise ValueError(f"probs must be real numbers, got dtype {p.dtype}")
    p = p.astype(np.float64)
    bad_rows = np.flatnonzero(~np.isfinite(p).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"probs has non-finite values in {bad_rows.size} row(s), e.g. row {bad_rows[0]}"
        )
    if p.min() < -_PROB_TOLERANCE or p.max() > 1 + _PROB_TOLERANCE:
        raise ValueError(
            f"probs must lie in [0, 1] (softmax outputs, not logits); got range "
            f"[{p.min():.4g}, {p.max():.4g}]"
        )
    return _as_labels(y, p.shape[1]), p


def _as_labels(y: np.ndarray, k: int) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y_true must hold integer class indices, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"y_true values must be in [0, {k - 1}], got [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


def _as_bool_vector(correct: np.ndarray) -> np.ndarray:
    hits = np.asarray(correct)
    if hits.ndim != 1 or hits.size == 0:
        raise ValueError(f"correct must be a non-empty 1-D array, got shape {hits.shape}")
    if hits.dtype != bool:
        # 0/1 integers are accepted; anything else is almost certainly the wrong array.
        if not np.isin(hits, (0, 1)).all():
            raise ValueError("correct must be boolean (or 0/1), one entry per sample")
        hits = hits.astype(bool)
    return hits
