"""Train one model and write a self-describing, resumable run folder.

Run folder::

    config.json            the TrainConfig (written first; a resume must match it)
    training_log.csv       one row per epoch, appended across resumes
    backup/                BackupAndRestore state while training (removed when done)
    checkpoints/best.weights.h5   weights of the best epoch on validation accuracy
    tensorboard/           TensorBoard logs
    model.keras, saved_model/     the final float32 model (best epoch)
    history.json, split.json      per-epoch metrics; which files were train/val
    manifest.json          written last: files and sha256, class names, preprocessing, metrics

Killing a run loses at most the current epoch: re-running the same command resumes it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainedge.errors import RunDirError
from brainedge.manifest import (
    MANIFEST_NAME,
    Manifest,
    hash_files,
    read_json,
    write_json,
    write_manifest,
)
from brainedge.tf_compat import keras, tf
from training.config import ClassWeight, LRSchedule, Precision, TrainConfig
from training.data import DatasetIndex, scan_dataset, stratified_split
from training.pipeline import (
    PreparedSet,
    keras_verbosity,
    load_prepared,
    log_progress,
    predict_prepared,
    to_tf_dataset,
)
from training.resumable_callbacks import (
    ResumableEarlyStopping,
    ResumableReduceLROnPlateau,
    logged_epochs,
)
from training.schedules import WarmupCosine

log = logging.getLogger(__name__)

BEST_WEIGHTS = "checkpoints/best.weights.h5"
MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    val_accuracy: float
    epochs_run: int
    seconds_per_epoch: float
    precision: str
    replicas: int


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` to the epoch logs, so the CSV log and history carry it."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["epoch_seconds"] = time.monotonic() - self._start


def prepare_run_dir(run_dir: Path, config: TrainConfig, overwrite: bool) -> bool:
    """Create or reuse ``run_dir``; True when it resumes an interrupted run of this config."""
    run_dir = Path(run_dir)
    if (run_dir / MANIFEST_NAME).exists():
        if not overwrite:
            raise RunDirError(
                f"{run_dir} already holds a finished run; choose another --run-dir or pass "
                "--overwrite to replace it"
            )
        shutil.rmtree(run_dir)
    config_path = run_dir / "config.json"
    if config_path.exists():
        saved = read_json(config_path)
        if saved != json.loads(json.dumps(config.to_dict())):
            if not overwrite:
                changed = sorted(k for k in saved if saved.get(k) != config.to_dict().get(k))
                raise RunDirError(
                    f"{run_dir} holds an unfinished run with a different configuration "
                    f"(differs in {changed}); re-run with the same options to resume it, "
                    "or pass --overwrite to start over"
                )
            shutil.rmtree(run_dir)
        else:
            log.info("resuming the interrupted run in %s", run_dir)
            return True
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(config_path, config.to_dict())
    return False


def _split(index: DatasetIndex, config: TrainConfig) -> tuple[tuple, tuple]:
    train, val = stratified_split(index.train, config.val_fraction, config.seed)
    if config.max_train_images and len(train) > config.max_train_images:
        fraction = config.max_train_images / len(train)
        _, train = stratified_split(train, fraction, config.seed)
        _, val = stratified_split(val, max(min(fraction, 0.9), 0.1), config.seed)
    return train, val


def _best_so_far(csv_path: Path, monitor: str) -> float | None:
    """Best monitored value in an existing CSV log, so a resumed checkpoint keeps the best."""
    values = [row[monitor] for row in logged_epochs(csv_path) if monitor in row]
    return max(values) if values else None


def _callbacks(run_dir: Path, config: TrainConfig, phase: str, chief: bool = True,
               first_epoch: int = 0) -> list[keras.callbacks.Callback]:
    csv_path = run_dir / "training_log.csv"
    # On a resume, the phase's logged epochs: the plateau and early-stopping counts go on
    # from them instead of starting again (training.resumable_callbacks).
    past = logged_epochs(csv_path, first_epoch)
    # Keras's own checkpoint callbacks send a non-chief worker's writes to a temporary folder;
    # the CSV log and TensorBoard do not, so only the chief keeps them (the others log nowhere).
    log_path = csv_path if chief else Path(os.devnull)
    callbacks: list[keras.callbacks.Callback] = [
        EpochTimer(),
        keras.callbacks.BackupAndRestore(str(run_dir / "backup" / phase)),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / BEST_WEIGHTS), monitor="val_accuracy", mode="max",
            save_best_only=True, save_weights_only=True,
            initial_value_threshold=_best_so_far(csv_path, "val_accuracy"),
        ),
        ResumableEarlyStopping(
            past, monitor="val_accuracy", mode="max", patience=config.early_stopping_patience
        ),
        keras.callbacks.CSVLogger(str(log_path), append=True),
    ]
    # A cosine schedule owns the learning rate; cutting it on a plateau would fight it.
    if config.lr_schedule is LRSchedule.PLATEAU or phase != "head":
        callbacks.insert(4, ResumableReduceLROnPlateau(
            past, monitor="val_loss", factor=0.3, patience=config.reduce_lr_patience,
            min_lr=1e-7))
    if config.tensorboard and chief:
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard" / phase)))
    return callbacks


def _learning_rate(config: TrainConfig, phase: str, lr: float, steps_per_epoch: int) -> Any:
    if phase != "head" or config.lr_schedule is LRSchedule.PLATEAU:
        return lr
    return WarmupCosine(peak=lr, warmup_steps=round(config.warmup_epochs * steps_per_epoch),
                        total_steps=config.epochs * steps_per_epoch,
                        floor=config.min_learning_rate)


def class_weights(labels: np.ndarray, n_classes: int, mode: ClassWeight) -> dict[int, float] | None:
    """``balanced``: n / (k * n_c), so each class adds the same total weight to the loss."""
    if mode is ClassWeight.NONE:
        return None
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return {c: float(len(labels) / (n_classes * counts[c])) for c in range(n_classes)
            if counts[c] > 0}


def _fit_phase(model, train_ds, val_ds, run_dir, config, phase, epochs, initial_epoch, lr,
               steps_per_epoch: int, weights: dict[int, float] | None, chief: bool = True):
    marker = run_dir / f"{phase}.done"
    if marker.exists():
        log.info("phase %s already finished; skipping it", phase)
        return
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=_learning_rate(config, phase, lr, steps_per_epoch)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    model.fit(
        train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
        callbacks=_callbacks(run_dir, config, phase, chief, initial_epoch),
        class_weight=weights,
        verbose=keras_verbosity(),
    )
    if not chief:
        return
    # The epoch count at the end of the phase: where a resumed fine-tuning phase starts.
    marker.write_text(f"{len(logged_epochs(run_dir / 'training_log.csv'))}\n")


def _load_best(run_dir: Path, config: TrainConfig, num_classes: int) -> keras.Model:
    """A fresh model holding the best checkpoint, built outside any distribution strategy.

    Keras cannot load .h5 weights into variables mirrored by a strategy, and a TF-format
    checkpoint would carry optimizer slots that no longer match after unfreezing layers.
    """
    from training.models import build_model

    model = build_model(config.with_(weights="none"), num_classes)
    model.load_weights(str(run_dir / BEST_WEIGHTS))
    return model


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Copy by variable name: get_weights() order changes when layers are (un)frozen."""
    values = {v.name: v.numpy() for v in source.variables}
    names = [v.name for v in target.variables]
    if sorted(values) != sorted(names):
        raise RuntimeError("best checkpoint and model have different variables")
    for variable in target.variables:
        variable.assign(values[variable.name])


