"""ReduceLROnPlateau and EarlyStopping that remember the epochs before a resume.

BackupAndRestore brings back the weights, the optimizer (its learning rate included) and the
epoch counter, but not what the other callbacks counted. A resumed ReduceLROnPlateau starts
with no best value and no patience used, so a run that is stopped and resumed every session
(the reference runs on two cores are) may never cut its learning rate: in the reference
DenseNet121 run, resumes after epochs 5 and 7 skipped the cut an uninterrupted run makes after
epoch 7. These subclasses replay the epochs of the training log through Keras's own
``on_epoch_end`` before the first new epoch, so the resumed run continues where the
uninterrupted one would be.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from brainedge.tf_compat import keras

log = logging.getLogger(__name__)


def logged_epochs(csv_path: Path, first_epoch: int = 0) -> list[dict[str, float]]:
    """The rows of a CSVLogger file from ``first_epoch`` on (a phase's own epochs), as floats."""
    if not Path(csv_path).exists():
        return []
    with open(csv_path, newline="") as fh:
        rows = [{k: float(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(fh)]
    return [row for row in rows if row.get("epoch", -1) >= first_epoch]


class _ReplaysLog:
    """Mixin: after Keras resets the state in ``on_train_begin``, replay the logged epochs."""

    _past: list[dict[str, float]]
    _replayed_lr: float  # the rate the last replayed epoch left (after its cut, if any)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)  # type: ignore[misc]
        if not self._past:
            return
        import tensorflow as tf

        # The replay must not touch the live model: the learning rate was restored with the
        # optimizer, and a past cut or stop is already in it. Each epoch sees the rate it had.
        model = self.model  # type: ignore[has-type]
        lr = tf.Variable(0.0, dtype=tf.float32)
        self.model = SimpleNamespace(optimizer=SimpleNamespace(lr=lr), stop_training=False)
        try:
            for row in self._past:
                lr.assign(row.get("lr", 0.0))
                self.on_epoch_end(int(row["epoch"]), dict(row))  # type: ignore[attr-defined]
        finally:
            self.model = model
        self._replayed_lr = float(lr.numpy())


class ResumableReduceLROnPlateau(_ReplaysLog, keras.callbacks.ReduceLROnPlateau):
    def __init__(self, past: Sequence[Mapping[str, float]] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._past = [dict(row) for row in past]

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self._past:
            self._check_rate(self._replayed_lr)

    def _check_rate(self, replayed: float) -> None:
        """Warn when the restored rate is not the one the replayed cuts lead to: a run resumed
        by a version that forgot its plateau count goes on at its own rate."""
        restored = float(keras.backend.get_value(self.model.optimizer.lr))
        if abs(restored - replayed) > 0.01 * replayed:
            log.warning("the training log's plateau cuts lead to a learning rate of %.3g, but "
                        "the restored optimizer has %.3g (an earlier resume did not count the "
                        "plateau); training goes on at %.3g", replayed, restored, restored)


class ResumableEarlyStopping(_ReplaysLog, keras.callbacks.EarlyStopping):
    def __init__(self, past: Sequence[Mapping[str, float]] = (), **kwargs: Any) -> None:
        if kwargs.get("restore_best_weights"):
            raise ValueError("a replayed EarlyStopping has no best weights to restore")
        super().__init__(**kwargs)
        self._past = [dict(row) for row in past]
