"""Learning-rate schedules the training recipe can choose (``--lr-schedule``)."""

from __future__ import annotations

import math

from brainedge.tf_compat import keras, tf


@keras.utils.register_keras_serializable(package="brainedge")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``peak / warmup_steps`` to ``peak``, then cosine decay to ``floor``.

    Driven by the optimizer's step counter, which BackupAndRestore saves, so a resumed run
    continues the curve where it stopped instead of warming up again.
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, floor: float) -> None:
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(f"warmup_steps {warmup_steps} must be in [0, {total_steps})")
        if not 0 < floor <= peak:
            raise ValueError(f"floor {floor} must be in (0, peak={peak}]")
        self.peak, self.floor = float(peak), float(floor)
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.peak * (step + 1.0) / max(self.warmup_steps, 1)
        progress = tf.clip_by_value(
            (step - self.warmup_steps) / float(self.total_steps - self.warmup_steps), 0.0, 1.0)
        cosine = self.floor + 0.5 * (self.peak - self.floor) * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warm, cosine)

    def get_config(self) -> dict:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "floor": self.floor}
