"""What machine a benchmark ran on, so results from a Raspberry Pi, a CPU server and a GPU box
can sit in one table without anyone remembering which was which.

Nothing here imports an inference library (versions come from package metadata) except
onnxruntime, to list its execution providers; the id holds no hostname, so result files can be
shared.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import emulation
from brainedge.errors import ConfigError

# Distribution names (as pip knows them) whose versions explain a latency.
LIBRARIES = ("numpy", "opencv-python-headless", "ai-edge-litert", "tflite-runtime",
             "onnxruntime", "onnxruntime-gpu", "tensorflow", "tf-keras")
# CPU features that decide which kernels the runtimes pick (XNNPACK, oneDNN, MLAS).
X86_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
             "amx_tile", "amx_int8", "avx_vnni")
ARM_FLAGS = ("neon", "asimd", "asimddp", "sve", "i8mm", "bf16")
_NOISE = re.compile(r"\((r|tm|c)\)|\bcpu\b|\bprocessor\b|@.*$|\d+-core", re.IGNORECASE)


def slugify(text: str) -> str:
    """``"Intel(R) Xeon(R)"`` -> ``"intel-r-xeon-r"``: lower-case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """The CPU model and the relevant ISA flags from the text of ``/proc/cpuinfo``.

    x86 lists ``model name`` and ``flags``; ARM lists ``Features`` and, on boards such as the
    Raspberry Pi, ``Model`` (the board) and ``Hardware`` (the SoC) instead of a model name.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if sep and value and key not in fields:
            fields[key] = value
    model = fields.get("model name") or fields.get("model") or fields.get("hardware")
    # On x86 "model" is a number; a board name there would have letters.
    if model is not None and model.isdigit():
        model = fields.get("hardware")
    present = set((fields.get("flags") or fields.get("features") or "").split())
    wanted = X86_FLAGS if "flags" in fields else ARM_FLAGS
    return {"cpu_model": model, "isa": [f for f in wanted if f in present]}


def default_id(cpu_model: str | None, logical_cores: int | None) -> str:
    """``"Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"``, 8 cores -> ``"intel-xeon-8c"``;
    ``"Raspberry Pi 5 Model B Rev 1.0"``, 4 cores -> ``"raspberry-pi-5-4c"``."""
    words = slugify(_NOISE.sub(" ", cpu_model or platform.machine() or "cpu")).split("-")
    words = [w for w in words if w] or ["cpu"]
    name = words[:2]
    if len(words) > 2 and words[2].isdigit():  # a board generation: "raspberry pi 5"
        name.append(words[2])
    cores = f"-{logical_cores}c" if logical_cores else ""
    return "-".join(name) + cores


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _physical_cores() -> int | None:
    """Distinct (package, core) pairs in sysfs; ``None`` where the kernel does not say."""
    cores = set()
    for topology in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology"):
        package = _read(str(topology / "physical_package_id"))
        core = _read(str(topology / "core_id"))
        if package is None or core is None:
            return None
        cores.add((package.strip(), core.strip()))
    return len(cores) or None


def _memory_gb() -> float | None:
    meminfo = _read("/proc/meminfo")
    if meminfo:
        match = re.search(r"^MemTotal:\s+(\d+)\s+kB", meminfo, re.MULTILINE)
        if match:
            return round(int(match.group(1)) / 1024**2, 1)
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return None


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def gpu_info(timeout_s: float = 10.0) -> dict[str, Any]:
    name = None
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=timeout_s,
                                 check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        # "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-...)"
        match = re.search(r"^GPU \d+: (.+?)(?: \(UUID:.*)?$", out, re.MULTILINE)
        name = match.group(1) if match else None
    return {"available": name is not None, "name": name,
            "onnxruntime_providers": onnxruntime_providers()}


def onnxruntime_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def device_info(label: str | None = None) -> dict[str, Any]:
    """Describe this machine; ``label`` replaces the derived ``id`` (e.g. ``"clinic-pi5"``)."""
    cpu = parse_cpuinfo(_read("/proc/cpuinfo") or "")
    cpu_model = cpu["cpu_model"] or platform.processor() or platform.machine() or None
    logical = os.cpu_count()
    if label is not None:
        device_id = slugify(label)
        if not device_id:
            raise ConfigError(f"device label {label!r} has no letters or digits; use e.g. "
                              "'clinic-pi5'")
    else:
        device_id = default_id(cpu_model, logical)
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    # Timings from an emulated CPU describe the emulator: the sweep refuses or skips them.
    evidence = emulation.emulation_evidence()
    return {
        "id": device_id,
        "cpu_model": cpu_model,
        "arch": platform.machine(),
        "logical_cores": logical,
        "usable_cores": usable,
        "physical_cores": _physical_cores(),
        "isa": cpu["isa"],
        "memory_gb": _memory_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": sys.implementation.name,
        "libraries": library_versions(),
        "gpu": gpu_info(),
        "emulated": bool(evidence),
        "emulation": evidence,
    }