def _save_model(model: keras.Model, run_dir: Path) -> None:
    # Saved under a temporary name first: a kill mid-save never leaves a truncated model.keras.
    partial = run_dir / f".partial.{MODEL_FILE}"
    model.save(str(partial))
    partial.replace(run_dir / MODEL_FILE)
    staging = run_dir / f".{SAVED_MODEL_DIR}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    model.save(str(staging), save_format="tf")
    shutil.rmtree(run_dir / SAVED_MODEL_DIR, ignore_errors=True)
    staging.rename(run_dir / SAVED_MODEL_DIR)


def train(config: TrainConfig, run_dir: Path, overwrite: bool = False,
          finish_now: bool = False) -> TrainResult:
    """Train (or resume) a run; ``finish_now`` ends an interrupted run at its best checkpoint.

    ``finish_now`` is for when the remaining epochs cannot be afforded: the run is finished
    from the best epoch so far, and its manifest records how many epochs of the configured
    schedule actually ran, so nobody mistakes it for the full recipe.
    """
    from training.hardware import configure_threads, is_chief, make_strategy, set_precision
    from training.models import build_model, unfreeze_top

    run_dir = Path(run_dir)
    index = scan_dataset(Path(config.data), seed=config.seed)
    n_classes = len(index.class_names)
    configure_threads()
    keras.utils.set_random_seed(config.seed)
    precision = set_precision(config.precision)
    strategy = make_strategy(config.strategy)
    with strategy.scope():
        # Built before the run folder exists: unavailable weights fail without leaving one.
        model = build_model(config, n_classes)
    # Every worker of a multi-worker job trains; only the chief writes the run folder, which
    # must be on a filesystem all workers share for a resume (BackupAndRestore reads it).
    chief = is_chief()
    if chief:
        prepare_run_dir(run_dir, config, overwrite)

    train_samples, val_samples = _split(index, config)
    spec = config.preprocess
    train_set = load_prepared(train_samples, spec, progress=log_progress("training images"))
    val_set = load_prepared(val_samples, spec, progress=log_progress("validation images"))
    if chief:
        write_json(run_dir / "split.json", {
            "train": list(train_set.paths), "val": list(val_set.paths),
            "skipped": [list(s) for s in train_set.skipped + val_set.skipped],
        })
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    train_ds = to_tf_dataset(train_set, spec, n_classes, global_batch, config.augment, config.seed)
    val_ds = to_tf_dataset(val_set, spec, n_classes, global_batch, None, config.seed)
    log.info("training %s on %d images, validating on %d (%d replica(s), %s)",
             config.arch.value, len(train_set), len(val_set), replicas, precision.value)

    steps = math.ceil(len(train_set) / global_batch)
    weights = class_weights(train_set.labels, n_classes, config.class_weight)
    if finish_now:
        if not (run_dir / BEST_WEIGHTS).is_file():
            raise RunDirError(f"{run_dir} has no finished epoch yet; nothing to finish from")
        log.warning("finishing %s now, at its best checkpoint, without the remaining epochs",
                    run_dir)
    with strategy.scope():
        if not finish_now:
            _fit_phase(model, train_ds, val_ds, run_dir, config, "head", config.epochs, 0,
                       config.learning_rate, steps, weights, chief)
        if config.fine_tune_epochs and config.frozen_base and not finish_now:
            _copy_weights(_load_best(run_dir, config, n_classes), model)
            n = unfreeze_top(model, config.fine_tune_layers)
            log.info("fine-tuning the top %d backbone layers", n)
            done = int((run_dir / "head.done").read_text())
            _fit_phase(model, train_ds, val_ds, run_dir, config, "finetune",
                       done + config.fine_tune_epochs, done, config.fine_tune_learning_rate,
                       steps, weights, chief)

    if not chief:
        log.info("worker done; the chief writes %s", run_dir)
        return TrainResult(run_dir, math.nan, config.epochs, math.nan, precision.value, replicas)
    # What optimize/ and the runtimes start from: the best epoch, in float32.
    keras.mixed_precision.set_global_policy("float32")
    final = _load_best(run_dir, config, n_classes)
    return _finish(run_dir, config, index, final, train_set, val_set, precision, replicas,
                   finish_now)


