"""The plots of one model on one device, and the Markdown lines that state and link them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.emulation import NOT_TIMED
from benchmarks.plots import (
    pareto_front,
    plot_latency_accuracy,
    plot_sizes,
    plot_thread_scaling,
    variant_styles,
)
from benchmarks.report.formatting import threads_text
from benchmarks.report.rows import Run, gate_failed
from brainedge.errors import MissingDependencyError, requires


def plots_unavailable() -> str | None:
    """Why plots cannot be drawn here (matplotlib missing), or None when they can."""
    try:
        requires("matplotlib", "train")
    except MissingDependencyError as exc:
        return str(exc)
    return None


def pareto_points(
    rows: Sequence[Mapping[str, Any]],
) -> tuple[int | None, str, list[tuple[str, float, float]], list[str]]:
    """The latency-accuracy points at the lowest thread count (1 normally), one per variant.

    One latency kind for the whole figure: e2e when every variant has it, else model latency,
    because mixing the two would put variants on different scales.
    """
    counts = [r["threads"] for r in rows if r["threads"] is not None]
    threads = min(counts) if counts else None
    at = {r["variant"]: r for r in rows if r["threads"] == threads}
    use_e2e = all(r["e2e_p50"] is not None for r in at.values())
    key, kind = ("e2e_p50", "e2e p50") if use_e2e else ("p50", "model p50 (batch 1)")
    points, left_out = [], []
    for variant, row in at.items():
        if row[key] is None or row["accuracy"] is None:
            left_out.append(variant)
        else:
            points.append((variant, row[key], row["accuracy"]))
    return threads, kind, points, left_out


def model_plots(
    run: Run,
    model: str,
    model_slug: str,
    rows: Sequence[Mapping[str, Any]],
    out_dir: Path,
    no_plots: str | None,
) -> list[str]:
    """The Pareto-front sentence, and (unless ``no_plots``) three PNGs with their links."""
    parts = []
    threads, kind, points, left_out = pareto_points(rows)
    title = f"{run.label} · {model}"
    failed = sorted({r["variant"] for r in rows if gate_failed(r)})
    candidates = [p for p in points if p[0] not in failed]
    if candidates:
        front = pareto_front([(x, y) for _, x, y in candidates])
        names = ", ".join(candidates[i][0] for i in front)
        parts.append(
            f"Pareto front (lower {kind}, higher accuracy, {threads_text(threads)}): {names}."
        )
    if failed:
        parts.append(f"Left out of the front, because they failed their parity gate: "
                     f"{', '.join(failed)}.")
    if run.emulation:
        parts.append(f"No latency plots ({NOT_TIMED}).")
    elif left_out:
        parts.append(
            f"Not on the latency-accuracy plot (no accuracy or latency): {', '.join(left_out)}."
        )
    if no_plots:
        return parts
    # One marker and colour per variant across the three plots, so they read together.
    styles = variant_styles([r["variant"] for r in rows])
    stem = f"{run.slug}_{model_slug}"
    links = []
    if points:
        name = f"{stem}_latency-accuracy.png"
        plot_latency_accuracy(
            out_dir / name,
            f"{title}: latency vs accuracy ({threads_text(threads)})",
            points,
            f"{kind} (ms)",
            styles,
            failed=frozenset(failed),
        )
        links.append(f"![{title}: latency vs accuracy]({name})")
    by_variant = {r["variant"]: r for r in rows}
    bars = [(v, r["size_mb"], r["gzip_mb"]) for v, r in by_variant.items()]
    if any(size is not None for _, size, _ in bars):
        name = f"{stem}_size.png"
        plot_sizes(out_dir / name, f"{title}: artifact size", bars, styles)
        links.append(f"![{title}: size per variant]({name})")
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        if row["threads"] is not None and row["p50"] is not None:
            series.setdefault(row["variant"], []).append((row["threads"], row["p50"]))
    if series:
        name = f"{stem}_threads.png"
        plot_thread_scaling(out_dir / name, f"{title}: model p50 by thread count", series, styles)
        links.append(f"![{title}: latency by thread count]({name})")
    if links:
        parts.append("\n".join(links))
    return parts
