"""One benchmark job in a process of its own: ``python -m benchmarks.worker`` reads a JSON job on
stdin and prints one JSON result on stdout.

A fresh process per (artifact, threads) is what makes the numbers honest: TensorFlow fixes its
thread pools once per process, runtimes keep caches warm, and peak RSS only ever grows. Errors a
user can act on (a sha256 mismatch, a missing runtime) come back as ``{"error": ...}`` with exit
code 0, so a sweep records them and goes on; anything else is a crash the parent records.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import importlib
import json
import resource
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import emulation
from brainedge.errors import BrainEdgeError, ConfigError
from brainedge.manifest import Manifest, load_manifest

BASELINE_VARIANT = "keras-fp32"

# What each artifact format imports first; timed apart from the load itself, because importing
# TensorFlow alone can take longer than loading and verifying a model.
_LIBRARIES = {
    "keras": ("tensorflow", "tf_keras"),
    "tflite": ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"),
    "onnx": ("onnxruntime",),
}
JOB_DEFAULTS: dict[str, Any] = {
    "backend": None,
    "threads": None,
    "providers": None,
    "pool_size": 1,
    "batch_sizes": [1],
    "warmup": 10,
    "min_runs": 50,
    "min_seconds": 2.0,
    "max_runs": 2000,
    "e2e_images": [],
    "eval_samples": None,
    "eval_batch_size": None,
    # Under emulation: refuse (False), or measure accuracy and size only (True).
    "allow_emulated": False,
    # Evidence of emulation the caller already found (the sweep's device record); the worker
    # also looks for itself, so a job never times an emulator because its caller missed it.
    "emulation": [],
}


def variant_name(manifest: Manifest) -> str:
    """The manifest's ``extra.variant`` (e.g. ``tflite-int8``); ``keras-fp32`` for a run."""
    variant = manifest.extra.get("variant")
    if variant:
        return str(variant)
    if manifest.format == "keras":
        return BASELINE_VARIANT
    return f"{manifest.format}-{manifest.precision}"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024


def _import_runtime_library(artifact: Path) -> tuple[str | None, float | None]:
    """Import the libraries the artifact's format needs; ("a+b", ms), or (None, None) when
    the manifest cannot be read here or nothing imports (``load_classifier`` says why)."""
    folder = artifact if artifact.is_dir() else artifact.parent
    try:
        fmt = load_manifest(folder, verify=False).format
    except BrainEdgeError:
        return None, None
    imported, start = [], time.perf_counter()
    for module in _LIBRARIES.get(fmt, ()):
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        imported.append(module)
        if fmt != "keras":  # tflite: the first interpreter found; keras needs both
            break
    if not imported:
        return None, None
    return "+".join(imported), (time.perf_counter() - start) * 1e3


def _job(raw: Mapping[str, Any]) -> dict[str, Any]:
    if "artifact" not in raw:
        raise ConfigError("the job names no artifact")
    unknown = set(raw) - set(JOB_DEFAULTS) - {"artifact"}
    if unknown:
        raise ConfigError(f"unknown job fields {sorted(unknown)}")
    job = {**JOB_DEFAULTS, **raw}
    if not job["batch_sizes"] or any(int(b) < 1 for b in job["batch_sizes"]):
        raise ConfigError(f"batch_sizes must be positive integers, got {job['batch_sizes']}")
    return job


