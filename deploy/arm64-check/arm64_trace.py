"""Record every step of decoding and preprocessing, per image, on whichever CPU runs it.

Run by the same command natively (x86_64) and under QEMU (aarch64). Instead of re-implementing
the pipeline, it wraps what ``runtime.imageio``, ``runtime.dicom`` and ``runtime.preprocess``
call (every ``cv2`` function, every helper they import or define) and records each call's
result, in call order. Comparing two traces then names the first step that differs between
the architectures, and by how much, and follows the pipeline if it changes.

    python arm64_trace.py --inputs DIR --specs specs.json --out trace.npz

``specs.json`` maps a name (the model) to its manifest's ``preprocessing``. The output holds
one array per distinct step result and an index (``__index__``, JSON) of the steps.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import platform
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

TRACED_MODULES = ("runtime.imageio", "runtime.dicom", "runtime.preprocess")
INDEX_KEY = "__index__"
DECODED_STEP = "decoded pixels"


class Recorder:
    """Collects (step name, blob id) pairs; identical results are stored once."""

    def __init__(self) -> None:
        self.blobs: dict[str, np.ndarray] = {}
        self.steps: list[list[str]] = []

    def record(self, name: str, value: Any) -> None:
        array = as_array(value)
        if array is None:
            self.steps.append([name, ""])
            return
        digest = hashlib.sha1(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
        blob = "b" + digest.hexdigest()[:20]
        self.blobs.setdefault(blob, array)
        self.steps.append([name, blob])

    def take(self) -> list[list[str]]:
        steps, self.steps = self.steps, []
        return steps


def as_array(value: Any) -> np.ndarray | None:
    """A step's result as one array: arrays as they are, numbers and nested tuples (contours,
    bounding boxes, ``threshold``'s (value, mask)) flattened; None for anything else."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, bool | int | float | np.number):
        return np.asarray(value)
    if isinstance(value, tuple | list):
        parts = [as_array(v) for v in value]
        if any(p is None for p in parts):
            return None
        if not parts:
            return np.zeros(0)
        flat = [p.ravel() for p in parts]
        dtype = flat[0].dtype if all(f.dtype == flat[0].dtype for f in flat) else np.float64
        # The lengths go first, so that a different split of the same values still differs.
        lengths = np.asarray([f.size for f in flat], dtype=np.float64).astype(dtype)
        return np.concatenate([lengths, *(f.astype(dtype) for f in flat)])
    return None


def _wrap(func: Callable[..., Any], name: str, recorder: Recorder) -> Callable[..., Any]:
    @functools.wraps(func)
    def traced(*args: Any, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)
        recorder.record(name, result)
        return result

    return traced


class TracedModule:
    """Stands in for a module (cv2): its functions are recorded, everything else passes."""

    def __init__(self, module: types.ModuleType, recorder: Recorder) -> None:
        self._module, self._recorder = module, recorder

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._module, name)
        if callable(value) and not isinstance(value, type):
            return _wrap(value, f"{self._module.__name__}.{name}", self._recorder)
        return value  # constants, and classes such as cv2.error that ``except`` needs


@contextlib.contextmanager
def tracing(recorder: Recorder) -> Iterator[None]:
    """Within the block, the functions and cv2 that the traced runtime modules look up at call
    time are wrapped; the originals are put back afterwards."""
    import importlib

    import cv2

    originals: list[tuple[types.ModuleType, str, Any]] = []
    for module_name in TRACED_MODULES:
        module = importlib.import_module(module_name)
        short = module_name.rsplit(".", 1)[-1]
        for name, value in list(vars(module).items()):
            if value is cv2:
                wrapped: Any = TracedModule(cv2, recorder)
            elif isinstance(value, types.FunctionType) and not name.startswith("__"):
                wrapped = _wrap(value, f"{short}.{value.__name__}", recorder)
            else:
                continue
            originals.append((module, name, value))
            setattr(module, name, wrapped)
    try:
        yield
    finally:
        for module, name, value in originals:
            setattr(module, name, value)


def trace_inputs(files: list[Path], specs: dict[str, dict[str, Any]]) -> tuple[dict, dict]:
    """Decode each file and preprocess it with each distinct spec, recording every step."""
    from runtime import imageio, preprocess

    recorder = Recorder()
    spec_keys = {name: spec_key(spec) for name, spec in specs.items()}
    distinct = {spec_keys[name]: preprocess.PreprocessSpec.from_dict(spec)
                for name, spec in specs.items()}
    traces: dict[str, dict[str, list[list[str]]]] = {}
    errors: dict[str, str] = {}
    with tracing(recorder):
        for path in files:
            try:
                # What Classifier.classify_bytes does: decode once, then preprocess the pixels.
                gray = imageio.decode(path.read_bytes(), path.name).pixels
            except Exception as exc:  # reported, never hidden: the comparison then fails
                errors[path.name] = f"{type(exc).__name__}: {exc}"
                recorder.take()
                continue
            recorder.record(DECODED_STEP, gray)
            entry = {"decode": recorder.take()}
            for key, spec in distinct.items():
                preprocess.preprocess(gray, spec)
                entry[f"spec:{key}"] = recorder.take()
            traces[path.name] = entry
    index = {"machine": platform.machine(), "python": platform.python_version(),
             "versions": library_versions(), "code": code_digest(), "spec_keys": spec_keys,
             "files": [p.name for p in files], "traces": traces, "errors": errors}
    return index, recorder.blobs


def spec_key(spec: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def code_digest() -> str:
    """sha256 of the runtime package's sources: both sides must have run the same code."""
    import runtime

    digest = hashlib.sha256()
    for path in sorted(Path(runtime.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    import cv2

    versions = {"numpy": np.__version__, "opencv": cv2.__version__}
    try:
        import pydicom

        versions["pydicom"] = pydicom.__version__
    except ImportError:
        pass
    return versions


def save(out: Path, index: dict, blobs: dict[str, np.ndarray]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial.npz")
    np.savez(tmp, **{INDEX_KEY: np.asarray(json.dumps(index))}, **blobs)
    tmp.replace(out)


def load(path: Path) -> tuple[dict, Any]:
    """The index and a lazy mapping of blob id -> array."""
    data = np.load(path, allow_pickle=False)
    return json.loads(str(data[INDEX_KEY])), data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=Path, required=True, help="folder of input images")
    parser.add_argument("--specs", type=Path, required=True, help="JSON: name -> spec dict")
    parser.add_argument("--out", type=Path, required=True, help="trace file to write (.npz)")
    args = parser.parse_args(argv)
    files = sorted(p for p in args.inputs.iterdir() if p.is_file())
    if not files:
        parser.error(f"{args.inputs} holds no files")
    index, blobs = trace_inputs(files, json.loads(args.specs.read_text()))
    save(args.out, index, blobs)
    print(f"traced {len(files)} files on {index['machine']}: {len(blobs)} distinct results, "
          f"{len(index['errors'])} errors", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
