"""The benchmark harness, systems under test, worker, sweep and ``brainedge bench`` commands.

Speed is reported, never asserted: these tests check counts, statistics on known inputs, the
JSON schema and how errors are recorded. The TF-free tests use an ONNX artifact written with
``onnx.helper``; the TF-marked ones build a tiny Keras run (the FP32 baseline) with TFLite and
ONNX variants, as ``brainedge train`` and ``brainedge optimize`` lay them out.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import types
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks import sweep as sweep_module
from benchmarks.device import default_id, device_info, parse_cpuinfo
from benchmarks.harness import LatencyStats, harness_overhead, measure, measure_concurrent
from benchmarks.sut import macro_f1
from benchmarks.sweep import BenchConfig, discover_artifacts, run_sweep, select_samples
from brainedge.errors import ConfigError, RunDirError
from brainedge.manifest import Manifest, hash_files, write_manifest
from cli.bench import bench
from runtime.preprocess import PreprocessSpec

ROOT = Path(__file__).resolve().parents[1]
SIZE, CLASSES = 32, ("glioma", "meningioma", "notumor", "pituitary")
STATS_KEYS = {"runs", "p50", "p90", "p99", "mean", "std", "min", "max"}
ROW_KEYS = {
    "model", "variant", "format", "precision", "backend", "runtime_version", "device_kind",
    "provider", "threads", "artifact", "sha256", "size_bytes", "gzip_bytes", "baseline", "gate",
    "load_ms", "peak_rss_mb", "batches", "e2e_latency_ms", "e2e_stages_ms", "timing",
    "accuracy", "macro_f1",
    "eval_n", "error",
}
TOP_KEYS = {"schema", "run_id", "created", "device", "config", "harness_overhead_ms", "gpu",
            "results"}
QUICK = ["--warmup", "1", "--min-runs", "3", "--min-seconds", "0"]


# --- fixtures ----------------------------------------------------------------------------------


def artifact_manifest(folder: Path, model_file: str, fmt: str, variant: str | None,
                      model: str = "tinynet", gate: tuple[str, float] | None = None) -> None:
    """The manifest ``brainedge optimize`` (variant set) or ``brainedge train`` would write;
    ``gate``: the parity gate's (status, validation drop as a fraction) it records."""
    data = (folder / model_file).read_bytes()
    metrics: dict[str, Any] = {"val_accuracy": 0.5}
    if variant:
        metrics.update(size_bytes=len(data), gzip_bytes=len(gzip.compress(data)))
    if gate:
        metrics.update(status=gate[0], val_drop=gate[1], tolerance=0.01)
    write_manifest(folder, Manifest(
        model=model, format=fmt, precision="float32",
        input_spec={"name": "image", "shape": [None, SIZE, SIZE, 3], "dtype": "float32"},
        class_names=CLASSES,
        preprocessing=PreprocessSpec(image_size=SIZE, scaling="unit").to_dict(),
        files=hash_files(folder, [model_file]), metrics=metrics,
        extra={"variant": variant} if variant else {},
    ))


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Mean-pool -> linear -> softmax, written with onnx.helper: no TensorFlow needed."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    folder = tmp_path_factory.mktemp("bench_onnx") / "onnx-fp32"
    folder.mkdir()
    weights = np.random.default_rng(0).normal(size=(3, len(CLASSES))).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["pooled"], axes=[1, 2], keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(CLASSES)])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")
    artifact_manifest(folder, "model.onnx", "onnx", "onnx-fp32")
    return folder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder (model.keras + manifest, format keras) with optimized/tflite-fp32 and
    optimized/onnx-fp32, converted from the same tiny Keras model."""
    import tf2onnx

    from brainedge.tf_compat import keras, tf

    run_dir = tmp_path_factory.mktemp("bench_runs") / "tinynet"
    run_dir.mkdir()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(len(CLASSES), activation="softmax")(x))
    model.save(run_dir / "model.keras")
    artifact_manifest(run_dir, "model.keras", "keras", None)

    tflite = run_dir / "optimized" / "tflite-fp32"
    tflite.mkdir(parents=True)
    (tflite / "model.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    artifact_manifest(tflite, "model.tflite", "tflite", "tflite-fp32", gate=("passed", 0.0))

    onnx_dir = run_dir / "optimized" / "onnx-fp32"
    onnx_dir.mkdir()
    signature = [tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="image")]
    tf2onnx.convert.from_keras(model, input_signature=signature, opset=17,
                               output_path=str(onnx_dir / "model.onnx"))
    # Failed on purpose: the sweep measures such a variant and says so in its row.
    artifact_manifest(onnx_dir, "model.onnx", "onnx", "onnx-fp32", gate=("failed", 0.02))
    return run_dir


def phantom_images(phantom_data: Path, n: int) -> list[Path]:
    from runtime.imageio import is_image_name

    images = sorted(p for p in (phantom_data / "Testing").rglob("*") if is_image_name(p))
    assert len(images) >= n
    return images[:n]


def run_worker_process(job: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.worker"], input=json.dumps(job),
                          capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    lines = proc.stdout.strip().splitlines()
    return proc.returncode, json.loads(lines[-1]) if lines else {}, proc.stderr


# --- harness -----------------------------------------------------------------------------------


def test_latency_stats_of_1_to_100_ms_have_numpy_linear_percentiles() -> None:
    stats = LatencyStats.from_ms(np.arange(100, 0, -1))  # order must not matter
    assert stats.runs == 100
    assert stats.p50 == pytest.approx(50.5)
    assert stats.p90 == pytest.approx(90.1)
    assert stats.p99 == pytest.approx(99.01)
    assert stats.mean == pytest.approx(50.5)
    assert stats.std == pytest.approx(np.sqrt((100**2 - 1) / 12))
    assert (stats.min, stats.max) == (1.0, 100.0)
    assert stats.throughput_per_s(8) == pytest.approx(8 * 1000 / 50.5)
    assert set(stats.to_dict()) == STATS_KEYS


def test_latency_stats_from_nanoseconds_are_in_milliseconds() -> None:
    stats = LatencyStats.from_ns([2_000_000, 4_000_000])
    assert (stats.min, stats.max, stats.mean) == (2.0, 4.0, 3.0)


def test_latency_stats_refuse_an_empty_sequence() -> None:
    with pytest.raises(ConfigError, match="non-empty"):
        LatencyStats.from_ms([])


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def test_measure_calls_warmup_then_exactly_min_runs_when_min_seconds_is_zero() -> None:
    fn = Counter()
    warmup_ms, stats = measure(fn, warmup=3, min_runs=7, min_seconds=0.0, max_runs=100)
    assert fn.calls == 3 + 7
    assert stats.runs == 7
    assert warmup_ms >= 0


class FakeClock:
    """Time advances only when the measured function runs: ``step_ns`` per call."""

    def __init__(self, step_ns: int) -> None:
        self.now, self.step_ns, self.calls = 0, step_ns, 0

    def clock(self) -> int:
        return self.now

    def fn(self) -> None:
        self.calls += 1
        self.now += self.step_ns


def test_measure_runs_until_min_seconds_have_passed_on_its_clock() -> None:
    fake = FakeClock(step_ns=10_000_000)  # 10 ms per call
    warmup_ms, stats = measure(fake.fn, warmup=2, min_runs=1, min_seconds=0.5, max_runs=1000,
                               clock=fake.clock)
    assert warmup_ms == pytest.approx(20.0)
    assert stats.runs == 50
    assert fake.calls == 52
    assert stats.p50 == stats.p99 == stats.min == stats.max == pytest.approx(10.0)


def test_measure_stops_at_max_runs_even_before_min_seconds() -> None:
    fake = FakeClock(step_ns=1_000_000)
    _, stats = measure(fake.fn, warmup=0, min_runs=5, min_seconds=3600.0, max_runs=25,
                       clock=fake.clock)
    assert stats.runs == 25 and fake.calls == 25


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"warmup": -1}, "warmup"),
        ({"min_runs": 0}, "min_runs"),
        ({"max_runs": 4}, "max_runs"),
        ({"min_seconds": -0.1}, "min_seconds"),
        ({"min_seconds": float("nan")}, "min_seconds"),
    ],
)
def test_measure_refuses_nonsense_counts(kwargs: dict[str, Any], message: str) -> None:
    args = {"warmup": 0, "min_runs": 5, "min_seconds": 0.0, "max_runs": 10, **kwargs}
    fn = Counter()
    with pytest.raises(ConfigError, match=message):
        measure(fn, **args)
    assert fn.calls == 0


def test_harness_overhead_times_a_noop_at_least_min_runs_times() -> None:
    stats = harness_overhead(warmup=10, min_runs=500, min_seconds=0.0, max_runs=500)
    assert stats.runs == 500
    assert 0 <= stats.min <= stats.p50 <= stats.p99 <= stats.max


def test_measure_concurrent_issues_every_request_once_plus_warmup_per_client() -> None:
    lock, seen = threading.Lock(), []

    def fn() -> None:
        with lock:
            seen.append(threading.get_ident())

    result = measure_concurrent(fn, clients=3, requests=10, warmup=2)
    assert len(seen) == 10 + 3 * 2
    assert len(set(seen)) == 3
    assert result.latency.runs == 10 and result.requests == 10
    assert result.wall_s > 0


def test_measure_concurrent_refuses_fewer_requests_than_clients() -> None:
    with pytest.raises(ConfigError, match="requests"):
        measure_concurrent(lambda: None, clients=4, requests=3)


# --- device ------------------------------------------------------------------------------------

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model\t\t: 106
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni amx_tile ht

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
"""
PI5_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm \
lrcpc dcpop asimddp
CPU implementer\t: 0x41

