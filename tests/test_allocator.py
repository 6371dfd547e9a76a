"""``brainedge train`` and ``optimize`` re-execute themselves once with tcmalloc preloaded."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from cli import allocator
from tests.conftest import PROJECT_ROOT

LIB = "libtcmalloc_minimal.so.4"


def test_preload_env_adds_the_library_once_and_keeps_other_preloads() -> None:
    assert allocator.preload_env({}, LIB) == {"LD_PRELOAD": LIB}
    assert allocator.preload_env({"LD_PRELOAD": "libfoo.so"}, LIB)["LD_PRELOAD"] == \
        f"{LIB} libfoo.so"
    assert allocator.preload_env({"LD_PRELOAD": f"/usr/lib/{LIB}"}, LIB) is None


@pytest.mark.parametrize(("argv0", "expected"), [
    ("/opt/venv/bin/brainedge", True),
    (str(PROJECT_ROOT / "cli" / "__main__.py"), True),
    ("/opt/venv/bin/pytest", False),
    ("/usr/lib/python3/dist-packages/other/__main__.py", False),
])
def test_only_the_cli_itself_is_ever_re_executed(monkeypatch, argv0, expected) -> None:
    monkeypatch.setattr(sys, "argv", [argv0, "train"])
    assert allocator.started_as_the_cli() is expected


def _as_cli(monkeypatch, library: str | None) -> list[tuple]:
    calls: list[tuple] = []
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/brainedge", "train"])
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: library)
    monkeypatch.setattr(allocator, "loaded_in_this_process", lambda: False)
    monkeypatch.setattr(os, "execve", lambda *args: calls.append(args))
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("BRAINEDGE_TCMALLOC", raising=False)
    return calls


def test_the_cli_re_executes_itself_with_tcmalloc_preloaded(monkeypatch) -> None:
    calls = _as_cli(monkeypatch, LIB)
    allocator.use_tcmalloc()
    ((executable, argv, env),) = calls
    assert executable == sys.executable
    assert argv == sys.orig_argv  # the same command, options and all
    assert env["LD_PRELOAD"] == LIB


def test_without_tcmalloc_it_says_how_to_install_it_and_runs_on(monkeypatch, caplog) -> None:
    calls = _as_cli(monkeypatch, None)
    with caplog.at_level(logging.WARNING, logger="cli.allocator"):
        allocator.use_tcmalloc()
    assert calls == []
    assert "apt install libtcmalloc-minimal4" in caplog.text
    assert "BRAINEDGE_TCMALLOC=0" in caplog.text


def test_switched_off_it_stays_on_glibc(monkeypatch) -> None:
    calls = _as_cli(monkeypatch, LIB)
    monkeypatch.setenv("BRAINEDGE_TCMALLOC", "0")
    allocator.use_tcmalloc()
    assert calls == []


def test_inside_another_program_it_never_execs(monkeypatch) -> None:
    calls = _as_cli(monkeypatch, LIB)
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/pytest"])
    allocator.use_tcmalloc()
    assert calls == []


@pytest.mark.skipif(allocator.find_tcmalloc() is None,
                    reason=f"no tcmalloc on this machine ({allocator.INSTALL_HINT})")
def test_brainedge_train_runs_on_tcmalloc_where_it_is_installed() -> None:
    # --epochs 0 is refused by the config, before TensorFlow loads: the exec has happened.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "BRAINEDGE_TCMALLOC")}
    done = subprocess.run([sys.executable, "-m", "cli", "train", "--epochs", "0"],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "memory allocator: tcmalloc" in done.stderr, done.stderr[-2000:]
    assert "epochs" in done.stderr + done.stdout