def run_job(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Load, time and evaluate one artifact as ``raw`` asks (keys: ``JOB_DEFAULTS`` and
    ``artifact``). Raises ``BrainEdgeError``; what was measured before it is lost. Under
    emulation it raises ``EmulatedTimingError``, or with ``allow_emulated`` measures only size
    and accuracy (``"timing": "emulated, not timed"``)."""
    from benchmarks.harness import measure
    from benchmarks.sut import EndToEndSUT, InferenceSUT

    job = _job(raw)
    evidence = list(job["emulation"]) or emulation.emulation_evidence()
    if evidence and not job["allow_emulated"]:
        raise emulation.EmulatedTimingError(
            emulation.refusal(evidence, "time a model", "--allow-emulated"))
    if evidence:
        return _run_untimed(job)
    artifact = Path(job["artifact"])
    threads = job["threads"]
    if threads is not None:
        import cv2

        cv2.setNumThreads(int(threads))  # preprocessing gets the same budget as the model
    timing = {k: job[k] for k in ("warmup", "min_runs", "min_seconds", "max_runs")}
    result: dict[str, Any] = {"artifact": str(artifact), "threads": threads,
                              "pool_size": job["pool_size"]}

    start = time.perf_counter()
    result["import_library"], result["import_ms"] = _import_runtime_library(artifact)
    from runtime import load_classifier

    # A variant that failed its parity gate is still measured: the report shows its figures
    # beside the others (serving it is what the gate refuses).
    classifier = load_classifier(artifact, backend=job["backend"], num_threads=threads,
                                 providers=job["providers"], pool_size=job["pool_size"],
                                 allow_failed_gate=True)
    result["load_ms"] = (time.perf_counter() - start) * 1e3
    result["timing"] = "measured"
    result["peak_rss_load_mb"] = peak_rss_mb()
    result["describe"] = classifier.describe()
    result["variant"] = variant_name(classifier.artifact.manifest)
    providers = getattr(classifier.predictor, "providers", None)
    result["provider"] = providers[0] if providers else "cpu"
    result["size_bytes"] = classifier.artifact.size_bytes
    result["gzip_bytes"] = classifier.artifact.manifest.metrics.get("gzip_bytes")

    e2e = EndToEndSUT(classifier, job["e2e_images"]) if job["e2e_images"] else None
    grays = e2e.grays() if e2e else []
    result["batches"] = []
    for batch_size in job["batch_sizes"]:
        sut = InferenceSUT(classifier, int(batch_size), grays)
        warmup_ms, stats = measure(sut, **timing)
        result["batches"].append({"batch_size": int(batch_size), "warmup_ms": warmup_ms,
                                  "latency_ms": stats.to_dict(),
                                  "throughput_per_s": stats.throughput_per_s(int(batch_size))})
    result["e2e_latency_ms"] = None
    result["e2e_stages_ms"] = None
    result["e2e_images"] = len(job["e2e_images"])
    if e2e is not None:
        result["e2e_warmup_ms"], stats = measure(e2e, **timing)
        result["e2e_latency_ms"] = stats.to_dict()
        # Decode, checks, preprocess, inference: where a request's time goes.
        result["e2e_stages_ms"] = e2e.stage_summary(stats.runs)
    # Before evaluation, whose batches are not part of what is being measured.
    result["peak_rss_mb"] = peak_rss_mb()

    result["eval"] = _evaluate(classifier, job)
    result["error"] = None
    return result


def _evaluate(classifier: Any, job: Mapping[str, Any]) -> dict[str, Any] | None:
    from benchmarks.sut import evaluate

    if not job["eval_samples"]:
        return None
    samples = [(str(path), str(label)) for path, label in job["eval_samples"]]
    eval_batch = job["eval_batch_size"] or max(int(b) for b in job["batch_sizes"])
    return evaluate(classifier, samples, eval_batch)


def _run_untimed(job: Mapping[str, Any]) -> dict[str, Any]:
    """Under emulation: what does not depend on the CPU's speed (size, accuracy, the model's
    description) and nothing that does. Load time and peak RSS are left out too: they would
    be the emulator's, its translated-code cache included."""
    from runtime import load_classifier

    artifact = Path(job["artifact"])
    classifier = load_classifier(artifact, backend=job["backend"], num_threads=job["threads"],
                                 providers=job["providers"], pool_size=job["pool_size"],
                                 allow_failed_gate=True)
    providers = getattr(classifier.predictor, "providers", None)
    return {
        "artifact": str(artifact), "threads": job["threads"], "pool_size": job["pool_size"],
        "timing": emulation.NOT_TIMED, "import_library": None, "import_ms": None,
        "load_ms": None, "peak_rss_load_mb": None, "describe": classifier.describe(),
        "variant": variant_name(classifier.artifact.manifest),
        "provider": providers[0] if providers else "cpu",
        "size_bytes": classifier.artifact.size_bytes,
        "gzip_bytes": classifier.artifact.manifest.metrics.get("gzip_bytes"),
        "batches": [], "e2e_latency_ms": None, "e2e_stages_ms": None,
        "e2e_images": len(job["e2e_images"]),
        "peak_rss_mb": None, "eval": _evaluate(classifier, job), "error": None,
    }


def main() -> int:
    # Runtimes may print to stdout (C++ logs); keep it clean for the one JSON line.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        raw = json.load(sys.stdin)
        if not isinstance(raw, dict):
            raise ConfigError("the job on stdin must be a JSON object")
    except (json.JSONDecodeError, ConfigError) as exc:
        out.write(json.dumps({"error": f"invalid job: {exc}"}) + "\n")
        out.flush()
        return 2
    try:
        result = run_job(raw)
    except BrainEdgeError as exc:
        result = {"artifact": raw.get("artifact"), "error": str(exc),
                  "error_type": type(exc).__name__}
    out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
