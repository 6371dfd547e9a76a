"""training.metrics and training.reports: hand-checked values, input validation, report output."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn is not installed (brainedge[train])")
pytest.importorskip("matplotlib", reason="matplotlib is not installed (brainedge[train])")

from sklearn.metrics import f1_score, roc_auc_score

from training.metrics import (
    bootstrap_accuracy_ci,
    classification_metrics,
    expected_calibration_error,
)
from training.reports import markdown_table, metrics_markdown, plot_confusion_matrix

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def confident_probs(pred: list[int], k: int, top: float = 0.7) -> np.ndarray:
    """Rows with ``top`` on the predicted class and the rest spread evenly."""
    probs = np.full((len(pred), k), (1.0 - top) / (k - 1))
    probs[np.arange(len(pred)), pred] = top
    return probs


def test_perfect_predictions_score_one_everywhere_with_a_degenerate_ci():
    y = np.repeat(np.arange(4), 5)
    result = classification_metrics(y, confident_probs(list(y), 4, top=0.9), CLASSES)

    assert result["n"] == 20
    assert result["accuracy"] == 1.0
    assert result["macro_f1"] == 1.0
    assert result["roc_auc_ovr_macro"] == 1.0
    assert result["roc_auc_ovr_macro_reason"] is None
    assert result["accuracy_ci95"] == [1.0, 1.0]
    assert result["confusion_matrix"] == (5 * np.eye(4, dtype=int)).tolist()
    assert result["class_names"] == list(CLASSES)


def test_small_confusion_case_matches_hand_computed_precision_and_recall():
    # rows = true, cols = predicted: [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = [0, 0, 1, 1, 2, 2]
    result = classification_metrics(y, confident_probs(pred, 3), ["a", "b", "c"])

    assert result["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    per_class = result["per_class"]
    assert per_class["a"]["precision"] == pytest.approx(1.0)
    assert per_class["a"]["recall"] == pytest.approx(2 / 3)
    assert per_class["b"]["precision"] == pytest.approx(1 / 2)
    assert per_class["b"]["recall"] == pytest.approx(1 / 2)
    assert per_class["c"]["precision"] == pytest.approx(1 / 2)
    assert per_class["c"]["recall"] == pytest.approx(1.0)
    assert [per_class[c]["support"] for c in "abc"] == [3, 2, 1]
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_result_is_plain_json_without_nan():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=40)
    y = rng.integers(0, 4, size=40)
    result = classification_metrics(y, probs, CLASSES, n_bootstrap=50)

    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_roc_auc_matches_sklearn_ovr_macro_on_softmax_outputs():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(4), size=200)
    y = rng.integers(0, 4, size=200)
    result = classification_metrics(y, probs, CLASSES, n_bootstrap=10)

    expected = roc_auc_score(y, probs, multi_class="ovr", average="macro")
    assert result["roc_auc_ovr_macro"] == pytest.approx(expected)


def test_roc_auc_is_none_with_a_reason_when_a_class_is_absent():
    y = np.array([0, 0, 1, 1, 3])
    result = classification_metrics(y, confident_probs([0, 1, 1, 1, 3], 4), CLASSES)

    assert result["roc_auc_ovr_macro"] is None
    assert "notumor" in result["roc_auc_ovr_macro_reason"]


def test_never_predicted_class_scores_zero_precision_without_warning():
    # filterwarnings=error turns an UndefinedMetricWarning into a failure here.
    y = np.array([0, 1, 2, 3])
    result = classification_metrics(y, confident_probs([0, 0, 2, 3], 4), CLASSES)

    assert result["per_class"]["meningioma"]["precision"] == 0.0
    assert result["per_class"]["meningioma"]["recall"] == 0.0
    assert result["per_class"]["meningioma"]["f1"] == 0.0


def test_macro_f1_ignores_a_class_absent_from_labels_and_predictions():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = [0, 1, 1, 1, 2, 2]
    result = classification_metrics(y, confident_probs(pred, 4), CLASSES)

    assert result["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1.0) / 3)


def test_ece_is_zero_when_confidence_equals_accuracy():
    # Confidence 0.75 everywhere and 3 of 4 right: accuracy in the one occupied bin is 0.75.
    probs = np.tile([0.75, 0.25], (4, 1))
    y = np.array([0, 0, 0, 1])

    assert expected_calibration_error(y, probs) == pytest.approx(0.0, abs=1e-12)


def test_ece_is_zero_for_confident_correct_predictions():
    y = np.array([0, 1, 2])

    assert expected_calibration_error(y, np.eye(3)) == pytest.approx(0.0, abs=1e-12)


def test_ece_matches_hand_computed_binned_value():
    # Bin (0.867, 0.933]: confidences 0.9, 0.9, one right -> |1 - 1.8| = 0.8.
    # Bin (0.533, 0.600]: confidences 0.6, 0.6, both right -> |2 - 1.2| = 0.8.
    # ECE = (0.8 + 0.8) / 4 = 0.4; an unbinned mean |correct - conf| would give 0.45.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])

    assert expected_calibration_error(y, probs, n_bins=15) == pytest.approx(0.4)


def test_ece_in_metrics_uses_fifteen_bins():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    result = classification_metrics(y, probs, ["a", "b"], n_bootstrap=10)

    assert result["ece"] == pytest.approx(expected_calibration_error(y, probs, n_bins=15))
    assert result["ece"] != pytest.approx(expected_calibration_error(y, probs, n_bins=1))


def test_bootstrap_ci_contains_the_point_estimate():
    correct = np.arange(200) % 5 != 0  # accuracy 0.8
    lo, hi = bootstrap_accuracy_ci(correct, n_bootstrap=1000, seed=0)

    assert lo < correct.mean() < hi
    assert lo > 0.7 and hi < 0.9


def test_bootstrap_ci_narrows_with_more_samples():
    small = np.arange(50) % 5 != 0
    large = np.arange(5000) % 5 != 0
    lo_s, hi_s = bootstrap_accuracy_ci(small, n_bootstrap=1000, seed=0)
    lo_l, hi_l = bootstrap_accuracy_ci(large, n_bootstrap=1000, seed=0)

    assert (hi_l - lo_l) < (hi_s - lo_s) / 5


def test_bootstrap_ci_is_reproducible_for_a_seed():
    correct = np.random.default_rng(3).random(300) < 0.9

    first = bootstrap_accuracy_ci(correct, n_bootstrap=200, seed=7)
    assert bootstrap_accuracy_ci(correct, n_bootstrap=200, seed=7) == first
    assert bootstrap_accuracy_ci(correct, n_bootstrap=200, seed=8) != first


@pytest.mark.parametrize(
    ("y", "probs", "names", "match"),
    [
        (np.array([0, 1]), np.array([0.5, 0.5]), CLASSES[:2], "2-D"),
        (np.array([[0], [1]]), np.eye(2), CLASSES[:2], "1-D"),
        (np.array([0, 1, 1]), np.eye(2), CLASSES[:2], "samples"),
        (np.array([0, 1]), np.eye(2), CLASSES, "class names"),
        (np.array([], dtype=int), np.empty((0, 2)), CLASSES[:2], "at least one"),
        (np.array([0, 1]), np.array([[np.nan, 0.5], [0.5, 0.5]]), CLASSES[:2], "non-finite"),
        (np.array([0, 1]), np.array([[np.inf, 0.5], [0.5, 0.5]]), CLASSES[:2], "non-finite"),
        (np.array([0, 2]), np.eye(2), CLASSES[:2], r"\[0, 1\]"),
        (np.array([0.0, 1.0]), np.eye(2), CLASSES[:2], "integer"),
        (np.array([0, 1]), np.array([[3.0, -1.0], [0.0, 1.0]]), CLASSES[:2], "logits"),
    ],
)
def test_bad_inputs_raise_value_error(y, probs, names, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(y, probs, names)


def test_bootstrap_rejects_empty_or_non_boolean_input():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_accuracy_ci(np.array([], dtype=bool), n_bootstrap=10, seed=0)
    with pytest.raises(ValueError, match="boolean"):
        bootstrap_accuracy_ci(np.array([0, 2, 1]), n_bootstrap=10, seed=0)
    with pytest.raises(ValueError, match="at least 1"):
        bootstrap_accuracy_ci(np.array([True]), n_bootstrap=0, seed=0)


def test_confusion_png_is_written_and_valid(tmp_path):
    path = tmp_path / "nested" / "confusion.png"
    plot_confusion_matrix(
        [[5, 1, 0, 0], [0, 4, 2, 0], [0, 0, 6, 0], [0, 0, 0, 0]], CLASSES, path, "test split"
    )

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_confusion_png_rejects_a_matrix_that_does_not_match_the_classes(tmp_path):
    with pytest.raises(ValueError, match="4×4"):
        plot_confusion_matrix(np.eye(3, dtype=int), CLASSES, tmp_path / "cm.png", "bad")
    assert not (tmp_path / "cm.png").exists()


def test_markdown_report_has_notice_summary_rows_and_per_class_tables():
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(4), 10)
    full = classification_metrics(y, rng.dirichlet(np.ones(4), size=40), CLASSES, n_bootstrap=20)
    clean = classification_metrics(
        y[:30], rng.dirichlet(np.ones(4), size=30), CLASSES, n_bootstrap=20
    )
    report = metrics_markdown({"full test": full, "leakage-free test": clean}, "VGG16 test")

    lines = report.splitlines()
    assert lines[0] == "# VGG16 test"
    assert "Decision support only, not a diagnosis." in lines[:3]
    assert any(line.startswith("| full test | 40 |") for line in lines)
    assert any(line.startswith("| leakage-free test | 30 |") for line in lines)
    assert "## Per class: full test" in lines
    assert "## Per class: leakage-free test" in lines
    assert "notumor" in report and "pituitary" in report  # the AUC reason for the 30-row subset
    assert sum(line.startswith("| glioma |") for line in lines) == 2


def test_markdown_table_formats_floats_none_and_pipes():
    table = markdown_table(
        [
            {"name": "a|b", "x": 0.123456, "n": 3, "tiny": 1.5e-5, "ci": [0.5, 0.75]},
            {"name": "c", "x": None, "n": 4, "tiny": 0.0, "ci": None},
        ],
        [("name", "Name"), ("x", "X"), ("n", "N"), ("tiny", "Tiny"), ("ci", "CI")],
    )

    assert table.splitlines() == [
        "| Name | X | N | Tiny | CI |",
        "| --- | ---: | ---: | ---: | --- |",
        "| a\\|b | 0.1235 | 3 | 1.5e-05 | [0.5000, 0.7500] |",
        "| c | – | 4 | 0.0000 | – |",
    ]
