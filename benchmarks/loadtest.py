"""HTTP load against a running ``brainedge serve``: concurrent clients, errors, latency, memory.

The other benchmarks time an artifact inside one process; this one measures what an integrator
gets from the server: HTTP parsing, the upload, decoding, the out-of-distribution checks,
preprocessing, inference and the JSON answer, through gunicorn's workers. It needs nothing
beyond the standard library (threads and ``http.client`` keep-alive connections) and NumPy
for the percentiles, so it runs on the edge device next to the server.

Like the harness, it owns the clock and nothing else: it POSTs the same raw body to
``/api/v1/predict`` from N clients, after an untimed warm-up, until a request count or a
duration is reached. Any answer other than 2xx, and any exception, is an error; a failed
connection is replaced, never retried, so a broken server cannot hide behind retries.

Memory is the resident set of the server's whole process tree (gunicorn master and workers),
read from ``/proc`` (Linux) before the warm-up, after it, during the load and after it: a leak
shows as growth between "after warm-up" and "after". Figures are reported, never asserted here;
``tests/test_webapp_load.py`` asserts zero errors and bounded growth, not timings.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import LatencyStats
from brainedge.errors import BrainEdgeError, ConfigError

PREDICT_PATH = "/api/v1/predict"
READY_PATH = "/readyz"
MB = 1024 * 1024
ERROR_SAMPLES = 5  # distinct error messages kept; the count covers all of them
MEMORY_INTERVAL_S = 0.25


class ServerStartError(BrainEdgeError):
    """``brainedge serve`` exited or did not become ready; the message ends with its log."""


# --- memory of a process tree (Linux /proc; no psutil) ----------------------------------------

def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, from every thread's ``children`` file (Linux >= 3.5)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _rss_bytes(pid: int) -> int:
    """VmRSS of one process, or 0 if it is gone (a worker may exit between two reads)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError):
        pass
    return 0


def process_tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants (gunicorn: the master and its workers)."""
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        if current not in pids:
            pids.append(current)
            queue += _children(current)
    return pids


def process_tree_rss(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants, in bytes. Pages shared between the
    master and forked workers are counted once per process, as ``ps`` does: the figure
    overstates the machine's cost but moves with every process's growth, which is what a leak
    check needs."""
    return sum(_rss_bytes(p) for p in process_tree_pids(pid))


def memory_supported(pid: int) -> bool:
    return Path(f"/proc/{pid}/status").is_file()


