"""models/MODEL_CARD.md is rendered from card.json files only, and says what users must know."""

from __future__ import annotations

import pytest

from brainedge.errors import ModelLoadError
from brainedge.manifest import write_json
from optimize.model_card import render_model_card, write_model_card


def _metrics(accuracy: float, n: int) -> dict:
    names = ["glioma", "meningioma", "notumor", "pituitary"]
    return {
        "n": n, "accuracy": accuracy, "accuracy_ci95": [accuracy - 0.02, accuracy + 0.01],
        "macro_f1": accuracy - 0.01, "ece": 0.031, "ece_ci95": [0.02, 0.045],
        "class_names": names,
        "per_class": {c: {"recall": 0.9 + i / 100, "recall_ci95": [0.85, 0.95],
                          "precision": 0.9, "support": n // 4} for i, c in enumerate(names)},
        "confusion_matrix": [[10, 1, 0, 0], [2, 9, 0, 0], [0, 0, 11, 0], [0, 0, 1, 10]],
    }


def _card(**changes) -> dict:
    card = {
        "name": "densenet121", "model": "densenet121", "variant": "tflite-int8",
        "format": "tflite", "precision": "int8", "model_file": "model.tflite",
        "sha256": "ab" * 32, "size_bytes": 7_370_000,
        "recipe": {"image_size": 150, "batch_size": 32, "learning_rate": 0.001,
                   "lr_schedule": "cosine", "label_smoothing": 0.1, "weights": "none",
                   "seed": 42},
        "training": {"epochs_run": 6, "val_accuracy": 0.95, "val_images": 571,
                     "seconds_per_epoch": 900.0, "precision": "float32",
                     "learning_rates": [{"first": 1, "last": 4, "lr": 0.001},
                                        {"first": 5, "last": 5, "lr": 0.0003},
                                        {"first": 6, "last": 6, "lr": 9e-05}],
                     "dataset_counts": {"train": {"glioma": 1321}, "test": {"glioma": 300}}},
        "gate": {"status": "passed", "val_drop": 0.0023, "val_agreement": 0.99},
        "evaluation": {"full test": _metrics(0.9412, 1311),
                       "leakage-free test": _metrics(0.9301, 815)},
        "parent_evaluation": {"full test": _metrics(0.9435, 1311)},
        "audit": {"summary": {"leaked_test_images": 479, "images": {"test": 1311},
                              "leaked_test_fraction": 0.3654, "clean_test_images": 815,
                              "leaked_by_class": {"notumor": 365}}},
        "commands": ["brainedge train --model densenet121"],
    }
    card.update(changes)
    return card


def test_card_reports_every_measured_figure_with_its_interval():
    text = render_model_card([_card()])
    assert "Not a medical device" in text and "do not edit" in text
    assert "| `models/densenet121` | densenet121 | tflite-int8 | 7.3700 |" in text
    assert "94.1%" in text and "93.0%" in text  # full and leakage-free accuracy
    assert "ECE 0.031 (95% CI 0.020–0.045)" in text
    assert "0.23 points below it" in text  # test-split drop against the float32 parent
    assert "drop 0.23 points" in text  # the validation parity gate
    assert "| meningioma | 0.9100 | [0.8500, 0.9500] |" in text
    assert "true \\ predicted" in text
    assert "479 of 1311 test images (36.5%)" in text
    assert "brainedge train --model densenet121" in text
    assert "not reviewed by a radiologist" in text
    assert "Learning rate as run: 0.001 (epochs 1–4), 0.0003 (epoch 5), 9e-05 (epoch 6)." in text


def test_card_without_an_audit_says_so(tmp_path):
    write_json(tmp_path / "densenet121" / "card.json", _card(audit=None))
    text = write_model_card(tmp_path).read_text()
    assert "No audit was recorded" in text


def test_default_model_is_an_actionable_error_when_nothing_ships(monkeypatch, tmp_path):
    import runtime.shipped

    monkeypatch.setattr(runtime.shipped, "shipped_root", lambda: tmp_path)
    with pytest.raises(ModelLoadError, match="pass --model/--artifact"):
        runtime.shipped.default_artifact()