def _finish(run_dir: Path, config: TrainConfig, index: DatasetIndex, model: keras.Model,
            train_set: PreparedSet, val_set: PreparedSet, precision: Precision, replicas: int,
            finished_early: bool = False) -> TrainResult:
    from training.trust import classifier_weights, fit_trust, keras_with_features

    spec = config.preprocess
    probs = predict_prepared(model.predict_on_batch, val_set, spec, len(index.class_names), 64)
    val_accuracy = float(np.mean(probs.argmax(1) == val_set.labels))
    history = logged_epochs(run_dir / "training_log.csv")
    seconds = [h["epoch_seconds"] for h in history if "epoch_seconds" in h]
    # The first epoch also traces and compiles the graph; it is not what an epoch costs.
    steady = seconds[1:] or seconds
    seconds_per_epoch = float(np.median(steady)) if steady else math.nan
    write_json(run_dir / "history.json", history)
    _save_model(model, run_dir)
    shutil.rmtree(run_dir / "backup", ignore_errors=True)

    # The temperature and out-of-distribution statistics of the float32 model, which the
    # Keras runtime applies; each optimized variant gets its own.
    trust = fit_trust(keras_with_features(model), train_set, val_set, spec,
                      classifier_weights(model), seed=config.seed)
    trust_files, trust_extra = trust.write(run_dir)
    files = ["config.json", "split.json", "history.json", "training_log.csv", BEST_WEIGHTS,
             MODEL_FILE, SAVED_MODEL_DIR, *trust_files]
    manifest = Manifest(
        model=config.arch.value,
        format="keras",
        precision="float32",
        input_spec={"name": model.input_names[0], "shape": [None, spec.image_size,
                    spec.image_size, 3], "dtype": "float32"},
        class_names=index.class_names,
        preprocessing=spec.to_dict(),
        files=hash_files(run_dir, files),
        metrics={
            "val_accuracy": val_accuracy,
            "val_images": len(val_set),
            "epochs_run": len(history),
            "seconds_per_epoch": seconds_per_epoch,
            "params": int(model.count_params()),
        },
        extra={
            "finished_early": {"epochs_run": len(history), "epochs_planned": config.epochs}
            if finished_early else None,
            "training_precision": precision.value,
            "strategy": config.strategy.value,
            "replicas": replicas,
            "dataset_root": str(index.root),
            "dataset_counts": index.counts(),
            "carved_test": index.carved_test,
            "versions": {"tensorflow": tf.__version__, "tf_keras": keras.__version__,
                         "python": platform.python_version()},
            "host": platform.node(),
            **trust_extra,
        },
    )
    write_manifest(run_dir, manifest)
    log.info("finished %s: val accuracy %.4f after %d epochs (%.1f s/epoch)",
             run_dir, val_accuracy, len(history), seconds_per_epoch)
    return TrainResult(run_dir, val_accuracy, len(history), seconds_per_epoch, precision.value,
                       replicas)


def load_trained(run_dir: Path) -> tuple[Any, Manifest]:
    """The float32 model of a finished run, after checking its files against the manifest."""
    from brainedge.manifest import load_manifest

    manifest = load_manifest(run_dir)
    model = keras.models.load_model(str(Path(run_dir) / MODEL_FILE), compile=False)
    return model, manifest
