"""Evaluation and comparison of a trained tiny run, through the CLI as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main

pytestmark = pytest.mark.tf


def _clean_list(phantom_data: Path, tmp_path: Path, drop: int) -> tuple[Path, int]:
    tests = sorted((phantom_data / "Testing").rglob("*.jpg"))
    kept = tests[drop:]
    path = tmp_path / "clean_test.txt"
    path.write_text("# made by hand for the test\n"
                    + "\n".join(str(p.relative_to(phantom_data)) for p in kept) + "\n")
    return path, len(kept)


def test_evaluate_reports_full_and_leakage_free_subsets(
    trained_run: Path, phantom_data: Path, tmp_path: Path
) -> None:
    clean, n_clean = _clean_list(phantom_data, tmp_path, drop=3)
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, ["evaluate", str(trained_run), "--clean-list", str(clean),
                                       "--out", str(out), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())["results"]
    assert metrics["full test"]["n"] == 16
    assert metrics["leakage-free test"]["n"] == n_clean
    full = metrics["full test"]
    lo, hi = full["accuracy_ci95"]
    assert lo <= full["accuracy"] <= hi
    assert sum(map(sum, full["confusion_matrix"])) == 16
    for name in ("report.md", "predictions.csv", "confusion_full_test.png",
                 "confusion_leakage_free_test.png", "confusion_full_test.json"):
        assert (out / name).stat().st_size > 0, name
    assert "not a diagnosis" in (out / "report.md").read_text()
    assert len((out / "predictions.csv").read_text().splitlines()) == 17
    # Calibration: the run's own temperature, ECE before and after, a reliability diagram.
    manifest = json.loads((trained_run / "manifest.json").read_text())
    temperature = manifest["extra"]["calibration"]["temperature"]
    assert full["temperature"] == temperature
    assert full["ece_uncalibrated"] >= 0 and len(full["ece_uncalibrated_ci95"]) == 2
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert f"temperature {temperature:.3f}" in (out / "report.md").read_text()


def test_evaluate_refuses_a_clean_list_from_another_dataset(
    trained_run: Path, tmp_path: Path
) -> None:
    stranger = tmp_path / "other.txt"
    stranger.write_text("Testing/glioma/not-here.jpg\n")
    result = CliRunner().invoke(main, ["evaluate", str(trained_run), "--clean-list",
                                       str(stranger), "--out", str(tmp_path / "e")])
    assert result.exit_code == 1
    assert "none of the 16 test images" in result.output


def test_evaluate_refuses_a_dataset_with_other_classes(trained_run: Path, tmp_path: Path) -> None:
    import cv2
    import numpy as np

    for split in ("Training", "Testing"):
        for cls in ("cats", "dogs"):
            for i in range(2):
                folder = tmp_path / "pets" / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / f"{i}.png"), np.full((40, 40), 60 * i, np.uint8))
    result = CliRunner().invoke(main, ["evaluate", str(trained_run), "--data",
                                       str(tmp_path / "pets"), "--out", str(tmp_path / "e")])
    assert result.exit_code == 1
    assert "trained on" in result.output


def test_compare_table_has_accuracy_and_cost_columns(trained_run: Path, tmp_path: Path) -> None:
    CliRunner().invoke(main, ["evaluate", str(trained_run), "--bootstrap", "200"])
    out = tmp_path / "compare.md"
    result = CliRunner().invoke(main, ["compare", str(trained_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.with_suffix(".json").read_text())
    row = rows[0]
    assert row["model"] == "vgg16"
    # VGG16 convolutions at 32 px: about 2 x 0.31 GMAC; the profiler must see them.
    assert 0.5 < row["gflops"] < 0.8
    assert row["params_m"] == pytest.approx(14.7, abs=0.1)
    assert row["test_accuracy"] is not None
    assert "| vgg16 |" in out.read_text()


def test_compare_refuses_an_unfinished_run(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "half")])
    assert result.exit_code == 1
    assert "not a finished BrainEdge artifact" in result.output
