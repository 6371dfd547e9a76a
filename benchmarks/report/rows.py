"""One loaded run, flattened into the per-row numbers every table reads, and its baselines."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.report.emulated import hide_timings, run_emulation
from benchmarks.report.formatting import unique_slug

BASELINE_VARIANT = "keras-fp32"
# The parity gate's passing status, as optimize.validate writes it into every manifest.
GATE_PASSED = "passed"
# The stages of an end-to-end request, as runtime.request times them.
STAGES = ("decode", "checks", "preprocess", "inference")


@dataclass
class Run:
    """A loaded run with the per-row numbers the report needs, extracted once. ``emulation``:
    why the run's timings are not the device's (then its rows carry none); empty if timed."""

    doc: dict[str, Any]
    label: str
    slug: str
    rows: list[dict[str, Any]]
    emulation: tuple[str, ...] = ()

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["error"] is None]

    def cpu(self) -> list[dict[str, Any]]:
        return [r for r in self.ok if r["device_kind"] != "gpu"]

    def gpu(self) -> list[dict[str, Any]]:
        return [r for r in self.ok if r["device_kind"] == "gpu"]

    def models(self) -> list[str]:
        return sorted({r["model"] for r in self.rows})


def prepare(docs: Sequence[dict[str, Any]]) -> list[Run]:
    ids = [str(doc["device"]["id"]) for doc in docs]
    used: set[str] = set()
    runs = []
    for doc, device_id in zip(docs, ids, strict=True):
        # Two runs on one device (a re-run) need distinct sections and file names.
        label = device_id if ids.count(device_id) == 1 else f"{device_id} ({doc.get('run_id')})"
        rows = _flatten(doc["results"])
        evidence = run_emulation(doc)
        if evidence:
            hide_timings(rows)
        runs.append(Run(doc, label, unique_slug(label, used), rows, tuple(evidence)))
    return runs


def num(value: Any) -> float | None:
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
    size = num(size_bytes)
    return None if size is None else size / 1e6


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
        largest = max(batches, key=lambda b: num(b.get("batch_size")) or 0.0, default={})
        timed = [
            (p50, _int(b.get("batch_size")))
            for b in batches
            if (p50 := num((b.get("latency_ms") or {}).get("p50"))) is not None
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
                "accuracy": num(quality.get("accuracy")),
                "macro_f1": num(quality.get("macro_f1")),
                "eval_n": _int(quality.get("eval_n")),
                "p50": num(lat1.get("p50")),
                "p90": num(lat1.get("p90")),
                "p99": num(lat1.get("p99")),
                "e2e_p50": num(e2e.get("p50")) if isinstance(e2e, Mapping) else None,
                "stages": _stages(result.get("e2e_stages_ms")),
                "throughput": num(largest.get("throughput_per_s")),
                "throughput_batch": _int(largest.get("batch_size")),
                "peak_rss_mb": num(result.get("peak_rss_mb")),
                "load_ms": num(result.get("load_ms")),
                "baseline": result.get("baseline") is True,
                "gate": _gate(result.get("gate")),
                "error": None if error is None else (str(error) or "(empty error message)"),
                "fastest": min(timed, key=lambda t: t[0], default=None),
            }
        )
    return rows


def _gate(recorded: Any) -> tuple[str, float | None] | None:
    """(status, accuracy points below the parent) of the artifact's parity gate, or None when
    the row records none (a Keras baseline, or a sweep that did not record it)."""
    if not isinstance(recorded, Mapping) or not isinstance(recorded.get("status"), str):
        return None
    return recorded["status"], num(recorded.get("drop_points"))


def gate_failed(row: Mapping[str, Any]) -> bool:
    """Whether the row's artifact is recorded as not passing its parity gate."""
    return row["gate"] is not None and row["gate"][0] != GATE_PASSED


def _stages(recorded: Any) -> dict[str, tuple[float, float]] | None:
    """Stage -> (mean ms, share of the request), or None unless every stage was recorded
    (runs made before stages were timed have none)."""
    if not isinstance(recorded, Mapping):
        return None
    found = {}
    for stage in STAGES:
        entry = recorded.get(stage)
        mean = num(entry.get("mean")) if isinstance(entry, Mapping) else None
        share = num(entry.get("share")) if isinstance(entry, Mapping) else None
        if mean is None or share is None:
            return None
        found[stage] = (mean, share)
    return found


def row_order(row: Mapping[str, Any]) -> tuple[Any, ...]:
    # Baseline first, the others by name, then thread count: the same order on every device.
    threads = row["threads"]
    return (not row["baseline"], row["variant"], threads is None, threads or 0)


def model_row_order(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (row["model"], *row_order(row))


def baselines(rows: Sequence[dict[str, Any]]) -> dict[int | None, dict[str, Any]]:
    """The reference row per thread count among successful rows of one device and model.

    The sweep flags every Keras row as baseline; if several share a thread count, the FP32 one
    is the reference and the others are compared with it like any variant.
    """
    found: dict[int | None, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["variant"] != BASELINE_VARIANT, r["variant"])):
        if row["baseline"]:
            found.setdefault(row["threads"], row)
    return found
