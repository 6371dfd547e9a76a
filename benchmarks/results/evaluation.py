"""The evaluation tables of ``brainedge results``: accuracy with its bootstrap CI, macro-F1 and
ECE on the full test split and on the leakage-free list, then each class's recall."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.results.inputs import CLEAN_TEST, EVALUATION, FULL_TEST, RunFolder, problem_lines
from brainedge.tables import Column, markdown_table

SUBSET_NAMES = {FULL_TEST: "full test", CLEAN_TEST: "leakage-free"}


def evaluation_markdown(runs: Sequence[RunFolder], seeds_section: str = "") -> str:
    """``seeds_section``: the comparison with other seeds of the same recipe (seeds.py)."""
    scored = [(run, subset, metrics) for run in runs for subset, metrics in _subsets(run)]
    parts = ["# Evaluation"]
    if scored:
        parts += [
            _accuracy_table(scored),
            "95% CI: percentile bootstrap over test images. ECE: top-label expected calibration "
            "error. Leakage-free: the test images `brainedge audit` found no exact or near "
            "duplicate of in Training.",
            "## Recall per class",
            _recall_table(scored),
        ]
    parts += problem_lines(runs, EVALUATION)
    parts += [seeds_section] if seeds_section else []
    return "\n\n".join(parts) + "\n"


def _subsets(run: RunFolder) -> list[tuple[str, Mapping[str, Any]]]:
    results = run.metrics or {}
    return [(name, results[name]) for name in SUBSET_NAMES
            if isinstance(results.get(name), Mapping)]


def _accuracy_table(scored: Sequence[tuple[RunFolder, str, Mapping[str, Any]]]) -> str:
    rows = [
        {
            "model": run.model, "subset": SUBSET_NAMES[subset], "n": m.get("n"),
            "accuracy": m.get("accuracy"), "ci": m.get("accuracy_ci95"),
            "macro_f1": m.get("macro_f1"), "auc": m.get("roc_auc_ovr_macro"),
            "ece": m.get("ece"), "ece_ci": m.get("ece_ci95"),
        }
        for run, subset, m in scored
    ]
    columns: list[Column] = [
        ("model", "Model"), ("subset", "Test subset"), ("n", "n"),
        ("accuracy", "Accuracy", ".3f"), ("ci", "95% CI", ".3f"),
        ("macro_f1", "Macro-F1", ".3f"), ("auc", "ROC-AUC", ".3f"), ("ece", "ECE", ".3f"),
    ]
    if any(r["ece_ci"] is not None for r in rows):
        columns.append(("ece_ci", "ECE 95% CI", ".3f"))
    return markdown_table(rows, columns)


def _recall_table(scored: Sequence[tuple[RunFolder, str, Mapping[str, Any]]]) -> str:
    classes = list(dict.fromkeys(c for _, _, m in scored for c in m.get("per_class") or {}))
    rows = []
    for run, subset, m in scored:
        per_class = m.get("per_class") or {}
        row: dict[str, Any] = {"model": run.model, "subset": SUBSET_NAMES[subset]}
        row.update({f"c{i}": recall_text(per_class.get(name)) for i, name in enumerate(classes)})
        rows.append(row)
    columns: list[Column] = [("model", "Model"), ("subset", "Test subset")]
    columns += [(f"c{i}", name) for i, name in enumerate(classes)]
    return markdown_table(rows, columns)


def recall_text(values: Mapping[str, Any] | None) -> str | None:
    """"0.830 [0.790, 0.868] (n=306)": recall, its CI when evaluate recorded one, support."""
    if not values or values.get("recall") is None:
        return None
    text = f"{values['recall']:.3f}"
    ci = values.get("recall_ci95")
    if isinstance(ci, Sequence) and len(ci) == 2:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    if values.get("support") is not None:
        text += f" (n={values['support']})"
    return text