Revision\t: d04170
Serial\t\t: 100000001
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""


def test_parse_cpuinfo_reads_the_x86_model_name_and_keeps_relevant_flags() -> None:
    info = parse_cpuinfo(X86_CPUINFO)
    assert info["cpu_model"] == "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
    assert info["isa"] == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile"]


def test_parse_cpuinfo_reads_an_arm_board_and_its_features() -> None:
    info = parse_cpuinfo(PI5_CPUINFO)
    assert info["cpu_model"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert info["isa"] == ["asimd", "asimddp"]


@pytest.mark.parametrize(
    ("model", "cores", "expected"),
    [
        ("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", 8, "intel-xeon-8c"),
        ("AMD EPYC 7B13 64-Core Processor", 4, "amd-epyc-4c"),
        ("Raspberry Pi 5 Model B Rev 1.0", 4, "raspberry-pi-5-4c"),
    ],
)
def test_default_device_id_is_short_and_hostname_free(model: str, cores: int,
                                                      expected: str) -> None:
    assert default_id(model, cores) == expected


def test_device_info_has_the_documented_fields_without_importing_runtimes() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from benchmarks.device import device_info
        info = device_info()
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("tensorflow", "tf_keras", "ai_edge_litert"))
        print(json.dumps({"info": info, "heavy": heavy}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    info = out["info"]
    assert out["heavy"] == []
    assert {"id", "cpu_model", "logical_cores", "physical_cores", "isa", "memory_gb", "os",
            "python", "libraries", "gpu", "emulated", "emulation"} <= set(info)
    assert info["emulated"] is False and info["emulation"] == []  # a KVM guest is timed
    assert info["id"] and info["id"] == info["id"].lower() and " " not in info["id"]
    assert info["logical_cores"] >= 1 and isinstance(info["isa"], list)
    assert info["libraries"]["numpy"] == metadata.version("numpy")
    assert set(info["libraries"]) >= {"ai-edge-litert", "tflite-runtime", "onnxruntime",
                                      "onnxruntime-gpu", "tensorflow", "tf-keras"}
    assert isinstance(info["gpu"]["available"], bool)
    assert isinstance(info["gpu"]["onnxruntime_providers"], list)


def test_device_label_replaces_the_id_and_must_have_letters_or_digits() -> None:
    assert device_info("Clinic Pi 5!")["id"] == "clinic-pi-5"
    with pytest.raises(ConfigError, match="device label"):
        device_info("!!!")


# --- accuracy ----------------------------------------------------------------------------------


def test_macro_f1_matches_the_hand_computed_value() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    # class 0: P 1, R 2/3 -> 0.8; class 1: P 1/2, R 1/2 -> 0.5; class 2: P 1/2, R 1 -> 2/3
    assert macro_f1(y_true, y_pred, 4) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert macro_f1(y_true, y_true, 4) == 1.0


# --- sweep configuration -----------------------------------------------------------------------


def test_bench_config_defaults_follow_the_design() -> None:
    config = BenchConfig(artifacts=["runs/x"])
    assert config.artifacts == (Path("runs/x"),)
    assert (config.threads, config.batch_sizes) == ((1, 2, 4), (1, 8))
    assert (config.warmup, config.min_runs, config.min_seconds, config.max_runs) == (
        10, 50, 2.0, 2000)
    assert (config.e2e_images, config.eval_limit, config.eval_data) == (30, 200, None)
    assert json.loads(json.dumps(config.to_dict()))["artifacts"] == ["runs/x"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"artifacts": ()}, "no artifacts"),
        ({"threads": (0, 2)}, "threads"),
        ({"threads": ()}, "threads"),
        ({"threads": (2, 2)}, "twice"),
        ({"batch_sizes": (1, -8)}, "batch_sizes"),
        ({"warmup": -1}, "warmup"),
        ({"min_runs": 0}, "min_runs"),
        ({"max_runs": 10}, "max_runs"),
        ({"min_seconds": -1.0}, "min_seconds"),
        ({"min_seconds": float("inf")}, "min_seconds"),
        ({"e2e_images": -1}, "e2e_images"),
        ({"eval_limit": 0}, "eval_limit"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"device_label": "  "}, "device label"),
    ],
)
def test_bench_config_refuses_nonsense(overrides: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"artifacts": ("runs/x",), **overrides}
    with pytest.raises(ConfigError, match=message):
        BenchConfig(**values)


