"""The commands of the check, on one side (x86_64 natively, or one emulated CPU model).

Every step records a pass/fail entry in ``Checks`` and never raises for a failing command, so
one broken step is reported next to the others instead of hiding them. All steps share one
deadline (``--budget-minutes``): a step that would start after it is failed, not run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arm64_emulator import Interpreter, Result, cli_entry_point, wait_with_usage

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STEP_TIMEOUT_S = 1800.0


def say(message: str) -> None:
    print(f"[arm64-check] {message}", file=sys.stderr, flush=True)


class Checks(list):
    """Every pass/fail outcome besides the comparison rows, for the report."""

    def add(self, cpu: str, name: str, passed: bool, detail: str = "",
            result: Result | None = None) -> bool:
        cpu_s = result.cpu_seconds if result else None
        self.append({"cpu": cpu, "check": name, "passed": passed, "detail": detail,
                     "seconds": round(result.seconds, 1) if result else None,
                     "cpu_seconds": round(cpu_s, 1) if cpu_s is not None else None})
        if not passed:
            say(f"{cpu}: {name} FAILED: {detail}")
        return passed


@dataclass(frozen=True)
class Side:
    """What one side runs on, and where its outputs go."""

    py: Interpreter
    out: Path
    inputs: Path
    models: dict[str, Path]
    specs: Path
    threads: int
    checks: Checks
    deadline: float  # time.monotonic() by which everything must be done
    model_args: tuple[str, ...] = ()  # e.g. --allow-failed-gate, for predict and serve

    def timeout(self, step: str) -> float | None:
        """Seconds this step may take; None (and a failed check) when the budget is spent."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.checks.add(self.py.name, step, False, "not run: the time budget is spent")
            return None
        return min(left, STEP_TIMEOUT_S)


def report_file(side: Side, model: str) -> Path:
    return side.out / f"{model.replace('/', '__')}.json"


def trace_and_predict(side: Side) -> None:
    """The two outputs that are compared, run identically on both sides: the preprocessing
    trace, and one ``brainedge predict --format json`` report per model."""
    py = side.py
    say(f"{py.name}: tracing decoding and preprocessing")
    if (timeout := side.timeout("trace")) is not None:
        result = py.run(py.python(str(HERE / "arm64_trace.py"), "--inputs", str(side.inputs),
                                  "--specs", str(side.specs), "--out",
                                  str(side.out / "trace.npz")),
                        side.out / "trace.log", timeout, REPO)
        side.checks.add(py.name, "trace", result.ok, result.tail(1) if result.ok else
                        f"{result.describe()}: {result.tail(5)}", result)
    for name, folder in side.models.items():
        say(f"{py.name}: brainedge predict --model {name}")
        if (timeout := side.timeout(f"predict {name}")) is None:
            continue
        report = report_file(side, name)
        result = py.run(py.cli(REPO, "predict", str(side.inputs), "--model", str(folder),
                               "--format", "json", "--threads", str(side.threads), "--output",
                               str(report), *side.model_args),
                        side.out / f"predict-{report.stem}.log", timeout, REPO)
        # Exit 1 with a report means some files failed: the comparison names them.
        written = result.ok or (result.returncode == 1 and report.is_file())
        side.checks.add(py.name, f"predict {name}", written,
                        "" if written else f"{result.describe()}: {result.tail(5)}", result)


IMPORT_CHECK = """
import importlib, importlib.util, json, platform, sys
HEAVY = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "tf2onnx")
assert not [m for m in HEAVY if importlib.util.find_spec(m)], "TensorFlow is importable"
import runtime, runtime.litert, runtime.onnx, webapp
cli = getattr(importlib.import_module(sys.argv[1]), sys.argv[2])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
assert not loaded, f"imported {loaded}"
import cv2, numpy, onnxruntime, pydicom
from numpy._core._multiarray_umath import __cpu_features__ as features
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                  "numpy": numpy.__version__, "opencv": cv2.__version__,
                  "onnxruntime": onnxruntime.__version__, "pydicom": pydicom.__version__,
                  "cpu_features": sorted(k for k, v in features.items() if v)}))
"""


def arm64_test_files() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "mark.arm64" in p.read_text())


