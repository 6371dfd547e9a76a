"""Plots of the benchmark report: latency vs accuracy with its Pareto front, size per variant,
latency by thread count.

matplotlib's object API on an Agg canvas, never pyplot, so nothing here changes the
process-wide backend or leaves figures open; matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brainedge.errors import requires
from brainedge.manifest import atomic_path

_PNG_DPI = 110


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, accuracy) points no other point beats: lower latency, higher
    accuracy.

    A point is dominated when another is at least as fast and at least as accurate, and strictly
    better in one of the two. Exact duplicates dominate neither each other, so all of them are
    on the front. Points with a non-finite coordinate are never on it (a NaN accuracy cannot be
    ranked). The indices come sorted by latency (then index), the order a step line is drawn in.
    """
    finite = [i for i, (x, y) in enumerate(points) if math.isfinite(x) and math.isfinite(y)]
    order = sorted(finite, key=lambda i: (points[i][0], -points[i][1], i))
    front: list[int] = []
    best_acc = -math.inf
    best_lat = math.nan
    for i in order:
        lat, acc = points[i]
        if acc > best_acc:
            front.append(i)
            best_acc, best_lat = acc, lat
        elif acc == best_acc and lat == best_lat:
            front.append(i)
    return front


def _figure(width: float, height: float) -> Any:
    requires("matplotlib", "train")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, path: Path) -> None:
    # atomic_path's temporary name ends in .tmp, so the format must be given explicitly.
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=_PNG_DPI, metadata={"Software": None})


def plot_latency_accuracy(
    path: Path, title: str, points: Sequence[tuple[str, float, float]], xlabel: str
) -> None:
    """Scatter of (label, latency, accuracy) with the Pareto front as a step line.

    The step is drawn "post": for any latency budget, the line's height is the best accuracy
    reachable within it.
    """
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot()
    xs = [x for _, x, _ in points]
    ys = [y for _, _, y in points]
    ax.scatter(xs, ys, color="tab:blue", zorder=3)
    for label, x, y in points:
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = pareto_front(list(zip(xs, ys, strict=True)))
    if front:
        ax.step(
            [xs[i] for i in front],
            [ys[i] for i in front],
            where="post",
            color="tab:red",
            label="Pareto front",
            zorder=2,
        )
        ax.legend(loc="lower right")
    # Room for the labels of the outermost points.
    ax.margins(x=0.12, y=0.12)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    _save_png(fig, path)


def plot_sizes(
    path: Path, title: str, bars: Sequence[tuple[str, float | None, float | None]]
) -> None:
    """Horizontal bars of (label, size MB, gzip MB); a missing value draws no bar."""
    fig = _figure(6.4, 1.2 + 0.55 * len(bars))
    ax = fig.add_subplot()
    ys = list(range(len(bars)))
    sizes = [math.nan if s is None else s for _, s, _ in bars]
    gzips = [math.nan if g is None else g for _, _, g in bars]
    ax.barh([y - 0.2 for y in ys], sizes, height=0.4, label="size MB", color="tab:blue")
    ax.barh([y + 0.2 for y in ys], gzips, height=0.4, label="gzip MB", color="tab:orange")
    ax.set_yticks(ys, labels=[label for label, _, _ in bars])
    ax.invert_yaxis()
    ax.set_xlabel("MB (10^6 bytes)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    _save_png(fig, path)


def plot_thread_scaling(
    path: Path, title: str, series: Mapping[str, Sequence[tuple[int, float]]]
) -> None:
    """One line per variant: x = thread count, y = model p50 at batch 1 (ms)."""
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot()
    threads = sorted({t for points in series.values() for t, _ in points})
    for variant, points in series.items():
        ordered = sorted(points)
        ax.plot([t for t, _ in ordered], [p for _, p in ordered], marker="o", label=variant)
    ax.set_xticks(threads)
    ax.set_xlabel("threads")
    ax.set_ylabel("model p50 at batch 1 (ms)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save_png(fig, path)
