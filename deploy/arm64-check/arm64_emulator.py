"""How to start Python, the ``brainedge`` CLI and the server on each side of the comparison:
natively (this machine's x86_64 venv) or under QEMU user-mode as a Raspberry Pi's CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
from arm64_env import Layout

# QEMU CPU model -> the board it stands for.
CPU_MODELS = {"cortex-a72": "Raspberry Pi 4", "cortex-a76": "Raspberry Pi 5"}
NATIVE = "x86_64"
# Host settings that must not reach the emulated Python (x86 libraries, the host's venv and
# site, a bytecode switch that would make every emulated run recompile) or the server.
_HOST_ONLY = re.compile(r"^(LD_LIBRARY_PATH|LD_PRELOAD|PYTHON\w*|VIRTUAL_ENV|BRAINEDGE_\w+)$")


@dataclass(frozen=True)
class Interpreter:
    """A Python to run commands with: ``name`` is x86_64 or a QEMU CPU model."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(repr=False)

    def python(self, *args: str) -> list[str]:
        return [*self.argv, *args]

    def cli(self, repo: Path, *args: str) -> list[str]:
        """The ``brainedge`` console script, whatever module pyproject.toml points it at."""
        return self.python("-c", cli_launcher(repo), *args)

    def run(self, cmd: list[str], log: Path, timeout: float, cwd: Path) -> Result:
        """Run ``cmd`` with stdout and stderr to ``log``; never raises on a failing command.

        Besides the wall time, the CPU time of the process and its children is measured: on a
        shared machine it is the figure that predicts the time on an idle one.
        """
        log.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                    cwd=cwd)
            expired = threading.Event()

            def expire() -> None:
                expired.set()
                proc.kill()

            timer = threading.Timer(timeout, expire)
            timer.start()
            try:
                code, usage = wait_with_usage(proc)
            finally:
                timer.cancel()
        return Result(None if expired.is_set() else code, time.monotonic() - start,
                      usage.ru_utime + usage.ru_stime, log)


def wait_with_usage(proc: subprocess.Popen) -> tuple[int, Any]:
    """Wait for ``proc``; its exit code and resource usage (its reaped children included)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage


@dataclass(frozen=True)
class Result:
    returncode: int | None  # None: timed out
    seconds: float
    cpu_seconds: float | None  # None: not measured
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 25) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(text[-lines:])

    def describe(self) -> str:
        if self.returncode is None:
            return f"timed out after {self.seconds:.0f} s"
        return f"exit {self.returncode} after {self.seconds:.0f} s"


def cli_entry_point(repo: Path) -> tuple[str, str]:
    """(module, function) of the ``brainedge`` script in pyproject.toml's [project.scripts]."""
    scripts = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, func = scripts["brainedge"].partition(":")
    return module, func


def cli_launcher(repo: Path) -> str:
    """Python code that does what pip's generated ``brainedge`` script does."""
    module, func = cli_entry_point(repo)
    return (f"import sys; sys.argv[0] = 'brainedge'; from {module} import {func}; "
            f"sys.exit({func}())")


def native(repo: Path) -> Interpreter:
    """This machine's venv Python, running the working tree (not an installed copy)."""
    env = {k: v for k, v in os.environ.items() if not _HOST_ONLY.match(k)}
    env.update(PYTHONPATH=str(repo), PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")
    return Interpreter(NATIVE, (sys.executable, "-s"), env)


def emulated(layout: Layout, repo: Path, cpu: str) -> Interpreter:
    """bookworm's arm64 Python under ``qemu-aarch64 -cpu CPU``: the repository and the aarch64
    wheels on its path, and nothing of the host's Python (no TensorFlow there)."""
    if cpu not in CPU_MODELS:
        raise ValueError(f"unknown CPU model {cpu!r}; choose from {', '.join(CPU_MODELS)}")
    env = {k: v for k, v in os.environ.items() if not _HOST_ONLY.match(k)}
    env.update(PYTHONPATH=f"{repo}{os.pathsep}{layout.site}", PYTHONNOUSERSITE="1",
               PYTHONPYCACHEPREFIX=str(layout.pycache))
    argv = (str(layout.qemu), "-cpu", cpu, "-L", str(layout.rootfs), str(layout.python), "-s")
    return Interpreter(cpu, argv, env)