def test_select_samples_is_stratified_deterministic_and_interleaved(phantom_data: Path) -> None:
    samples = select_samples(phantom_data, 8)  # 4 test images per class
    assert samples == select_samples(phantom_data, 8)
    assert len(samples) == 8
    labels = [label for _, label in samples]
    assert sorted(set(labels[:4])) == list(CLASSES)  # any prefix covers every class
    assert all(labels.count(c) == 2 for c in CLASSES)
    for path, label in samples:
        assert Path(path).parent.name == label
    assert len(select_samples(phantom_data, 1000)) == 16


def fake_artifact(folder: Path, fmt: str, variant: str | None) -> None:
    folder.mkdir(parents=True)
    model_file = {"keras": "model.keras", "tflite": "model.tflite", "onnx": "model.onnx"}[fmt]
    (folder / model_file).write_bytes(b"not a model")
    artifact_manifest(folder, model_file, fmt, variant)


def test_discover_artifacts_lists_the_run_then_its_variants_with_manifests(tmp_path) -> None:
    run = tmp_path / "tinynet"
    fake_artifact(run, "keras", None)
    fake_artifact(run / "optimized" / "tflite-int8", "tflite", "tflite-int8")
    fake_artifact(run / "optimized" / "onnx-fp32", "onnx", "onnx-fp32")
    (run / "optimized" / "unfinished").mkdir()
    optimized = run / "optimized"
    assert discover_artifacts([run]) == [run, optimized / "onnx-fp32", optimized / "tflite-int8"]
    assert discover_artifacts([run], ["tflite-int8"]) == [run, optimized / "tflite-int8"]
    with pytest.raises(ConfigError, match="tflite-fp16"):
        discover_artifacts([run], ["tflite-fp16"])
    with pytest.raises(RunDirError, match="manifest"):
        discover_artifacts([optimized / "unfinished"])


