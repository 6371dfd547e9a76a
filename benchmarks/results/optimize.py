"""The optimize tables of ``brainedge results``: each run's variants from
``optimized/summary.json``, with size, accuracy drop against the parent and gate status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.results.inputs import OPTIMIZE, OPTIMIZE_SUMMARY, RunFolder, problem_lines
from brainedge.tables import Column, markdown_table


def optimize_markdown(runs: Sequence[RunFolder]) -> str:
    parts = ["# Optimized variants"]
    for run in runs:
        if run.optimized is None:
            continue
        parts += [f"## {run.model} (`{run.name}/{OPTIMIZE_SUMMARY}`)", _variants_table(run)]
        parts += [f"- `{v.get('variant')}` could not be built: {v.get('error')}"
                  for v in run.optimized if v.get("error")]
    if len(parts) > 1:
        parts.append(
            "Sizes in MB (10^6 bytes); vs TFLite FP32 is the size ratio to the float32 TFLite "
            "file. Drops are in accuracy points below the float32 Keras parent on the same "
            "images; a variant fails its gate when the drop exceeds the tolerance of its run."
        )
    parts += problem_lines(runs, OPTIMIZE)
    return "\n\n".join(parts) + "\n"


def variant_row(variant: Mapping[str, Any]) -> dict[str, Any]:
    """A summary.json variant with sizes in MB and drops in points."""
    return {
        **variant,
        "size_mb": size_mb(variant, "size"),
        "gzip_mb": size_mb(variant, "gzip"),
        "val_drop_pts": _points(variant.get("val_drop")),
        "test_drop_pts": _points(variant.get("test_drop")),
        "tolerance_pts": _points(variant.get("tolerance")),
    }


def size_mb(variant: Mapping[str, Any], kind: str) -> float | None:
    value = variant.get(f"{kind}_bytes")  # optimize's summary.json records bytes
    return value / 1e6 if isinstance(value, (int, float)) else None


def _points(fraction: Any) -> float | None:
    return 100 * fraction if isinstance(fraction, (int, float)) else None


def _variants_table(run: RunFolder) -> str:
    rows = [variant_row(v) for v in run.optimized or []]
    columns: list[Column] = [
        ("variant", "Variant"), ("size_mb", "Size MB", ".2f"), ("gzip_mb", "gzip MB", ".2f"),
        ("size_ratio", "vs TFLite FP32", ".2f"), ("sparsity", "Sparsity", ".2f"),
        ("val_accuracy", "Val. acc.", ".4f"), ("val_drop_pts", "Val. drop (pts)", ".2f"),
    ]
    if any(r.get("test_accuracy") is not None for r in rows):
        columns += [("test_accuracy", "Test acc.", ".4f"),
                    ("test_drop_pts", "Test drop (pts)", ".2f")]
    columns += [("val_agreement", "Top-1 agreement", ".4f"),
                ("tolerance_pts", "Tolerance (pts)", ".2f"), ("status", "Gate")]
    return markdown_table(rows, columns)
