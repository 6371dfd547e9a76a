"""A killed training run resumes where it stopped; the mirrored strategy runs on 2 CPU devices.

Both run training in a subprocess: one to be killed with SIGKILL, one to split the CPU into two
logical devices before TensorFlow initialises.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = [pytest.mark.tf, pytest.mark.slow]

EPOCHS = 6


def _env() -> dict[str, str]:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return env


def _train_cmd(data: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "brainedge.cli", "train", "--data", str(data),
            "--model", "vgg16", "--preset", "demo", "--image-size", "48",
            "--epochs", str(EPOCHS), "--batch-size", "4", "--precision", "float32",
            "--early-stopping-patience", "100", "--no-tensorboard", "--run-dir", str(run_dir)]


def _logged_epochs(run_dir: Path) -> list[int]:
    path = run_dir / "training_log.csv"
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh)]


def test_killed_run_resumes_from_its_last_epoch(phantom_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(phantom_data, run_dir), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while len(_logged_epochs(run_dir)) < 2:
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no epoch finished within 300 s"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = _logged_epochs(run_dir)
    assert not (run_dir / "manifest.json").exists(), "the run finished before the kill"
    assert (run_dir / "backup").exists()

    done = subprocess.run(_train_cmd(phantom_data, run_dir), env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _logged_epochs(run_dir)[len(before):]
    # It picks up at the first unfinished epoch (or re-runs the one cut short), not at epoch 0.
    assert after[0] >= len(before) - 1 > 0, (before, after)
    assert after[-1] == EPOCHS - 1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["metrics"]["epochs_run"] == len(before) + len(after)


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
