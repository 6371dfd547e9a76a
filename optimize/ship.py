"""Ship an artifact with the package: verify it, evaluate it, copy it into ``models/NAME``.

``models/`` is package data (installed as ``brainedge_models``), so ``pip install '.[edge]'``
carries the shipped models without a clone. Each shipped folder holds the artifact's own
manifest and model file, untouched (their sha256 still verifies), and ``card.json``: what the
model card says about it, measured here, including the predictions on a fixed stratified
sample of leakage-free test images that the test suite re-checks. ``models/MODEL_CARD.md`` is
regenerated from every ``card.json`` (``optimize.model_card``).
"""

from __future__ import annotations

import csv
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainedge.errors import ConfigError, ModelLoadError
from brainedge.learning_rates import rate_stretches
from brainedge.manifest import MANIFEST_NAME, load_manifest, read_json, trained_on, write_json
from optimize.validate import PASSED

log = logging.getLogger(__name__)

CARD_NAME = "card.json"
PHANTOM_MARKER = ".complete"  # training.phantoms writes it into every phantom dataset


@dataclass(frozen=True)
class ShipConfig:
    artifact: Path
    name: str  # the folder under models/, e.g. "densenet121"
    data: Path
    clean_list: Path
    models_dir: Path = Path("models")
    sample_per_class: int = 60
    n_bootstrap: int = 1000
    commands: tuple[str, ...] = ()  # how the artifact was made, quoted in the card
    compress: bool = False  # store the model file as MODEL.xz (runtime.compressed)

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ConfigError(f"--name must be a plain folder name like densenet121, got "
                              f"{self.name!r}")
        if self.sample_per_class < 10:
            raise ConfigError(f"sample_per_class must be >= 10, got {self.sample_per_class}")


def ship(config: ShipConfig) -> Path:
    """Copy a passed, real-data artifact into ``models/NAME`` with its evaluation card."""
    from optimize.model_card import write_model_card
    from runtime.artifact import open_artifact
    from training.evaluate import EvalConfig, evaluate_run

    artifact = open_artifact(config.artifact)
    manifest = artifact.manifest
    _refuse_unfit(artifact.folder, manifest)
    target = Path(config.models_dir) / config.name
    staging = Path(config.models_dir) / f".{config.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in (MANIFEST_NAME, *manifest.files):
        shutil.copy2(artifact.folder / name, staging / name)
    if config.compress:
        from runtime.compressed import store_compressed

        store_compressed(staging, artifact.model_path.name)
    with tempfile.TemporaryDirectory(prefix="brainedge-ship-") as eval_dir:
        report = evaluate_run(EvalConfig(run_dir=staging, data=config.data,
                                         clean_list=config.clean_list, out=Path(eval_dir),
                                         n_bootstrap=config.n_bootstrap))
        sample = _fixed_sample(Path(eval_dir) / "predictions.csv", config)
    card = _card(config, artifact, report.results, sample)
    card["stored_bytes"] = (staging / card["stored_as"]).stat().st_size
    write_json(staging / CARD_NAME, card)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    write_model_card(Path(config.models_dir))
    log.info("shipped %s as %s", artifact.folder, target)
    return target


def _refuse_unfit(folder: Path, manifest: Any) -> None:
    status = manifest.metrics.get("status")
    if status is not None and status != PASSED:
        raise ModelLoadError(f"{folder} {status} its parity gate against its float32 parent; "
                             "only an artifact that passed may ship")
    if manifest.format == "keras":
        raise ModelLoadError(f"{folder} is a Keras run; ship an edge artifact made by "
                             "brainedge optimize (e.g. RUN/optimized/tflite-int8)")
    root = trained_on(folder)
    if root is None:
        raise ModelLoadError(f"{folder}: its parent run {manifest.parent} is not here to say "
                             "what it was trained on; ship from the machine that trained it")
    if (Path(root) / PHANTOM_MARKER).exists():
        raise ModelLoadError(f"{folder} was trained on the synthetic phantoms in {root}; a "
                             "phantom model must never be shipped or served by default")


