"""brainedge results: the README's tables regenerated from small fake run folders and bench JSON,
checked against numbers computed here from those inputs."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from benchmarks.results import ResultsConfig, write_results
from brainedge.errors import ConfigError
from cli.results import results, spread_option
from tests.test_bench_report import table_after, write_json, x86_doc
from training.ood_eval import GroupResult, OODEvaluation

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
PAGES = ("summary.md", "audit.md", "training.md", "evaluation.md", "optimize.md", "trust.md",
         "bench.md")
# Each artifact's temperature: the run's own, then its variants' (fitted on their own outputs).
TEMPERATURES = {"run": 1.5, "tflite-fp32": 1.48, "tflite-int8": 1.31}
METHODS = ("mahalanobis", "energy", "msp")


# --------------------------------------------------------------------------------------------
# Fake inputs, shaped like what train, evaluate, optimize and bench write


def subset_metrics(n: int, accuracy: float, recalls: list[float]) -> dict[str, Any]:
    return {
        "n": n, "accuracy": accuracy, "accuracy_ci95": [accuracy - 0.02, accuracy + 0.015],
        "n_bootstrap": 1000, "macro_f1": accuracy - 0.004,
        "per_class": {
            name: {"precision": 0.9, "recall": r, "recall_ci95": [r - 0.03, r + 0.02],
                   "f1": 0.9, "support": n // 4}
            for name, r in zip(CLASSES, recalls, strict=True)
        },
        "roc_auc_ovr_macro": 0.993, "roc_auc_ovr_macro_reason": None,
        "ece": 0.018, "ece_ci95": [0.012, 0.025], "ece_n_bins": 15,
    }


def fake_run(root: Path, model: str, *, accuracy: float, evaluated: bool = True,
             clean: bool = True, optimized: bool = True) -> Path:
    run = root / model
    config = {"data": "../shared/datasets/brain-tumor-mri", "arch": model, "image_size": 150,
              "epochs": 20, "batch_size": 32, "learning_rate": 0.001, "weights": "none",
              "fine_tune_epochs": 0, "val_fraction": 0.1, "seed": 42,
              "augment": {"rotation_deg": 18.0, "brightness": 0.1, "shift": 0.05,
                          "hflip": True, "vflip": False},
              "lr_schedule": "cosine", "warmup_epochs": 1.0, "min_learning_rate": 1e-06,
              "label_smoothing": 0.1, "class_weight": "none"}
    write_json(run / "config.json", config)
    write_json(run / "history.json",
               [{"epoch": e, "val_accuracy": 0.5 + e / 40, "epoch_seconds": 170.0 + e,
                 "lr": 0.001 if e < 12 else 0.0003} for e in range(20)])
    write_json(run / "manifest.json", {
        "model": model, "format": "keras", "precision": "float32",
        "metrics": {"val_accuracy": accuracy - 0.01, "val_images": 571, "epochs_run": 20,
                    "seconds_per_epoch": 184.5, "params": 7_037_504},
        "files": {"model.keras": f"{model}-keras-sha"},
        "extra": {"training_precision": "mixed_bfloat16", "host": "box-2c",
                  **trust_extra(TEMPERATURES["run"])},
    })
    if evaluated:
        write_eval(run, model, accuracy, TEMPERATURES["run"], clean=clean)
    if optimized:
        write_json(run / "optimized" / "summary.json", {"run_dir": str(run), "variants": [
            {"variant": "tflite-fp32", "size_bytes": 28_200_000, "gzip_bytes": 26_100_000,
             "size_ratio": 1.0, "sparsity": 0.0, "val_accuracy": accuracy - 0.01,
             "val_drop": 0.0, "val_agreement": 1.0, "tolerance": 0.01, "status": "passed"},
            {"variant": "tflite-int8", "size_bytes": 7_600_000, "gzip_bytes": 7_100_000,
             "size_ratio": 0.27, "sparsity": 0.0, "val_accuracy": accuracy - 0.024,
             "val_drop": 0.014, "val_agreement": 0.97, "tolerance": 0.01, "status": "failed"},
            {"variant": "onnx-int8", "status": "error", "error": "tf2onnx crashed"},
        ]})
        for variant in ("tflite-fp32", "tflite-int8"):  # onnx-int8 failed: no folder
            write_json(run / "optimized" / variant / "manifest.json", {
                "model": model, "format": "tflite", "precision": variant[len("tflite-"):],
                "files": {"model.tflite": f"{model}-{variant}-sha"}, "parent": str(run),
                "extra": {"variant": variant, **trust_extra(TEMPERATURES[variant])}})
        write_eval(run / "optimized" / "tflite-int8", model, accuracy - 0.02,
                   TEMPERATURES["tflite-int8"], clean=False)
    return run


def trust_extra(temperature: float) -> dict[str, Any]:
    """A manifest's extra.calibration and extra.ood, as training/trust.py writes them."""
    return {
        "calibration": {"temperature": temperature, "fitted_on": "validation", "n": 571,
                        "nll_before": 0.31, "nll_after": 0.24,
                        "ece_before": 0.04 + temperature / 100, "ece_after": 0.017},
        "ood": {"method": "mahalanobis", "file": "ood.npz", "threshold": 412.5,
                "false_flag_rate": 0.01, "validation_flagged": 0.0088, "fit_images": 2000,
                "threshold_images": 571, "features": 1024,
                "covariance": "shared, Ledoit-Wolf shrinkage"},
    }


