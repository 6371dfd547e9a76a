"""No emulated latency (issue 10): detecting QEMU user-mode from inside Python, and what
``brainedge bench`` does about it.

Detection runs on fake /proc trees laid out as QEMU 7.2 and 10.0 show them (seen with
bookworm's and bookworm-backports' qemu-user, aarch64 and x86_64 guests), and, where a
``qemu-x86_64`` is on PATH, under the real thing. The commands are tested with the evidence
faked: a refusal, and with ``--allow-emulated`` accuracy and size but no timing anywhere.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from benchmarks import emulation
from benchmarks.emulation import (
    NOT_TIMED,
    EmulatedTimingError,
    cpuinfo_family,
    elf_family,
    emulation_evidence,
)
from benchmarks.report import write_report
from benchmarks.sweep import BenchConfig, run_sweep
from cli.bench import bench
from tests.test_bench_report import result, run_doc, table_after
from tests.test_webapp_support import encode, make_artifact, need_onnxruntime, phantom

ROOT = Path(__file__).resolve().parents[1]
EM_X86_64, EM_ARM, EM_AARCH64 = 62, 40, 183
X86_CPUINFO = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
               "flags\t\t: fpu sse4_2 avx2\n")
# What QEMU 10.0 -cpu cortex-a72 writes for an aarch64 guest, instead of the host's.
QEMU10_CPUINFO = ("processor\t: 0\nmodel name\t: ARMv8 Processor rev 3 (v8l)\nBogoMIPS\t: 100.00\n"
                  "Features\t: fp asimd aes pmull sha1 sha2 crc32 cpuid\nCPU implementer\t: 0x41\n"
                  "CPU architecture: 8\nCPU part\t: 0xd08\n")
PI5_CPUINFO = ("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd asimddp\n"
               "CPU implementer\t: 0x41\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n")
FAKE_EVIDENCE = ["/proc/self/exe names python3.11 but /proc/thread-self/exe names qemu-aarch64"]


def elf(machine: int) -> bytes:
    """The first bytes of a 64-bit little-endian ELF executable for ``machine``."""
    return b"\x7fELF\x02\x01\x01" + bytes(9) + (2).to_bytes(2, "little") \
        + machine.to_bytes(2, "little") + bytes(44)


def fake_proc(tmp_path: Path, *, seen: int, real: int | None, cpuinfo: str,
              thread_self: bool = True) -> Path:
    """A /proc where ``self/exe`` names a program of machine ``seen`` and the kernel's own
    names (``thread-self/exe``, ``self/task/TID/exe``) one of machine ``real``, or the same
    program when ``real`` is None (natively they always agree)."""
    programs = tmp_path / "bin"
    programs.mkdir(parents=True)
    python = programs / "python3.11"
    python.write_bytes(elf(seen))
    image = python
    if real is not None:
        image = programs / "qemu-aarch64"
        image.write_bytes(elf(real))
    proc = tmp_path / "proc"
    task = proc / "self" / "task" / str(threading.get_native_id())
    task.mkdir(parents=True)
    (proc / "self" / "exe").symlink_to(python)
    (task / "exe").symlink_to(image)
    if thread_self:
        (proc / "thread-self").mkdir()
        (proc / "thread-self" / "exe").symlink_to(image)
    (proc / "cpuinfo").write_text(cpuinfo)
    return proc


# --- detection ---------------------------------------------------------------------------------


def test_a_native_x86_process_has_no_evidence(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, seen=EM_X86_64, real=None, cpuinfo=X86_CPUINFO)
    assert emulation_evidence(proc, "x86_64") == []


def test_a_native_pi_and_a_32_bit_userland_on_its_64_bit_kernel_are_not_emulated(
    tmp_path: Path,
) -> None:
    pi = fake_proc(tmp_path / "pi", seen=EM_AARCH64, real=None, cpuinfo=PI5_CPUINFO)
    assert emulation_evidence(pi, "aarch64") == []
    # armhf Python (EM_ARM) on an aarch64 kernel: uname says aarch64, the family is the same.
    armhf = fake_proc(tmp_path / "armhf", seen=EM_ARM, real=None, cpuinfo=PI5_CPUINFO)
    assert emulation_evidence(armhf, "aarch64") == []


def test_qemu_10_aarch64_guest_is_found_by_its_process_image(tmp_path: Path) -> None:
    """QEMU 10 emulates an ARM /proc/cpuinfo, but not the kernel's names of the image."""
    proc = fake_proc(tmp_path, seen=EM_AARCH64, real=EM_X86_64, cpuinfo=QEMU10_CPUINFO)
    evidence = emulation_evidence(proc, "aarch64")
    assert len(evidence) == 2, evidence
    assert "names" in evidence[0] and "qemu-aarch64" in evidence[0]
    assert "rewrites /proc, as QEMU user-mode does" in evidence[0]
    assert evidence[1] == "the process image is an x86 program but Python reports aarch64"


