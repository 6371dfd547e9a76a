"""benchmarks.report: merging device runs into one Markdown report, checked against numbers
computed here from the synthetic inputs, never against hard-coded report text alone."""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import (
    SCHEMA,
    load_runs,
    markdown_table,
    pareto_front,
    slugify,
    write_report,
)
from brainedge import MEDICAL_NOTICE
from brainedge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


# --------------------------------------------------------------------------------------------
# Synthetic runs


def stats(p50: float) -> dict[str, float]:
    return {
        "runs": 50,
        "p50": p50,
        "p90": p50 * 1.1,
        "p99": p50 * 1.3,
        "mean": p50 * 1.02,
        "std": p50 * 0.05,
        "min": p50 * 0.9,
        "max": p50 * 1.5,
    }


def result(
    model: str,
    variant: str,
    threads: int,
    *,
    p50: float = 10.0,
    e2e: float | None = 12.0,
    accuracy: float | None = 0.9,
    macro_f1: float | None = 0.88,
    error: str | None = None,
    device_kind: str = "cpu",
    provider: str | None = None,
) -> dict[str, Any]:
    """One result row as benchmarks/sweep.py writes it; batch 8 is the largest batch."""
    baseline = variant == "keras-fp32"
    fmt, backend = {
        "keras-fp32": ("keras", "keras"),
        "onnx-fp32": ("onnx", "onnxruntime"),
    }.get(variant, ("tflite", "litert"))
    return {
        "model": model,
        "variant": variant,
        "format": fmt,
        "precision": "fp32" if "fp32" in variant else "int8",
        "backend": backend,
        "runtime_version": "1.0",
        "device_kind": device_kind,
        "provider": provider,
        "threads": threads,
        "artifact": f"artifacts/{model}/{variant}.bin",
        "sha256": f"{model}-{variant}".ljust(64, "0"),
        "size_bytes": 4_000_000 if "int8" in variant else 16_000_000,
        "gzip_bytes": 3_000_000 if "int8" in variant else 15_000_000,
        "baseline": baseline,
        "load_ms": 120.0,
        "peak_rss_mb": 210.0,
        "batches": []
        if error
        else [
            {
                "batch_size": 1,
                "warmup_ms": 50.0,
                "latency_ms": stats(p50),
                "throughput_per_s": 1000.0 / p50,
            },
            {
                "batch_size": 8,
                "warmup_ms": 80.0,
                "latency_ms": stats(p50 * 6),
                "throughput_per_s": 8000.0 / (p50 * 6),
            },
        ],
        "e2e_latency_ms": None if e2e is None else stats(e2e),
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "eval_n": 200 if accuracy is not None else None,
        "error": error,
    }


def run_doc(
    device_id: str,
    results: list[dict[str, Any]],
    *,
    overhead_p50: float,
    gpu: dict[str, Any],
    cpu: str = "Test CPU",
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "run_id": f"run-{device_id}",
        "created": "2025-05-01T10:00:00Z",
        "device": {
            "id": device_id,
            "cpu_model": cpu,
            "logical_cores": 4,
            "physical_cores": 2,
            "isa": ["avx2", "fma"],
            "memory_gb": 7.6,
            "os": "Linux-6.1",
            "python": "3.11.2",
            "libraries": {"onnxruntime": "1.31.0", "ai-edge-litert": "2.3.0", "tensorflow": None},
            "gpu": {"available": False, "name": None, "onnxruntime_providers": []},
        },
        "config": {"min_runs": 50},
        "harness_overhead_ms": {"p50": overhead_p50, "p99": overhead_p50 * 3},
        "gpu": gpu,
        "results": results,
    }


