"""Run an ``.onnx`` artifact with ONNX Runtime (CPU by default; any installed provider)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainedge.errors import ModelLoadError, UnknownBackendError, requires
from runtime.base import (
    Predictor,
    TensorSpec,
    assign_outputs,
    check_io_spec,
    check_model_file,
    check_num_threads,
)

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)

# ONNX element types as ORT reports them -> NumPy dtype names. Models with integer I/O carry no
# scale in their type, so check_io_spec refuses them; optimize keeps float I/O (QDQ).
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
}


def _spec(node: Any, path: Path) -> TensorSpec:
    # Dynamic dimensions come back as None or as a symbolic name such as "unk__12".
    shape = tuple(d if isinstance(d, int) else None for d in node.shape)
    spec = TensorSpec(name=node.name, shape=shape, dtype=_DTYPES.get(node.type, node.type))
    return check_io_spec(spec, path)


class OnnxPredictor(Predictor):
    """An ``.onnx`` model. ``InferenceSession.run`` is thread-safe, so no lock is needed.

    A float16 model exported without keeping float32 I/O gets its input cast to float16 and its
    output back to float32 (by ``Predictor.predict``, following ``input_spec.dtype``).
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        num_threads: int | None = None,
        providers: Sequence[str] | None = None,
        content: bytes | None = None,
    ) -> None:
        """``content``: the verified model bytes of a compressed artifact; ``path`` then
        only names it in messages."""
        ort = requires("onnxruntime", "edge")
        self.version = ort.__version__
        self.path = check_model_file(path)  # the file on disk, compressed or not
        self.num_threads = check_num_threads(num_threads)
        self.providers = tuple(providers or DEFAULT_PROVIDERS)
        # ORT only warns about a provider it does not have and falls back to CPU, which would
        # silently benchmark the wrong device.
        available = ort.get_available_providers()
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise UnknownBackendError(
                f"ONNX Runtime {self.version} here has no {', '.join(missing)}; choose from: "
                f"{', '.join(available)} (GPU providers need: pip install 'brainedge[gpu]')"
            )
        options = ort.SessionOptions()
        if self.num_threads is not None:
            options.intra_op_num_threads = self.num_threads
        try:
            self._session = ort.InferenceSession(
                str(self.path) if content is None else content, sess_options=options,
                providers=list(self.providers)
            )
        # ORT's own exception types (InvalidProtobuf, Fail, ...) derive from Exception only.
        except Exception as exc:
            raise ModelLoadError(
                f"{self.path}: ONNX Runtime cannot load it as an ONNX model ({exc}); the file "
                "may be truncated or not an .onnx file, re-create it with brainedge optimize"
            ) from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"{self.path}: expected a classifier with one input, found "
                                 f"{len(inputs)}")
        self.input_spec = _spec(inputs[0], self.path)
        specs = [_spec(node, self.path) for node in outputs]
        probs, feats = assign_outputs(specs, self.path)
        self.output_spec = specs[probs]
        self.feature_spec = None if feats is None else specs[feats]
        self._output_names = [s.name for s in (self.output_spec, self.feature_spec) if s]

    def _run(self, batch: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        outputs = self._session.run(self._output_names, {self.input_spec.name: batch})
        return outputs[0] if len(outputs) == 1 else (outputs[0], outputs[1])