def test_the_task_path_alone_is_enough_where_there_is_no_thread_self(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, seen=EM_X86_64, real=EM_X86_64, cpuinfo=X86_CPUINFO,
                     thread_self=False)
    evidence = emulation_evidence(proc, "x86_64")
    assert len(evidence) == 1 and "/task/" in evidence[0], evidence


def test_qemu_7_2_passes_the_hosts_cpuinfo_through(tmp_path: Path) -> None:
    # Even if a QEMU rewrote every name of the image, x86 flags under an aarch64 uname remain.
    proc = fake_proc(tmp_path, seen=EM_AARCH64, real=None, cpuinfo=X86_CPUINFO)
    assert emulation_evidence(proc, "aarch64") == [
        f"{proc / 'cpuinfo'} describes an x86 CPU but Python reports aarch64"]


def test_qemu_variables_in_the_environment_are_not_evidence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QEMU_LD_PREFIX", "/srv/arm64")
    monkeypatch.setenv("QEMU_CPU", "cortex-a72")
    proc = fake_proc(tmp_path, seen=EM_X86_64, real=None, cpuinfo=X86_CPUINFO)
    assert emulation_evidence(proc, "x86_64") == []


def test_no_proc_at_all_is_no_evidence(tmp_path: Path) -> None:
    assert emulation_evidence(tmp_path / "nothing", "aarch64") == []


@pytest.mark.parametrize(
    ("header", "family"),
    [(elf(EM_X86_64), "x86"), (elf(EM_AARCH64), "arm"), (elf(EM_ARM), "arm"),
     (elf(243), None), (b"#!/bin/sh\n" + bytes(20), None), (elf(EM_X86_64)[:10], None)],
)
def test_elf_family(header: bytes, family: str | None) -> None:
    assert elf_family(header) == family


@pytest.mark.parametrize(
    ("text", "family"),
    [(X86_CPUINFO, "x86"), (QEMU10_CPUINFO, "arm"), (PI5_CPUINFO, "arm"),
     ("processor\t: 0\nisa\t\t: rv64imafdc\n", None), ("", None)],
)
def test_cpuinfo_family(text: str, family: str | None) -> None:
    assert cpuinfo_family(text) == family


def test_this_test_machine_runs_natively() -> None:
    """CI and the developers' machines are KVM guests: virtualized, not emulated, timed."""
    assert emulation_evidence() == []