def x86_doc() -> dict[str, Any]:
    """Has a baseline: densenet121 meets 4x at 1 thread and misses at 2; vgg16 is exactly 4x."""
    d, v = "densenet121", "vgg16"
    return run_doc(
        "x86-2c",
        [
            result(d, "keras-fp32", 1, p50=40.0, e2e=50.0, accuracy=0.95),
            result(d, "keras-fp32", 2, p50=25.0, e2e=27.0, accuracy=0.95),
            result(d, "tflite-int8", 1, p50=8.0, e2e=10.0, accuracy=0.93),
            result(d, "tflite-int8", 2, p50=7.0, e2e=9.0, accuracy=0.93),
            result(d, "pruned-tflite-int8", 1, p50=6.0, e2e=9.5, accuracy=0.91, macro_f1=0.9),
            # accuracy is measured once per artifact: the 2-thread row carries null.
            result(d, "pruned-tflite-int8", 2, p50=5.0, e2e=8.0, accuracy=None, macro_f1=None),
            result(d, "onnx-fp32", 1, error="InvalidGraph: node Conv_3 has no kernel"),
            result(v, "keras-fp32", 1, p50=30.0, e2e=40.0, accuracy=0.94),
            result(v, "tflite-int8", 1, p50=8.0, e2e=10.0, accuracy=0.92),
        ],
        overhead_p50=0.05,
        gpu={"measured": False, "reason": "no CUDA device"},
        cpu="Intel Core i5-8250U",
    )


def pi5_doc() -> dict[str, Any]:
    """No baseline (Keras is not installed on the Pi); the harness overhead is too high."""
    d = "densenet121"
    return run_doc(
        "pi5-4c",
        [
            result(d, "tflite-int8", 1, p50=30.0, e2e=40.0, accuracy=0.93),
            result(d, "tflite-int8", 2, p50=18.0, e2e=25.0, accuracy=None),
            result(d, "tflite-int8", 4, p50=14.0, e2e=20.0, accuracy=None),
            result(d, "pruned-tflite-int8", 1, p50=25.0, e2e=36.0, accuracy=0.91),
        ],
        overhead_p50=0.5,
        gpu={"measured": False, "reason": "no GPU on this board"},
        cpu="Cortex-A76",
    )