def write_eval(folder: Path, model: str, accuracy: float, temperature: float | None,
               clean: bool = True) -> None:
    """eval/metrics.json as `brainedge evaluate` writes it, calibrated at ``temperature``."""
    results = {"full test": subset_metrics(1311, accuracy, [0.97, 0.83, 0.99, 0.96])}
    if clean:
        results["leakage-free test"] = subset_metrics(815, accuracy + 0.003,
                                                      [0.96, 0.85, 0.92, 0.97])
    for metrics in results.values():
        metrics["temperature"] = temperature
        if temperature is not None:
            metrics["ece_uncalibrated"] = 0.02 + temperature / 20
            metrics["ece_uncalibrated_ci95"] = [0.05, 0.11]
    write_json(folder / "eval" / "metrics.json", {"model": model, "results": results})


def ood_doc(artifact: Path | str, sha256: str, *, far: float = 0.991, near: float = 0.874,
            flagged: float = 0.012) -> dict[str, Any]:
    """ood.json as `brainedge evaluate-ood` writes it, through the same to_dict."""

    def group(name: str, n: int, value: float) -> GroupResult:
        aurocs = {m: value - 0.04 * i for i, m in enumerate(METHODS)}
        return GroupResult(name, n, aurocs, {m: (a - 0.01, a + 0.005) for m, a in aurocs.items()},
                           flagged=0.9, rules_flagged=0.25, rules_only=0.02)

    rows = (group("near", 200, near), group("near/inverted", 50, near + 0.1),
            group("near/other-mri", 150, near - 0.03), group("far", 120, far),
            group("far/ct", 40, far - 0.01))
    evaluation = OODEvaluation("mahalanobis", 412.5, METHODS, 1311, flagged, 0.004, rows, 1000)
    return {"artifact": str(artifact), "sha256": sha256, "ood_set": "data/ood",
            "data": "../shared/datasets/brain-tumor-mri", **evaluation.to_dict()}


def write_ood_reports(ood: Path, runs: list[Path]) -> None:
    """The Makefile's layout, OOD/RUN/ARTIFACT/ood.json, for three of the artifacts."""
    dense = runs[0]
    int8 = dense / "optimized" / "tflite-int8"
    write_json(ood / "densenet121" / "densenet121" / "ood.json",
               ood_doc(dense, "densenet121-keras-sha", far=0.97, near=0.86, flagged=0.01))
    write_json(ood / "densenet121" / "tflite-int8" / "ood.json",
               ood_doc(int8, "densenet121-tflite-int8-sha"))
    # Evaluated from another folder: matched by the layout, not by the path it recorded.
    write_json(ood / "vgg16" / "tflite-int8" / "ood.json",
               ood_doc("elsewhere/tflite-int8", "vgg16-tflite-int8-sha", near=0.80,
                       flagged=0.031))


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[list[Path], Path]:
    runs = [fake_run(tmp_path / "runs", "densenet121", accuracy=0.931),
            fake_run(tmp_path / "runs", "vgg16", accuracy=0.871)]
    bench = tmp_path / "bench"
    write_json(bench / "x86.json", x86_doc())
    audit = bench.parent / "audit"
    audit.mkdir()
    (audit / "audit.md").write_text("# Duplicate and leakage audit\n\n479 of 1311 leak\n")
    write_ood_reports(bench.parent / "ood", runs)
    return runs, bench


def generate(runs: list[Path], bench: Path, out: Path, strict: bool = False,
             ood: Path | None = None) -> dict[str, str]:
    """Every page; the audit and OOD reports are looked for beside ``bench`` unless told."""
    write_results(ResultsConfig(runs=tuple(runs), bench=bench, out=out, strict=strict,
                                audit=bench.parent / "audit", ood=ood or bench.parent / "ood"))
    return {name: (out / name).read_text(encoding="utf-8") for name in PAGES}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def header(md: str) -> str:
    """The provenance block a page starts with, up to the first blank line."""
    return md.split("\n\n", 1)[0]


# --------------------------------------------------------------------------------------------
# Table contents