def test_real_qemu_user_mode_is_detected() -> None:
    qemu = shutil.which("qemu-x86_64") or shutil.which("qemu-x86_64-static")
    if qemu is None:
        pytest.skip("no qemu-x86_64 on PATH (Debian qemu-user) to run this Python under")
    if emulation_evidence():
        pytest.skip("already emulated")
    code = "import json; from benchmarks.emulation import emulation_evidence as e; " \
           "print(json.dumps(e()))"
    proc = subprocess.run(["nice", "-n", "19", qemu, sys.executable, "-c", code], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    evidence = json.loads(proc.stdout.strip().splitlines()[-1])
    assert evidence and "rewrites /proc" in evidence[0], evidence


# --- the commands ------------------------------------------------------------------------------


@pytest.fixture
def emulated(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every in-process check now finds emulation; subprocesses learn it from their job."""
    monkeypatch.setattr(emulation, "emulation_evidence", lambda *a, **k: list(FAKE_EVIDENCE))
    return FAKE_EVIDENCE


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_onnxruntime()
    return make_artifact(tmp_path_factory.mktemp("emulated") / "onnx-fp32")


def test_bench_latency_refuses_to_time_under_emulation(emulated: list[str],
                                                       artifact: Path) -> None:
    out = CliRunner().invoke(bench, ["latency", "--model", str(artifact), "--runs", "3"])
    assert out.exit_code == 1
    assert "refusing to time a model under emulation" in out.output
    assert "qemu-aarch64" in out.output  # the evidence, so the user can check it
    assert "--allow-emulated" in out.output and "real device" in out.output
    assert "p50" not in out.output and "Traceback" not in out.output


def test_bench_latency_with_allow_emulated_loads_the_model_but_times_nothing(
    emulated: list[str], artifact: Path
) -> None:
    args = ["latency", "--model", str(artifact), "--runs", "3", "--allow-emulated"]
    out = CliRunner().invoke(bench, args)
    assert out.exit_code == 0, out.output
    assert NOT_TIMED in out.output and "tinynet onnx-fp32" in out.output
    assert "p50" not in out.output and "peak RSS" not in out.output
    data = json.loads(CliRunner().invoke(bench, [*args, "--json"]).output)
    assert data["timing"] == NOT_TIMED and data["error"] is None
    assert data["batches"] == [] and data["e2e_latency_ms"] is None
    assert data["load_ms"] is None and data["import_ms"] is None and data["peak_rss_mb"] is None
    assert data["size_bytes"] == (artifact / "model.onnx").stat().st_size


def test_bench_run_refuses_before_it_starts_anything(emulated: list[str], artifact: Path,
                                                     tmp_path: Path) -> None:
    out = CliRunner().invoke(bench, ["run", str(artifact), "--out", str(tmp_path / "out")])
    assert out.exit_code == 1
    assert "refusing to run the benchmark sweep under emulation" in out.output
    assert "--allow-emulated" in out.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [
    ["concurrency", "--clients", "2"],
    ["http", "--url", "http://127.0.0.1:9"],
    ["footprint"],
])
def test_commands_that_only_time_refuse_under_emulation(
    emulated: list[str], artifact: Path, tmp_path: Path, command: list[str]
) -> None:
    image = tmp_path / "slice.png"
    image.write_bytes(encode(phantom("glioma", seed=1, size=64)))
    extra = {"concurrency": ["--model", str(artifact)], "http": ["--image", str(image)],
             "footprint": ["--artifact", str(artifact)]}[command[0]]
    out = CliRunner().invoke(bench, [*command, *extra])
    assert out.exit_code == 1, out.output
    assert "under emulation" in out.output and "real device" in out.output


def test_the_worker_itself_refuses_a_job_under_emulation(emulated: list[str],
                                                         artifact: Path) -> None:
    from benchmarks.worker import run_job

    with pytest.raises(EmulatedTimingError, match="under emulation"):
        run_job({"artifact": str(artifact)})


def test_an_emulated_sweep_with_allow_emulated_has_accuracy_and_size_but_no_timing(
    emulated: list[str], artifact: Path, phantom_data: Path, tmp_path: Path
) -> None:
    config = BenchConfig(artifacts=(artifact,), threads=(1, 2), batch_sizes=(1,), warmup=1,
                         min_runs=2, min_seconds=0.0, max_runs=10, eval_data=phantom_data,
                         eval_limit=8, e2e_images=2, out_dir=tmp_path, device_label="qemu-a72",
                         allow_emulated=True)
    messages: list[str] = []
    report = json.loads(run_sweep(config, progress=messages.append).read_text())
    assert report["device"]["emulated"] is True
    assert report["device"]["emulation"] == FAKE_EVIDENCE
    assert report["harness_overhead_ms"]["p50"] is None
    assert report["harness_overhead_ms"]["not_measured"] == NOT_TIMED
    # One row: untimed, the 2-thread row would repeat the 1-thread one at emulated speed.
    (row,) = report["results"]
    assert row["error"] is None, row["error"]
    assert row["timing"] == NOT_TIMED and row["threads"] == 1
    assert row["batches"] == [] and row["e2e_latency_ms"] is None
    assert row["load_ms"] is None and row["peak_rss_mb"] is None
    assert row["eval_n"] == 8 and 0 <= row["accuracy"] <= 1
    assert row["size_bytes"] == (artifact / "model.onnx").stat().st_size
    assert any(NOT_TIMED in m for m in messages)


# --- the report --------------------------------------------------------------------------------

# Latencies no real row would have, so their absence from the report means something.
P50, E2E = 31.4159, 27.1828


def _doc(device_id: str, **device: Any) -> dict[str, Any]:
    d = "densenet121"
    doc = run_doc(device_id, [result(d, "keras-fp32", 1, p50=P50 * 3, e2e=E2E * 3),
                              result(d, "tflite-int8", 1, p50=P50, e2e=E2E, accuracy=0.93)],
                  overhead_p50=0.001, gpu={"measured": False, "reason": "none"})
    doc["device"].update(device)
    return doc


@pytest.mark.parametrize("device", [
    {"emulated": True, "emulation": FAKE_EVIDENCE},
    # Written before emulation was detected: an aarch64 record with the host's x86 flags.
    {"arch": "aarch64", "isa": ["avx2", "fma"]},
])
def test_the_report_never_shows_latency_of_an_emulated_run(
    device: dict[str, Any], tmp_path: Path
) -> None:
    doc = _doc("qemu-a72", **device)
    src = tmp_path / "qemu.json"
    src.write_text(json.dumps(doc))
    md = write_report([src], tmp_path / "out").read_text()
    for number in (P50, E2E, P50 * 3, E2E * 3, P50 * 1.1, 1000 / P50):
        assert f"{number:.2f}" not in md, f"{number:.2f} is a timing of an emulated run"
    assert find_timing(md, "qemu-a72") == NOT_TIMED
    rows = table_after(md, "### qemu-a72 · densenet121 (CPU)")
    int8 = next(r for r in rows if r["variant"] == "tflite-int8")
    assert int8["accuracy"] == "0.9300" and int8["e2e speed-up"] == NOT_TIMED
    assert int8["size MB"] == "4.00"
    assert f"Target: not checked ({NOT_TIMED})." in md
    assert f"Harness overhead: not measured ({NOT_TIMED})." in md
    assert "This run was made under emulation" in md


def test_a_native_run_beside_an_emulated_one_keeps_its_latency(tmp_path: Path) -> None:
    native, qemu = tmp_path / "native.json", tmp_path / "qemu.json"
    native.write_text(json.dumps(_doc("pi5-4c", arch="aarch64", isa=["asimd"])))
    qemu.write_text(json.dumps(_doc("qemu-a72", emulated=True, emulation=FAKE_EVIDENCE)))
    md = write_report([native, qemu], tmp_path / "out").read_text()
    assert find_timing(md, "pi5-4c") == "measured"
    assert find_timing(md, "qemu-a72") == NOT_TIMED
    assert f"{E2E:.2f}" in md  # the Pi's own figure
    across = table_after(md, "## Across devices")
    int8 = next(r for r in across if r["variant"] == "tflite-int8")
    assert int8["pi5-4c e2e p50 ms"].startswith(f"{E2E:.2f}")
    assert int8["qemu-a72 e2e p50 ms"] == NOT_TIMED


def find_timing(md: str, device: str) -> str:
    runs = table_after(md, "## Runs merged")
    return next(r["timing"] for r in runs if r["device"] == device)