class MemorySampler:
    """Samples a process tree's RSS in a background thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int, interval_s: float = MEMORY_INTERVAL_S) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, process_tree_rss(self.pid))
            self.samples += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- configuration and result -----------------------------------------------------------------

@dataclass(frozen=True)
class LoadConfig:
    """``url``: the server's base URL. ``body``: the image POSTed as the raw request body.
    ``requests``: timed requests over all clients. ``duration_s``: stop starting new requests
    after this long even if fewer were sent (None: no time bound). ``warmup``: untimed requests
    per client first, so lazy initialisation (first inference, allocator growth, connection
    set-up) stays out of the figures. ``server_pid``: the process whose tree's memory is
    sampled (gunicorn's master), or None. ``token``: sent as ``Authorization: Bearer``."""

    url: str
    body: bytes = field(repr=False)
    clients: int = 8
    requests: int = 2000
    duration_s: float | None = None
    warmup: int = 5
    model: str | None = None
    server_pid: int | None = None
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigError(f"url must be http://HOST[:PORT], got {self.url!r} (this load "
                              "generator speaks plain HTTP, e.g. to a server on loopback)")
        if not self.body:
            raise ConfigError("the image to POST is empty")
        for name, low in (("clients", 1), ("requests", 1), ("warmup", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"duration_s must be positive, got {self.duration_s!r}")
        if not self.timeout_s > 0:
            raise ConfigError(f"timeout_s must be positive, got {self.timeout_s!r}")

    @property
    def path(self) -> str:
        base = urllib.parse.urlsplit(self.url).path.rstrip("/")
        query = f"?{urllib.parse.urlencode({'model': self.model})}" if self.model else ""
        return f"{base}{PREDICT_PATH}{query}"


@dataclass(frozen=True)
class MemoryFigures:
    """RSS of the server's process tree in bytes; ``processes`` counted at the end."""

    before: int
    after_warmup: int
    peak: int
    after: int
    processes: int

    @property
    def growth(self) -> int:
        """What the timed load added on top of the warmed-up server."""
        return self.after - self.after_warmup

    def to_dict(self) -> dict[str, Any]:
        return {**{k: round(v / MB, 1) for k, v in asdict(self).items() if k != "processes"},
                "growth": round(self.growth / MB, 1), "processes": self.processes,
                "unit": "MB"}


@dataclass(frozen=True)
class LoadResult:
    url: str
    model: str | None  # the model that answered, from the first answer
    clients: int
    warmup_requests: int
    requests: int  # timed requests sent (answered with 2xx or not)
    errors: int  # of the timed requests: not 2xx, or no answer
    warmup_errors: int
    error_samples: tuple[str, ...]
    statuses: dict[str, int]
    duration_s: float
    latency: LatencyStats | None  # of the successful timed requests
    memory: MemoryFigures | None
    body_bytes: int

    @property
    def throughput_per_s(self) -> float:
        ok = self.requests - self.errors
        return ok / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url, "model": self.model, "clients": self.clients,
            "warmup_requests": self.warmup_requests, "requests": self.requests,
            "errors": self.errors, "warmup_errors": self.warmup_errors,
            "error_samples": list(self.error_samples),
            "statuses": self.statuses, "duration_s": round(self.duration_s, 3),
            "throughput_per_s": round(self.throughput_per_s, 2),
            "latency_ms": None if self.latency is None else {
                k: round(v, 3) if isinstance(v, float) else v
                for k, v in self.latency.to_dict().items()},
            "memory": None if self.memory is None else self.memory.to_dict(),
            "body_bytes": self.body_bytes,
        }


def format_result(result: LoadResult) -> str:
    """A short fixed-width table of the figures, for terminals and CI logs."""
    lines = [
        f"target      {result.url}{PREDICT_PATH} ({result.model or 'default model'}), "
        f"body {result.body_bytes / 1024:.1f} KB",
        f"load        {result.clients} client(s), {result.requests} timed requests "
        f"(+{result.warmup_requests} warm-up) in {result.duration_s:.2f} s",
        f"throughput  {result.throughput_per_s:.1f} successful req/s",
    ]
    if result.latency is not None:
        lat = result.latency
        lines.append(f"latency     p50 {lat.p50:.2f}  p90 {lat.p90:.2f}  p99 {lat.p99:.2f}  "
                     f"max {lat.max:.2f}  mean {lat.mean:.2f} ms")
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(result.statuses.items()))
    lines.append(f"errors      {result.errors} of the timed requests, {result.warmup_errors} in "
                 f"the warm-up" + (f"  (answers: {statuses})" if statuses else ""))
    lines += [f"            {m}" for m in result.error_samples]
    mem = result.memory
    if mem is None:
        lines.append("server RSS  not measured (no --server-pid, or no /proc here)")
    else:
        pct = 100 * mem.growth / mem.after_warmup if mem.after_warmup else 0.0
        lines.append(f"server RSS  before {mem.before / MB:.1f}, after warm-up "
                     f"{mem.after_warmup / MB:.1f}, peak {mem.peak / MB:.1f}, after "
                     f"{mem.after / MB:.1f} MB: growth {mem.growth / MB:+.1f} MB ({pct:+.1f}%), "
                     f"{mem.processes} process(es)")
    return "\n".join(lines)


# --- the clients ------------------------------------------------------------------------------

