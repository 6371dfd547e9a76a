"""The recipe's pieces: warm-up + cosine schedule, class weights, and a dataset of known length."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from training.config import ClassWeight
from training.pipeline import PreparedSet

pytestmark = pytest.mark.tf


def _schedule(**kw):
    from training.schedules import WarmupCosine

    values = dict(peak=1e-3, warmup_steps=10, total_steps=110, floor=1e-6)
    values.update(kw)
    return WarmupCosine(**values)


def test_warm_up_rises_linearly_to_the_peak_then_cosine_decays_to_the_floor():
    lr = _schedule()
    at = [float(lr(step)) for step in range(111)]
    assert at[0] == pytest.approx(1e-4)  # (step + 1) / warmup_steps of the peak
    assert at[4] == pytest.approx(5e-4)
    assert at[10] == pytest.approx(1e-3, rel=1e-6)  # the peak, where decay begins
    assert at[60] == pytest.approx((1e-3 + 1e-6) / 2, rel=1e-5)  # half-way down the cosine
    assert at[110] == pytest.approx(1e-6, rel=1e-4)
    assert all(a >= b for a, b in itertools.pairwise(at[10:]))  # never rises again


def test_schedule_round_trips_through_its_config_and_refuses_nonsense():
    from training.schedules import WarmupCosine

    lr = _schedule()
    assert WarmupCosine.from_config(lr.get_config()).get_config() == lr.get_config()
    with pytest.raises(ValueError, match="warmup_steps"):
        _schedule(warmup_steps=110)
    with pytest.raises(ValueError, match="floor"):
        _schedule(floor=1e-2)


def test_balanced_class_weights_give_every_class_the_same_total_weight():
    from training.train import class_weights

    labels = np.array([0] * 60 + [1] * 20 + [2] * 20)
    weights = class_weights(labels, 3, ClassWeight.BALANCED)
    totals = [weights[c] * np.sum(labels == c) for c in range(3)]
    assert totals == pytest.approx([100 / 3] * 3)
    assert class_weights(labels, 3, ClassWeight.NONE) is None


def test_training_dataset_knows_its_length_so_progress_shows_steps_per_epoch():
    # Without a known cardinality Keras counted the steps of every epoch since the process
    # started after a resume: "912/912" at epoch 7 instead of 152.
    from runtime.preprocess import PreprocessSpec
    from training.config import AugmentConfig
    from training.pipeline import to_tf_dataset

    n, batch = 37, 8
    data = PreparedSet(np.zeros((n, 32, 32, 3), np.uint8), np.arange(n) % 4,
                       tuple(f"{i}.png" for i in range(n)), ())
    ds = to_tf_dataset(data, PreprocessSpec(image_size=32), 4, batch, AugmentConfig(), 0)
    assert int(ds.cardinality()) == math.ceil(n / batch) == sum(1 for _ in ds)
