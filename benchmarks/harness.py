"""The clock of the benchmarks, and nothing else: it knows no model, image or runtime.

As in MLPerf LoadGen, the harness owns warm-up, the minimum query count and the minimum
duration; the system under test (``benchmarks.sut``) is just a callable. Keeping them apart lets
the harness time a no-op (``harness_overhead``) and so state how much of every reported latency
is its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from brainedge.errors import ConfigError

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class LatencyStats:
    """Per-query latencies in milliseconds; percentiles are NumPy's (linear interpolation)."""

    runs: int
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def from_ms(cls, samples_ms: Sequence[float] | np.ndarray) -> LatencyStats:
        x = np.asarray(samples_ms, dtype=np.float64)
        if x.ndim != 1 or x.size == 0:
            raise ConfigError(f"latency statistics need a non-empty 1-D sequence, got {x.shape}")
        p50, p90, p99 = (float(v) for v in np.percentile(x, PERCENTILES))
        return cls(runs=int(x.size), p50=p50, p90=p90, p99=p99, mean=float(x.mean()),
                   std=float(x.std()), min=float(x.min()), max=float(x.max()))

    @classmethod
    def from_ns(cls, samples_ns: Sequence[int] | np.ndarray) -> LatencyStats:
        return cls.from_ms(np.asarray(samples_ns, dtype=np.float64) / 1e6)

    def throughput_per_s(self, batch_size: int = 1) -> float:
        """Items per second when queries of ``batch_size`` items run back to back."""
        return batch_size * 1e3 / self.mean if self.mean > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_counts(warmup: int, min_runs: int, min_seconds: float, max_runs: int) -> None:
    if warmup < 0:
        raise ConfigError(f"warmup must be >= 0 calls, got {warmup}")
    if min_runs < 1:
        raise ConfigError(f"min_runs must be >= 1, got {min_runs}")
    if max_runs < min_runs:
        raise ConfigError(f"max_runs ({max_runs}) must be >= min_runs ({min_runs})")
    if not min_seconds >= 0:  # also refuses NaN
        raise ConfigError(f"min_seconds must be >= 0, got {min_seconds}")


def measure(
    fn: Callable[[], object],
    warmup: int,
    min_runs: int,
    min_seconds: float,
    max_runs: int,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> tuple[float, LatencyStats]:
    """Call ``fn`` ``warmup`` times, then time each call until both ``min_runs`` calls and
    ``min_seconds`` have passed, stopping at ``max_runs`` whichever comes first.

    Returns (total warm-up time in ms, statistics of the timed calls). ``clock`` (nanoseconds)
    is replaceable so tests can drive the loop deterministically.
    """
    _check_counts(warmup, min_runs, min_seconds, max_runs)
    start = clock()
    for _ in range(warmup):
        fn()
    warmup_ms = (clock() - start) / 1e6

    timings = np.empty(max_runs, dtype=np.int64)
    deadline = clock() + int(min_seconds * 1e9)
    runs = 0
    while runs < max_runs:
        t0 = clock()
        fn()
        t1 = clock()
        timings[runs] = t1 - t0
        runs += 1
        if runs >= min_runs and t1 >= deadline:
            break
    return warmup_ms, LatencyStats.from_ns(timings[:runs])


def _noop() -> None:
    return None


def harness_overhead(
    warmup: int = 1000,
    min_runs: int = 10_000,
    min_seconds: float = 0.2,
    max_runs: int = 200_000,
) -> LatencyStats:
    """The harness's own per-query cost: ``measure`` around a function that does nothing
    (MLPerf's null SUT). Compare its p50 with the fastest latency reported."""
    return measure(_noop, warmup, min_runs, min_seconds, max_runs)[1]


def overhead_ratio(overhead: LatencyStats, fastest_ms: float) -> float | None:
    """Harness overhead as a fraction of the fastest latency measured (target: < 0.02)."""
    return overhead.p50 / fastest_ms if fastest_ms > 0 else None


@dataclass(frozen=True)
class ConcurrencyResult:
    clients: int
    requests: int
    wall_s: float
    latency: LatencyStats

    @property
    def throughput_per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else float("inf")


def measure_concurrent(fn: Callable[[], object], clients: int, requests: int,
                       warmup: int = 2) -> ConcurrencyResult:
    """``clients`` threads share ``requests`` calls of ``fn``; each call's latency includes any
    wait for a lock or a pool slot, which is what a concurrent client sees. Warm-up calls run
    before a barrier, so timing starts with every client ready."""
    if clients < 1:
        raise ConfigError(f"clients must be >= 1, got {clients}")
    if requests < clients:
        raise ConfigError(f"requests ({requests}) must be >= clients ({clients}), so that "
                          "every client issues at least one")
    if warmup < 0:
        raise ConfigError(f"warmup must be >= 0 calls, got {warmup}")
    shares = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    barrier = threading.Barrier(clients)

    def client(share: int) -> tuple[int, int, list[int]]:
        for _ in range(warmup):
            fn()
        barrier.wait()
        timings = []
        begin = time.perf_counter_ns()
        for _ in range(share):
            t0 = time.perf_counter_ns()
            fn()
            timings.append(time.perf_counter_ns() - t0)
        return begin, time.perf_counter_ns(), timings

    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(client, shares))
    wall_ns = max(end for _, end, _ in results) - min(begin for begin, _, _ in results)
    timings = [t for _, _, ts in results for t in ts]
    return ConcurrencyResult(clients, requests, wall_ns / 1e9, LatencyStats.from_ns(timings))