class _Shared:
    """What the client threads share: the ticket counter, the deadline and the tallies."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.issued = 0
        self.deadline: float | None = None
        self.latencies_ns: list[int] = []
        self.statuses: Counter[str] = Counter()
        self.errors = 0
        self.warmup_errors = 0
        self.error_samples: list[str] = []
        self.model: str | None = None

    def take_ticket(self) -> bool:
        """True while timed requests remain and the duration has not run out."""
        with self.lock:
            if self.issued >= self.config.requests:
                return False
            if self.deadline is not None and time.perf_counter() >= self.deadline:
                return False
            self.issued += 1
            return True

    def record(self, latency_ns: int, status: int | None, error: str | None,
               warmup: bool = False) -> None:
        with self.lock:
            if error is None:
                if not warmup:
                    self.statuses[str(status)] += 1
                    self.latencies_ns.append(latency_ns)
                return
            if warmup:
                self.warmup_errors += 1
                error = f"warm-up: {error}"
            else:
                self.errors += 1
                self.statuses[str(status or "no answer")] += 1
            if error not in self.error_samples and len(self.error_samples) < ERROR_SAMPLES:
                self.error_samples.append(error)


class _Client:
    """One keep-alive connection; replaced after any failure (the request still counts)."""

    def __init__(self, config: LoadConfig) -> None:
        parts = urllib.parse.urlsplit(config.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.config = config
        self.headers = {"Content-Type": "application/octet-stream",
                        "Content-Length": str(len(config.body))}
        if config.token:
            self.headers["Authorization"] = f"Bearer {config.token}"
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def post(self) -> tuple[int | None, bytes, str | None]:
        """(status, body, error): error is None for a 2xx answer."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port,
                                                       timeout=self.config.timeout_s)
            self.conn.request("POST", self.config.path, body=self.config.body,
                              headers=self.headers)
            response = self.conn.getresponse()
            body = response.read()
            if response.will_close:
                self.close()
        except Exception as exc:  # every failure is an error of this request, and counted
            self.close()
            return None, b"", f"{type(exc).__name__}: {exc}"
        if 200 <= response.status < 300:
            return response.status, body, None
        return response.status, body, _refusal(response.status, body)


def _refusal(status: int, body: bytes) -> str:
    """``HTTP 400 unknown_model: Unknown model ...`` from the API's JSON error, leaving out
    its request id so that one kind of error is one sample; else the body's start."""
    try:
        answer = json.loads(body)
        return f"HTTP {status} {answer['code']}: {str(answer['error'])[:200]}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}: {body[:200]!r}"


def _model_name(body: bytes) -> str | None:
    try:
        return str(json.loads(body)["model"]["name"])
    except (ValueError, KeyError, TypeError):
        return None


def run_load(config: LoadConfig) -> LoadResult:
    """Warm up every client, then run the timed load; figures for a report, never asserted."""
    shared = _Shared(config)
    pid = config.server_pid if config.server_pid and memory_supported(config.server_pid) else None
    rss_before = process_tree_rss(pid) if pid else 0
    warmed = threading.Barrier(config.clients + 1)
    start = threading.Barrier(config.clients + 1)
    finished_at: list[float] = []

    def client_main() -> None:
        client = _Client(config)
        try:
            for _ in range(config.warmup):
                status, body, error = client.post()
                shared.record(0, status, error, warmup=True)
                if error is None and shared.model is None:
                    shared.model = _model_name(body)
                # A new connection for each warm-up request: a keep-alive one stays with the
                # worker that accepted it, and the warm-up must reach every worker. This also
                # starts the timed part on a fresh connection, not one that may have idled past
                # the server's keep-alive timeout while other clients were warming up.
                client.close()
            warmed.wait()
            start.wait()
            while shared.take_ticket():
                t0 = time.perf_counter_ns()
                status, body, error = client.post()
                shared.record(time.perf_counter_ns() - t0, status, error)
                if error is None and shared.model is None:
                    shared.model = _model_name(body)
        except BaseException:
            # A bug here must not leave the other threads waiting at a barrier forever.
            warmed.abort()
            start.abort()
            raise
        finally:
            client.close()
            with shared.lock:
                finished_at.append(time.perf_counter())

    threads = [threading.Thread(target=client_main, name=f"client-{i}", daemon=True)
               for i in range(config.clients)]
    for t in threads:
        t.start()
    warmed.wait()
    rss_warm = process_tree_rss(pid) if pid else 0
    sampler = MemorySampler(pid) if pid else None
    with sampler or contextlib.nullcontext():
        t_start = time.perf_counter()
        if config.duration_s is not None:
            shared.deadline = t_start + config.duration_s
        start.wait()
        for t in threads:
            t.join()
    duration = max(finished_at) - t_start
    memory = None
    if pid and sampler is not None:
        rss_after = process_tree_rss(pid)
        memory = MemoryFigures(before=rss_before, after_warmup=rss_warm,
                               peak=max(sampler.peak, rss_after), after=rss_after,
                               processes=len(process_tree_pids(pid)))
    return LoadResult(
        url=config.url, model=shared.model, clients=config.clients,
        warmup_requests=config.warmup * config.clients, requests=shared.issued,
        errors=shared.errors, warmup_errors=shared.warmup_errors,
        error_samples=tuple(shared.error_samples),
        statuses=dict(shared.statuses), duration_s=duration,
        latency=LatencyStats.from_ns(shared.latencies_ns) if shared.latencies_ns else None,
        memory=memory, body_bytes=len(config.body),
    )


