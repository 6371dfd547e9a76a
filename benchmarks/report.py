"""Merge benchmark runs from several devices into one Markdown report with plots.

Each device (a laptop, a Raspberry Pi, a GPU server) writes one ``brainedge-bench/1`` JSON run
with ``benchmarks/sweep.py``. This module reads any number of them and answers what the project
asks of a sweep: how much faster each optimized variant is than the FP32 Keras baseline on the
same device and thread count, whether the int8 target is met, whether the harness's own
overhead is small enough to trust the numbers, and what was not measured or failed. Missing
data is said out loud, never filled in or guessed.

It needs neither TensorFlow nor scikit-learn, so it runs on an edge install. matplotlib is
imported only inside the plotting functions; without it the report is written without plots
and says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.plots import (
    pareto_front,
    plot_latency_accuracy,
    plot_sizes,
    plot_thread_scaling,
)
from brainedge import MEDICAL_NOTICE, tables
from brainedge.errors import ConfigError, MissingDependencyError, requires
from brainedge.manifest import atomic_path
from brainedge.tables import Column, escape

__all__ = [
    "SCHEMA",
    "TARGET_SPEEDUP",
    "load_runs",
    "markdown_table",
    "pareto_front",
    "plot_latency_accuracy",
    "plot_sizes",
    "plot_thread_scaling",
    "slugify",
    "write_report",
]

SCHEMA = "brainedge-bench/1"
REPORT_NAME = "report.md"
# The project's goal for the int8 LiteRT model against the FP32 Keras model, end to end.
TARGET_VARIANT = "tflite-int8"
BASELINE_VARIANT = "keras-fp32"
TARGET_SPEEDUP = 4.0
TARGET_THREADS = (1, 2)
# Above this share of the fastest call, the harness's own cost distorts what it measures.
OVERHEAD_LIMIT_PCT = 2.0
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

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------------
# Loading


class _BadRun(Exception):
    """Why a file is not a usable run, and what to do; becomes a ConfigError or a warning."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


def load_runs(
    inputs: Sequence[Path | str], skipped: list[str] | None = None
) -> list[dict[str, Any]]:
    """Read every run named by ``inputs`` (files, or folders whose ``*.json`` are globbed).

    A file named explicitly must be a valid run: anything else is a ``ConfigError``, because the
    user asked for it and a silently shorter report would mislead. A file found by globbing a
    folder may be anything (configs, other reports), so it is skipped and the reason appended to
    ``skipped`` (and logged), for the report to show. Each run gets ``_source``, the path it was
    read from. The same file or ``run_id`` given twice is merged once.
    """
    if not inputs:
        raise ConfigError(
            "no benchmark inputs given; pass result JSON files written by benchmarks/sweep.py, "
            "or folders that hold them"
        )
    runs: list[dict[str, Any]] = []
    seen_files: set[Path] = set()
    seen_ids: dict[str, Path] = {}
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            candidates = [(p, True) for p in sorted(path.glob("*.json"))]
        elif path.is_file():
            candidates = [(path, False)]
        else:
            raise ConfigError(
                f"{path} is neither a file nor a folder; pass benchmark JSON files written by "
                "benchmarks/sweep.py, or folders that hold them"
            )
        for file, globbed in candidates:
            resolved = file.resolve()
            if resolved in seen_files:
                continue
            seen_files.add(resolved)
            try:
                run = _read_run(file)
            except _BadRun as exc:
                if not globbed:
                    raise ConfigError(f"{file} {exc.reason}; {exc.fix}") from None
                _note_skip(skipped, f"skipped {file}: it {exc.reason}")
                continue
            run_id = str(run.get("run_id") or file.stem)
            if run_id in seen_ids:
                _note_skip(
                    skipped,
                    f"skipped {file}: run_id {run_id!r} was already merged from {seen_ids[run_id]}",
                )
                continue
            seen_ids[run_id] = file
            run["_source"] = str(file)
            runs.append(run)
    if not runs:
        shown = ", ".join(str(p) for p in inputs)
        raise ConfigError(
            f"no {SCHEMA} runs found in {shown} ({len(skipped or [])} file(s) skipped); "
            "run benchmarks/sweep.py on each device first"
        )
    return runs


def _note_skip(skipped: list[str] | None, message: str) -> None:
    log.warning(message)
    if skipped is not None:
        skipped.append(message)


