"""The edge install has no TensorFlow: the runtime, the TF-free training modules and the CLI's
``--help`` must not import it. Checked in a fresh interpreter, where nothing is imported yet."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EDGE_MODULES = (
    "runtime",
    "runtime.preprocess",
    "runtime.imageio",
    "runtime.dicom",
    "runtime.base",
    "runtime.litert",
    "runtime.onnx",
    "runtime.keras",  # the Keras backend imports TensorFlow only when a model is loaded
    "runtime.artifact",
    "runtime.classifier",
    "runtime.predict",
    "runtime.gradcam",  # imports TensorFlow only when a GradCam is built
    "benchmarks.device",
    "benchmarks.harness",
    "benchmarks.sut",
    "benchmarks.worker",
    "benchmarks.sweep",
    "benchmarks.plots",
    "benchmarks.report",
    "cli.bench",
    "optimize.config",
    "training.data",
    "training.phantoms",
    "cli.main",
)
# TF-free too, but their other dependencies (scikit-learn, imagehash) come with brainedge[train].
TRAIN_MODULES_WITHOUT_TF = tuple(
    name for name, needs in (("training.audit", "imagehash"), ("training.metrics", "sklearn"))
    if importlib.util.find_spec(needs) is not None
)

# Records every attempt to import TensorFlow or Keras and makes it fail, as on an edge device,
# so that even an attempt swallowed by ``try/except ImportError`` is caught.
_BLOCKER = textwrap.dedent(
    """
    import importlib.abc
    import sys

    HEAVY = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "tf2onnx")
    attempts = []

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                attempts.append(name)
                raise ImportError(f"{name} is blocked: this is an edge install")
            return None

    sys.meta_path.insert(0, Blocker())

    def check():
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
        assert not attempts and not loaded, f"attempted {attempts}, loaded {loaded}"
    """
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCKER + textwrap.dedent(code)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )


def test_edge_modules_and_cli_help_do_not_import_tensorflow():
    result = _run(
        f"""
        import importlib
        for name in {EDGE_MODULES + TRAIN_MODULES_WITHOUT_TF!r}:
            importlib.import_module(name)
        check()

        from click.testing import CliRunner
        from cli.main import main
        for args in ([], ["train"], ["audit"], ["evaluate"], ["compare"], ["optimize"],
                     ["data", "phantoms"]):
            out = CliRunner().invoke(main, [*args, "--help"])
            assert out.exit_code == 0, (args, out.output)
        check()
        print("edge ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "edge ok" in result.stdout


def test_python_m_cli_help_does_not_import_tensorflow():
    result = _run(
        """
        import atexit
        import runpy
        atexit.register(check)
        sys.argv = ["brainedge", "--help"]
        try:
            runpy.run_module("cli.main", run_name="__main__")
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        check()
        print("cli ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: brainedge" in result.stdout
    assert "cli ok" in result.stdout


def test_pydicom_is_imported_only_when_a_dicom_arrives():
    # pydicom is optional (brainedge[edge]): without it, PNG/JPEG must still decode, and a
    # DICOM must say which extra to install.
    result = _run(
        """
        class NoPydicom(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "pydicom":
                    raise ImportError(f"{name} is blocked: not installed here")
                return None

        sys.meta_path.insert(0, NoPydicom())
        import cv2
        import numpy as np
        from brainedge.errors import MissingDependencyError
        from runtime.imageio import decode_image

        ok, png = cv2.imencode(".png", np.full((16, 16), 7, np.uint8))
        assert decode_image(png.tobytes()).shape == (16, 16)
        try:
            decode_image(bytes(128) + b"DICM" + bytes(64), "scan.dcm")
        except MissingDependencyError as exc:
            assert "brainedge[edge]" in str(exc), exc
        else:
            raise AssertionError("a DICOM was decoded without pydicom")
        assert not [m for m in sys.modules if m.split(".")[0] == "pydicom"]
        check()
        print("no pydicom ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "no pydicom ok" in result.stdout


def test_the_blocker_would_catch_a_tensorflow_import():
    # The check above is only worth something if importing TensorFlow would trip it.
    result = _run(
        """
        try:
            import brainedge.tf_compat  # noqa: F401
        except ImportError:
            pass
        check()
        """
    )
    assert result.returncode != 0
    assert "attempted ['tensorflow']" in result.stderr