def test_summary_accuracy_row_comes_from_the_evaluation_json(inputs, tmp_path):
    runs, _ = inputs
    bench = tmp_path / "no-bench"  # no plots to draw: this test reads other pages
    md = generate(runs, bench, tmp_path / "out")["summary.md"]
    evaluation = json.loads((runs[0] / "eval" / "metrics.json").read_text())["results"]
    full, clean = evaluation["full test"], evaluation["leakage-free test"]

    rows = {r["Model"]: r for r in table_after(md, "## Accuracy")}
    assert list(rows) == ["densenet121", "vgg16"]  # the order of --runs
    row = rows["densenet121"]
    lo, hi = full["accuracy_ci95"]
    assert row["Test acc. [95% CI]"] == f"{full['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]"
    assert row["Test acc. [95% CI]"].startswith("0.931 ")
    assert row["Test n"] == "1311" and row["Leak-free n"] == "815"
    lo, hi = clean["accuracy_ci95"]
    assert row["Leak-free acc. [95% CI]"] == f"{clean['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]"
    assert row["Macro-F1 (full / leak-free)"] == (
        f"{full['macro_f1']:.3f} / {clean['macro_f1']:.3f}")
    # meningioma has the lowest recall of the full split (0.83)
    assert row["Lowest recall (full)"].startswith("meningioma 0.830 [0.800, 0.850]")
    assert (row["Epochs"], row["s/epoch"]) == ("20", "184.5")


def test_training_table_has_recipe_epochs_val_accuracy_and_time(inputs, tmp_path):
    runs, _ = inputs
    bench = tmp_path / "no-bench"  # no plots to draw: this test reads other pages
    md = generate(runs, bench, tmp_path / "out")["training.md"]
    history = json.loads((runs[1] / "history.json").read_text())

    row = {r["Model"]: r for r in table_after(md, "# Training")}["vgg16"]
    assert row["Run"] == runs[1].as_posix()
    assert row["Epochs"] == "20 of 20"
    assert row["Best val. acc."] == f"{0.871 - 0.01:.3f}"
    assert row["s/epoch"] == "184.5"
    assert row["Training min"] == f"{sum(h['epoch_seconds'] for h in history) / 60:.1f}"
    assert row["Precision"] == "mixed_bfloat16"
    for part in ("150 px", "from scratch", "lr 0.001 cosine to 1e-06 after 1 warm-up",
                 "label smoothing 0.1", "20 epochs, batch 32", "rotation ±18°", "h-flip",
                 "val 10%", "seed 42"):
        assert part in row["Recipe"], part
    assert "v-flip" not in row["Recipe"]
    recipe = {r["config.json"]: r for r in table_after(md, "## Recipe")}
    assert recipe["augment.rotation_deg"][runs[1].as_posix()] == "18"
    assert recipe["min_learning_rate"][runs[0].as_posix()] == "1e-06"
    assert recipe["arch"][runs[1].as_posix()] == "vgg16"


def test_evaluation_tables_hold_both_subsets_and_recall_per_class(inputs, tmp_path):
    runs, _ = inputs
    bench = tmp_path / "no-bench"  # no plots to draw: this test reads other pages
    md = generate(runs, bench, tmp_path / "out")["evaluation.md"]

    table = table_after(md, "# Evaluation")
    assert [(r["Model"], r["Test subset"], r["n"]) for r in table] == [
        ("densenet121", "full test", "1311"), ("densenet121", "leakage-free", "815"),
        ("vgg16", "full test", "1311"), ("vgg16", "leakage-free", "815")]
    assert table[3]["Accuracy"] == f"{0.871 + 0.003:.3f}"
    assert table[0]["ECE"] == "0.018" and table[0]["ECE 95% CI"] == "[0.012, 0.025]"
    recall = table_after(md, "## Recall per class")
    assert list(recall[0])[2:] == list(CLASSES)
    assert recall[1]["notumor"] == "0.920 [0.890, 0.940] (n=203)"
    assert "Missing inputs" not in md


def seed_run(root: Path, model: str, seed: int, accuracy: float, **config: Any) -> Path:
    """Another seed of ``fake_run``'s recipe (or, with ``config``, another recipe)."""
    run = fake_run(root / f"seed{seed}", model, accuracy=accuracy, optimized=False)
    written = json.loads((run / "config.json").read_text())
    write_json(run / "config.json", {**written, "seed": seed, **config})
    return run


def test_seed_runs_of_the_recipe_are_compared_with_their_cis(inputs, tmp_path):
    runs, _ = inputs
    near = seed_run(tmp_path, "densenet121", 7, accuracy=0.925)  # inside [0.911, 0.946]
    out = tmp_path / "out"
    write_results(ResultsConfig(runs=tuple(runs), seeds=(near,), bench=tmp_path / "no-bench",
                                out=out, audit=tmp_path / "audit", ood=tmp_path / "ood"))
    md = (out / "evaluation.md").read_text()
    rows = table_after(md, "### densenet121")
    assert [(r["Run"], r["Seed"]) for r in rows] == [(f"`{runs[0].as_posix()}`", "42"),
                                                      (f"`{near.as_posix()}`", "7")]
    assert rows[1]["Full test [95% CI]"] == "0.925 [0.905, 0.940]"
    assert rows[1]["Leak-free [95% CI]"] == "0.928 [0.908, 0.943]"
    assert rows[1]["Meningioma recall (full)"] == "0.830 [0.800, 0.850] (n=327)"
    history = json.loads((near / "history.json").read_text())
    assert history[0]["lr"] == 0.001 and history[-1]["lr"] == 0.0003
    assert rows[1]["Learning rate as run"] == "0.001 (epochs 1–12), 0.0003 (epochs 13–20)"
    assert "Full test: each run's accuracy lies within the other runs' 95% CIs." in md
    assert f"`{near.as_posix()}/manifest.json`" in header(md)  # its inputs are named
    summary = (out / "summary.md").read_text()
    assert ("- densenet121, seeds 42, 7: full test 0.931 and 0.925, within each other's 95% "
            "CIs") in summary