def _read_run(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _BadRun(f"cannot be read ({exc})", "check the path and its permissions") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadRun(
            f"is not valid JSON ({exc.msg} at line {exc.lineno})",
            "it may be half-written: re-run benchmarks/sweep.py on that device",
        ) from None
    if not isinstance(doc, dict) or "schema" not in doc:
        raise _BadRun(
            f'is not a BrainEdge benchmark result (no "schema": "{SCHEMA}")',
            "pass only result files written by benchmarks/sweep.py",
        )
    if doc["schema"] != SCHEMA:
        raise _BadRun(
            f"has schema {doc['schema']!r} but this report reads {SCHEMA!r}",
            "re-run the sweep with this BrainEdge version, or report it with the version that "
            "wrote it",
        )
    problem = _structure_problem(doc)
    if problem:
        raise _BadRun(
            f"does not follow {SCHEMA}: {problem}",
            "re-run benchmarks/sweep.py; result files are not meant to be edited by hand",
        )
    return doc


def _structure_problem(doc: Mapping[str, Any]) -> str | None:
    # Only what the report cannot do without; every other field may be missing or null.
    device = doc.get("device")
    if not isinstance(device, Mapping) or not isinstance(device.get("id"), str):
        return '"device" must be an object with a string "id"'
    results = doc.get("results")
    if not isinstance(results, list):
        return '"results" must be a list'
    for i, row in enumerate(results):
        if not isinstance(row, Mapping):
            return f"results[{i}] is not an object"
    return None


# --------------------------------------------------------------------------------------------
# Pure helpers


def slugify(text: str, max_len: int = 60) -> str:
    """A file-name-safe form of ``text``: lowercase ASCII letters, digits and single hyphens.

    Device ids come from the machines themselves ("Pi 5 / 4c", "gpu-box.local"), and a slash or
    a space in a PNG name would break the file or its Markdown link.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].rstrip("-")
    return slug or "x"


def _unique_slug(text: str, used: set[str]) -> str:
    # Two ids can slugify alike ("x86 2c", "x86-2c"); a hash of the id keeps names stable.
    slug = slugify(text)
    if slug in used:
        slug = f"{slug}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    used.add(slug)
    return slug


def _auto_float(x: float) -> str:
    # Enough digits to compare rows, without a latency of 1234.5678 ms suggesting nanoseconds.
    if abs(x) >= 100:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.4f}"


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    return tables.markdown_table(rows, columns, float_format=_auto_float)


def _num(value: Any) -> float | None:
    """A finite number from the JSON, else None: a null, a string or a NaN is not a measure."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _mb(size_bytes: Any) -> float | None:
    size = _num(size_bytes)
    return None if size is None else size / 1e6


def _ratio(base: float | None, value: float | None) -> str | None:
    if base is None or value is None or base <= 0 or value <= 0:
        return None
    return f"{base / value:.2f}x"


def _threads_text(threads: int | None) -> str:
    if threads is None:
        return "unknown threads"
    return f"{threads} thread" + ("" if threads == 1 else "s")


# --------------------------------------------------------------------------------------------
# One run, flattened


@dataclass
class _Run:
    """A loaded run with the per-row numbers the report needs, extracted once."""

    doc: dict[str, Any]
    label: str
    slug: str
    rows: list[dict[str, Any]]

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["error"] is None]

    def cpu(self) -> list[dict[str, Any]]:
        return [r for r in self.ok if r["device_kind"] != "gpu"]

    def gpu(self) -> list[dict[str, Any]]:
        return [r for r in self.ok if r["device_kind"] == "gpu"]

    def models(self) -> list[str]:
        return sorted({r["model"] for r in self.rows})


def _prepare(docs: Sequence[dict[str, Any]]) -> list[_Run]:
    ids = [str(doc["device"]["id"]) for doc in docs]
    used: set[str] = set()
    runs = []
    for doc, device_id in zip(docs, ids, strict=True):
        # Two runs on one device (a re-run) need distinct sections and file names.
        label = device_id if ids.count(device_id) == 1 else f"{device_id} ({doc.get('run_id')})"
        runs.append(_Run(doc, label, _unique_slug(label, used), _flatten(doc["results"])))
    return runs


def _identity(result: Mapping[str, Any]) -> tuple[str, str]:
    """(model, variant), named even when the sweep could not read them.

    A worker that crashed before describing its artifact, with no manifest to fall back on,
    leaves both null; the row must still be listed as failed, not refuse the whole run.
    """
    model = result.get("model")
    variant = result.get("variant")
    artifact = result.get("artifact")
    if not isinstance(variant, str) or not variant:
        variant = Path(artifact).name if isinstance(artifact, str) and artifact else None
    return (
        model if isinstance(model, str) and model else "(unknown model)",
        variant or "(unknown variant)",
    )


