"""Temperature scaling: one number per artifact that makes its probabilities mean what they say.

A network trained with cross-entropy is usually over-confident: among answers given with 95%
confidence, fewer than 95% are right. Dividing the logits by a temperature T > 1 softens them
without changing which class wins (Guo et al., 2017, "On calibration of modern neural
networks"). T is fitted on the validation split by minimising the negative log-likelihood and
stored in the artifact's manifest; every runtime applies it the same way, here.

The artifacts output probabilities, not logits. That loses nothing: log p = z - logsumexp(z),
and the constant cancels in the softmax, so softmax(log p / T) == softmax(z / T) exactly.
An integer model's probabilities can be exactly 0; they stay 0 (their logit is -inf).
"""

from __future__ import annotations

import math

import numpy as np

from brainedge.errors import ConfigError

# Fitted temperatures are searched in this range; outside it something else is wrong.
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0
_TINY = np.float64(1e-30)


def apply_temperature(probs: np.ndarray, temperature: float | None) -> np.ndarray:
    """(N, K) probabilities -> (N, K) probabilities at ``temperature`` (None or 1: unchanged)."""
    if temperature is None or temperature == 1.0:
        return probs
    check_temperature(temperature)
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore"):
        scaled = np.log(p) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    out = np.exp(scaled)
    out /= out.sum(axis=-1, keepdims=True)
    return out.astype(np.float32)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true class); probabilities are floored at 1e-30 so a 0 costs 69, not inf."""
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.maximum(p, _TINY)).mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray, iterations: int = 60) -> float:
    """The T that minimises the NLL of ``apply_temperature(probs, T)`` on labelled data.

    The NLL is convex in 1/T, so a golden-section search over log T converges; 60 steps narrow
    [0.05, 20] to a relative width below 1e-12.
    """
    labels = np.asarray(labels)
    if len(labels) == 0 or len(labels) != len(probs):
        raise ConfigError(f"fitting a temperature needs labelled probabilities; got "
                          f"{len(probs)} rows and {len(labels)} labels")

    def cost(log_t: float) -> float:
        return negative_log_likelihood(apply_temperature(probs, math.exp(log_t)), labels)

    lo, hi = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = cost(a), cost(b)
    for _ in range(iterations):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = cost(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = cost(b)
    return float(math.exp((lo + hi) / 2))


def check_temperature(temperature: float) -> float:
    if not (isinstance(temperature, int | float) and math.isfinite(temperature)
            and MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE):
        raise ConfigError(f"temperature must be a number in [{MIN_TEMPERATURE}, "
                          f"{MAX_TEMPERATURE}], got {temperature!r}; re-create the artifact")
    return float(temperature)
