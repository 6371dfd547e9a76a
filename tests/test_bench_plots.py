"""benchmarks.plots: with a dozen variants the latency-accuracy plot stays readable: a legend
names every variant by marker and colour, and only the Pareto front carries text labels, none
on top of another."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="matplotlib is not installed (brainedge[train])")

from benchmarks.plots import (
    pareto_front,
    plot_latency_accuracy,
    plot_sizes,
    plot_thread_scaling,
    variant_styles,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Thirteen variants of one model at one thread: (name, e2e p50 ms, accuracy). Six are on the
# front, four of them within 2 ms of each other, where fixed-offset labels used to collide.
POINTS = [
    ("keras-fp32", 182.0, 0.931), ("tflite-fp32", 96.0, 0.931), ("tflite-fp16", 97.5, 0.931),
    ("tflite-int8-dynamic", 61.0, 0.929), ("tflite-int8", 41.0, 0.926),
    ("onnx-fp32", 88.0, 0.931), ("onnx-fp16", 120.0, 0.930), ("onnx-int8", 52.0, 0.924),
    ("pruned-tflite-fp32", 95.0, 0.928), ("pruned-tflite-int8", 40.5, 0.921),
    ("pruned-2x4-tflite-int8", 42.0, 0.919), ("pruned-clustered-tflite-int8", 40.0, 0.915),
    ("pruned-tflite-int8-dynamic", 60.0, 0.927),
]


@pytest.fixture(scope="module")
def latency_figure(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("plots") / "latency.png"
    fig = plot_latency_accuracy(path, "densenet121: latency vs accuracy", POINTS, "e2e p50 (ms)")
    return fig, path


def front_names() -> list[str]:
    return [POINTS[i][0] for i in pareto_front([(x, y) for _, x, y in POINTS])]


def test_latency_plot_is_a_png_with_a_legend_naming_every_variant(latency_figure):
    fig, path = latency_figure
    assert path.read_bytes()[:8] == PNG_MAGIC
    legend = fig.axes[0].get_legend()
    assert legend is not None
    names = [t.get_text() for t in legend.get_texts()]
    assert names == ["Pareto front", *(name for name, _, _ in POINTS)]


def test_only_pareto_front_points_get_text_labels(latency_figure):
    fig, _ = latency_figure
    front = front_names()
    assert 3 <= len(front) < len(POINTS)  # the fixture must test a real selection
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert sorted(labels) == sorted(front)
    # Each label sits at its own point.
    at = {t.get_text(): t.xy for t in fig.axes[0].texts}
    for name, x, y in POINTS:
        if name in at:
            assert at[name] == (x, y)


def test_text_labels_overlap_neither_each_other_nor_leave_the_axes(latency_figure):
    fig, _ = latency_figure
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    frame = ax.get_window_extent(renderer)
    for box in boxes:
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1
        assert frame.y0 <= box.y0 and box.y1 <= frame.y1


def test_variants_are_told_apart_by_marker_and_colour(latency_figure):
    fig, _ = latency_figure
    styles = variant_styles([name for name, _, _ in POINTS])
    assert len(set(styles.values())) == len(POINTS)
    assert len({colour for _, colour in styles.values()}) == len(POINTS)  # 13 colours
    # The plot draws each variant in its style: one scatter collection per variant.
    collections = fig.axes[0].collections
    assert len(collections) == len(POINTS)
    colours = {tuple(round(c, 3) for c in coll.get_facecolor()[0]) for coll in collections}
    assert len(colours) == len(POINTS)


def test_styles_do_not_depend_on_row_order():
    names = [name for name, _, _ in POINTS]
    assert variant_styles(names) == variant_styles(list(reversed(names)))


def test_size_plot_labels_each_bar_with_its_value_and_has_a_legend(tmp_path: Path):
    bars = [("keras-fp32", 29.5, 27.4), ("tflite-int8", 7.6, None), ("onnx-int8", 7.3, 6.8)]
    fig = plot_sizes(tmp_path / "size.png", "sizes", bars)
    ax = fig.axes[0]
    assert (tmp_path / "size.png").read_bytes()[:8] == PNG_MAGIC
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["size", "gzip"]
    values = sorted(t.get_text() for t in ax.texts if t.get_text())
    assert values == sorted(["29.5", "27.4", "7.6", "7.3", "6.8"])  # no label for the gap
    assert [t.get_text() for t in ax.get_yticklabels()] == [name for name, _, _ in bars]


def test_thread_plot_has_a_legend_entry_per_variant(tmp_path: Path):
    series = {name: [(1, x), (2, x * 0.6)] for name, x, _ in POINTS}
    fig = plot_thread_scaling(tmp_path / "threads.png", "threads", series)
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == list(series)


def test_a_variant_that_failed_its_gate_is_hollow_unlabelled_and_off_the_front(tmp_path):
    # pruned-clustered-tflite-int8 is the fastest point, so it is on the front unless excluded.
    assert "pruned-clustered-tflite-int8" in front_names()
    failed = frozenset({"pruned-clustered-tflite-int8"})
    fig = plot_latency_accuracy(tmp_path / "gated.png", "gated", POINTS, "e2e p50 (ms)",
                                failed=failed)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "pruned-clustered-tflite-int8 (gate failed)" in legend
    assert "pruned-clustered-tflite-int8" not in [t.get_text() for t in ax.texts]
    hollow = [c for c in ax.collections
              if c.get_label() == "pruned-clustered-tflite-int8 (gate failed)"]
    assert len(hollow) == 1 and hollow[0].get_facecolors().size == 0
    # The front is drawn among the rest: its first step starts at the next fastest point.
    step = next(line for line in ax.get_lines() if line.get_label() == "Pareto front")
    assert step.get_xdata()[0] == 40.5