def imports_and_tests(side: Side) -> None:
    """Emulated only: the edge imports with TensorFlow absent, then the arm64 test subset."""
    py = side.py
    say(f"{py.name}: importing runtime, webapp and the CLI without TensorFlow")
    if (timeout := side.timeout("imports without TensorFlow")) is not None:
        result = py.run(py.python("-c", IMPORT_CHECK, *cli_entry_point(REPO)),
                        side.out / "imports.log", timeout, REPO)
        side.checks.add(py.name, "imports without TensorFlow", result.ok,
                        result.tail(1) if result.ok else
                        f"{result.describe()}: {result.tail(3)}", result)
    files = arm64_test_files()
    say(f"{py.name}: pytest -m arm64 ({len(files)} files)")
    if (timeout := side.timeout("pytest -m arm64")) is not None:
        result = py.run(py.python("-m", "pytest", "-m", "arm64 and not tf", "-q", "-p",
                                  "no:cacheprovider", *files),
                        side.out / "pytest.log", timeout, REPO)
        summary = result.tail(1)
        passed = result.ok and bool(files) and " passed" in summary
        side.checks.add(py.name, "pytest -m arm64", passed, summary if passed else
                        f"{result.describe()}: {summary} (see {result.log})", result)


def serve_and_ask(side: Side, probe: Path) -> None:
    """Emulated only: start ``brainedge serve --dev`` with every model, wait for /readyz, POST
    ``probe`` to /api/v1/predict, stop the server. The answer is kept in serve-answer.json;
    the comparison checks its class against x86_64's.

    Flask's threaded server, not gunicorn: under QEMU user-mode, a gunicorn worker (a fork of
    a process with threads) sometimes hung for good right after loading its models, which is
    about QEMU's fork emulation, not about the Pi; the app, its models and its routes are the
    same in both servers.
    """
    py, name = side.py, "serve: /readyz + /api/v1/predict"
    say(f"{py.name}: brainedge serve --dev, /readyz, POST /api/v1/predict")
    if (timeout := side.timeout(name)) is None:
        return
    port = free_port()
    args = ["serve", "--dev", "--host", "127.0.0.1", "--port", str(port), *side.model_args]
    for folder in side.models.values():
        args += ["--artifact", str(folder)]
    start = time.monotonic()
    base = f"http://127.0.0.1:{port}"
    log = side.out / "serve.log"
    answer: dict[str, Any] = {}
    with open(log, "w") as sink:
        server = subprocess.Popen(py.cli(REPO, *args), stdout=sink, stderr=subprocess.STDOUT,
                                  env=py.env, cwd=REPO, start_new_session=True)
        try:
            ready = wait_ready(server, f"{base}/readyz", start + timeout)
            if ready is None:
                why = ("the server exited" if server.poll() is not None
                       else f"not ready after {timeout:.0f} s")
                detail = f"{why}; see {log}"
            else:
                ready_s = time.monotonic() - start
                request = urllib.request.Request(
                    f"{base}/api/v1/predict", data=probe.read_bytes(),
                    headers={"Content-Type": "application/octet-stream"})
                left = max(1.0, start + timeout - time.monotonic())
                with urllib.request.urlopen(request, timeout=left) as response:
                    answer = json.load(response)
                detail = (f"ready ({ready['status']}) after {ready_s:.0f} s; {probe.name} -> "
                          f"{answer.get('class')} by {answer.get('model', {}).get('name')}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            detail = f"request failed: {exc}; see {log}"
        finally:
            code, cpu_seconds = stop(server)
    if answer:
        (side.out / "serve-answer.json").write_text(
            json.dumps({"file": probe.name, **answer}, indent=2))
    side.checks.add(py.name, name, "class" in answer, detail,
                    Result(code, time.monotonic() - start, cpu_seconds, log))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(server: subprocess.Popen, url: str, deadline: float) -> dict[str, Any] | None:
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return json.load(response)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(2)
    return None


def stop(server: subprocess.Popen) -> tuple[int, float | None]:
    """SIGTERM the server, SIGKILL its own session if it lingers; its exit code and CPU
    seconds (unknown if it had already exited)."""
    if server.poll() is not None:
        return server.returncode, None
    server.terminate()
    killer = threading.Timer(60, lambda: os.killpg(server.pid, signal.SIGKILL))
    killer.start()
    try:
        code, usage = wait_with_usage(server)
    finally:
        killer.cancel()
    return code, usage.ru_utime + usage.ru_stime