def _artifact_key(result: Mapping[str, Any]) -> tuple[str, str, str]:
    return (*_identity(result), str(result.get("sha256") or result.get("artifact") or ""))


def _flatten(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per result row with batch-1 latencies, largest-batch throughput, sizes in MB.

    Accuracy is measured once per artifact, so rows of the other thread counts carry null:
    they get the artifact's non-null value instead of showing a gap that is not there.
    """
    measured: dict[tuple[str, str, str], dict[str, Any]] = {}
    for result in results:
        found = measured.setdefault(_artifact_key(result), {})
        for field in ("accuracy", "macro_f1", "eval_n"):
            if result.get(field) is not None:
                found.setdefault(field, result[field])
    rows = []
    for result in results:
        quality = measured[_artifact_key(result)]
        batches = [b for b in result.get("batches") or [] if isinstance(b, Mapping)]
        one = next((b for b in batches if b.get("batch_size") == 1), {})
        lat1 = one.get("latency_ms") or {}
        largest = max(batches, key=lambda b: _num(b.get("batch_size")) or 0.0, default={})
        timed = [
            (p50, _int(b.get("batch_size")))
            for b in batches
            if (p50 := _num((b.get("latency_ms") or {}).get("p50"))) is not None
        ]
        e2e = result.get("e2e_latency_ms") or {}
        error = result.get("error")
        model, variant = _identity(result)
        rows.append(
            {
                "model": model,
                "variant": variant,
                "backend": result.get("backend"),
                "precision": result.get("precision"),
                "threads": _int(result.get("threads")),
                "device_kind": "gpu" if result.get("device_kind") == "gpu" else "cpu",
                "provider": result.get("provider"),
                "size_mb": _mb(result.get("size_bytes")),
                "gzip_mb": _mb(result.get("gzip_bytes")),
                "accuracy": _num(quality.get("accuracy")),
                "macro_f1": _num(quality.get("macro_f1")),
                "eval_n": _int(quality.get("eval_n")),
                "p50": _num(lat1.get("p50")),
                "p90": _num(lat1.get("p90")),
                "p99": _num(lat1.get("p99")),
                "e2e_p50": _num(e2e.get("p50")) if isinstance(e2e, Mapping) else None,
                "throughput": _num(largest.get("throughput_per_s")),
                "throughput_batch": _int(largest.get("batch_size")),
                "peak_rss_mb": _num(result.get("peak_rss_mb")),
                "load_ms": _num(result.get("load_ms")),
                "baseline": result.get("baseline") is True,
                "error": None if error is None else (str(error) or "(empty error message)"),
                "fastest": min(timed, key=lambda t: t[0], default=None),
            }
        )
    return rows


def _row_order(row: Mapping[str, Any]) -> tuple[Any, ...]:
    # Baseline first, the others by name, then thread count: the same order on every device.
    threads = row["threads"]
    return (not row["baseline"], row["variant"], threads is None, threads or 0)


def _baselines(rows: Sequence[dict[str, Any]]) -> dict[int | None, dict[str, Any]]:
    """The reference row per thread count among successful rows of one device and model.

    The sweep flags every Keras row as baseline; if several share a thread count, the FP32 one
    is the reference and the others are compared with it like any variant.
    """
    found: dict[int | None, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["variant"] != BASELINE_VARIANT, r["variant"])):
        if row["baseline"]:
            found.setdefault(row["threads"], row)
    return found


def _model_row_order(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (row["model"], *_row_order(row))


# --------------------------------------------------------------------------------------------
# Report


def write_report(inputs: Sequence[Path | str], out_dir: Path,
                 latest_per_device: bool = True) -> Path:
    """Merge the runs in ``inputs`` into ``out_dir/report.md`` (plus PNGs) and return its path.

    With ``latest_per_device``, a device benchmarked several times (``make bench`` again after
    a change) is represented by its newest run only; the older ones are listed as skipped.
    Every file is written under a temporary name and moved into place, so a crash never leaves
    a half-written report or a link to a half-written plot.
    """
    skipped: list[str] = []
    docs = load_runs(inputs, skipped)
    if latest_per_device:
        docs = _latest_per_device(docs, skipped)
    runs = _prepare(docs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    no_plots = _plots_unavailable()

    parts = [
        "# BrainEdge benchmark report",
        f"> **Not a medical device.** {MEDICAL_NOTICE}",
        "## Runs merged",
        _runs_table(runs),
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
        parts.extend(["## Across devices", _cross_device(runs)])
    parts.extend(["## Failed rows", _failed(runs)])

    target = out_dir / REPORT_NAME
    with atomic_path(target) as tmp:
        tmp.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return target


def _latest_per_device(docs: list[dict[str, Any]], skipped: list[str]) -> list[dict[str, Any]]:
    newest: dict[str, dict[str, Any]] = {}
    for doc in docs:
        device = str(doc.get("device", {}).get("id"))
        if device not in newest or str(doc.get("created")) > str(newest[device].get("created")):
            newest[device] = doc
    kept = [doc for doc in docs if newest[str(doc.get("device", {}).get("id"))] is doc]
    skipped.extend(f"older run {doc.get('run_id')} of {doc.get('device', {}).get('id')} "
                   f"({doc.get('created')}): superseded by a newer run of the same device"
                   for doc in docs if all(doc is not k for k in kept))
    return kept


def _plots_unavailable() -> str | None:
    try:
        requires("matplotlib", "train")
    except MissingDependencyError as exc:
        return str(exc)
    return None


def _notes(no_plots: str | None) -> str:
    lines = [
        '- Latencies are in ms. "Model" latency times inference alone, at batch 1; "e2e" '
        "adds decoding and preprocessing one real image file.",
        "- Sizes in MB are 10^6 bytes. Throughput is at the largest batch measured.",
        "- Speed-up is baseline p50 / variant p50, where the baseline is the FP32 Keras row "
        "(`baseline: true`) of the same device, model and thread count: 4.00x means four "
        "times faster.",
        "- Accuracy and macro-F1 are measured once per artifact and shown on each of its rows.",
    ]
    if no_plots:
        lines.append(f"- Plots: not drawn, because {no_plots}.")
    return "Notes:\n\n" + "\n".join(lines)


def _runs_table(runs: Sequence[_Run]) -> str:
    rows = []
    for run in runs:
        device = run.doc["device"]
        gpu = device.get("gpu") if isinstance(device.get("gpu"), Mapping) else {}
        rows.append(
            {
                "device": run.label,
                "cpu": device.get("cpu_model"),
                "cores": f"{device.get('logical_cores', '?')} logical / "
                f"{device.get('physical_cores') or '?'} physical",
                "memory": _num(device.get("memory_gb")),
                "isa": " ".join(str(f) for f in device.get("isa") or []) or None,
                "os": device.get("os"),
                "python": device.get("python"),
                "libraries": _key_libraries(device.get("libraries")),
                "gpu": gpu.get("name") or "none",
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
            ("date", "date (UTC)"),
            ("run", "run id"),
            ("file", "file"),
        ],
    )


def _key_libraries(libraries: Any) -> str | None:
    if not isinstance(libraries, Mapping) or not libraries:
        return None
    by_name = {str(k).lower().replace("_", "-"): v for k, v in libraries.items()}
    keys = [k for k in KEY_LIBRARIES if k in by_name] or sorted(by_name)
    return ", ".join(f"{k} {by_name[k] if by_name[k] is not None else 'absent'}" for k in keys)


def _device_section(run: _Run, out_dir: Path, no_plots: str | None) -> list[str]:
    parts = [f"## Device: {escape(run.label)}"]
    used_model_slugs: set[str] = set()
    for model in run.models():
        parts.extend(
            _model_section(run, model, _unique_slug(model, used_model_slugs), out_dir, no_plots)
        )
    parts.extend([f"### {escape(run.label)}: targets", _targets(run)])
    parts.extend([f"### {escape(run.label)}: harness overhead", _overhead(run)])
    parts.extend([f"### {escape(run.label)}: GPU", *_gpu(run)])
    return parts


def _model_section(
    run: _Run, model: str, model_slug: str, out_dir: Path, no_plots: str | None
) -> list[str]:
    rows = sorted((r for r in run.cpu() if r["model"] == model), key=_row_order)
    parts = [f"### {escape(run.label)} · {escape(model)} (CPU)"]
    if not rows:
        parts.append(f"No successful CPU rows for {model} in this run.")
        return parts
    has_baseline = any(r["baseline"] for r in rows)
    failed_baselines = {
        r["threads"] for r in run.rows if r["model"] == model and r["baseline"] and r["error"]
    }
    baselines = _baselines(rows)
    table = []
    for row in rows:
        if baselines.get(row["threads"]) is row:
            e2e = model_speedup = "1.00x (baseline)"
        elif row["threads"] in baselines:
            base = baselines[row["threads"]]
            e2e = _ratio(base["e2e_p50"], row["e2e_p50"])
            model_speedup = _ratio(base["p50"], row["p50"])
        elif row["threads"] in failed_baselines:
            e2e = model_speedup = "baseline failed"
        elif has_baseline:
            e2e = model_speedup = f"no baseline at {_threads_text(row['threads'])}"
        else:
            e2e = model_speedup = "no baseline"
        throughput = None
        if row["throughput"] is not None:
            throughput = f"{row['throughput']:.1f} (batch {row['throughput_batch']})"
        table.append(
            {
                **row,
                "throughput_cell": throughput,
                "speedup_e2e": e2e,
                "speedup_model": model_speedup,
            }
        )
    parts.append(
        markdown_table(
            table,
            [
                ("variant", "variant"),
                ("backend", "backend"),
                ("threads", "threads"),
                ("size_mb", "size MB", ".2f"),
                ("gzip_mb", "gzip MB", ".2f"),
                ("accuracy", "accuracy", ".4f"),
                ("macro_f1", "macro-F1", ".4f"),
                ("p50", "p50 ms", ".2f"),
                ("p90", "p90 ms", ".2f"),
                ("p99", "p99 ms", ".2f"),
                ("e2e_p50", "e2e p50 ms", ".2f"),
                ("throughput_cell", "img/s"),
                ("peak_rss_mb", "peak RSS MB", ".1f"),
                ("load_ms", "load ms", ".1f"),
                ("speedup_e2e", "e2e speed-up"),
                ("speedup_model", "model speed-up"),
            ],
        )
    )
    if not has_baseline:
        parts.append(
            f"No FP32 Keras baseline row (`baseline: true`) for {model} in this run, so no "
            "speed-up can be given."
        )
    failures = sum(1 for r in run.rows if r["model"] == model and r["error"] is not None)
    if failures:
        parts.append(f"{failures} row(s) of {model} failed; see Failed rows.")
    parts.extend(_model_plots(run, model, model_slug, rows, out_dir, no_plots))
    return parts


def _pareto_points(
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


def _model_plots(
    run: _Run,
    model: str,
    model_slug: str,
    rows: Sequence[Mapping[str, Any]],
    out_dir: Path,
    no_plots: str | None,
) -> list[str]:
    parts = []
    threads, kind, points, left_out = _pareto_points(rows)
    title = f"{run.label} · {model}"
    if points:
        front = pareto_front([(x, y) for _, x, y in points])
        names = ", ".join(points[i][0] for i in front)
        parts.append(
            f"Pareto front (lower {kind}, higher accuracy, {_threads_text(threads)}): {names}."
        )
    if left_out:
        parts.append(
            f"Not on the latency-accuracy plot (no accuracy or latency): {', '.join(left_out)}."
        )
    if no_plots:
        return parts
    stem = f"{run.slug}_{model_slug}"
    links = []
    if points:
        name = f"{stem}_latency-accuracy.png"
        plot_latency_accuracy(
            out_dir / name,
            f"{title}: latency vs accuracy ({_threads_text(threads)})",
            points,
            f"{kind} (ms)",
        )
        links.append(f"![{title}: latency vs accuracy]({name})")
    by_variant = {r["variant"]: r for r in rows}
    bars = [(v, r["size_mb"], r["gzip_mb"]) for v, r in by_variant.items()]
    if any(size is not None for _, size, _ in bars):
        name = f"{stem}_size.png"
        plot_sizes(out_dir / name, f"{title}: artifact size", bars)
        links.append(f"![{title}: size per variant]({name})")
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        if row["threads"] is not None and row["p50"] is not None:
            series.setdefault(row["variant"], []).append((row["threads"], row["p50"]))
    if series:
        name = f"{stem}_threads.png"
        plot_thread_scaling(out_dir / name, f"{title}: model p50 by thread count", series)
        links.append(f"![{title}: latency by thread count]({name})")
    if links:
        parts.append("\n".join(links))
    return parts


def _targets(run: _Run) -> str:
    cpu = run.cpu()
    lines = [
        f"Target: {TARGET_VARIANT} e2e p50 at least {TARGET_SPEEDUP:g}x faster than the FP32 "
        "Keras baseline at the same thread count.\n"
    ]
    for model in run.models():
        rows = [r for r in cpu if r["model"] == model]
        int8 = {r["threads"]: r for r in rows if r["variant"] == TARGET_VARIANT}
        base = _baselines(rows)
        if not int8:
            lines.append(f"- {model}: no successful {TARGET_VARIANT} row; target not checked.")
            continue
        if not base:
            lines.append(f"- {model}: no FP32 Keras baseline row; target not checked.")
            continue
        for threads in TARGET_THREADS:
            lines.append(
                f"- {model}, {_threads_text(threads)}: "
                + _target_verdict(int8.get(threads), base.get(threads), threads)
            )
    return "\n".join(lines)


def _target_verdict(
    int8: Mapping[str, Any] | None, base: Mapping[str, Any] | None, threads: int
) -> str:
    if int8 is None:
        return f"no successful {TARGET_VARIANT} row at {_threads_text(threads)}; not checked."
    if base is None:
        return f"no baseline row at {_threads_text(threads)}; not checked."
    if int8["e2e_p50"] is None or base["e2e_p50"] is None:
        return "e2e latency not recorded; not checked."
    speedup = base["e2e_p50"] / int8["e2e_p50"]
    verdict = "meets" if speedup >= TARGET_SPEEDUP else "misses"
    return (
        f"{int8['e2e_p50']:.2f} ms vs baseline {base['e2e_p50']:.2f} ms = {speedup:.2f}x faster: "
        f"{verdict} the ≥ {TARGET_SPEEDUP:g}x target."
    )


def _overhead(run: _Run) -> str:
    overhead = run.doc.get("harness_overhead_ms")
    p50 = _num(overhead.get("p50")) if isinstance(overhead, Mapping) else None
    if p50 is None:
        return "Harness overhead: not recorded in this run."
    timed = [(r["fastest"], r) for r in run.ok if r["fastest"] is not None]
    if not timed:
        return f"Harness overhead: p50 {p50:.4f} ms; no successful timed row to compare it with."
    (fastest, batch), row = min(timed, key=lambda t: t[0][0])
    if fastest <= 0:
        return f"Harness overhead: p50 {p50:.4f} ms; the fastest p50 is not positive."
    pct = 100.0 * p50 / fastest
    verdict = (
        f"is under the {OVERHEAD_LIMIT_PCT:g}% limit"
        if pct < OVERHEAD_LIMIT_PCT
        else f"exceeds the {OVERHEAD_LIMIT_PCT:g}% limit, so the fastest latencies are inflated "
        "by the harness itself"
    )
    where = f"{row['model']} {row['variant']}, {_threads_text(row['threads'])}, batch {batch}"
    return (
        f"Harness overhead: p50 {p50:.4f} ms = {pct:.2f}% of the fastest p50 in this run "
        f"({fastest:.2f} ms, {where}); it {verdict}."
    )


def _gpu(run: _Run) -> list[str]:
    info = run.doc.get("gpu") if isinstance(run.doc.get("gpu"), Mapping) else {}
    measured = info.get("measured") is True
    rows = sorted(run.gpu(), key=_model_row_order)
    parts = []
    if not measured:
        reason = info.get("reason") or "no reason recorded"
        parts.append(f"GPU: not measured on {escape(run.label)} ({escape(str(reason))}).")
        if rows:
            parts.append("The run nevertheless holds GPU rows; they are shown as recorded.")
    if rows:
        parts.append(
            markdown_table(
                rows,
                [
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
                ],
            )
        )
    elif measured:
        failed = sum(1 for r in run.rows if r["device_kind"] == "gpu" and r["error"])
        parts.append(
            f"GPU: measured on {escape(run.label)}, but no GPU row succeeded"
            + (f" ({failed} failed; see Failed rows)." if failed else " (none recorded).")
        )
    return parts


def _cross_device(runs: Sequence[_Run]) -> str:
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
                row[f"d{i}"] = f"{best['e2e_p50']:.2f} ({_threads_text(best['threads'])})"
            elif rows:
                row[f"d{i}"] = "no e2e"
        table.append(row)
    columns: list[Column] = [("model", "model"), ("variant", "variant")]
    columns += [(f"d{i}", f"{run.label} e2e p50 ms") for i, run in enumerate(runs)]
    return (
        "CPU rows; each cell is the lowest e2e p50 over the thread counts that device ran.\n\n"
        + markdown_table(table, columns)
    )


def _failed(runs: Sequence[_Run]) -> str:
    rows = [
        {"device": run.label, **r}
        for run in runs
        for r in sorted(run.rows, key=_model_row_order)
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
