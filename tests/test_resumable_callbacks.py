"""A resumed run cuts its learning rate and stops early when an uninterrupted run would."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.tf

# Validation losses with two plateaus: patience 2 cuts the rate after epochs 3 and 6.
VAL_LOSS = [1.0, 0.8, 0.85, 0.9, 0.7, 0.75, 0.76, 0.77, 0.6, 0.65]
PLATEAU = {"monitor": "val_loss", "factor": 0.3, "patience": 2, "min_lr": 1e-7}
STOPPING = {"monitor": "val_accuracy", "mode": "max", "patience": 3}


def _model(learning_rate: float):
    from brainedge.tf_compat import keras

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="mse")
    return model


def _epochs(callback, model, losses: list[float], first_epoch: int) -> list[dict]:
    """Drive ``callback`` as fit does; return the rows CSVLogger would write."""
    callback.set_model(model)
    callback.on_train_begin()
    rows = []
    for epoch, loss in enumerate(losses, start=first_epoch):
        logs = {"val_loss": loss, "val_accuracy": 1.0 - loss}
        callback.on_epoch_end(epoch, logs)  # the plateau callback adds the epoch's "lr"
        rows.append({"epoch": float(epoch), **logs, "stop": model.stop_training})
        if model.stop_training:
            break
    return rows


def _learning_rate(model) -> float:
    from brainedge.tf_compat import keras

    return float(keras.backend.get_value(model.optimizer.lr))


def _plain_plateau(past: list[dict]):
    from brainedge.tf_compat import keras

    return keras.callbacks.ReduceLROnPlateau(**PLATEAU)


def _resumable_plateau(past: list[dict]):
    from training.resumable_callbacks import ResumableReduceLROnPlateau

    return ResumableReduceLROnPlateau(past, **PLATEAU)


def _resumed_lrs(make_callback, stop_after: int) -> list[float]:
    """The rates of a run stopped after ``stop_after`` epochs and resumed with the callback
    ``make_callback(rows logged so far)``."""
    first = _model(1e-3)
    before = _epochs(_plain_plateau([]), first, VAL_LOSS[:stop_after], 0)
    # BackupAndRestore brings the optimizer back, and with it the learning rate of the moment.
    resumed = _model(_learning_rate(first))
    after = _epochs(make_callback(before), resumed, VAL_LOSS[stop_after:], stop_after)
    return [row["lr"] for row in before + after]


def _uninterrupted_lrs() -> list[float]:
    rows = _epochs(_plain_plateau([]), _model(1e-3), VAL_LOSS, 0)
    return [row["lr"] for row in rows]


@pytest.mark.parametrize("stop_after", range(1, len(VAL_LOSS)))
def test_a_resumed_plateau_cuts_the_learning_rate_when_an_uninterrupted_one_does(
    stop_after: int,
) -> None:
    whole = _uninterrupted_lrs()
    assert whole == pytest.approx([1e-3] * 4 + [3e-4] * 3 + [9e-5] * 3)
    assert _resumed_lrs(_resumable_plateau, stop_after) == pytest.approx(whole)


def test_keras_own_plateau_forgets_its_count_on_a_resume() -> None:
    """Why the resumable one exists: stopped after epoch 3, Keras's never cuts after epoch 3."""
    assert _resumed_lrs(_plain_plateau, 3) != pytest.approx(_uninterrupted_lrs())


@pytest.mark.parametrize("stop_after", range(1, 5))
def test_a_resumed_early_stopping_stops_at_the_same_epoch(stop_after: int) -> None:
    from brainedge.tf_compat import keras
    from training.resumable_callbacks import ResumableEarlyStopping

    losses = [1.0, 0.5, 0.6, 0.55, 0.52, 0.58, 0.4]  # no gain for 3 epochs after epoch 1
    whole = _epochs(keras.callbacks.EarlyStopping(**STOPPING), _model(1e-3), losses, 0)
    assert whole[-1]["epoch"] == 4 and whole[-1]["stop"]

    before = _epochs(ResumableEarlyStopping(**STOPPING), _model(1e-3), losses[:stop_after], 0)
    after = _epochs(ResumableEarlyStopping(before, **STOPPING), _model(1e-3),
                    losses[stop_after:], stop_after)
    assert [row["epoch"] for row in before + after] == [row["epoch"] for row in whole]
    assert after[-1]["stop"]


def test_only_the_phase_s_own_epochs_are_replayed(tmp_path) -> None:
    from training.resumable_callbacks import logged_epochs

    log = tmp_path / "training_log.csv"
    log.write_text("epoch,lr,val_loss\n0,0.001,1.0\n1,0.001,0.9\n2,1e-05,0.8\n3,1e-05,\n")
    assert [row["epoch"] for row in logged_epochs(log, first_epoch=2)] == [2.0, 3.0]
    assert logged_epochs(log)[3] == {"epoch": 3.0, "lr": 1e-05}  # an empty value is left out
    assert logged_epochs(tmp_path / "absent.csv") == []


def test_a_restored_rate_that_missed_a_logged_cut_is_named(caplog) -> None:
    """Logs of a run resumed by the forgetful version: the cut after epoch 3 never happened."""
    import logging

    before = _epochs(_plain_plateau([]), _model(1e-3), VAL_LOSS[:4], 0)
    with caplog.at_level(logging.WARNING, logger="training.resumable_callbacks"):
        _epochs(_resumable_plateau(before), _model(1e-3), VAL_LOSS[4:5], 4)
    assert "lead to a learning rate of 0.0003, but the restored optimizer has 0.001" \
        in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="training.resumable_callbacks"):
        _epochs(_resumable_plateau(before), _model(3e-4), VAL_LOSS[4:5], 4)
    assert caplog.text == ""
