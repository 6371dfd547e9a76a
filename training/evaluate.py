"""Evaluate a finished run on the test split: the full split and its leakage-free part.

The test split is used here only, never for model selection. The leakage-free subset comes from
``brainedge audit`` (``clean_test.txt``): test images with no exact or near duplicate in
Training, whose accuracy is the honest one.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainedge import MEDICAL_NOTICE
from brainedge.errors import ConfigError, DatasetError
from brainedge.manifest import atomic_path, read_json, write_json
from runtime.preprocess import PreprocessSpec
from runtime.temperature import apply_temperature
from training.data import read_path_list, scan_dataset
from training.metrics import (
    ECE_BINS,
    bootstrap_recall_and_ece_ci,
    classification_metrics,
    expected_calibration_error,
)
from training.pipeline import load_prepared, log_progress, predict_prepared
from training.reports import metrics_markdown, plot_confusion_matrix, plot_reliability

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    run_dir: Path
    data: Path | None = None  # None: the dataset the run was trained on
    clean_list: Path | None = None
    out: Path | None = None  # None: RUN_DIR/eval
    n_bootstrap: int = 1000
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.n_bootstrap < 100:
            raise ConfigError(f"n_bootstrap must be >= 100, got {self.n_bootstrap}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path(self.run_dir) / "eval"


@dataclass(frozen=True)
class EvalReport:
    out_dir: Path
    results: dict[str, dict[str, Any]]
    markdown: str
    files: dict[str, Path] = field(default_factory=dict)


def evaluate_run(config: EvalConfig) -> EvalReport:
    """Evaluate a run folder (its Keras model) or an artifact folder (in its own runtime)."""
    from brainedge.manifest import load_manifest

    manifest = load_manifest(config.run_dir)
    # Raw probabilities, as the model gives them; the artifact's temperature is applied below,
    # so the report shows calibration before and after.
    if manifest.format == "keras":
        from training.train import load_trained

        model, manifest = load_trained(config.run_dir)
        predict, run_dir = model.predict_on_batch, Path(config.run_dir)
    else:
        from runtime.classifier import load_classifier

        classifier = load_classifier(config.run_dir)
        predict, run_dir = classifier.predictor.predict, Path(manifest.parent or "")
    temperature = (manifest.extra.get("calibration") or {}).get("temperature")
    # A shipped artifact's parent run may be on another machine: then --data names the dataset.
    parent_config = run_dir / "config.json"
    train_config = read_json(parent_config) if parent_config.is_file() else {}
    data = config.data or manifest.extra.get("dataset_root") or train_config.get("data")
    if not data:
        raise DatasetError(f"{config.run_dir}: no parent run to read the dataset from; "
                           "pass --data with the dataset folder")
    root = Path(data)
    # The same seed as training: a carved test split must be the one training never saw.
    index = scan_dataset(root, seed=train_config.get("seed", 0))
    if index.class_names != manifest.class_names:
        raise DatasetError(
            f"{root} has classes {list(index.class_names)} but the model was trained on "
            f"{list(manifest.class_names)}"
        )
    spec = PreprocessSpec.from_dict(manifest.preprocessing)
    test = load_prepared(index.test, spec, progress=log_progress("test images"))
    raw = predict_prepared(predict, test, spec, len(index.class_names), config.batch_size)
    probs = apply_temperature(raw, temperature).astype(np.float64)

    subsets = {"full test": np.ones(len(test), dtype=bool)}
    if config.clean_list:
        clean = read_path_list(config.clean_list, root)
        mask = np.array([Path(p).resolve() in clean for p in test.paths])
        if not mask.any():
            raise DatasetError(
                f"none of the {len(test)} test images is in {config.clean_list}; was it "
                f"made by `brainedge audit` for {root}?"
            )
        subsets["leakage-free test"] = mask

    results = {
        name: classification_metrics(test.labels[mask], probs[mask], index.class_names,
                                     n_bootstrap=config.n_bootstrap)
        for name, mask in subsets.items()
    }
    for name, mask in subsets.items():
        result = results[name]
        result["skipped_unreadable"] = len(test.skipped)
        result["temperature"] = temperature
        if temperature is not None:
            # ECE as the model answered before calibration, resampled the same way.
            _, ci = bootstrap_recall_and_ece_ci(test.labels[mask], raw[mask],
                                                config.n_bootstrap, seed=0)
            result["ece_uncalibrated"] = expected_calibration_error(
                test.labels[mask], raw[mask], n_bins=ECE_BINS)
            result["ece_uncalibrated_ci95"] = ci
    return _write(config, manifest.model, results, test.paths, test.labels, probs,
                  index.class_names, raw)


def _write(config: EvalConfig, model: str, results: dict[str, dict[str, Any]],
           paths: tuple[str, ...], labels: np.ndarray, probs: np.ndarray,
           class_names: tuple[str, ...], raw: np.ndarray) -> EvalReport:
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    files = {"metrics.json": out / "metrics.json", "report.md": out / "report.md",
             "predictions.csv": out / "predictions.csv"}
    full = next(iter(results.values()))
    png = out / "reliability.png"
    plot_reliability(labels, {"uncalibrated": raw, **(
        {f"temperature {full['temperature']:.2f}": probs}
        if full.get("temperature") is not None else {})}, png,
        f"{model}: reliability on the full test split (n={len(labels)})", ECE_BINS)
    files[png.name] = png
    for name, result in results.items():
        slug = name.replace(" ", "_").replace("-", "_")
        png = out / f"confusion_{slug}.png"
        plot_confusion_matrix(result["confusion_matrix"], class_names, png,
                              f"{model}: {name} (n={result['n']})")
        write_json(out / f"confusion_{slug}.json", {
            "class_names": list(class_names), "rows_true_cols_predicted":
            result["confusion_matrix"]})
        files[png.name] = png
    write_json(files["metrics.json"], {"model": model, "run_dir": str(config.run_dir),
                                       "notice": MEDICAL_NOTICE, "results": results})
    markdown = metrics_markdown(results, f"Evaluation of {model} ({config.run_dir})")
    with atomic_path(files["report.md"]) as tmp:
        tmp.write_text(markdown + "\n")
    with atomic_path(files["predictions.csv"]) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "true", "predicted", *[f"p_{c}" for c in class_names]])
        for path, label, row in zip(paths, labels, probs, strict=True):
            writer.writerow([path, class_names[label], class_names[int(row.argmax())],
                             *[f"{p:.6f}" for p in row]])
    log.info("evaluation written to %s", out)
    return EvalReport(out, results, markdown, files)
