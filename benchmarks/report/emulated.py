"""Runs made under a CPU emulator: their timings describe the emulator, so the report shows none.

A sweep records ``"emulated": true`` and its evidence in the device record (benchmarks/
emulation.py) and, with ``--allow-emulated``, writes rows without timings. The report does not
trust that alone: a file written before emulation was detected, or edited, may still carry
latencies. Those are dropped whenever the run looks emulated by any of these signs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.device import ARM_FLAGS, X86_FLAGS
from benchmarks.emulation import NOT_TIMED, machine_family

# Everything in a flattened row that a CPU's speed (or an emulator's memory) decides.
TIMING_FIELDS = ("p50", "p90", "p99", "e2e_p50", "stages", "throughput", "throughput_batch",
                 "peak_rss_mb", "load_ms", "fastest")


def run_emulation(doc: Mapping[str, Any]) -> list[str]:
    """Why a run's timings cannot be the device's; empty when nothing says so."""
    device = doc.get("device") if isinstance(doc.get("device"), Mapping) else {}
    if device.get("emulated") is True:
        evidence = device.get("emulation")
        if isinstance(evidence, list) and evidence:
            return [str(e) for e in evidence]
        return ['the device record says "emulated": true']
    results = doc.get("results") if isinstance(doc.get("results"), list) else []
    if any(isinstance(r, Mapping) and r.get("timing") == NOT_TIMED for r in results):
        return [f"its rows say '{NOT_TIMED}'"]
    contradiction = isa_contradicts_arch(device)
    return [contradiction] if contradiction else []


def isa_contradicts_arch(device: Mapping[str, Any]) -> str | None:
    """QEMU before 8.1 shows an aarch64 guest the host's x86 /proc/cpuinfo, so an older
    sweep's record names an aarch64 machine with x86 ISA flags."""
    family = machine_family(str(device.get("arch") or ""))
    isa = {str(f) for f in device.get("isa") or []}
    found = "x86" if isa & set(X86_FLAGS) else "arm" if isa & set(ARM_FLAGS) else None
    if family and found and found != family:
        return (f"the device record names a {device.get('arch')} machine with {found} ISA "
                f"flags ({' '.join(sorted(isa))})")
    return None


def hide_timings(rows: Sequence[dict[str, Any]]) -> None:
    for row in rows:
        for name in TIMING_FIELDS:
            row[name] = None


def emulated_note(evidence: Sequence[str]) -> str:
    return (f"**{NOT_TIMED.capitalize()}.** This run was made under emulation "
            f"({'; '.join(evidence)}). An emulator's latency, throughput, load time and memory "
            "describe the emulator, not the device, so none is shown: only size and accuracy. "
            "Time it on the real device (deploy/raspberry-pi/README.md).")