def _fixed_sample(predictions_csv: Path, config: ShipConfig) -> list[dict[str, Any]]:
    """Up to ``sample_per_class`` leakage-free test images per class, chosen by a fixed seed."""
    from training.data import read_path_list

    root = Path(config.data).resolve()
    clean = read_path_list(config.clean_list, root)
    with open(predictions_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if Path(r["path"]).resolve() in clean]
    sample: list[dict[str, Any]] = []
    for label in sorted({r["true"] for r in rows}):
        members = sorted((r for r in rows if r["true"] == label), key=lambda r: r["path"])
        order = np.random.default_rng(0).permutation(len(members))[:config.sample_per_class]
        for i in sorted(order):
            r = members[i]
            sample.append({
                "path": Path(r["path"]).resolve().relative_to(root).as_posix(),
                "true": r["true"], "predicted": r["predicted"],
                "probabilities": {k[2:]: float(v) for k, v in r.items() if k.startswith("p_")},
            })
    return sample


def _card(config: ShipConfig, artifact: Any, results: dict[str, Any],
          sample: list[dict[str, Any]]) -> dict[str, Any]:
    manifest = artifact.manifest
    parent = Path(manifest.parent)
    parent_manifest = load_manifest(parent)
    parent_eval = parent / "eval" / "metrics.json"
    audit = Path(config.clean_list).parent / "audit.json"
    return {
        "name": config.name,
        "model": manifest.model,
        "variant": manifest.extra.get("variant"),
        "format": manifest.format,
        "precision": manifest.precision,
        "model_file": artifact.model_path.name,
        "sha256": artifact.sha256,
        "size_bytes": artifact.size_bytes,
        "stored_as": artifact.model_path.name + (".xz" if config.compress else ""),
        "recipe": read_json(parent / "config.json"),
        "training": {k: parent_manifest.metrics.get(k) for k in
                     ("val_accuracy", "val_images", "epochs_run", "seconds_per_epoch", "params")}
        | {"precision": parent_manifest.extra.get("training_precision"),
           "dataset_counts": parent_manifest.extra.get("dataset_counts"),
           "learning_rates": learning_rates_as_run(parent / "training_log.csv")},
        "gate": {k: manifest.metrics.get(k) for k in
                 ("status", "val_accuracy", "val_drop", "val_agreement", "tolerance")},
        "calibration": manifest.extra.get("calibration"),
        "ood": manifest.extra.get("ood"),
        "evaluation": _strip(results),
        "parent_evaluation": _strip(read_json(parent_eval)["results"])
        if parent_eval.is_file() else None,
        "audit": _audit_summary(read_json(audit)) if audit.is_file() else None,
        "commands": list(config.commands),
        "sample": {"seed": 0, "per_class": config.sample_per_class, "images": sample,
                   "accuracy": float(np.mean([s["true"] == s["predicted"] for s in sample]))},
    }


def learning_rates_as_run(training_log: Path) -> list[dict[str, Any]]:
    """The rate each stretch of epochs actually trained at, from the run's ``training_log.csv``:
    ``[{"first": 1, "last": 14, "lr": 0.001}, ...]`` (epochs counted from 1). The recipe names
    the schedule; this is what it did, which a resumed run may not have (README, "Resume")."""
    from training.resumable_callbacks import logged_epochs  # the one reader of that log

    return rate_stretches((int(row["epoch"]) + 1, row["lr"])
                          for row in logged_epochs(training_log))


def _strip(results: dict[str, Any]) -> dict[str, Any]:
    keep = ("n", "accuracy", "accuracy_ci95", "macro_f1", "roc_auc_ovr_macro", "ece",
            "ece_ci95", "ece_uncalibrated", "ece_uncalibrated_ci95", "temperature", "per_class",
            "confusion_matrix", "class_names", "n_bootstrap")
    return {subset: {k: m[k] for k in keep if k in m} for subset, m in results.items()}


def _audit_summary(audit: dict[str, Any]) -> dict[str, Any]:
    return {"counts": audit.get("counts"), "summary": audit.get("summary"),
            "config": audit.get("config"), "clean_test_images": len(audit.get("clean_test", []))}
