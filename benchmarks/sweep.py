"""The sweep: every artifact x thread count, each in a fresh worker process, into one JSON file.

The parent never loads a model: it picks the artifacts and the images, starts
``python -m benchmarks.worker`` per job, and records what comes back, errors and crashes
included, so that one broken artifact costs one row, not the sweep. Accuracy does not depend on
the thread count, so each artifact is evaluated once (with its first thread setting).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import emulation
from benchmarks.device import device_info, onnxruntime_providers, slugify
from benchmarks.harness import LatencyStats, harness_overhead, overhead_ratio
from benchmarks.worker import variant_name
from brainedge.errors import BrainEdgeError, ConfigError, RunDirError
from brainedge.manifest import MANIFEST_NAME, Manifest, load_manifest, write_json
from runtime.gate import read_gate

SCHEMA = "brainedge-bench/1"
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
STDERR_LINES = 15


@dataclass(frozen=True)
class BenchConfig:
    """One sweep. Timing follows MLPerf: after ``warmup`` calls, run until both ``min_runs``
    calls and ``min_seconds`` have passed, at most ``max_runs``. ``allow_emulated``: under a
    CPU emulator, measure accuracy and size instead of refusing (rows say "emulated, not
    timed")."""

    artifacts: tuple[Path, ...]
    threads: tuple[int, ...] = (1, 2, 4)
    batch_sizes: tuple[int, ...] = (1, 8)
    warmup: int = 10
    min_runs: int = 50
    min_seconds: float = 2.0
    max_runs: int = 2000
    e2e_images: int = 30
    eval_data: Path | None = None
    eval_limit: int = 200
    timeout_s: float = 1800.0
    out_dir: Path = field(default=Path("reports/bench"))
    device_label: str | None = None
    allow_emulated: bool = False

    def __post_init__(self) -> None:
        # Accept lists and strings from callers; store tuples and Paths (hashable, JSON-able).
        set_ = object.__setattr__
        set_(self, "artifacts", tuple(Path(a) for a in self.artifacts))
        set_(self, "threads", tuple(self.threads))
        set_(self, "batch_sizes", tuple(self.batch_sizes))
        set_(self, "out_dir", Path(self.out_dir))
        if self.eval_data is not None:
            set_(self, "eval_data", Path(self.eval_data))
        if not self.artifacts:
            raise ConfigError("nothing to benchmark: no artifacts; pass run folders (e.g. "
                              "runs/densenet121) or artifact folders")
        for name in ("threads", "batch_sizes"):
            values = getattr(self, name)
            if not values or any(not _is_int(v) or v < 1 for v in values):
                raise ConfigError(f"{name} must be positive integers, got {values!r}")
            if len(set(values)) != len(values):
                raise ConfigError(f"{name} lists a value twice: {values!r}")
        for name, low in (("warmup", 0), ("min_runs", 1), ("e2e_images", 0), ("eval_limit", 1)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if not _is_int(self.max_runs) or self.max_runs < self.min_runs:
            raise ConfigError(f"max_runs ({self.max_runs!r}) must be an integer >= min_runs "
                              f"({self.min_runs})")
        if not (isinstance(self.min_seconds, (int, float)) and 0 <= self.min_seconds < math.inf):
            raise ConfigError(f"min_seconds must be a finite number >= 0, got "
                              f"{self.min_seconds!r}")
        if not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            raise ConfigError(f"timeout_s must be > 0 seconds, got {self.timeout_s!r}")
        if self.device_label is not None and not slugify(self.device_label):
            raise ConfigError(f"device label {self.device_label!r} has no letters or digits; "
                              "use e.g. 'clinic-pi5'")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["artifacts"] = [str(a) for a in self.artifacts]
        data["threads"], data["batch_sizes"] = list(self.threads), list(self.batch_sizes)
        data["eval_data"] = str(self.eval_data) if self.eval_data else None
        data["out_dir"] = str(self.out_dir)
        return data


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def discover_artifacts(run_dirs: Iterable[str | Path],
                       variants: Sequence[str] | None = None) -> list[Path]:
    """Each run folder (the FP32 Keras baseline) followed by its ``optimized/*/`` artifacts
    that have a manifest, keeping only ``variants`` when given. An artifact folder passed
    directly is taken as it is."""
    wanted = set(variants or ())
    found: list[Path] = []
    seen_variants: set[str] = set()
    for run_dir in map(Path, run_dirs):
        if not (run_dir / MANIFEST_NAME).is_file():
            raise RunDirError(f"{run_dir} has no {MANIFEST_NAME}: pass a finished run folder "
                              "(brainedge train) or an artifact folder (brainedge optimize)")
        manifest = load_manifest(run_dir, verify=False)  # the worker verifies the model file
        if manifest.format == "keras" or not wanted or variant_name(manifest) in wanted:
            found.append(run_dir)
        seen_variants.add(variant_name(manifest))
        for folder in sorted((run_dir / "optimized").glob(f"*/{MANIFEST_NAME}")):
            try:
                name = variant_name(load_manifest(folder.parent, verify=False))
            except BrainEdgeError:
                name = folder.parent.name  # unreadable: the worker will say why
            seen_variants.add(name)
            if not wanted or name in wanted:
                found.append(folder.parent)
    missing = sorted(wanted - seen_variants)
    if missing:
        raise ConfigError(f"no artifact of variant(s) {missing} in {', '.join(map(str, run_dirs))}"
                          f"; found: {', '.join(sorted(seen_variants)) or 'none'}")
    return list(dict.fromkeys(found))


def select_samples(eval_data: Path, limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` test images as (path, class name): each class in proportion to its
    share of the test split (largest remainders), the same ones every time, interleaved by
    class so that any prefix (the end-to-end images) covers every class."""
    from training.data import scan_dataset

    index = scan_dataset(eval_data)
    per_class: dict[int, list[str]] = {}
    for sample in sorted(index.test, key=lambda s: str(s.path)):
        per_class.setdefault(sample.label, []).append(str(sample.path))
    total = sum(len(v) for v in per_class.values())
    limit = min(limit, total)
    quotas = {c: limit * len(v) / total for c, v in per_class.items()}
    take = {c: int(q) for c, q in quotas.items()}
    by_remainder = sorted(quotas, key=lambda c: (-(quotas[c] - take[c]), c))
    for c in by_remainder[: limit - sum(take.values())]:
        take[c] += 1
    rng = np.random.default_rng(0)
    chosen = {c: [paths[i] for i in sorted(rng.permutation(len(paths))[: take[c]])]
              for c, paths in sorted(per_class.items())}
    out: list[tuple[str, str]] = []
    for rank in range(max(take.values(), default=0)):
        for c, paths in chosen.items():
            if rank < len(paths):
                out.append((paths[rank], index.class_names[c]))
    return out


def _worker_env(gpu: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH"))
                                        if p)
    if not gpu:
        # A CPU row must not run on a GPU that TensorFlow would pick up by itself.
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    return env


def run_worker(job: dict[str, Any], timeout_s: float, gpu: bool = False) -> dict[str, Any]:
    """Run one job in ``python -m benchmarks.worker``; crashes and timeouts become errors."""
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.worker"],
                              input=json.dumps(job), capture_output=True, text=True,
                              timeout=timeout_s, env=_worker_env(gpu), check=False)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr or ""
        if isinstance(stderr, bytes):  # bytes whatever text= says (subprocess docs)
            stderr = stderr.decode(errors="replace")
        return {"error": f"worker timed out after {timeout_s:g} s" + _tail(stderr)}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0:
        return {"error": f"worker exited with code {proc.returncode}" + _tail(proc.stderr)}
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": "worker printed no JSON result" + _tail(proc.stderr)}
    if not isinstance(result, dict):
        return {"error": "worker printed something other than a JSON object"}
    return result


def _tail(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return (":\n" + "\n".join(lines[-STDERR_LINES:])) if lines else ""


def _row(artifact: Path, threads: int, device_kind: str, result: dict[str, Any],
         manifest: Manifest | None) -> dict[str, Any]:
    describe = result.get("describe") or {}
    metrics = manifest.metrics if manifest else {}
    evaluation = result.get("eval") or {}
    fmt = describe.get("format") or (manifest.format if manifest else None)
    gate = read_gate(manifest) if manifest else None
    return {
        "model": describe.get("model") or (manifest.model if manifest else None),
        "variant": variant_name(manifest) if manifest else None,
        "format": fmt,
        "precision": describe.get("precision") or (manifest.precision if manifest else None),
        "backend": describe.get("backend"),
        "runtime_version": describe.get("runtime_version"),
        "device_kind": device_kind,
        "provider": result.get("provider"),
        "threads": threads,
        "artifact": str(artifact),
        "sha256": describe.get("sha256"),
        "size_bytes": result.get("size_bytes"),
        "gzip_bytes": result.get("gzip_bytes", metrics.get("gzip_bytes")),
        "baseline": fmt == "keras",
        # The parity gate's verdict travels with the row: a fast variant that failed it is
        # not one to deploy, and the report must be able to say so on any machine.
        "gate": gate.to_dict() if gate else None,
        "load_ms": result.get("load_ms"),
        "peak_rss_mb": result.get("peak_rss_mb"),
        "batches": result.get("batches") or [],
        "e2e_latency_ms": result.get("e2e_latency_ms"),
        "e2e_stages_ms": result.get("e2e_stages_ms"),
        "timing": result.get("timing"),
        "accuracy": evaluation.get("accuracy"),
        "macro_f1": evaluation.get("macro_f1"),
        "eval_n": evaluation.get("n"),
        "error": result.get("error"),
    }


def _summary(row: dict[str, Any]) -> str:
    head = f"{row['model']} {row['variant']} [{row['device_kind']}, threads={row['threads']}]"
    if row["error"]:
        return f"{head}: ERROR {row['error'].splitlines()[0]}"
    parts = [f"b{b['batch_size']} p50 {b['latency_ms']['p50']:.2f} ms" for b in row["batches"]]
    if row["timing"] == emulation.NOT_TIMED:
        parts.append(emulation.NOT_TIMED)
    if row["e2e_latency_ms"]:
        parts.append(f"e2e p50 {row['e2e_latency_ms']['p50']:.2f} ms")
    if row["accuracy"] is not None:
        parts.append(f"acc {row['accuracy']:.3f}")
    return f"{head}: " + ", ".join(parts)


def _gpu_provider() -> tuple[str | None, str]:
    providers = onnxruntime_providers()
    if not providers:
        return None, "onnxruntime is not installed here"
    for name in GPU_PROVIDERS:
        if name in providers:
            return name, ""
    return None, "no CUDA/TensorRT execution provider in onnxruntime here"


def _out_path(out_dir: Path, device_id: str, stamp: str) -> Path:
    path = out_dir / f"{device_id}-{stamp}.json"
    n = 2
    while path.exists():  # two sweeps within one second
        path = out_dir / f"{device_id}-{stamp}-{n}.json"
        n += 1
    return path


def _overhead_record(overhead: LatencyStats | None, fastest_p50: float | None) -> dict[str, Any]:
    """The harness's own cost (a no-op query through the same loop); None: not timed."""
    if overhead is None:
        return {"p50": None, "p99": None, "runs": 0, "ratio_to_fastest_p50": None,
                "not_measured": emulation.NOT_TIMED}
    return {"p50": overhead.p50, "p99": overhead.p99, "runs": overhead.runs,
            "ratio_to_fastest_p50": overhead_ratio(overhead, fastest_p50) if fastest_p50
            else None}


def run_sweep(config: BenchConfig, progress: Callable[[str], None] = print) -> Path:
    """Benchmark every artifact x thread count (and ONNX artifacts on a GPU provider, when
    onnxruntime has one); write ``<out_dir>/<device-id>-<UTC time>.json`` and return its path."""
    created = datetime.now(timezone.utc)
    device = device_info(config.device_label)
    evidence = device["emulation"]
    if evidence and not config.allow_emulated:
        raise emulation.EmulatedTimingError(
            emulation.refusal(evidence, "run the benchmark sweep", "--allow-emulated"))
    progress(f"device {device['id']}: {device['cpu_model']}, {device['logical_cores']} cores")
    if evidence:
        progress(f"emulated ({evidence[0]}): measuring accuracy and size only, at "
                 f"{config.threads[0]} thread(s); every row says '{emulation.NOT_TIMED}'")
    overhead = None if evidence else harness_overhead()
    # Untimed, the other thread counts would only repeat the first one's row, at emulated speed.
    thread_counts = config.threads[:1] if evidence else config.threads
    samples = select_samples(config.eval_data, config.eval_limit) if config.eval_data else []
    e2e_files = [path for path, _ in samples[: config.e2e_images]]
    if config.eval_data:
        progress(f"evaluating on {len(samples)} test images of {config.eval_data}; "
                 f"end-to-end latency over {len(e2e_files)}")

    manifests: dict[Path, Manifest | None] = {}
    for artifact in config.artifacts:
        folder = artifact if artifact.is_dir() else artifact.parent
        try:
            manifests[artifact] = load_manifest(folder, verify=False)
        except BrainEdgeError:
            manifests[artifact] = None

    gpu_provider, gpu_reason = _gpu_provider()
    onnx_artifacts = [a for a, m in manifests.items() if m is not None and m.format == "onnx"]
    if gpu_provider and not onnx_artifacts:
        gpu_provider, gpu_reason = None, "no ONNX artifact among those benchmarked"
    plan: list[tuple[Path, int, str, list[str] | None]] = [
        (a, t, "cpu", None) for a in config.artifacts for t in thread_counts
    ]
    if gpu_provider:  # CPU threads matter little on a GPU: one row, with the most of them
        plan += [(a, max(config.threads), "gpu", [gpu_provider, "CPUExecutionProvider"])
                 for a in onnx_artifacts]

    results: list[dict[str, Any]] = []
    evaluated: dict[tuple[Path, str], dict[str, Any]] = {}
    for i, (artifact, threads, kind, providers) in enumerate(plan, 1):
        first = (artifact, kind) not in evaluated
        job = {"artifact": str(artifact), "threads": threads, "providers": providers,
               "batch_sizes": list(config.batch_sizes), "warmup": config.warmup,
               "min_runs": config.min_runs, "min_seconds": config.min_seconds,
               "max_runs": config.max_runs, "e2e_images": e2e_files,
               "eval_samples": [list(s) for s in samples] if first and samples else None,
               "allow_emulated": config.allow_emulated, "emulation": evidence}
        row = _row(artifact, threads, kind, run_worker(job, config.timeout_s, kind == "gpu"),
                   manifests[artifact])
        if first:
            evaluated[(artifact, kind)] = row
        else:  # accuracy does not depend on the thread count: the first setting's holds
            for key in ("accuracy", "macro_f1", "eval_n"):
                row[key] = evaluated[(artifact, kind)][key]
        results.append(row)
        progress(f"[{i}/{len(plan)}] {_summary(row)}")

    fastest = min((b["latency_ms"]["p50"] for r in results for b in r["batches"]),
                  default=None)
    stamp = created.strftime("%Y%m%dT%H%M%SZ")
    report = {
        "schema": SCHEMA,
        "run_id": f"{device['id']}-{stamp}",
        "created": created.isoformat(timespec="seconds"),
        "device": device,
        "config": config.to_dict(),
        "harness_overhead_ms": _overhead_record(overhead, fastest),
        "gpu": ({"measured": True, "provider": gpu_provider} if gpu_provider
                else {"measured": False, "reason": gpu_reason}),
        "results": results,
    }
    path = _out_path(config.out_dir, device["id"], stamp)
    write_json(path, report)
    return path