def test_a_seed_outside_the_other_ci_or_with_another_recipe_is_said_so(inputs, tmp_path):
    runs, _ = inputs
    far = seed_run(tmp_path, "densenet121", 7, accuracy=0.85)
    other = seed_run(tmp_path, "densenet121", 8, accuracy=0.93, learning_rate=0.0003)
    orphan = seed_run(tmp_path / "x", "resnet50", 7, accuracy=0.9)
    out = tmp_path / "out"
    write_results(ResultsConfig(runs=tuple(runs), seeds=(far, other, orphan),
                                bench=tmp_path / "no-bench", out=out,
                                audit=tmp_path / "audit", ood=tmp_path / "ood"))
    md = (out / "evaluation.md").read_text()
    assert "Full test: each run's accuracy does **not** lie within" in md
    assert (f"`{other.as_posix()}` is not a second seed of the recipe: its config also "
            "differs in learning_rate") in md
    assert f"`{orphan.as_posix()}` is a resnet50 run, but no resnet50 run is among" in md
    assert "**not** within each other's 95% CIs" in (out / "summary.md").read_text()


def test_results_command_takes_seed_runs_and_refuses_one_given_twice(inputs, tmp_path):
    runs, _ = inputs
    near = seed_run(tmp_path, "densenet121", 7, accuracy=0.925)
    out = tmp_path / "out"
    result = CliRunner().invoke(results, ["--runs", str(runs[0]), str(runs[1]), "--seeds",
                                          str(near), "--bench", str(tmp_path / "no-bench"),
                                          "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"--seeds {near.as_posix()} --bench" in (out / "evaluation.md").read_text()
    with pytest.raises(ConfigError, match="given twice or also as a run"):
        ResultsConfig(runs=(runs[0],), seeds=(runs[0],))


def test_optimize_table_gives_sizes_drops_in_points_gates_and_build_errors(inputs, tmp_path):
    runs, _ = inputs
    bench = tmp_path / "no-bench"  # no plots to draw: this test reads other pages
    md = generate(runs, bench, tmp_path / "out")["optimize.md"]

    heading = f"## densenet121 (`{runs[0].as_posix()}/optimized/summary.json`)"
    rows = {r["Variant"]: r for r in table_after(md, heading)}
    assert list(rows) == ["tflite-fp32", "tflite-int8", "onnx-int8"]
    int8 = rows["tflite-int8"]
    assert (int8["Size MB"], int8["gzip MB"], int8["vs TFLite FP32"]) == ("7.60", "7.10", "0.27")
    assert (int8["Val. drop (pts)"], int8["Tolerance (pts)"], int8["Gate"]) == (
        "1.40", "1.00", "failed")
    assert "- `onnx-int8` could not be built: tf2onnx crashed" in md
    summary = generate(runs, bench, tmp_path / "out")["summary.md"]
    edge = {r["Model"]: r for r in table_after(summary, "## Edge variant (tflite-int8)")}
    assert (edge["vgg16"]["Size MB"], edge["vgg16"]["Gate"]) == ("7.60", "failed")


def test_bench_page_is_the_merged_report_and_summary_speedups_match_the_json(inputs, tmp_path):
    runs, bench = inputs
    pages = generate(runs, bench, tmp_path / "out")

    assert "## Device: x86-2c" in pages["bench.md"]
    assert "### x86-2c: targets" in pages["bench.md"]
    e2e = {(r["model"], r["variant"], r["threads"]): r["e2e_latency_ms"]["p50"]
           for r in x86_doc()["results"] if not r["error"]}
    speed = table_after(pages["summary.md"], "## Speed-up of tflite-int8 over Keras FP32 (e2e p50)")
    assert [(r["Model"], r["Threads"]) for r in speed] == [
        ("densenet121", "1"), ("densenet121", "2"), ("vgg16", "1")]
    for row in speed:
        key = (row["Model"], int(row["Threads"]))
        ratio = e2e[(*key[:1], "keras-fp32", key[1])] / e2e[(*key[:1], "tflite-int8", key[1])]
        assert row["Speed-up"] == f"{ratio:.2f}x"


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed (brainedge[train])")
def test_bench_plots_are_written_beside_the_pages_and_linked(inputs, tmp_path):
    runs, bench = inputs
    md = generate(runs, bench, tmp_path / "out")["bench.md"]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links and all((tmp_path / "out" / name).is_file() for name in links)


# --------------------------------------------------------------------------------------------
# Provenance and determinism


def test_every_page_starts_with_the_command_and_the_sha256_of_what_it_read(inputs, tmp_path):
    runs, bench = inputs
    out = tmp_path / "out"
    pages = generate(runs, bench, out)
    command = (f"brainedge results --runs {runs[0].as_posix()} {runs[1].as_posix()} "
               f"--bench {bench.as_posix()} --audit {(bench.parent / 'audit').as_posix()} "
               f"--ood {(bench.parent / 'ood').as_posix()} --out {out.as_posix()}")
    manifests = [f"- `{r.as_posix()}/manifest.json` sha256 `{sha(r / 'manifest.json')}`"
                 for r in runs]
    for name, md in pages.items():
        assert md.splitlines()[0].startswith(f"> Generated by `{command}`"), name
    for line in manifests:
        assert line in header(pages["training.md"])
        assert line in header(pages["summary.md"])
    metrics = runs[0] / "eval" / "metrics.json"
    assert f"`{metrics.as_posix()}` sha256 `{sha(metrics)}`" in header(pages["evaluation.md"])
    bench_line = [line for line in header(pages["bench.md"]).splitlines() if "x86.json" in line]
    assert len(bench_line) == 1
    assert sha(bench / "x86.json") in bench_line[0]
    assert "device x86-2c: Intel Core i5-8250U" in bench_line[0]  # the machine measured
    assert "manifest.json" not in header(pages["bench.md"])


def test_the_same_inputs_give_byte_identical_markdown(inputs, tmp_path):
    runs, bench = inputs
    first = generate(runs, bench, tmp_path / "out")
    for name in PAGES:
        (tmp_path / "out" / name).unlink()
    assert generate(runs, bench, tmp_path / "out") == first
    # ... and a changed input changes the page that read it, and the summary.
    metrics = runs[1] / "eval" / "metrics.json"
    doc = json.loads(metrics.read_text())
    doc["results"]["full test"]["accuracy"] = 0.5
    write_json(metrics, doc)
    changed = generate(runs, bench, tmp_path / "out")
    # trust.md reads the evaluation too, for the test ECE.
    assert {n for n in PAGES if changed[n] != first[n]} == {"summary.md", "evaluation.md",
                                                           "trust.md"}


# --------------------------------------------------------------------------------------------
# Missing inputs


def test_missing_inputs_leave_a_note_in_each_page_instead_of_a_crash(tmp_path):
    unevaluated = fake_run(tmp_path / "runs", "vgg16", accuracy=0.87, evaluated=False,
                           optimized=False)
    absent = tmp_path / "runs" / "densenet121"
    unfinished = tmp_path / "runs" / "still-training"
    write_json(unfinished / "config.json", {"arch": "densenet121"})

    pages = generate([absent, unevaluated, unfinished], tmp_path / "no-bench", tmp_path / "out")

    gone = f"`{absent.as_posix()}` does not exist"
    running = f"`{unfinished.as_posix()}` has no manifest.json: its training has not finished"
    for name in ("training.md", "evaluation.md", "optimize.md", "summary.md"):
        assert gone in pages[name], name
        assert running in pages[name], name
    assert f"`{unevaluated.as_posix()}/eval/metrics.json` is missing" in pages["evaluation.md"]
    assert f"brainedge evaluate {unevaluated.as_posix()}" in pages["evaluation.md"]
    assert f"brainedge optimize {unevaluated.as_posix()}" in pages["optimize.md"]
    assert "no benchmark results: `" in pages["bench.md"]
    assert "make bench" in pages["summary.md"]
    # What was there is still shown.
    assert [r["Model"] for r in table_after(pages["training.md"], "# Training")] == ["vgg16"]
    assert "| Model |" not in pages["evaluation.md"]


def test_a_bench_folder_without_results_is_noted(inputs, tmp_path):
    runs, _ = inputs
    empty = tmp_path / "empty-bench"
    write_json(empty / "config.json", {"threads": [1]})  # not a bench result: skipped
    md = generate(runs, empty, tmp_path / "out")["bench.md"]
    assert f"no benchmark results from `{empty.as_posix()}`" in md
    assert "no brainedge-bench/1 runs found" in md


def test_strict_names_every_missing_input_and_writes_nothing(tmp_path):
    unevaluated = fake_run(tmp_path / "runs", "vgg16", accuracy=0.87, evaluated=False)
    out = tmp_path / "out"

    with pytest.raises(ConfigError) as info:
        generate([unevaluated], tmp_path / "no-bench", out, strict=True)

    message = str(info.value)
    assert "eval/metrics.json` is missing" in message
    assert "no benchmark results" in message
    assert not out.exists()


def test_strict_passes_when_every_input_is_there(inputs, tmp_path):
    runs, bench = inputs
    pages = generate(runs, bench, tmp_path / "out", strict=True)
    assert all("Missing inputs" not in md for md in pages.values())
    assert "--strict" in pages["summary.md"].splitlines()[0]


# --------------------------------------------------------------------------------------------
# Trust page: calibration and the out-of-distribution score


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def test_trust_calibration_rows_come_from_each_artifacts_manifest_and_evaluation(inputs,
                                                                                 tmp_path):
    runs, _ = inputs
    md = generate(runs, tmp_path / "no-bench", tmp_path / "out")["trust.md"]
    int8_dir = runs[0] / "optimized" / "tflite-int8"
    cal = read(int8_dir / "manifest.json")["extra"]["calibration"]
    full = read(int8_dir / "eval" / "metrics.json")["results"]["full test"]

    rows = table_after(md, "## Calibration")
    assert [(r["Model"], r["Artifact"]) for r in rows] == [
        (model, artifact) for model in ("densenet121", "vgg16")
        for artifact in ("run (Keras)", "tflite-fp32", "tflite-int8")]  # onnx-int8 failed
    int8 = rows[2]
    assert int8["Temperature"] == f"{cal['temperature']:.2f}" == "1.31"
    assert int8["Val. ECE before → after"] == f"{cal['ece_before']:.3f} → {cal['ece_after']:.3f}"
    assert int8["Val. NLL before → after"] == "0.310 → 0.240"
    assert int8["Test ECE before [95% CI]"] == f"{full['ece_uncalibrated']:.3f} [0.050, 0.110]"
    assert int8["Test ECE after [95% CI]"] == f"{full['ece']:.3f} [0.012, 0.025]"
    assert int8["OOD score > threshold (val. flagged)"] == "mahalanobis > 412.5 (0.9%)"
    assert rows[0]["Temperature"] == "1.50"  # the run's own, not its variants'
    assert rows[1]["Test ECE before [95% CI]"] == "–"  # tflite-fp32 was never evaluated
    assert "No `extra.calibration`" not in md and "Missing inputs" not in md


def test_trust_ood_table_gives_the_chosen_scores_auroc_flagged_share_and_targets(inputs,
                                                                                 tmp_path):
    runs, bench = inputs
    md = generate(runs, tmp_path / "no-bench", tmp_path / "out")["trust.md"]
    doc = read(bench.parent / "ood" / "densenet121" / "tflite-int8" / "ood.json")
    far = next(r for r in doc["rows"] if r["name"] == "far")
    lo, hi = far["auroc_ci95"]["mahalanobis"]

    rows = table_after(md, "## Out-of-distribution score")
    # Run order, then artifact order; vgg16's report recorded another path: placed by folder.
    assert [(r["Model"], r["Artifact"]) for r in rows] == [
        ("densenet121", "run (Keras)"), ("densenet121", "tflite-int8"), ("vgg16", "tflite-int8")]
    row = rows[1]
    assert row["Far AUROC [95% CI]"] == (
        f"{far['auroc']['mahalanobis']:.3f} [{lo:.3f}, {hi:.3f}] (n=120)")
    assert row["Near AUROC [95% CI]"].startswith("0.874 [")
    assert (row["Score"], row["Threshold"], row["Test flagged"], row["Test n"],
            row["Targets"]) == ("mahalanobis", "412.5", "1.2%", "1311", "pass")
    assert rows[2]["Targets"] == "miss: near, test flagged"  # near 0.80, 3.1% flagged
    assert "Targets (far ≥ 0.95, near ≥ 0.85, test flagged ≤ 2%)" in md


def test_trust_page_compares_every_score_and_breaks_the_edge_variant_down_by_kind(inputs,
                                                                                 tmp_path):
    runs, _ = inputs
    md = generate(runs, tmp_path / "no-bench", tmp_path / "out")["trust.md"]

    compared = [r for r in table_after(md, "## Scores compared")
                if (r["Model"], r["Artifact"]) == ("densenet121", "tflite-int8")]
    assert [(r["Score"], r["Chosen"]) for r in compared] == [
        ("mahalanobis", "yes"), ("energy", "no"), ("msp", "no")]
    assert compared[1]["Near AUROC [95% CI]"] == (
        f"{0.874 - 0.04:.3f} [{0.874 - 0.05:.3f}, {0.874 - 0.035:.3f}]")
    kinds = {r["Group / kind"]: r for r in table_after(md, "## By kind: densenet121 tflite-int8")}
    assert list(kinds) == ["near", "near/inverted", "near/other-mri", "far", "far/ct"]
    assert kinds["near/other-mri"]["AUROC mahalanobis [95% CI]"].startswith(f"{0.844:.3f} [")
    assert (kinds["far/ct"]["Images"], kinds["far/ct"]["Flagged by rules"]) == ("40", "25.0%")


def test_summary_has_one_trust_line_per_model_for_its_edge_variant(inputs, tmp_path):
    runs, _ = inputs
    summary = generate(runs, tmp_path / "no-bench", tmp_path / "out")["summary.md"]
    cal = read(runs[0] / "optimized" / "tflite-int8" / "manifest.json")["extra"]["calibration"]

    assert (f"- densenet121 tflite-int8: T = 1.31, validation ECE {cal['ece_before']:.3f} → "
            f"{cal['ece_after']:.3f}; OOD (mahalanobis): far AUROC 0.991, near AUROC 0.874, "
            "test slices flagged 1.2%; targets pass") in summary
    assert "- vgg16 tflite-int8: T = 1.31" in summary
    assert "near AUROC 0.800, test slices flagged 3.1%; targets miss: near, test flagged" in summary
    assert "[calibration and out-of-distribution](trust.md)" in summary


def test_a_changed_ood_report_changes_the_trust_page_and_the_summary_only(inputs, tmp_path):
    runs, bench = inputs
    no_bench, out = tmp_path / "no-bench", tmp_path / "out"
    first = generate(runs, no_bench, out)
    write_json(bench.parent / "ood" / "vgg16" / "tflite-int8" / "ood.json",
               ood_doc("elsewhere/tflite-int8", "vgg16-tflite-int8-sha", near=0.9))

    changed = generate(runs, no_bench, out)

    assert {n for n in PAGES if changed[n] != first[n]} == {"summary.md", "trust.md"}
    rows = table_after(changed["trust.md"], "## Out-of-distribution score")
    assert (rows[2]["Near AUROC [95% CI]"][:5], rows[2]["Targets"]) == ("0.900", "pass")
    assert generate(runs, no_bench, out) == changed  # and a rerun is byte-identical


def test_missing_ood_reports_are_a_note_and_a_strict_error(inputs, tmp_path):
    runs, bench = inputs
    absent = tmp_path / "no-ood"
    pages = generate(runs, tmp_path / "no-bench", tmp_path / "out", ood=absent)

    note = f"no out-of-distribution evaluation: `{absent.as_posix()}` does not exist"
    assert note in pages["trust.md"] and note in pages["summary.md"]
    assert "make ood-eval" in pages["trust.md"]
    assert "## Calibration" in pages["trust.md"]  # what was there is still shown
    assert "## Out-of-distribution score" not in pages["trust.md"]
    assert "- densenet121 tflite-int8: T = 1.31" in pages["summary.md"]
    assert "OOD: not evaluated (`make ood-eval`)" in pages["summary.md"]

    broken = tmp_path / "broken-ood" / "vgg16" / "tflite-int8" / "ood.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    md = generate(runs, tmp_path / "no-bench", tmp_path / "out", ood=broken.parents[2])["trust.md"]
    assert f"`{broken.as_posix()}` is not a `brainedge evaluate-ood` report" in md

    with pytest.raises(ConfigError) as info:
        generate(runs, bench, tmp_path / "strict", strict=True, ood=absent)
    assert str(info.value) == f"missing inputs (--strict):\n- {note} (`make ood-eval` writes " \
        "it, one `brainedge evaluate-ood` per artifact)"
    assert not (tmp_path / "strict").exists()


def test_artifacts_from_before_calibration_show_dashes_and_a_note(tmp_path):
    run = fake_run(tmp_path / "runs", "vgg16", accuracy=0.87)
    manifest = read(run / "manifest.json")
    del manifest["extra"]["calibration"], manifest["extra"]["ood"]
    write_json(run / "manifest.json", manifest)
    write_json(run / "eval" / "metrics.json",  # an evaluate from before temperatures
               {"model": "vgg16", "results": {"full test": subset_metrics(1311, 0.87, [0.9] * 4)}})
    write_json(run / "optimized" / "tflite-fp32" / "manifest.json",
               {"model": "vgg16", "format": "tflite", "extra": {"variant": "tflite-fp32"}})
    write_eval(run / "optimized" / "tflite-int8", "vgg16", 0.85, 1.2, clean=False)

    pages = generate([run], tmp_path / "no-bench", tmp_path / "out", ood=tmp_path / "no-ood")

    md = pages["trust.md"]
    rows = {r["Artifact"]: r for r in table_after(md, "## Calibration")}
    for artifact in ("run (Keras)", "tflite-fp32"):
        for column in ("Temperature", "Val. ECE before → after", "Val. n",
                       "OOD score > threshold (val. flagged)"):
            assert rows[artifact][column] == "–", (artifact, column)
    # Uncalibrated, the evaluation's ECE is the "before" one; there is no "after".
    assert rows["run (Keras)"]["Test ECE before [95% CI]"] == "0.018 [0.012, 0.025]"
    assert rows["run (Keras)"]["Test ECE after [95% CI]"] == "–"
    assert ("No `extra.calibration` in the manifest of vgg16 run (Keras), vgg16 tflite-fp32: "
            "made before calibration") in md
    int8 = (run / "optimized" / "tflite-int8").as_posix()
    assert (f"vgg16 tflite-int8 was evaluated at temperature 1.20, its manifest now holds 1.31: "
            f"re-run `brainedge evaluate {int8}`") in md


def test_a_report_of_an_older_build_is_noted_and_others_follow_the_runs(inputs, tmp_path):
    runs, bench = inputs
    ood = bench.parent / "ood"
    stale = write_json(ood / "densenet121" / "tflite-int8" / "ood.json",
                       ood_doc(runs[0] / "optimized" / "tflite-int8", "an-older-build-sha"))
    write_json(ood / "shipped" / "ood.json", ood_doc("models/densenet121", "shipped-sha"))

    md = generate(runs, tmp_path / "no-bench", tmp_path / "out")["trust.md"]

    assert f"`{stale.as_posix()}` measured a model file with sha256 an-older-bui…" in md
    rows = table_after(md, "## Out-of-distribution score")
    assert len(rows) == 4
    assert (rows[-1]["Model"], rows[-1]["Artifact"]) == ("–", "`models/densenet121`")


# --------------------------------------------------------------------------------------------
# Command line


def test_results_command_takes_several_run_folders_after_one_runs_option(inputs, tmp_path):
    runs, bench = inputs
    out = tmp_path / "out"
    result = CliRunner().invoke(results, ["--runs", str(runs[0]), str(runs[1]),
                                          "--bench", str(bench), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out / 'summary.md'}" in result.output
    rows = table_after((out / "summary.md").read_text(), "## Accuracy")
    assert [r["Model"] for r in rows] == ["densenet121", "vgg16"]


def test_results_command_reads_the_ood_reports_of_its_ood_option(inputs, tmp_path):
    runs, bench = inputs
    ood, out = bench.parent / "ood", tmp_path / "out"
    result = CliRunner().invoke(results, ["--runs", str(runs[0]), str(runs[1]), "--bench",
                                          str(tmp_path / "no-bench"), "--ood", str(ood),
                                          "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out / 'trust.md'}" in result.output
    trust = (out / "trust.md").read_text()
    assert f"--ood {ood.as_posix()} --out" in trust.splitlines()[0]
    assert len(table_after(trust, "## Out-of-distribution score")) == 3
    assert "--ood" in CliRunner().invoke(results, ["--help"]).output


def test_results_command_strict_failure_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(results, ["--runs", str(tmp_path / "nothing"), "--bench",
                                          str(tmp_path), "--out", str(tmp_path / "o"),
                                          "--strict"])
    assert result.exit_code == 1
    assert "missing inputs (--strict)" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--runs", "a", "b", "--bench", "x"], ["--runs", "a", "--runs", "b", "--bench", "x"]),
        (["--out", "o", "--runs", "a"], ["--out", "o", "--runs", "a"]),
        (["--runs", "a", "--runs", "b"], ["--runs", "a", "--runs", "b"]),
        (["--runs", "a", "--strict", "b"], ["--runs", "a", "--strict", "b"]),
        (["--runs"], ["--runs"]),
    ],
)
def test_spread_option_repeats_the_option_before_each_value(args, expected):
    assert spread_option(args, "--runs") == expected


def test_the_audit_page_is_the_audit_report_under_its_provenance(inputs, tmp_path):
    runs, bench = inputs
    audit = bench.parent / "audit" / "audit.md"
    page = generate(runs, bench, tmp_path / "out")["audit.md"]
    assert header(page).count(sha(audit)) == 1
    assert page.endswith(audit.read_text())
    audit.unlink()
    page = generate(runs, bench, tmp_path / "out2")["audit.md"]
    assert "Missing input" in page and "brainedge audit" in page



def test_the_readme_gets_the_summary_between_its_markers_and_nothing_else(inputs, tmp_path):
    from benchmarks.results.readme import BEGIN, END

    runs, bench = inputs
    readme = tmp_path / "README.md"
    readme.write_text(f"# Project\n\nbefore\n\n{BEGIN}\nold figures\n{END}\n\nafter\n")
    out = tmp_path / "docs" / "results"
    write_results(ResultsConfig(runs=tuple(runs), bench=bench, out=out,
                                audit=bench.parent / "audit", readme=readme))
    text = readme.read_text()
    assert text.startswith("# Project\n\nbefore\n\n") and text.endswith(f"{END}\n\nafter\n")
    assert "old figures" not in text
    inner = text.split(BEGIN)[1].split(END)[0]
    assert "### Accuracy" in inner and "# BrainEdge results" not in inner
    assert "(docs/results/training.md)" in inner  # links point into the results folder
    assert "0.931" in inner
    # One provenance line naming the command and the page that lists every input's sha256.
    assert inner.strip().startswith("> Generated by `brainedge results")
    assert "(docs/results/summary.md)" in inner and "sha256 `" not in inner


def test_a_readme_without_markers_is_refused_and_left_alone(inputs, tmp_path):
    runs, bench = inputs
    readme = tmp_path / "README.md"
    readme.write_text("# Project\n")
    with pytest.raises(ConfigError, match="results:begin"):
        write_results(ResultsConfig(runs=tuple(runs), bench=bench, out=tmp_path / "o",
                                    audit=bench.parent / "audit", readme=readme))
    assert readme.read_text() == "# Project\n"
