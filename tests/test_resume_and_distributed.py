"""A killed run resumes where it stopped; mirrored (2 CPU devices) and multi-worker strategies.

Both run training in a subprocess: one to be killed with SIGKILL, one to split the CPU into two
logical devices before TensorFlow initialises.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = [pytest.mark.tf, pytest.mark.slow]

EPOCHS = 4


def _env() -> dict[str, str]:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return env


def _train_cmd(data: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "cli", "train", "--data", str(data),
            "--model", "vgg16", "--preset", "demo", "--image-size", "32",
            "--epochs", str(EPOCHS), "--batch-size", "4", "--precision", "float32",
            "--early-stopping-patience", "100", "--no-tensorboard", "--run-dir", str(run_dir)]


def _logged_epochs(run_dir: Path) -> list[int]:
    path = run_dir / "training_log.csv"
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh)]


def _kill_after_epochs(data: Path, run_dir: Path, epochs: int) -> list[int]:
    proc = subprocess.Popen(_train_cmd(data, run_dir), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while len(_logged_epochs(run_dir)) < epochs:
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, f"{epochs} epoch(s) did not finish in 300 s"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (run_dir / "manifest.json").exists(), "the run finished before the kill"
    assert (run_dir / "backup").exists()
    return _logged_epochs(run_dir)


@pytest.fixture(scope="module")
def killed_run(phantom_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run killed after 2 of its epochs; each test resumes or finishes a copy of it."""
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    _kill_after_epochs(phantom_data, run_dir, 2)
    return run_dir


def _copy_of(killed_run: Path, tmp_path: Path) -> tuple[Path, list[int]]:
    run_dir = shutil.copytree(killed_run, tmp_path / "run")
    return run_dir, _logged_epochs(run_dir)


def test_killed_run_resumes_from_its_last_epoch(phantom_data: Path, killed_run: Path,
                                                tmp_path: Path) -> None:
    run_dir, before = _copy_of(killed_run, tmp_path)

    done = subprocess.run(_train_cmd(phantom_data, run_dir), env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _logged_epochs(run_dir)[len(before):]
    # It picks up at the first unfinished epoch (or re-runs the one cut short), not at epoch 0.
    assert after[0] >= len(before) - 1 > 0, (before, after)
    assert after[-1] == EPOCHS - 1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["metrics"]["epochs_run"] == len(before) + len(after)
    assert manifest["extra"]["finished_early"] is None
    # The progress line counts one epoch's steps, also after the resume (not "912/912").
    steps = {line.split("/")[0].split()[-1] for line in done.stdout.splitlines()
             if " - loss:" in line}
    assert len(steps) == 1, steps


def test_finish_now_ends_an_interrupted_run_at_its_best_epoch(phantom_data: Path,
                                                              killed_run: Path,
                                                              tmp_path: Path) -> None:
    run_dir, before = _copy_of(killed_run, tmp_path)

    done = subprocess.run([*_train_cmd(phantom_data, run_dir), "--finish-now"], env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _logged_epochs(run_dir) == before, "--finish-now trained more epochs"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["extra"]["finished_early"] == {"epochs_run": len(before),
                                                   "epochs_planned": EPOCHS}


MIRRORED_SCRIPT = textwrap.dedent("""
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from training.config import TrainConfig
    from training.train import train
    config = TrainConfig.demo(sys.argv[1], arch="vgg16", image_size=32, epochs=1, batch_size=4,
                              precision="float32", strategy="mirrored", tensorboard=False)
    result = train(config, sys.argv[2])
    print("REPLICAS", result.replicas)
""")


def test_mirrored_strategy_trains_on_two_logical_cpu_devices(
    phantom_data: Path, tmp_path: Path
) -> None:
    done = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(phantom_data),
                           str(tmp_path / "mirrored")], env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "REPLICAS 2" in done.stdout
    manifest = json.loads((tmp_path / "mirrored" / "manifest.json").read_text())
    assert manifest["extra"]["replicas"] == 2
    assert manifest["extra"]["strategy"] == "mirrored"


def _free_ports(n: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_strategy_trains_with_two_processes_on_loopback(
    phantom_data: Path, tmp_path: Path
) -> None:
    from runtime.classifier import load_classifier

    run_dir = tmp_path / "multi"
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    cmd = [sys.executable, "-m", "cli", "train", "--data", str(phantom_data), "--model",
           "vgg16", "--preset", "demo", "--image-size", "32", "--epochs", "2",
           "--batch-size", "4", "--precision", "float32", "--strategy", "multi-worker",
           "--no-tensorboard", "--run-dir", str(run_dir)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        procs.append(subprocess.Popen(cmd, env={**_env(), "TF_CONFIG": json.dumps(tf_config)},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["extra"]["strategy"] == "multi-worker"
    assert manifest["extra"]["replicas"] == 2  # one CPU replica in each of the two processes
    assert manifest["metrics"]["epochs_run"] == 2
    assert not list(run_dir.rglob("workertemp*")), "a worker's scratch files were left behind"
    probs = load_classifier(run_dir).predict_batch(np.zeros((1, 32, 32, 3), np.float32))
    assert probs.shape == (1, 4) and abs(float(probs.sum()) - 1.0) < 1e-4