# --- worker and sweep (no TensorFlow: the ONNX artifact) ---------------------------------------


def test_worker_subprocess_times_evaluates_and_describes_an_artifact(
    onnx_artifact: Path, phantom_data: Path
) -> None:
    images = phantom_images(phantom_data, 16)
    job = {"artifact": str(onnx_artifact), "threads": 1, "batch_sizes": [1, 3], "warmup": 2,
           "min_runs": 4, "min_seconds": 0.0, "max_runs": 50,
           "e2e_images": [str(p) for p in images[:4]],
           "eval_samples": [[str(p), p.parent.name] for p in images]}
    code, result, stderr = run_worker_process(job)
    assert code == 0, stderr
    assert result["error"] is None, result["error"]
    assert [b["batch_size"] for b in result["batches"]] == [1, 3]
    for b in result["batches"]:
        assert set(b["latency_ms"]) == STATS_KEYS and b["latency_ms"]["runs"] == 4
        assert b["throughput_per_s"] > 0
    assert result["e2e_latency_ms"]["runs"] == 4
    stages = result["e2e_stages_ms"]
    assert list(stages) == ["decode", "checks", "preprocess", "inference"]
    assert all(s["mean"] > 0 and s["p50"] > 0 for s in stages.values())
    assert sum(s["share"] for s in stages.values()) == pytest.approx(1.0)
    # The stages are inside the timed request: together no longer than it.
    assert sum(s["mean"] for s in stages.values()) <= result["e2e_latency_ms"]["mean"] * 1.001
    assert result["eval"]["n"] == 16 and 0 <= result["eval"]["accuracy"] <= 1
    assert 0 <= result["eval"]["macro_f1"] <= 1
    assert result["size_bytes"] == (onnx_artifact / "model.onnx").stat().st_size
    assert result["gzip_bytes"] > 0
    assert result["peak_rss_mb"] > 1 and result["load_ms"] > 0
    assert result["describe"]["backend"] == "onnxruntime"
    assert result["variant"] == "onnx-fp32" and result["provider"] == "CPUExecutionProvider"


