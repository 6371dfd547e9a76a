"""The Markdown report assembled from its parts: header, notes, one section per device, the
devices side by side, failed rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.report.checks import overhead, targets
from benchmarks.report.emulated import emulated_note
from benchmarks.report.figures import model_plots, plots_unavailable
from benchmarks.report.formatting import unique_slug
from benchmarks.report.load import latest_per_device, load_runs
from benchmarks.report.rows import Run, prepare, row_order
from benchmarks.report.tables import (
    cross_device,
    failed_table,
    gpu_section,
    model_table,
    runs_table,
    stage_table,
)
from brainedge import MEDICAL_NOTICE
from brainedge.manifest import atomic_path
from brainedge.tables import escape

REPORT_NAME = "report.md"


def write_report(inputs: Sequence[Path | str], out_dir: Path,
                 latest_per_device: bool = True) -> Path:
    """Merge the runs in ``inputs`` into ``out_dir/report.md`` (plus PNGs) and return its path.

    With ``latest_per_device``, a device benchmarked several times (``make bench`` again after
    a change) is represented by its newest run only; the older ones are listed as skipped.
    Every file is written under a temporary name and moved into place, so a crash never leaves
    a half-written report or a link to a half-written plot.
    """
    docs, skipped = select_runs(inputs, latest_per_device)
    markdown = render_report(docs, skipped, Path(out_dir))
    target = Path(out_dir) / REPORT_NAME
    with atomic_path(target) as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    return target


def select_runs(inputs: Sequence[Path | str], latest_only: bool = True
                ) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs to merge, and a line for each file or run left out (``load_runs`` explains)."""
    skipped: list[str] = []
    docs = load_runs(inputs, skipped)
    if latest_only:
        docs = latest_per_device(docs, skipped)
    return docs, skipped


def render_report(docs: Sequence[dict[str, Any]], skipped: Sequence[str], out_dir: Path) -> str:
    """The report's Markdown; its plots are written into ``out_dir`` on the way."""
    runs = prepare(docs)
    out_dir.mkdir(parents=True, exist_ok=True)
    no_plots = plots_unavailable()
    parts = [
        "# BrainEdge benchmark report",
        f"> **Not a medical device.** {MEDICAL_NOTICE}",
        "## Runs merged",
        runs_table(runs),
    ]
    if skipped:
        parts.append(
            "**Skipped inputs** (found in a folder, not merged):\n\n"
            + "\n".join(f"- **Warning:** {escape(message)}" for message in skipped)
        )
    parts.append(_notes(no_plots))
    for run in runs:
        parts.extend(_device_section(run, out_dir, no_plots))
    if len(runs) > 1:
        parts.extend(["## Across devices", cross_device(runs)])
    parts.extend(["## Failed rows", failed_table(runs)])
    return "\n\n".join(parts) + "\n"


def _notes(no_plots: str | None) -> str:
    lines = [
        '- Latencies are in ms. "Model" latency times inference alone, at batch 1; "e2e" '
        "is what the web app does for one real image file: decode, out-of-distribution "
        "checks, preprocessing and inference. Its stage table gives each stage's mean and "
        "share of the mean request.",
        "- Sizes in MB are 10^6 bytes. Throughput is at the largest batch measured.",
        "- Speed-up is baseline p50 / variant p50, where the baseline is the FP32 Keras row "
        "(`baseline: true`) of the same device, model and thread count: 4.00x means four "
        "times faster.",
        "- Accuracy and macro-F1 are measured once per artifact and shown on each of its rows.",
        "- Parity gate: the artifact's verdict from `brainedge optimize` against its float32 "
        "parent on the full validation and test splits, with the larger drop for a failure "
        "(– for a Keras run, or a sweep that did not record it). A variant that failed it is "
        "left out of the Pareto front, drawn hollow on the plot, and refused by "
        "`brainedge predict` and `serve` unless allowed: it is measured, not recommended.",
    ]
    if no_plots:
        lines.append(f"- Plots: not drawn, because {no_plots}.")
    return "Notes:\n\n" + "\n".join(lines)


def _device_section(run: Run, out_dir: Path, no_plots: str | None) -> list[str]:
    parts = [f"## Device: {escape(run.label)}"]
    if run.emulation:
        parts.append(escape(emulated_note(run.emulation)))
    if run.doc.get("_gates_from_manifests"):
        parts.append(
            f"Parity-gate verdicts of {run.doc['_gates_from_manifests']} row(s): not recorded "
            "by this sweep (it predates them), so read from each artifact's manifest where "
            "it lists the very model file that was timed (same sha256)."
        )
    used_model_slugs: set[str] = set()
    for model in run.models():
        parts.extend(
            _model_section(run, model, unique_slug(model, used_model_slugs), out_dir, no_plots)
        )
    parts.extend([f"### {escape(run.label)}: targets", targets(run)])
    parts.extend([f"### {escape(run.label)}: harness overhead", overhead(run)])
    parts.extend([f"### {escape(run.label)}: GPU", *gpu_section(run)])
    return parts


def _model_section(
    run: Run, model: str, model_slug: str, out_dir: Path, no_plots: str | None
) -> list[str]:
    rows = sorted((r for r in run.cpu() if r["model"] == model), key=row_order)
    parts = [f"### {escape(run.label)} · {escape(model)} (CPU)"]
    if not rows:
        parts.append(f"No successful CPU rows for {model} in this run.")
        return parts
    parts.append(model_table(run, model, rows))
    stages = stage_table(rows)
    if stages:
        parts.extend([f"Where an e2e request's time goes ({escape(model)}, CPU):", stages])
    if not any(r["baseline"] for r in rows):
        parts.append(
            f"No FP32 Keras baseline row (`baseline: true`) for {model} in this run, so no "
            "speed-up can be given."
        )
    failures = sum(1 for r in run.rows if r["model"] == model and r["error"] is not None)
    if failures:
        parts.append(f"{failures} row(s) of {model} failed; see Failed rows.")
    parts.extend(model_plots(run, model, model_slug, rows, out_dir, no_plots))
    return parts
