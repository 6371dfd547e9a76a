"""Is this Python running under a CPU emulator? Latency measured there is not the device's.

QEMU user-mode (``qemu-aarch64 -cpu cortex-a72 ... python3.11``) runs an arm64 Python on an x86
machine 130 to 500 times slower per operation (issue 10): good for checking that results are
equal, meaningless for timing. ``brainedge bench`` therefore refuses to time under emulation or,
with ``--allow-emulated``, measures accuracy and size only and marks its rows ``NOT_TIMED``.

The evidence, each a fact the emulator does not hide. Checked with QEMU 7.2 (Debian bookworm)
and 10.0 (bookworm-backports), emulating x86_64 and aarch64:

- **The process image.** QEMU answers ``readlink("/proc/self/exe")`` with the guest program
  (python3.11), but not the kernel's other names for the same link: ``/proc/thread-self/exe``,
  ``/proc/self/task/TID/exe`` and ``exe`` relative to an open ``/proc/self``. Natively they are
  one kernel object and always agree; under QEMU they name ``qemu-aarch64``. This holds when the
  guest has the host's architecture too (``qemu-x86_64`` on x86).
- **Its architecture.** The real image is an ELF program for another CPU family than the one
  Python reports (``platform.machine()``, which QEMU fakes through ``uname``).
- **/proc/cpuinfo of another architecture.** QEMU before 8.1 passes the host's
  ``/proc/cpuinfo`` through to an aarch64 guest: x86 ``flags`` where Python says aarch64. (QEMU
  10.0 writes an ARM one, "ARMv8 Processor rev 3", so there only the first two apply.)

Families, not exact machines, are compared: a 32-bit ARM userland on a 64-bit Pi kernel
(``armv7l`` program, ``aarch64`` uname) is native, not emulated.

Not evidence: ``QEMU_*`` variables are QEMU's inputs (``QEMU_LD_PREFIX``, ``QEMU_CPU``), which
it neither sets nor needs, and which can be left over in the shell of a real device.
Full-system virtualization (KVM, a cloud VM) runs on the real CPU and is timed as usual. A
full-system *emulated* machine (qemu-system without KVM) is not detected: from inside, it is not
reliably told apart from KVM (``systemd-detect-virt`` answers "qemu" for some KVM guests).
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
from pathlib import Path

from brainedge.errors import BrainEdgeError

NOT_TIMED = "emulated, not timed"
PROC = Path("/proc")
# platform.machine() and ELF e_machine values, by CPU family.
MACHINE_FAMILIES = {
    "x86_64": "x86", "amd64": "x86", "i386": "x86", "i486": "x86", "i586": "x86",
    "i686": "x86", "aarch64": "arm", "arm64": "arm", "armv6l": "arm", "armv7l": "arm",
    "armv8l": "arm",
}
ELF_FAMILIES = {3: "x86", 62: "x86", 40: "arm", 183: "arm"}  # EM_386, EM_X86_64, EM_ARM, EM_AARCH64
ELF_HEADER_BYTES = 20  # e_ident (16), e_type (2), e_machine (2)


class EmulatedTimingError(BrainEdgeError):
    """Timing was asked for under emulation, where it would measure the emulator."""


def machine_family(machine: str) -> str | None:
    return MACHINE_FAMILIES.get(machine.lower())


def elf_family(header: bytes) -> str | None:
    """``"x86"`` or ``"arm"`` from the first bytes of an ELF file, else ``None``."""
    if len(header) < ELF_HEADER_BYTES or header[:4] != b"\x7fELF":
        return None
    order = "little" if header[5] == 1 else "big"  # EI_DATA: 1 little-endian, 2 big-endian
    return ELF_FAMILIES.get(int.from_bytes(header[18:20], order))


def cpuinfo_family(text: str) -> str | None:
    """The CPU family ``/proc/cpuinfo`` describes: ARM kernels list ``CPU implementer``, x86
    kernels ``vendor_id`` and ``flags``; ``None`` for anything else."""
    keys = {line.partition(":")[0].strip().lower() for line in text.splitlines() if ":" in line}
    if "cpu implementer" in keys:
        return "arm"
    if {"vendor_id", "flags"} <= keys:
        return "x86"
    return None


def _readlink(path: Path | str, dir_fd: int | None = None) -> str | None:
    try:
        return os.readlink(path, dir_fd=dir_fd)
    except OSError:
        return None


def kernel_exe_links(proc: Path = PROC) -> dict[str, str]:
    """The process image as the kernel names it, by the paths QEMU does not rewrite."""
    links: dict[str, str] = {}
    task = proc / "self" / "task" / str(threading.get_native_id()) / "exe"
    for path in (proc / "thread-self" / "exe", task):
        target = _readlink(path)
        if target is not None:
            links[str(path)] = target
    with contextlib.suppress(OSError):
        fd = os.open(proc / "self", os.O_RDONLY | os.O_DIRECTORY)
        try:
            target = _readlink("exe", dir_fd=fd)
        finally:
            os.close(fd)
        if target is not None:
            links[f"exe relative to an open {proc / 'self'}"] = target
    return links


def _image_family(proc: Path) -> str | None:
    task = proc / "self" / "task" / str(threading.get_native_id()) / "exe"
    for path in (proc / "thread-self" / "exe", task):
        try:
            with open(path, "rb") as image:
                return elf_family(image.read(ELF_HEADER_BYTES))
        except OSError:
            continue
    return None


def emulation_evidence(proc: Path = PROC, machine: str | None = None) -> list[str]:
    """Why this process looks emulated, one sentence per finding; empty when it runs natively
    (or nothing can be read, e.g. without /proc)."""
    machine = machine or platform.machine()
    family = machine_family(machine)
    evidence = []
    seen = _readlink(proc / "self" / "exe")
    if seen is not None:
        for name, target in kernel_exe_links(proc).items():
            if target != seen:
                evidence.append(f"{proc / 'self' / 'exe'} names {seen} but {name} names "
                                f"{target}: something rewrites /proc, as QEMU user-mode does")
                break
    image = _image_family(proc)
    if family and image and image != family:
        evidence.append(f"the process image is an {image} program but Python reports "
                        f"{machine}")
    try:
        cpuinfo = cpuinfo_family((proc / "cpuinfo").read_text(errors="replace"))
    except OSError:
        cpuinfo = None
    if family and cpuinfo and cpuinfo != family:
        evidence.append(f"{proc / 'cpuinfo'} describes an {cpuinfo} CPU but Python reports "
                        f"{machine}")
    return evidence


def refusal(evidence: list[str], what: str, override: str | None = None) -> str:
    """The message of an ``EmulatedTimingError``: what was found, why it matters, what to do."""
    fix = "run it on the real device (deploy/raspberry-pi/README.md, 'Benchmarking on the Pi')"
    if override:
        fix += (f", or add {override} to measure accuracy and size only (rows say "
                f"'{NOT_TIMED}')")
    return (f"refusing to {what} under emulation ({'; '.join(evidence)}). An emulator runs "
            f"100 to 500 times slower than the CPU it imitates: its timings describe the "
            f"emulator, not the device. To time it, {fix}.")


def refuse_if_emulated(what: str) -> None:
    """For commands that only time (load tests, start-up): refuse under emulation."""
    evidence = emulation_evidence()
    if evidence:
        raise EmulatedTimingError(refusal(evidence, what))