def test_end_to_end_sut_runs_the_servers_request_and_times_each_stage(
    onnx_artifact: Path, phantom_data: Path
) -> None:
    from benchmarks.sut import EndToEndSUT
    from runtime import load_classifier

    sut = EndToEndSUT(load_classifier(onnx_artifact), phantom_images(phantom_data, 2))
    _, stats = measure(sut, warmup=3, min_runs=5, min_seconds=0.0, max_runs=5)
    # What the web app answers with: the out-of-distribution report included.
    assert sut().ood.measures["dark_fraction"] is not None
    summary = sut.stage_summary(stats.runs)
    assert list(summary) == ["decode", "checks", "preprocess", "inference"]
    assert all(stage["mean"] > 0 for stage in summary.values())
    assert sum(stage["share"] for stage in summary.values()) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="stage_summary needs 1 to 9 calls"):
        sut.stage_summary(10)


def test_worker_measures_a_variant_that_failed_its_parity_gate(
    onnx_artifact: Path, tmp_path: Path
) -> None:
    from benchmarks.worker import run_job

    failed = tmp_path / "failed"
    shutil.copytree(onnx_artifact, failed)
    manifest = json.loads((failed / "manifest.json").read_text())
    manifest["metrics"].update(status="failed", val_drop=0.014, tolerance=0.01)
    (failed / "manifest.json").write_text(json.dumps(manifest))
    result = run_job({"artifact": str(failed), "min_runs": 2, "min_seconds": 0, "warmup": 1})
    assert result["error"] is None
    assert result["describe"]["gate"] == {"status": "failed", "drop_points": 1.4,
                                          "tolerance_points": 1.0}


def test_worker_reports_an_actionable_error_as_json_with_exit_code_0(tmp_path: Path) -> None:
    code, result, _ = run_worker_process({"artifact": str(tmp_path / "missing")})
    assert code == 0
    assert "no such artifact" in result["error"]


def test_worker_refuses_a_job_that_is_not_json_with_exit_code_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.worker"], input="not json",
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert proc.returncode == 2
    assert "invalid job" in json.loads(proc.stdout)["error"]


def test_edge_path_of_the_benchmarks_never_imports_tensorflow(onnx_artifact: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import cli.bench, benchmarks.device, benchmarks.harness, benchmarks.sut
        import benchmarks.sweep, benchmarks.worker
        result = benchmarks.worker.run_job({{"artifact": {str(onnx_artifact)!r},
                                             "min_runs": 2, "min_seconds": 0, "warmup": 1}})
        assert result["error"] is None, result
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras"))
        assert not heavy, heavy
        print("no tensorflow")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "no tensorflow" in proc.stdout


def quick_config(artifacts: list[Path], out_dir: Path, **overrides: Any) -> BenchConfig:
    values: dict[str, Any] = {"artifacts": tuple(artifacts), "threads": (1,), "batch_sizes": (1,),
                              "warmup": 1, "min_runs": 2, "min_seconds": 0.0, "max_runs": 10,
                              "out_dir": out_dir, "device_label": "test-box", **overrides}
    return BenchConfig(**values)


def test_sweep_records_a_sha256_mismatch_as_an_error_row_and_goes_on(
    onnx_artifact: Path, tmp_path: Path
) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(onnx_artifact, tampered)
    model = tampered / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))

    path = run_sweep(quick_config([tampered, onnx_artifact], tmp_path / "out"),
                     progress=lambda _: None)
    report = json.loads(path.read_text())
    bad, good = report["results"]
    assert "sha256" in bad["error"] and "Refusing" in bad["error"]
    assert bad["batches"] == [] and bad["load_ms"] is None
    assert bad["variant"] == "onnx-fp32" and bad["artifact"] == str(tampered)
    assert good["error"] is None and good["batches"][0]["latency_ms"]["runs"] == 2
    assert good["e2e_latency_ms"] is None and good["accuracy"] is None  # no --eval-data
    assert set(bad) == set(good) == ROW_KEYS
    assert path.parent == tmp_path / "out" and path.name.startswith("test-box-")
    if "CUDAExecutionProvider" not in report["device"]["gpu"]["onnxruntime_providers"]:
        assert report["gpu"]["measured"] is False and report["gpu"]["reason"]
        assert all(r["device_kind"] == "cpu" for r in report["results"])


