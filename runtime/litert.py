"""Run a ``.tflite`` artifact with the LiteRT interpreter (``ai_edge_litert``, or the older
``tflite_runtime`` on devices that only have that); never through TensorFlow."""

from __future__ import annotations

import functools
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainedge.errors import ConfigError, MissingDependencyError, ModelLoadError
from runtime.base import (
    Predictor,
    TensorSpec,
    assign_outputs,
    check_io_spec,
    check_model_file,
    check_num_threads,
)


@functools.cache
def _interpreter_class() -> tuple[type, str, str]:
    """(Interpreter class, library name, library version) of the first LiteRT found."""
    try:
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert", ai_edge_litert.__version__
    except ImportError:
        pass
    try:
        import tflite_runtime
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime", tflite_runtime.__version__
    except ImportError:
        pass
    # Last resort on a training server that has TensorFlow but not the edge extra: the same
    # interpreter, bundled (and deprecated) in TensorFlow. Never reached on an edge install.
    try:
        import tensorflow as tf

        return tf.lite.Interpreter, "tensorflow-lite", tf.__version__
    except ImportError as exc:
        raise MissingDependencyError(
            "running .tflite models needs ai-edge-litert (or tflite-runtime, or TensorFlow's "
            "tf.lite); install it with: pip install 'brainedge[edge]'"
        ) from exc


def _spec(detail: dict[str, Any], path: Path) -> TensorSpec:
    scales = detail["quantization_parameters"]["scales"]
    zero_points = detail["quantization_parameters"]["zero_points"]
    if len(scales) > 1:
        raise ModelLoadError(f"{path}: tensor {detail['name']!r} is quantized per channel; "
                             "only per-tensor input/output quantization is supported")
    scale = float(scales[0]) if len(scales) else None
    zero_point = int(zero_points[0]) if len(scales) else None
    spec = TensorSpec(
        name=detail["name"],
        shape=tuple(None if d < 0 else int(d) for d in detail["shape_signature"]),
        dtype=np.dtype(detail["dtype"]).name,
        scale=scale,
        zero_point=zero_point,
    )
    return check_io_spec(spec, path)


class LiteRTPredictor(Predictor):
    """A ``.tflite`` model; any batch size, however the model's batch dimension was exported.

    One interpreter owns one set of input/output buffers, so two threads interleaving
    resize / set_tensor / invoke / get_tensor would read each other's results (or resize
    under a running invoke). Each call therefore borrows one interpreter from a pool of
    ``pool_size`` and returns it afterwards; ``pool_size=1`` is a plain lock. Which is faster
    under concurrent callers is measured by ``brainedge bench concurrency``.
    """

    name = "litert"

    def __init__(self, path: str | Path, num_threads: int | None = None,
                 pool_size: int = 1, content: bytes | None = None) -> None:
        """``content``: the verified model bytes of a compressed artifact; ``path`` then
        only names it in messages."""
        interpreter_class, self.library, self.version = _interpreter_class()
        self.path = check_model_file(path)  # the file on disk, compressed or not
        self._content = content
        self.num_threads = check_num_threads(num_threads)
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigError(f"pool_size must be a positive integer, got {pool_size!r}")
        self.pool_size = pool_size
        slots = [self._load(interpreter_class) for _ in range(pool_size)]
        interpreter = slots[0].interpreter
        inputs = interpreter.get_input_details()
        outputs = interpreter.get_output_details()
        if len(inputs) != 1:
            raise ModelLoadError(f"{self.path}: expected a classifier with one input, found "
                                 f"{len(inputs)}")
        self._input_index = inputs[0]["index"]
        self.input_spec = _spec(inputs[0], self.path)
        specs = [_spec(detail, self.path) for detail in outputs]
        probs, feats = assign_outputs(specs, self.path)
        self.output_spec = specs[probs]
        self.feature_spec = None if feats is None else specs[feats]
        self._output_indices = tuple(outputs[i]["index"] for i in (probs, feats)
                                     if i is not None)
        # A batch dimension fixed at export (shape_signature[0] > 0) cannot always be resized:
        # reshapes inside the graph may hard-code it. Such models get fed in chunks of it.
        self._fixed_batch = self.input_spec.shape[0]
        self._pool: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        for slot in slots:
            slot.shape = tuple(int(d) for d in inputs[0]["shape"])
            self._pool.put(slot)

    def _load(self, interpreter_class: type) -> _Slot:
        try:
            source = ({"model_path": str(self.path)} if self._content is None
                      else {"model_content": self._content})
            interpreter = interpreter_class(**source, num_threads=self.num_threads)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(
                f"{self.path}: LiteRT cannot load it as a TFLite model ({exc}); the file may be "
                "truncated or not a .tflite file, re-create it with brainedge optimize"
            ) from exc
        return _Slot(interpreter)

    def _run(self, batch: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        size = self._fixed_batch
        if size is None or len(batch) == size:
            outputs = self._invoke(batch)
        else:
            chunks = []
            for start in range(0, len(batch), size):
                chunk = batch[start:start + size]
                if len(chunk) < size:
                    pad = np.zeros((size - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
                    chunks.append([o[:len(chunk)]
                                   for o in self._invoke(np.concatenate([chunk, pad]))])
                else:
                    chunks.append(self._invoke(chunk))
            outputs = [np.concatenate(parts) for parts in zip(*chunks, strict=True)]
        return outputs[0] if len(outputs) == 1 else (outputs[0], outputs[1])

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        slot = self._pool.get()  # blocks until an interpreter is free
        try:
            interpreter = slot.interpreter
            if batch.shape != slot.shape:
                interpreter.resize_tensor_input(self._input_index, batch.shape)
                interpreter.allocate_tensors()
                slot.shape = batch.shape
            interpreter.set_tensor(self._input_index, np.ascontiguousarray(batch))
            interpreter.invoke()
            # get_tensor copies, so the result outlives the next call's buffers.
            return [interpreter.get_tensor(index) for index in self._output_indices]
        finally:
            self._pool.put(slot)


@dataclass
class _Slot:
    interpreter: Any
    shape: tuple[int, ...] = ()