# --- a server to load: `brainedge serve` in a subprocess ---------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (another process could take it before the server binds;
    on loopback in a test that is rare, and the server then fails to start, loudly)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class RunningServer:
    url: str
    pid: int  # gunicorn's master (or the dev server's only process)
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _get_status(url: str, timeout_s: float = 2.0) -> int | None:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                      timeout=timeout_s)
    try:
        conn.request("GET", parts.path or "/")
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


# Log lines of webapp.serve.run_server (the master) and webapp.create_app (each worker).
_WORKER_COUNT = re.compile(r"gunicorn on \S+ with (\d+) worker\(s\)")
_WORKER_READY = " webapp: serving "


def _all_workers_booted(server: RunningServer) -> bool:
    """True once every gunicorn worker has built its app. ``/readyz`` answers as soon as one
    worker has; a worker still loading its models when the load starts would be counted as
    memory growth, and its start as latency."""
    log = server.log_tail(chars=1 << 20)
    match = _WORKER_COUNT.search(log)
    return match is not None and log.count(_WORKER_READY) >= int(match.group(1))


def _stop(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM (gunicorn: graceful shutdown of its workers), then SIGKILL to the process group
    this module created for it, so no worker outlives a failed stop."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=grace_s)
    # Workers that lost their master (it was killed) would otherwise be left behind.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def serve_artifacts(artifacts: Sequence[Path], *, host: str = "127.0.0.1",
                    port: int | None = None, workers: int | None = None,
                    threads: int | None = None, env: Mapping[str, str] | None = None,
                    ready_timeout_s: float = 180.0,
                    stop_grace_s: float = 40.0) -> Iterator[RunningServer]:
    """Run ``brainedge serve`` (gunicorn, the production path) on ``host:port`` until the
    block ends; yields once ``/readyz`` answers 200. ``env`` replaces the environment (default:
    this process's). The server's output goes to a temporary log, quoted if it fails to
    start and deleted afterwards."""
    port = free_port(host) if port is None else port
    command = [sys.executable, "-m", "cli", "serve", "--host", host,
               "--port", str(port)]
    for artifact in artifacts:
        command += ["--artifact", str(Path(artifact).resolve())]
    if workers is not None:
        command += ["--workers", str(workers)]
    if threads is not None:
        command += ["--threads", str(threads)]
    url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    fd, log_name = tempfile.mkstemp(prefix="brainedge-serve-", suffix=".log")
    log_path = Path(log_name)
    try:
        with os.fdopen(fd, "wb") as log:
            # A session of its own: the group can be stopped as a whole, and a Ctrl-C in the
            # terminal reaches only this process, which then stops the server itself.
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       env=dict(os.environ if env is None else env))
        server = RunningServer(url=url, pid=process.pid, log_path=log_path)
        try:
            deadline = time.monotonic() + ready_timeout_s
            while _get_status(url + READY_PATH) != 200 or not _all_workers_booted(server):
                if process.poll() is not None:
                    raise ServerStartError(f"brainedge serve exited with {process.returncode} "
                                           f"before it was ready; its log:\n"
                                           f"{server.log_tail()}")
                if time.monotonic() > deadline:
                    raise ServerStartError(f"brainedge serve was not ready on {url} after "
                                           f"{ready_timeout_s:.0f} s; its log:\n"
                                           f"{server.log_tail()}")
                time.sleep(0.1)
            yield server
        finally:
            _stop(process, stop_grace_s)
    finally:
        log_path.unlink(missing_ok=True)