def test_sweep_reruns_onnx_artifacts_on_a_reported_gpu_provider(
    onnx_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep_module, "_gpu_provider", lambda: ("CUDAExecutionProvider", ""))
    report = json.loads(run_sweep(quick_config([onnx_artifact], tmp_path),
                                  progress=lambda _: None).read_text())
    assert report["gpu"] == {"measured": True, "provider": "CUDAExecutionProvider"}
    cpu, gpu = report["results"]
    assert (cpu["device_kind"], gpu["device_kind"]) == ("cpu", "gpu")
    # Here without CUDA the worker refuses the provider instead of silently using the CPU.
    assert gpu["error"] is None or "CUDAExecutionProvider" in gpu["error"]


def test_worker_crash_and_timeout_are_recorded_with_their_stderr(onnx_artifact: Path) -> None:
    crashed = sweep_module.run_worker({"artifact": str(onnx_artifact), "batch_sizes": ["x"]},
                                      timeout_s=300)
    assert crashed["error"].startswith("worker exited with code 1")
    assert "ValueError" in crashed["error"]
    timed_out = sweep_module.run_worker({"artifact": str(onnx_artifact)}, timeout_s=0.001)
    assert "timed out after 0.001 s" in timed_out["error"]


# --- CLI ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [[], ["latency"], ["run"], ["report"], ["concurrency"]])
def test_every_bench_command_has_help(args: list[str]) -> None:
    result = CliRunner().invoke(bench, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.parametrize("value", ["1,x", "0,2", "2,2", ""])
def test_bench_run_refuses_a_bad_thread_list_as_a_bad_parameter(value: str) -> None:
    result = CliRunner().invoke(bench, ["run", "runs/none", "--threads", value])
    assert result.exit_code == 2
    assert "Invalid value for '--threads'" in result.output


def test_bench_run_turns_a_missing_run_into_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(bench, ["run", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "has no manifest.json" in result.output and "Traceback" not in result.output


def test_bench_report_calls_write_report_with_the_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    fake = types.ModuleType("benchmarks.report")

    def write_report(inputs: list[Path], out_dir: Path, latest_per_device: bool) -> Path:
        calls.append((inputs, out_dir, latest_per_device))
        return out_dir / "report.md"

    fake.write_report = write_report  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "benchmarks.report", fake)
    (tmp_path / "a.json").write_text("{}")
    result = CliRunner().invoke(bench, ["report", str(tmp_path / "a.json"), str(tmp_path),
                                        "--out", str(tmp_path / "md")])
    assert result.exit_code == 0, result.output
    assert calls == [([tmp_path / "a.json", tmp_path], tmp_path / "md", True)]
    assert f"wrote {tmp_path / 'md' / 'report.md'}" in result.output
    every = CliRunner().invoke(bench, ["report", str(tmp_path), "--out", str(tmp_path / "md"),
                                       "--all-runs"])
    assert every.exit_code == 0, every.output
    assert calls[-1][2] is False


def test_bench_latency_prints_percentiles_and_json(onnx_artifact: Path,
                                                   phantom_data: Path) -> None:
    args = ["latency", "--model", str(onnx_artifact), "--threads", "1", "--batch-size", "2",
            "--warmup", "1", "--runs", "3", "--min-seconds", "0",
            "--e2e", str(phantom_data / "Testing" / "glioma")]
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 0, result.output
    for text in ("load", "batch 2", "p50", "p99", "img/s", "end-to-end", "peak RSS"):
        assert text in result.output
    stages = re.search(r"^stages +decode [\d.]+ ms \((\d+)%\), checks [\d.]+ ms \((\d+)%\), "
                       r"preprocess [\d.]+ ms \((\d+)%\), inference [\d.]+ ms \((\d+)%\)",
                       result.output, re.M)
    assert stages, result.output
    assert 97 <= sum(int(share) for share in stages.groups()) <= 103  # rounded to whole %
    data = json.loads(CliRunner().invoke(bench, [*args, "--json"]).output)
    assert data["batches"][0]["latency_ms"]["runs"] == 3
    assert data["e2e_images"] == 4


def test_bench_concurrency_refuses_a_non_litert_artifact(onnx_artifact: Path) -> None:
    result = CliRunner().invoke(bench, ["concurrency", "--model", str(onnx_artifact),
                                        "--clients", "2"])
    assert result.exit_code == 1
    assert "LiteRT" in result.output


# --- with TensorFlow: the Keras baseline -------------------------------------------------------


@pytest.mark.tf
def test_bench_run_on_a_tiny_run_writes_json_in_the_documented_schema(
    tiny_run: Path, phantom_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    result = CliRunner().invoke(bench, [
        "run", str(tiny_run), "--threads", "1,2", "--batch-sizes", "1,2", *QUICK,
        "--eval-data", str(phantom_data), "--eval-limit", "8", "--e2e-images", "4",
        "--out", str(out), "--device-label", "test-box"])
    assert result.exit_code == 0, result.output
    files = list(out.glob("test-box-*.json"))
    assert len(files) == 1 and str(files[0]) in result.output
    report = json.loads(files[0].read_text())
    assert set(report) == TOP_KEYS
    assert report["schema"] == "brainedge-bench/1"
    assert report["run_id"] == files[0].stem and report["device"]["id"] == "test-box"
    assert report["config"]["threads"] == [1, 2] and report["config"]["eval_limit"] == 8
    assert {"p50", "p99"} <= set(report["harness_overhead_ms"])
    rows = [r for r in report["results"] if r["device_kind"] == "cpu"]
    assert [(r["variant"], r["threads"]) for r in rows] == [
        (v, t) for v in ("keras-fp32", "onnx-fp32", "tflite-fp32") for t in (1, 2)]
    for row in report["results"]:
        assert set(row) == ROW_KEYS
        assert row["error"] is None, row["error"]
        assert row["baseline"] is (row["variant"] == "keras-fp32")
        assert [b["batch_size"] for b in row["batches"]] == [1, 2]
        for b in row["batches"]:
            assert set(b) == {"batch_size", "warmup_ms", "latency_ms", "throughput_per_s"}
            assert set(b["latency_ms"]) == STATS_KEYS
        assert set(row["e2e_latency_ms"]) == STATS_KEYS
        assert row["eval_n"] == 8 and 0 <= row["accuracy"] <= 1
        assert len(row["sha256"]) == 64 and row["size_bytes"] > 0 and row["peak_rss_mb"] > 0
    by_variant = {r["variant"]: r for r in rows}
    assert by_variant["keras-fp32"]["backend"] == "keras"
    assert by_variant["tflite-fp32"]["backend"] == "litert"
    assert by_variant["tflite-fp32"]["gzip_bytes"] > 0
    # Each row carries its artifact's parity-gate verdict from the manifest; a run has none.
    assert by_variant["keras-fp32"]["gate"] is None
    assert by_variant["tflite-fp32"]["gate"] == {
        "status": "passed", "drop_points": 0.0, "tolerance_points": 1.0}
    assert by_variant["onnx-fp32"]["gate"] == {
        "status": "failed", "drop_points": 2.0, "tolerance_points": 1.0}
    # Same weights in every format: the float artifacts classify like the baseline.
    assert len({r["accuracy"] for r in rows}) == 1


@pytest.mark.tf
def test_bench_latency_and_concurrency_run_a_litert_artifact(tiny_run: Path) -> None:
    artifact = str(tiny_run / "optimized" / "tflite-fp32")
    latency = CliRunner().invoke(bench, ["latency", "--model", artifact, "--runs", "3",
                                         "--warmup", "1", "--min-seconds", "0", "--json"])
    assert latency.exit_code == 0, latency.output
    data = json.loads(latency.output)
    assert data["describe"]["backend"] == "litert" and data["e2e_latency_ms"] is None
    result = CliRunner().invoke(bench, ["concurrency", "--model", artifact, "--clients", "3",
                                        "--pool-sizes", "1,2", "--requests", "12"])
    assert result.exit_code == 0, result.output
    assert "pool 1 (lock)" in result.output and "pool 2" in result.output
    assert "best: pool" in result.output