def write_json(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The report of both devices, written once: (Markdown text, output folder)."""
    src = tmp_path_factory.mktemp("runs")
    inputs = [write_json(src / "x86.json", x86_doc()), write_json(src / "pi5.json", pi5_doc())]
    out = tmp_path_factory.mktemp("report")
    path = write_report(inputs, out)
    return path.read_text(encoding="utf-8"), out


def table_after(md: str, heading: str) -> list[dict[str, str]]:
    """Rows of the first Markdown table after the line ``heading``, keyed by header."""
    lines = md.splitlines()
    start = lines.index(heading)
    block: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            block.append(line)
        elif block or line.startswith("#"):
            break
    assert len(block) >= 2, f"no table after {heading!r}"

    def cells(line: str) -> list[str]:
        return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]

    header = cells(block[0])
    return [dict(zip(header, cells(line), strict=True)) for line in block[2:]]


def section(md: str, heading: str) -> str:
    """The text from ``heading`` to the next heading of any level."""
    after = md.split(heading + "\n", 1)[1]
    return re.split(r"^#{1,6} ", after, maxsplit=1, flags=re.M)[0]


def find_row(rows: list[dict[str, str]], **match: str) -> dict[str, str]:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


# --------------------------------------------------------------------------------------------
# Report content


def test_report_merges_both_devices_with_header_and_medical_notice(merged):
    md, out = merged

    assert (out / "report.md").is_file()
    assert "## Device: x86-2c" in md
    assert "## Device: pi5-4c" in md
    assert MEDICAL_NOTICE in md
    runs = table_after(md, "## Runs merged")
    assert [r["device"] for r in runs] == ["x86-2c", "pi5-4c"]
    x86 = find_row(runs, device="x86-2c")
    assert x86["CPU"] == "Intel Core i5-8250U"
    assert x86["cores"] == "4 logical / 2 physical"
    assert x86["ISA flags"] == "avx2 fma"
    assert "onnxruntime 1.31.0" in x86["libraries"]
    assert "tensorflow absent" in x86["libraries"]
    assert x86["date (UTC)"] == "2025-05-01T10:00:00Z"
    assert not list(out.glob("*.tmp")), "a temporary file was left behind"


def test_speedup_columns_equal_baseline_over_variant_p50_from_the_inputs(merged):
    md, _ = merged
    table = table_after(md, "### x86-2c · densenet121 (CPU)")
    results = [r for r in x86_doc()["results"] if r["model"] == "densenet121" and not r["error"]]
    base = {r["threads"]: r for r in results if r["baseline"]}
    checked = 0
    for r in results:
        row = find_row(table, variant=r["variant"], threads=str(r["threads"]))
        if r["baseline"]:
            assert row["e2e speed-up"] == "1.00x (baseline)"
            continue
        b = base[r["threads"]]
        e2e = b["e2e_latency_ms"]["p50"] / r["e2e_latency_ms"]["p50"]
        model = b["batches"][0]["latency_ms"]["p50"] / r["batches"][0]["latency_ms"]["p50"]
        assert row["e2e speed-up"] == f"{e2e:.2f}x"
        assert row["model speed-up"] == f"{model:.2f}x"
        checked += 1
    assert checked == 4
    assert find_row(table, variant="tflite-int8", threads="1")["e2e speed-up"] == "5.00x"


def test_main_table_columns_come_from_batch_one_and_the_largest_batch(merged):
    md, _ = merged
    row = find_row(
        table_after(md, "### x86-2c · densenet121 (CPU)"), variant="tflite-int8", threads="2"
    )
    assert (row["p50 ms"], row["p90 ms"], row["p99 ms"]) == ("7.00", "7.70", "9.10")
    assert row["e2e p50 ms"] == "9.00"
    assert row["img/s"] == f"{8000 / 42:.1f} (batch 8)"
    assert (row["size MB"], row["gzip MB"]) == ("4.00", "3.00")
    assert (row["backend"], row["peak RSS MB"], row["load ms"]) == ("litert", "210.0", "120.0")


def test_rows_of_other_thread_counts_take_the_artifacts_non_null_accuracy(merged):
    md, _ = merged
    table = table_after(md, "### x86-2c · densenet121 (CPU)")
    one = find_row(table, variant="pruned-tflite-int8", threads="1")
    two = find_row(table, variant="pruned-tflite-int8", threads="2")
    assert (two["accuracy"], two["macro-F1"]) == ("0.9100", "0.9000")
    assert (one["accuracy"], one["macro-F1"]) == (two["accuracy"], two["macro-F1"])


def test_run_without_baseline_says_so_instead_of_a_ratio(merged):
    md, _ = merged
    table = table_after(md, "### pi5-4c · densenet121 (CPU)")
    assert len(table) == 4
    assert {r["e2e speed-up"] for r in table} == {"no baseline"}
    assert {r["model speed-up"] for r in table} == {"no baseline"}
    assert "No FP32 Keras baseline row" in section(md, "### pi5-4c · densenet121 (CPU)")


@pytest.mark.parametrize(
    ("device", "model", "threads", "verdict"),
    [
        ("x86-2c", "densenet121", 1, "meets"),  # 50 / 10 = 5x
        ("x86-2c", "densenet121", 2, "misses"),  # 27 / 9 = 3x
        ("x86-2c", "vgg16", 1, "meets"),  # 40 / 10 = exactly 4x
    ],
)
def test_target_line_states_whether_the_int8_e2e_speedup_reaches_4x(
    merged, device, model, threads, verdict
):
    md, _ = merged
    doc = x86_doc()
    pick = {
        r["variant"]: r["e2e_latency_ms"]["p50"]
        for r in doc["results"]
        if r["model"] == model and r["threads"] == threads and not r["error"]
    }
    ratio = pick["keras-fp32"] / pick["tflite-int8"]
    label = f"{threads} thread" + ("" if threads == 1 else "s")
    lines = [
        line
        for line in section(md, f"### {device}: targets").splitlines()
        if line.startswith(f"- {model}, {label}:")
    ]
    assert len(lines) == 1
    assert f"= {ratio:.2f}x faster: {verdict} the ≥ 4x target" in lines[0]


def test_target_paragraph_of_device_without_baseline_says_it_cannot_be_checked(merged):
    md, _ = merged
    text = section(md, "### pi5-4c: targets")
    assert "- densenet121: no FP32 Keras baseline row; target not checked." in text
    assert "meets" not in text and "misses" not in text
    vgg = section(md, "### x86-2c: targets")
    assert "- vgg16, 2 threads: no successful tflite-int8 row at 2 threads; not checked." in vgg


def test_harness_overhead_is_compared_with_the_fastest_p50_of_each_run(merged):
    md, _ = merged
    x86 = section(md, "### x86-2c: harness overhead")
    pi5 = section(md, "### pi5-4c: harness overhead")
    # Fastest p50 among all batches and rows: x86 pruned at 2 threads (5 ms), Pi int8 at 4 (14).
    assert f"= {100 * 0.05 / 5.0:.2f}% of the fastest p50" in x86
    assert "is under the 2% limit" in x86
    assert f"= {100 * 0.5 / 14.0:.2f}% of the fastest p50" in pi5
    assert "exceeds the 2% limit" in pi5


def test_gpu_not_measured_sentence_appears_per_device(merged):
    md, _ = merged
    assert "GPU: not measured on x86-2c (no CUDA device)." in md
    assert "GPU: not measured on pi5-4c (no GPU on this board)." in md


def test_failed_row_is_listed_with_its_error_and_left_out_of_the_main_table(merged):
    md, _ = merged
    failed = table_after(md, "## Failed rows")
    row = find_row(failed, device="x86-2c", variant="onnx-fp32")
    assert row["error"] == "InvalidGraph: node Conv_3 has no kernel"
    assert row["threads"] == "1"
    main = table_after(md, "### x86-2c · densenet121 (CPU)")
    assert "onnx-fp32" not in {r["variant"] for r in main}
    assert "1 row(s) of densenet121 failed" in md


def test_cross_device_table_shows_e2e_at_each_devices_best_thread_count(merged):
    md, _ = merged
    table = table_after(md, "## Across devices")
    row = find_row(table, model="densenet121", variant="tflite-int8")
    assert row["x86-2c e2e p50 ms"] == "9.00 (2 threads)"
    assert row["pi5-4c e2e p50 ms"] == "20.00 (4 threads)"
    keras = find_row(table, model="densenet121", variant="keras-fp32")
    assert keras["pi5-4c e2e p50 ms"] == "–"


def test_pareto_front_is_stated_for_the_one_thread_points(merged):
    md, _ = merged
    text = section(md, "### x86-2c · densenet121 (CPU)")
    # 1 thread e2e/accuracy: keras 50/.95, int8 10/.93, pruned 9.5/.91: none dominates another.
    assert "Pareto front (lower e2e p50, higher accuracy, 1 thread): " in text
    names = text.split("1 thread): ", 1)[1].split(".\n", 1)[0]
    assert names == "pruned-tflite-int8, tflite-int8, keras-fp32"


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed (brainedge[train])")
def test_plots_are_valid_pngs_with_safe_names_linked_from_the_markdown(merged):
    md, out = merged
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    pngs = sorted(p.name for p in out.glob("*.png"))
    # Per device and model: latency-accuracy, size and threads (pi5 has one model, x86 two).
    assert len(pngs) == 9
    assert sorted(links) == pngs
    for name in pngs:
        assert re.fullmatch(r"[a-z0-9_-]+\.png", name), name
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert "x86-2c_densenet121_latency-accuracy.png" in pngs
    assert "not drawn" not in md


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed (brainedge[train])")
def test_gpu_rows_get_their_own_table_and_odd_device_ids_safe_file_names(tmp_path):
    d = "densenet121"
    doc = run_doc(
        "GPU box/A100 #1",
        [
            result(d, "keras-fp32", 1, p50=40.0, e2e=50.0),
            result(
                d,
                "onnx-fp32",
                1,
                p50=2.0,
                e2e=6.0,
                device_kind="gpu",
                provider="CUDAExecutionProvider",
            ),
        ],
        overhead_p50=0.01,
        gpu={"measured": True},
    )
    md = write_report([write_json(tmp_path / "gpu.json", doc)], tmp_path / "out").read_text()

    gpu = table_after(md, "### GPU box/A100 #1: GPU")
    assert [(r["variant"], r["provider"], r["p50 ms"]) for r in gpu] == [
        ("onnx-fp32", "CUDAExecutionProvider", "2.00")
    ]
    cpu = table_after(md, "### GPU box/A100 #1 · densenet121 (CPU)")
    assert [r["variant"] for r in cpu] == ["keras-fp32"]
    assert "not measured" not in section(md, "### GPU box/A100 #1: GPU")
    assert "## Across devices" not in md
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert names and all(n.startswith("gpu-box-a100-1_densenet121_") for n in names)


def test_without_matplotlib_the_report_is_written_and_says_plots_were_not_drawn(tmp_path):
    """In a fresh interpreter where matplotlib, TensorFlow and scikit-learn cannot import."""
    src = write_json(tmp_path / "runs" / "x86.json", x86_doc())
    out = tmp_path / "out"
    code = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("matplotlib", "tensorflow", "sklearn"):
                    raise ImportError(name + " is blocked")
                return None

        sys.meta_path.insert(0, Blocker())
        from pathlib import Path
        from benchmarks.report import write_report
        write_report([Path({str(src)!r})], Path({str(out)!r}))
        heavy = [m for m in sys.modules if m.split(".")[0] in ("matplotlib", "tensorflow")]
        assert not heavy, heavy
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "Plots: not drawn, because matplotlib is not installed" in md
    assert "pip install 'brainedge[train]'" in md
    assert "## Device: x86-2c" in md
    assert not list(out.glob("*.png"))


# --------------------------------------------------------------------------------------------
# Inputs


def test_folder_input_skips_stray_and_foreign_json_with_a_warning_line(tmp_path):
    folder = tmp_path / "results"
    write_json(folder / "x86.json", x86_doc())
    write_json(folder / "pi5.json", pi5_doc())
    write_json(folder / "config.json", {"threads": [1, 2, 4]})
    write_json(folder / "future.json", {**x86_doc(), "schema": "brainedge-bench/2"})
    (folder / "broken.json").write_text('{"schema": "brainedge-bench/1", ')
    (folder / "notes.txt").write_text("not globbed")

    md = write_report([folder], tmp_path / "out").read_text()

    assert "## Device: x86-2c" in md and "## Device: pi5-4c" in md
    warnings = [line for line in md.splitlines() if line.startswith("- **Warning:** skipped")]
    assert len(warnings) == 3
    for name in ("config.json", "future.json", "broken.json"):
        assert sum(name in line for line in warnings) == 1, name
    assert "notes.txt" not in md


def test_load_runs_merges_a_file_given_twice_once_and_records_its_source(tmp_path):
    path = write_json(tmp_path / "x86.json", x86_doc())
    skipped: list[str] = []

    runs = load_runs([path, tmp_path, path], skipped)

    assert [r["device"]["id"] for r in runs] == ["x86-2c"]
    assert runs[0]["_source"] == str(path)
    assert skipped == []


def test_two_runs_of_one_device_get_separate_sections_when_all_runs_are_kept(tmp_path):
    first = x86_doc()
    second = copy.deepcopy(first)
    second["run_id"] = "rerun"
    inputs = [write_json(tmp_path / "a.json", first), write_json(tmp_path / "b.json", second)]

    md = write_report(inputs, tmp_path / "out", latest_per_device=False).read_text()

    assert "## Device: x86-2c (run-x86-2c)" in md
    assert "## Device: x86-2c (rerun)" in md


def test_by_default_only_the_newest_run_of_a_device_is_reported(tmp_path):
    old = x86_doc()
    new = copy.deepcopy(old)
    old["created"], new["created"] = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"
    new["run_id"] = "newer"
    inputs = [write_json(tmp_path / "b.json", new), write_json(tmp_path / "a.json", old)]

    md = write_report(inputs, tmp_path / "out").read_text()

    assert "## Device: x86-2c" in md and "## Device: x86-2c (" not in md
    assert "older run run-x86-2c of x86-2c" in md and "superseded" in md


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("notes.json", "this is not JSON", "is not valid JSON"),
        ("summary.txt", "plain text", "is not valid JSON"),
        ("other.json", json.dumps({"schema": "brainedge-bench/2"}), "'brainedge-bench/2'"),
        ("config.json", json.dumps({"threads": [1, 2]}), "is not a BrainEdge benchmark result"),
        ("bad.json", json.dumps({"schema": SCHEMA, "device": {}}), '"device" must be an object'),
    ],
)
def test_bad_explicit_input_raises_config_error_naming_the_file_and_the_fix(
    tmp_path, name, content, says
):
    good = write_json(tmp_path / "good.json", x86_doc())
    bad = tmp_path / name
    bad.write_text(content)

    with pytest.raises(ConfigError) as info:
        write_report([good, bad], tmp_path / "out")

    message = str(info.value)
    assert str(bad) in message
    assert says in message
    assert "sweep" in message or "BrainEdge" in message
    assert not (tmp_path / "out" / "report.md").exists()


def test_missing_path_and_empty_folder_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "nope.json"))):
        load_runs([tmp_path / "nope.json"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no brainedge-bench/1 runs found"):
        load_runs([empty])
    with pytest.raises(ConfigError, match="no benchmark inputs"):
        load_runs([])


# --------------------------------------------------------------------------------------------
# Pure helpers


def test_pareto_front_drops_dominated_points_and_keeps_exact_ties():
    points = [
        (10.0, 0.90),  # 0 front
        (5.0, 0.85),  # 1 front: fastest
        (12.0, 0.80),  # 2 dominated by 0 and 1
        (5.0, 0.80),  # 3 same latency as 1, less accurate: dominated
        (20.0, 0.95),  # 4 front: most accurate
        (20.0, 0.90),  # 5 dominated by 4 and 0
        (15.0, 0.90),  # 6 same accuracy as 0, slower: dominated
        (10.0, 0.90),  # 7 exact duplicate of 0: a tie, kept
    ]
    assert pareto_front(points) == [1, 0, 7, 4]


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([], []),
        ([(3.0, 0.5)], [0]),
        ([(1.0, 0.5), (1.0, 0.5), (1.0, 0.5)], [0, 1, 2]),
        ([(1.0, 0.9), (2.0, 0.8), (3.0, 0.7)], [0]),
        ([(3.0, 0.9), (2.0, 0.8), (1.0, 0.7)], [2, 1, 0]),
        ([(1.0, float("nan")), (2.0, 0.5), (float("inf"), 0.99)], [1]),
    ],
)
def test_pareto_front_edge_cases(points, expected):
    assert pareto_front(points) == expected


def test_pareto_front_agrees_with_the_definition_on_random_points():
    rng = random.Random(7)
    for _ in range(200):
        # Few distinct values, so ties in one or both coordinates are common.
        points = [(rng.choice([1.0, 2.0, 3.0]), rng.choice([0.5, 0.6, 0.7])) for _ in range(6)]

        def dominated(p: tuple[float, float], pts: list[tuple[float, float]] = points) -> bool:
            return any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in pts)

        expected = {i for i, p in enumerate(points) if not dominated(p)}
        front = pareto_front(points)
        assert set(front) == expected, points
        assert [points[i][0] for i in front] == sorted(points[i][0] for i in front)


def test_slugify_makes_deterministic_file_safe_names():
    assert slugify("pi5-4c") == "pi5-4c"
    assert slugify("GPU box/A100 #1") == "gpu-box-a100-1"
    assert slugify("../../etc") == "etc"
    assert slugify("///") == "x"
    assert slugify("a" * 200) == "a" * 60


def test_markdown_table_formats_escapes_and_right_aligns_numbers():
    rows = [{"name": "a|b", "ms": 1.23456, "n": 3, "ok": True}, {"name": "c", "ms": None}]
    text = markdown_table(
        rows, [("name", "name"), ("ms", "p50 ms", ".2f"), ("n", "n"), ("ok", "ok")]
    )
    assert text.splitlines() == [
        "| name | p50 ms | n | ok |",
        "| --- | ---: | ---: | --- |",
        "| a\\|b | 1.23 | 3 | yes |",
        "| c | – | – | – |",
    ]
    with pytest.raises(ValueError):
        markdown_table(rows, [])


def test_every_thread_and_device_combination_appears_exactly_once_in_main_tables(merged):
    md, _ = merged
    for doc in (x86_doc(), pi5_doc()):
        device = doc["device"]["id"]
        for model, rows in itertools.groupby(
            sorted(doc["results"], key=lambda r: r["model"]), key=lambda r: r["model"]
        ):
            ok = [(r["variant"], str(r["threads"])) for r in rows if not r["error"]]
            table = table_after(md, f"### {device} · {model} (CPU)")
            assert sorted((r["variant"], r["threads"]) for r in table) == sorted(ok)


def test_failed_row_without_model_or_variant_is_listed_under_its_artifact_name(tmp_path):
    # A worker that crashed before describing its artifact, with no manifest, leaves both null.
    crashed = {
        **result("densenet121", "onnx-fp32", 1, error="worker exited with code -9"),
        "model": None,
        "variant": None,
        "artifact": "artifacts/densenet121/odd/model.onnx",
    }
    doc = x86_doc()
    doc["results"].append(crashed)

    md = write_report([write_json(tmp_path / "x86.json", doc)], tmp_path / "out").read_text()

    row = find_row(table_after(md, "## Failed rows"), variant="model.onnx")
    assert (row["model"], row["error"]) == ("(unknown model)", "worker exited with code -9")


def test_with_two_keras_rows_flagged_baseline_the_fp32_one_is_the_reference(tmp_path):
    d = "densenet121"
    pruned_keras = {**result(d, "pruned-keras-fp32", 1, p50=35.0, e2e=45.0), "baseline": True}
    doc = run_doc(
        "x86-2c",
        [
            pruned_keras,
            result(d, "keras-fp32", 1, p50=40.0, e2e=50.0),
            result(d, "tflite-int8", 1, p50=8.0, e2e=10.0),
        ],
        overhead_p50=0.05,
        gpu={"measured": False, "reason": "no CUDA device"},
    )

    md = write_report([write_json(tmp_path / "x86.json", doc)], tmp_path / "out").read_text()

    table = table_after(md, "### x86-2c · densenet121 (CPU)")
    assert find_row(table, variant="keras-fp32")["e2e speed-up"] == "1.00x (baseline)"
    assert find_row(table, variant="pruned-keras-fp32")["e2e speed-up"] == f"{50 / 45:.2f}x"
    assert find_row(table, variant="tflite-int8")["e2e speed-up"] == "5.00x"


def with_stages(row: dict[str, Any], means: dict[str, float]) -> dict[str, Any]:
    total = sum(means.values())
    row["e2e_stages_ms"] = {stage: {"p50": mean, "mean": mean, "share": mean / total}
                            for stage, mean in means.items()}
    return row


STAGE_MEANS = {"decode": 0.4, "checks": 0.2, "preprocess": 0.4, "inference": 3.0}


def test_stage_table_gives_each_stages_mean_and_share_of_the_request(tmp_path):
    d = "densenet121"
    doc = run_doc("x86-2c", [with_stages(result(d, "tflite-int8", 1, e2e=4.1), STAGE_MEANS),
                             result(d, "onnx-fp32", 1)],  # a run from before stages: no row
                  overhead_p50=0.05, gpu={"measured": False, "reason": "none"})
    md = write_report([write_json(tmp_path / "run.json", doc)], tmp_path / "out").read_text()
    rows = table_after(md, "Where an e2e request's time goes (densenet121, CPU):")
    assert [r["variant"] for r in rows] == ["tflite-int8"]
    total = sum(STAGE_MEANS.values())
    for stage, mean in STAGE_MEANS.items():
        assert rows[0][f"{stage} ms (share)"] == f"{mean:.3f} ({mean / total:.0%})"
    assert "out-of-distribution checks" in md  # the notes say e2e includes the checks


def test_an_emulated_run_shows_no_stage_timings(tmp_path):
    doc = run_doc("pi5-qemu", [with_stages(result("densenet121", "tflite-int8", 1),
                                           STAGE_MEANS)],
                  overhead_p50=0.05, gpu={"measured": False, "reason": "none"})
    doc["device"].update(emulated=True, emulation=["qemu-aarch64 binfmt handler"])
    md = write_report([write_json(tmp_path / "run.json", doc)], tmp_path / "out").read_text()
    assert "Where an e2e request's time goes" not in md


# --------------------------------------------------------------------------------------------
# Parity gate
# --------------------------------------------------------------------------------------------


def gated_doc() -> dict[str, Any]:
    """Without its gate, the pruned variant would be on the front (fastest, 9.5 ms)."""
    d = "densenet121"
    rows = [
        result(d, "keras-fp32", 1, p50=40.0, e2e=50.0, accuracy=0.95),
        result(d, "tflite-int8", 1, p50=8.0, e2e=10.0, accuracy=0.93),
        result(d, "pruned-tflite-int8", 1, p50=6.0, e2e=9.5, accuracy=0.91),
    ]
    rows[0]["gate"] = None
    rows[1]["gate"] = {"status": "passed", "drop_points": 0.2, "tolerance_points": 1.0}
    rows[2]["gate"] = {"status": "failed", "drop_points": 1.3, "tolerance_points": 1.0}
    return run_doc("x86-2c", rows, overhead_p50=0.05, gpu={"measured": False, "reason": "none"})


def test_a_variant_that_failed_its_gate_is_marked_and_kept_off_the_pareto_front(tmp_path):
    md = write_report([write_json(tmp_path / "run.json", gated_doc())],
                      tmp_path / "out").read_text(encoding="utf-8")
    text = section(md, "### x86-2c · densenet121 (CPU)")
    table = table_after(md, "### x86-2c · densenet121 (CPU)")
    assert find_row(table, variant="pruned-tflite-int8")["parity gate"] == "failed (1.30 pts)"
    assert find_row(table, variant="tflite-int8")["parity gate"] == "passed"
    assert find_row(table, variant="keras-fp32")["parity gate"] == "–"
    names = text.split("1 thread): ", 1)[1].split(".\n", 1)[0]
    assert names == "tflite-int8, keras-fp32"
    assert "failed their parity gate: pruned-tflite-int8." in text
    assert "not recorded by this sweep" not in md  # these rows carry their own verdicts


def test_rows_of_older_sweeps_get_the_gate_of_the_very_file_that_was_timed(
    tmp_path, monkeypatch
):
    from brainedge.manifest import Manifest, hash_files, write_manifest

    folder = tmp_path / "runs" / "densenet121" / "optimized" / "pruned-tflite-int8"
    folder.mkdir(parents=True)
    (folder / "model.tflite").write_bytes(b"timed model bytes")
    write_manifest(folder, Manifest(
        model="densenet121", format="tflite", precision="int8", input_spec={},
        class_names=("a", "b"), preprocessing={}, files=hash_files(folder, ["model.tflite"]),
        metrics={"status": "failed", "val_drop": 0.013, "test_drop": 0.011, "tolerance": 0.01}))
    doc = gated_doc()
    for row in doc["results"]:
        del row["gate"]  # as written before rows carried it
    timed = doc["results"][2]
    timed["artifact"] = "runs/densenet121/optimized/pruned-tflite-int8"
    timed["sha256"] = hash_files(folder, ["model.tflite"])["model.tflite"]
    other = doc["results"][1]  # same folder, but not the file whose verdict it records
    other["artifact"] = timed["artifact"]
    monkeypatch.chdir(tmp_path)  # sweeps record artifact paths relative to where they ran
    md = write_report([write_json(tmp_path / "run.json", doc)],
                      tmp_path / "out").read_text(encoding="utf-8")
    table = table_after(md, "### x86-2c · densenet121 (CPU)")
    assert find_row(table, variant="pruned-tflite-int8")["parity gate"] == "failed (1.30 pts)"
    assert find_row(table, variant="tflite-int8")["parity gate"] == "–"
    # The page says where that verdict came from, since the sweep did not record it.
    assert "Parity-gate verdicts of 1 row(s): not recorded by this sweep" in md
