"""Plots of the benchmark report: latency vs accuracy with its Pareto front, size per variant,
latency by thread count.

matplotlib's object API on an Agg canvas, never pyplot, so nothing here changes the
process-wide backend or leaves figures open; matplotlib is imported only when a plot is drawn.
A sweep has up to a dozen variants per model: each gets its own marker and colour, named in a
legend beside the axes, and only the Pareto-front points carry a text label.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.plot_labels import place_labels
from brainedge.errors import requires
from brainedge.manifest import atomic_path

_PNG_DPI = 110
# matplotlib's tab10 colours plus black, navy and gold, and twelve filled markers: with 13
# colours no colour repeats among the 13 variants of a default sweep, and as 13 and 12 are
# coprime, the first 156 names all get distinct (marker, colour) pairs.
_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#1a237e", "#e6ab02",
)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")

Style = tuple[str, str]  # (marker, colour)


def variant_styles(names: Sequence[str]) -> dict[str, Style]:
    """A (marker, colour) per distinct name, assigned in sorted order: the same names always
    get the same styles, whatever order the rows came in."""
    return {
        name: (_MARKERS[k % len(_MARKERS)], _COLOURS[k % len(_COLOURS)])
        for k, name in enumerate(sorted(set(names)))
    }


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

    # Drawn at the PNG resolution, so label placement measures what is saved.
    fig = Figure(figsize=(width, height), dpi=_PNG_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, path: Path) -> None:
    # atomic_path's temporary name ends in .tmp, so the format must be given explicitly.
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=_PNG_DPI, metadata={"Software": None})


def plot_latency_accuracy(
    path: Path, title: str, points: Sequence[tuple[str, float, float]], xlabel: str,
    styles: Mapping[str, Style] | None = None, failed: frozenset[str] = frozenset(),
) -> Any:
    """Scatter of (label, latency, accuracy), the Pareto front as a step line; returns the Figure.

    Every variant has its own marker and colour, named in the legend; only the front's points
    are labelled on the plot. The step is drawn "post": for any latency budget, the line's
    height is the best accuracy reachable within it. Variants in ``failed`` (their parity gate)
    are drawn hollow, marked so in the legend, and never on the front.
    """
    styles = styles or variant_styles([label for label, _, _ in points])
    fig = _figure(7.6, 4.6)
    ax = fig.add_subplot()
    xs = [x for _, x, _ in points]
    ys = [y for _, _, y in points]
    eligible = [i for i, (label, _, _) in enumerate(points) if label not in failed]
    front = [eligible[j] for j in pareto_front([(xs[i], ys[i]) for i in eligible])]
    if front:
        ax.step([xs[i] for i in front], [ys[i] for i in front], where="post",
                color="0.35", linewidth=1.2, label="Pareto front", zorder=2)
    on_front = set(front)
    for i, (label, x, y) in enumerate(points):
        marker, colour = styles[label]
        if label in failed:
            ax.scatter([x], [y], marker=marker, facecolors="none", edgecolors=colour, s=44,
                       linewidths=1.2, label=f"{label} (gate failed)", zorder=3)
            continue
        # Front points stand out with a black edge; their labels say which they are.
        ax.scatter([x], [y], marker=marker, color=colour, s=64 if i in on_front else 44,
                   edgecolors="black" if i in on_front else "none", linewidths=0.9,
                   label=label, zorder=3)
    _legend_beside(ax)
    ax.margins(x=0.15, y=0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    place_labels(ax, [points[i] for i in front],
                 [(x, y) for i, (_, x, y) in enumerate(points) if i not in on_front])
    _save_png(fig, path)
    return fig


def plot_sizes(
    path: Path, title: str, bars: Sequence[tuple[str, float | None, float | None]],
    styles: Mapping[str, Style] | None = None,
) -> Any:
    """Horizontal bars of (label, size MB, gzip MB), each with its value; returns the Figure.

    A variant's bars take its colour from the other plots; the gzip bar is the hatched, paler
    one. A missing value draws no bar.
    """
    from matplotlib.patches import Patch

    styles = styles or variant_styles([label for label, _, _ in bars])
    fig = _figure(7.6, 1.4 + 0.5 * len(bars))
    ax = fig.add_subplot()
    ys = list(range(len(bars)))
    colours = [styles[label][1] for label, _, _ in bars]
    for offset, values, extra in (
        (-0.2, [s for _, s, _ in bars], {}),
        (0.2, [g for _, _, g in bars], {"hatch": "////", "alpha": 0.55}),
    ):
        heights = [math.nan if v is None else v for v in values]
        bar = ax.barh([y + offset for y in ys], heights, height=0.4, color=colours,
                      edgecolor="white", **extra)
        ax.bar_label(bar, labels=["" if v is None else f"{v:.1f}" for v in values],
                     padding=2, fontsize=7)
    ax.set_yticks(ys, labels=[label for label, _, _ in bars], fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.12)
    ax.set_xlabel("MB (10^6 bytes)")
    ax.set_title(title, fontsize=10)
    ax.legend(handles=[Patch(color="0.5", label="size"),
                       Patch(facecolor="0.5", alpha=0.55, hatch="////", label="gzip")],
              loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    _save_png(fig, path)
    return fig


def plot_thread_scaling(
    path: Path, title: str, series: Mapping[str, Sequence[tuple[int, float]]],
    styles: Mapping[str, Style] | None = None,
) -> Any:
    """One line per variant: x = thread count, y = model p50 at batch 1 (ms); returns the Figure."""
    styles = styles or variant_styles(list(series))
    fig = _figure(7.6, 4.6)
    ax = fig.add_subplot()
    threads = sorted({t for points in series.values() for t, _ in points})
    for variant, points in series.items():
        ordered = sorted(points)
        marker, colour = styles[variant]
        ax.plot([t for t, _ in ordered], [p for _, p in ordered], marker=marker, color=colour,
                label=variant)
    ax.set_xticks(threads)
    ax.set_xlabel("threads")
    ax.set_ylabel("model p50 at batch 1 (ms)")
    ax.set_title(title, fontsize=10)
    _legend_beside(ax)
    ax.grid(alpha=0.3)
    _save_png(fig, path)
    return fig


def _legend_beside(ax: Any) -> None:
    # Outside the axes: inside, a dozen entries would hide the points they name.
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8,
              frameon=False)
