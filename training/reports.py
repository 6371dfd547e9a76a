"""Human-readable reports of ``training.metrics`` results: Markdown tables and a confusion PNG.

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas, never through pyplot, so
nothing here changes the process-wide backend or leaves figures open in long-running jobs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from brainedge.manifest import atomic_path
from brainedge.tables import markdown_table

MEDICAL_LINE = "Decision support only, not a diagnosis."


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]] | np.ndarray,
    class_names: Sequence[str],
    path: Path,
    title: str,
) -> None:
    """Write a PNG heat map coloured by row share, each cell showing its count and row percent."""
    counts = _check_confusion(cm, class_names)
    shares = _row_normalise(counts)
    k = len(class_names)
    size = 2.0 + 1.1 * k
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            # White on dark cells, black on light ones, so every label stays readable.
            colour = "white" if shares[i, j] > 0.5 else "black"
            label = f"{counts[i, j]}\n{100 * shares[i, j]:.1f}%"
            ax.text(j, i, label, ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(k), labels=list(class_names), rotation=30, ha="right")
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of true class")
    # atomic_path's temporary name ends in .tmp, so the format must be given explicitly.
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def plot_reliability(labels: np.ndarray, curves: Mapping[str, np.ndarray], path: Path,
                     title: str, n_bins: int) -> None:
    """Reliability diagram: accuracy against mean confidence per confidence bin (the ECE's
    bins), one line per set of probabilities; on the diagonal a model means what it says."""
    fig = Figure(figsize=(5.5, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    y = np.asarray(labels)
    for name, probs in curves.items():
        p = np.asarray(probs, dtype=np.float64)
        confidence, correct = p.max(axis=1), (p.argmax(axis=1) == y)
        bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
        used = [b for b in range(n_bins) if (bins == b).any()]
        ax.plot([confidence[bins == b].mean() for b in used],
                [correct[bins == b].mean() for b in used], marker="o", label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left")
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def metrics_markdown(results: Mapping[str, Mapping[str, Any]], title: str) -> str:
    """Markdown report: one summary row per subset, then a per-class table for each subset."""
    parts = [f"# {title}", MEDICAL_LINE, "## Summary", _summary_table(results)]
    notes = _summary_notes(results)
    if notes:
        parts.append("\n".join(notes))
    for subset, metrics in results.items():
        parts.append(f"## Per class: {subset}")
        parts.append(_per_class_table(metrics))
    return "\n\n".join(parts) + "\n"


def _summary_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    rows = [
        {
            "subset": subset,
            "n": m.get("n"),
            "accuracy": m.get("accuracy"),
            "ci": m.get("accuracy_ci95"),
            "macro_f1": m.get("macro_f1"),
            "auc": m.get("roc_auc_ovr_macro"),
            "ece": m.get("ece"),
            "ece_ci": m.get("ece_ci95"),
        }
        for subset, m in results.items()
    ]
    columns = [
        ("subset", "Subset"),
        ("n", "n"),
        ("accuracy", "Accuracy"),
        ("ci", "95% CI"),
        ("macro_f1", "Macro-F1"),
        ("auc", "ROC-AUC (OvR macro)"),
        ("ece", "ECE"),
        ("ece_ci", "ECE 95% CI"),
    ]
    return markdown_table(rows, columns)


def _summary_notes(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    notes = []
    resamples = _shared_setting(results, "n_bootstrap")
    if resamples is not None:
        notes.append(f"- 95% CI: percentile bootstrap over samples, {resamples} resamples.")
    bins = _shared_setting(results, "ece_n_bins")
    if bins is not None:
        notes.append(f"- ECE: top-label, {bins} equal-width confidence bins.")
    for subset, m in results.items():
        if m.get("temperature") is not None and m.get("ece_uncalibrated") is not None:
            lo, hi = m["ece_uncalibrated_ci95"]
            notes.append(f"- Calibration ({subset}): temperature {m['temperature']:.3f}, fitted "
                         f"on the validation split; ECE {m['ece_uncalibrated']:.4f} "
                         f"[{lo:.4f}, {hi:.4f}] before, {m['ece']:.4f} "
                         f"[{m['ece_ci95'][0]:.4f}, {m['ece_ci95'][1]:.4f}] after.")
        elif "temperature" in m and m["temperature"] is None:
            notes.append(f"- Calibration ({subset}): none; this artifact carries no "
                         "temperature (made before calibration existed).")
        if m.get("roc_auc_ovr_macro") is None and m.get("roc_auc_ovr_macro_reason"):
            notes.append(f"- ROC-AUC for {subset}: {m['roc_auc_ovr_macro_reason']}")
    return notes


def _shared_setting(results: Mapping[str, Mapping[str, Any]], key: str) -> str | None:
    # A note stated once for the table must not hide that subsets were scored differently.
    values = {str(m[key]) for m in results.values() if key in m}
    if not values:
        return None
    return values.pop() if len(values) == 1 else f"{'/'.join(sorted(values))} (varies by subset)"


def _per_class_table(metrics: Mapping[str, Any]) -> str:
    rows = [{"class": name, **values} for name, values in metrics.get("per_class", {}).items()]
    columns = [
        ("class", "Class"),
        ("precision", "Precision"),
        ("recall", "Recall"),
        ("recall_ci95", "Recall 95% CI"),
        ("f1", "F1"),
        ("support", "Support"),
    ]
    return markdown_table(rows, columns)


def _check_confusion(
    cm: Sequence[Sequence[int]] | np.ndarray, class_names: Sequence[str]
) -> np.ndarray:
    counts = np.asarray(cm)
    k = len(class_names)
    if counts.shape != (k, k):
        raise ValueError(
            f"confusion matrix must be {k}×{k} to match the class names, got shape {counts.shape}"
        )
    if not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise ValueError("confusion matrix must hold non-negative integer counts")
    return counts


def _row_normalise(counts: np.ndarray) -> np.ndarray:
    totals = counts.sum(axis=1, keepdims=True)
    # A class with no true samples gets an all-zero row instead of a 0/0 warning.
    return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
