"""Start-up time and memory of ``brainedge serve``: what a device must hold, and how long a
restart keeps the page away.

The server is started as it is deployed (gunicorn, ``benchmarks.loadtest.serve_artifacts``),
and measured:

- **time to ready**: from launching ``brainedge serve`` until ``/readyz`` answers 200 and every
  worker has booted. It covers Python's start, the imports, the sha256 check of each artifact
  and each worker's model load and warm-up inference; it is polled every 0.1 s.
- **memory of each process**, master and workers, from ``/proc/PID/status`` (RSS) and
  ``/proc/PID/smaps_rollup`` (PSS). RSS counts pages the forked workers share with the master
  once per process, as ``top`` shows them; PSS splits each shared page between its sharers, so
  the PSS total is what the server costs the machine.
- optionally the same memory again after N requests with one image, once the runtimes'
  arenas have grown to their working size.

The figures are the machine's that ran it: the result names it (``benchmarks.device``), and an
emulated CPU is refused, since its time and memory would be the emulator's.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.device import device_info
from benchmarks.emulation import refuse_if_emulated
from benchmarks.loadtest import LoadConfig, process_tree_pids, run_load, serve_artifacts

MB = 1024 * 1024


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    role: str  # "master" or "worker"
    rss_bytes: int
    pss_bytes: int | None  # None where the kernel has no smaps_rollup (before Linux 4.14)


@dataclass(frozen=True)
class Footprint:
    device: dict[str, Any]
    artifacts: tuple[str, ...]
    workers: int
    ready_s: float
    at_ready: tuple[ProcessMemory, ...]
    after_requests: tuple[ProcessMemory, ...] = ()
    requests: int = 0
    request_errors: int = 0
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at_ready_total"] = _totals(self.at_ready)
        data["after_requests_total"] = _totals(self.after_requests) if self.requests else None
        return data


def _status_kb(pid: int, key: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return None


def _pss_kb(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def process_memory(master_pid: int) -> tuple[ProcessMemory, ...]:
    """RSS and PSS of the master and each of its descendants (the gunicorn workers)."""
    found = []
    for pid in process_tree_pids(master_pid):
        rss = _status_kb(pid, "VmRSS")
        if rss is None:  # exited between listing and reading
            continue
        pss = _pss_kb(pid)
        found.append(ProcessMemory(pid, "master" if pid == master_pid else "worker",
                                   rss * 1024, None if pss is None else pss * 1024))
    return tuple(found)


def _totals(processes: tuple[ProcessMemory, ...]) -> dict[str, int | None]:
    pss = [p.pss_bytes for p in processes]
    return {"rss_bytes": sum(p.rss_bytes for p in processes),
            "pss_bytes": None if None in pss else sum(p for p in pss if p is not None)}


def measure_footprint(artifacts: list[Path], workers: int | None = None,
                      threads: int | None = None, image: bytes | None = None,
                      requests: int = 0, device_label: str | None = None) -> Footprint:
    """Start ``brainedge serve`` with ``artifacts``, measure it, stop it. ``requests`` POSTs of
    ``image`` (one client) are sent after the first measurement when both are given."""
    refuse_if_emulated("measure the server's start-up time and memory")
    device = device_info(device_label)
    started = time.perf_counter()
    with serve_artifacts(artifacts, workers=workers, threads=threads) as server:
        ready_s = time.perf_counter() - started
        at_ready = process_memory(server.pid)
        after: tuple[ProcessMemory, ...] = ()
        errors = 0
        if image is not None and requests > 0:
            load = run_load(LoadConfig(url=server.url, body=image, clients=1,
                                       requests=requests, warmup=0))
            errors = load.errors
            after = process_memory(server.pid)
    notes = []
    if not Path("/proc/self/smaps_rollup").is_file():
        notes.append("PSS not available: this kernel has no /proc/PID/smaps_rollup")
    return Footprint(
        device=device, artifacts=tuple(str(a) for a in artifacts),
        workers=sum(1 for p in at_ready if p.role == "worker"), ready_s=ready_s,
        at_ready=at_ready, after_requests=after, requests=requests if after else 0,
        request_errors=errors, notes=tuple(notes),
    )


def _mb(size: int | None) -> str:
    return "-" if size is None else f"{size / MB:.1f}"


def _memory_lines(title: str, processes: tuple[ProcessMemory, ...]) -> list[str]:
    lines = [f"{title:<24} {'RSS MB':>8} {'PSS MB':>8}"]
    for p in processes:
        name = f"{p.role} (pid {p.pid})"
        lines.append(f"  {name:<22} {_mb(p.rss_bytes):>8} {_mb(p.pss_bytes):>8}")
    totals = _totals(processes)
    lines.append(f"  {'total':<22} {_mb(totals['rss_bytes']):>8} {_mb(totals['pss_bytes']):>8}")
    return lines


def format_footprint(result: Footprint) -> str:
    d = result.device
    lines = [
        f"measured on  {d['id']}: {d['cpu_model']}, {d['arch']}, {d['logical_cores']} logical "
        f"cores, {d['memory_gb']} GB, {d['os']}, Python {d['python']}",
        f"server       brainedge serve (gunicorn, {result.workers} worker(s)) with "
        + ", ".join(result.artifacts),
        f"ready in     {result.ready_s:.2f} s (launch to /readyz 200 with every worker booted)",
        *_memory_lines("memory at ready", result.at_ready),
    ]
    if result.after_requests:
        lines += _memory_lines(f"after {result.requests} requests", result.after_requests)
        if result.request_errors:
            lines.append(f"  ({result.request_errors} of the requests failed)")
    lines += [f"note         {n}" for n in result.notes]
    return "\n".join(lines)
