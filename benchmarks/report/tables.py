"""The report's tables: the devices merged, each model's CPU rows with speed-ups, GPU rows,
devices side by side, and the rows that failed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.emulation import NOT_TIMED
from benchmarks.report.formatting import markdown_table, ratio, threads_text
from benchmarks.report.rows import (
    GATE_PASSED,
    STAGES,
    Run,
    baselines,
    model_row_order,
    num,
)
from brainedge.tables import Column, escape

# Versions worth a glance in the header; the JSON holds the full list.
KEY_LIBRARIES = (
    "ai-edge-litert",
    "tflite-runtime",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorflow",
    "numpy",
    "opencv-python-headless",
)

_CPU_COLUMNS: list[Column] = [
    ("variant", "variant"),
    ("backend", "backend"),
    ("threads", "threads"),
    ("size_mb", "size MB", ".2f"),
    ("gzip_mb", "gzip MB", ".2f"),
    ("accuracy", "accuracy", ".4f"),
    ("macro_f1", "macro-F1", ".4f"),
    ("gate_cell", "parity gate"),
    ("p50", "p50 ms", ".2f"),
    ("p90", "p90 ms", ".2f"),
    ("p99", "p99 ms", ".2f"),
    ("e2e_p50", "e2e p50 ms", ".2f"),
    ("throughput_cell", "img/s"),
    ("peak_rss_mb", "peak RSS MB", ".1f"),
    ("load_ms", "load ms", ".1f"),
    ("speedup_e2e", "e2e speed-up"),
    ("speedup_model", "model speed-up"),
]

_GPU_COLUMNS: list[Column] = [
    ("model", "model"),
    ("variant", "variant"),
    ("backend", "backend"),
    ("provider", "provider"),
    ("accuracy", "accuracy", ".4f"),
    ("p50", "p50 ms", ".2f"),
    ("p90", "p90 ms", ".2f"),
    ("p99", "p99 ms", ".2f"),
    ("e2e_p50", "e2e p50 ms", ".2f"),
    ("throughput", "img/s (largest batch)", ".1f"),
    ("throughput_batch", "batch"),
    ("peak_rss_mb", "peak RSS MB", ".1f"),
    ("load_ms", "load ms", ".1f"),
]


def runs_table(runs: Sequence[Run]) -> str:
    """One row per device run: hardware, software and where the numbers came from."""
    rows = []
    for run in runs:
        device = run.doc["device"]
        gpu = device.get("gpu") if isinstance(device.get("gpu"), Mapping) else {}
        rows.append(
            {
                "device": run.label,
                "cpu": device.get("cpu_model"),
                "cores": cores_text(device),
                "memory": num(device.get("memory_gb")),
                "isa": " ".join(str(f) for f in device.get("isa") or []) or None,
                "os": device.get("os"),
                "python": device.get("python"),
                "libraries": _key_libraries(device.get("libraries")),
                "gpu": gpu.get("name") or "none",
                "timing": NOT_TIMED if run.emulation else "measured",
                "date": run.doc.get("created"),
                "run": run.doc.get("run_id"),
                "file": run.doc["_source"],
            }
        )
    return markdown_table(
        rows,
        [
            ("device", "device"),
            ("cpu", "CPU"),
            ("cores", "cores"),
            ("memory", "memory GB", ".1f"),
            ("isa", "ISA flags"),
            ("os", "OS"),
            ("python", "Python"),
            ("libraries", "libraries"),
            ("gpu", "GPU"),
            ("timing", "timing"),
            ("date", "date (UTC)"),
            ("run", "run id"),
            ("file", "file"),
        ],
    )


def cores_text(device: Mapping[str, Any]) -> str:
    return (f"{device.get('logical_cores', '?')} logical / "
            f"{device.get('physical_cores') or '?'} physical")


def _key_libraries(libraries: Any) -> str | None:
    if not isinstance(libraries, Mapping) or not libraries:
        return None
    by_name = {str(k).lower().replace("_", "-"): v for k, v in libraries.items()}
    keys = [k for k in KEY_LIBRARIES if k in by_name] or sorted(by_name)
    return ", ".join(f"{k} {by_name[k] if by_name[k] is not None else 'absent'}" for k in keys)


def model_table(run: Run, model: str, rows: Sequence[dict[str, Any]]) -> str:
    """The CPU rows of one model on one device, each with its speed-up over the baseline."""
    has_baseline = any(r["baseline"] for r in rows)
    failed_baselines = {
        r["threads"] for r in run.rows if r["model"] == model and r["baseline"] and r["error"]
    }
    base_by_threads = baselines(rows)
    table = []
    for row in rows:
        if run.emulation:
            e2e = model_speedup = NOT_TIMED
        elif base_by_threads.get(row["threads"]) is row:
            e2e = model_speedup = "1.00x (baseline)"
        elif row["threads"] in base_by_threads:
            base = base_by_threads[row["threads"]]
            e2e = ratio(base["e2e_p50"], row["e2e_p50"])
            model_speedup = ratio(base["p50"], row["p50"])
        elif row["threads"] in failed_baselines:
            e2e = model_speedup = "baseline failed"
        elif has_baseline:
            e2e = model_speedup = f"no baseline at {threads_text(row['threads'])}"
        else:
            e2e = model_speedup = "no baseline"
        throughput = None
        if row["throughput"] is not None:
            throughput = f"{row['throughput']:.1f} (batch {row['throughput_batch']})"
        table.append(
            {**row, "throughput_cell": throughput, "speedup_e2e": e2e,
             "speedup_model": model_speedup, "gate_cell": gate_text(row["gate"])}
        )
    return markdown_table(table, _CPU_COLUMNS)


def gate_text(gate: tuple[str, float | None] | None) -> str | None:
    """E.g. ``failed (1.30 pts)``: the verdict and, for a failure, the test or val drop."""
    if gate is None:
        return None
    status, drop = gate
    return status if status == GATE_PASSED or drop is None else f"{status} ({drop:.2f} pts)"


def stage_table(rows: Sequence[dict[str, Any]]) -> str | None:
    """Where an end-to-end request's time goes: each stage's mean ms and share, per row; None
    when no row recorded its stages."""
    timed = [r for r in rows if r.get("stages")]
    if not timed:
        return None
    table = [{"variant": r["variant"], "threads": r["threads"], "e2e_p50": r["e2e_p50"],
              **{stage: f"{mean:.3f} ({share:.0%})"
                 for stage, (mean, share) in r["stages"].items()}} for r in timed]
    columns: list[Column] = [("variant", "variant"), ("threads", "threads"),
                             ("e2e_p50", "e2e p50 ms", ".2f")]
    columns += [(stage, f"{stage} ms (share)") for stage in STAGES]
    return markdown_table(table, columns)


def gpu_section(run: Run) -> list[str]:
    """The GPU rows of one device, or why there are none."""
    info = run.doc.get("gpu") if isinstance(run.doc.get("gpu"), Mapping) else {}
    measured = info.get("measured") is True
    rows = sorted(run.gpu(), key=model_row_order)
    parts = []
    if not measured:
        reason = info.get("reason") or "no reason recorded"
        parts.append(f"GPU: not measured on {escape(run.label)} ({escape(str(reason))}).")
        if rows:
            parts.append("The run nevertheless holds GPU rows; they are shown as recorded.")
    if rows:
        parts.append(markdown_table(rows, _GPU_COLUMNS))
    elif measured:
        failed = sum(1 for r in run.rows if r["device_kind"] == "gpu" and r["error"])
        parts.append(
            f"GPU: measured on {escape(run.label)}, but no GPU row succeeded"
            + (f" ({failed} failed; see Failed rows)." if failed else " (none recorded).")
        )
    return parts


def cross_device(runs: Sequence[Run]) -> str:
    """e2e p50 per model and variant at each device's fastest thread count, side by side."""
    pairs = sorted({(r["model"], r["variant"]) for run in runs for r in run.cpu()})
    table = []
    for model, variant in pairs:
        row: dict[str, Any] = {"model": model, "variant": variant}
        for i, run in enumerate(runs):
            rows = [r for r in run.cpu() if r["model"] == model and r["variant"] == variant]
            timed = [r for r in rows if r["e2e_p50"] is not None]
            if timed:
                best = min(timed, key=lambda r: (r["e2e_p50"], r["threads"] or 0))
                row[f"d{i}"] = f"{best['e2e_p50']:.2f} ({threads_text(best['threads'])})"
            elif rows:
                row[f"d{i}"] = NOT_TIMED if run.emulation else "no e2e"
        table.append(row)
    columns: list[Column] = [("model", "model"), ("variant", "variant")]
    columns += [(f"d{i}", f"{run.label} e2e p50 ms") for i, run in enumerate(runs)]
    return (
        "CPU rows; each cell is the lowest e2e p50 over the thread counts that device ran.\n\n"
        + markdown_table(table, columns)
    )


def failed_table(runs: Sequence[Run]) -> str:
    rows = [
        {"device": run.label, **r}
        for run in runs
        for r in sorted(run.rows, key=model_row_order)
        if r["error"] is not None
    ]
    if not rows:
        return "No failed rows."
    return markdown_table(
        rows,
        [
            ("device", "device"),
            ("model", "model"),
            ("variant", "variant"),
            ("backend", "backend"),
            ("device_kind", "on"),
            ("threads", "threads"),
            ("error", "error"),
        ],
    )
