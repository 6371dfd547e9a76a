"""Choose mixed precision and a tf.distribute strategy for the machine at hand."""

from __future__ import annotations

import logging
from pathlib import Path

from training.config import Precision, Strategy
from training.tf_compat import keras, tf

log = logging.getLogger(__name__)


def cpu_has_bf16() -> bool:
    """True on CPUs with native bfloat16 arithmetic (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: Precision) -> Precision:
    if requested is not Precision.AUTO:
        return requested
    if tf.config.list_physical_devices("GPU"):
        return Precision.MIXED_FLOAT16
    return Precision.MIXED_BFLOAT16 if cpu_has_bf16() else Precision.FLOAT32


def set_precision(precision: Precision) -> Precision:
    resolved = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(resolved.value)
    log.info("precision policy: %s", resolved.value)
    return resolved


def make_strategy(strategy: Strategy) -> tf.distribute.Strategy:
    if strategy is Strategy.MIRRORED:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if strategy is Strategy.MULTI_WORKER:
        # Workers and their roles come from the TF_CONFIG environment variable.
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()
