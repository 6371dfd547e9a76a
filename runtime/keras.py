"""Run the float32 Keras model of a training run: the server-side baseline, never on the edge.

Only formats that cannot execute code on load are accepted: a ``.keras`` file, read with
``safe_mode=True`` (which refuses serialized Python lambdas), or a SavedModel folder (graphs,
no Python). HDF5 and pickle files are refused: an HDF5 Lambda layer carries marshalled Python
bytecode that loading would run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from brainedge.errors import ConfigError, ModelLoadError, requires
from runtime.base import Predictor, TensorSpec, check_io_spec, check_num_threads

UNSAFE_SUFFIXES = frozenset({".h5", ".hdf5", ".pkl", ".pickle", ".joblib", ".pt", ".pth"})


def check_safe_format(path: Path) -> None:
    if path.suffix.lower() in UNSAFE_SUFFIXES:
        raise ModelLoadError(
            f"{path}: {path.suffix} files can execute code when loaded and are refused; use the "
            "run's model.keras or saved_model/, or a .tflite/.onnx artifact"
        )


class KerasPredictor(Predictor):
    """A run's ``model.keras`` (or ``saved_model/``) through TensorFlow, traced once.

    TensorFlow fixes its thread pools when it starts, so ``num_threads`` can only be set in a
    process that has not run TensorFlow yet; the benchmark starts one process per setting.
    """

    name = "keras"

    def __init__(self, path: str | Path, num_threads: int | None = None) -> None:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        tf = requires("tensorflow", "train")
        self.version = tf.__version__
        self.path = Path(path)
        self.num_threads = check_num_threads(num_threads)
        check_safe_format(self.path)
        if self.num_threads is not None:
            _set_tf_threads(tf, self.num_threads)
        self._model = self._load(tf)
        inputs, outputs = self._model.inputs, self._model.outputs
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(f"{self.path}: expected a classifier with one input and one "
                                 f"output, found {len(inputs)} and {len(outputs)}")
        self.input_spec = _spec(inputs[0], self.path)
        self.output_spec = _spec(outputs[0], self.path)
        # The features are the classification layer's input (after dropout, which is the
        # identity at inference): the same tensor optimize exports as the second output.
        features = head_input(self._model)
        both = type(self._model)(self._model.inputs, [self._model.output, features])
        self.feature_spec = _spec(features, self.path)
        signature = tf.TensorSpec((None, *self.input_spec.shape[1:]), tf.float32)
        self._call = tf.function(lambda x: tuple(both(x, training=False)),
                                 input_signature=[signature])

    @property
    def model(self) -> Any:
        """The loaded tf_keras model, for tools that need more than its predictions (e.g.
        ``runtime.gradcam.GradCam``); read-only use, it is the one ``predict`` runs."""
        return self._model

    def _load(self, tf: Any) -> Any:
        from brainedge.tf_compat import keras

        is_saved_model = self.path.is_dir() and (self.path / "saved_model.pb").is_file()
        if not (is_saved_model or (self.path.is_file() and self.path.suffix == ".keras")):
            raise ModelLoadError(f"{self.path}: not a .keras file or a SavedModel folder")
        try:
            if is_saved_model:
                return keras.models.load_model(str(self.path), compile=False)
            return keras.models.load_model(str(self.path), compile=False, safe_mode=True)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelLoadError(f"{self.path}: Keras cannot load it ({exc}); the file may be "
                                 "truncated, re-create it with brainedge train") from exc

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, feats = self._call(batch)
        return probs.numpy(), feats.numpy()


def head_layer(model: Any) -> Any:
    """The layer that produces ``model``'s output (the classification layer)."""
    return model.output._keras_history.layer


def head_input(model: Any) -> Any:
    """The classification layer's input *in this model's graph*: the penultimate features.

    ``layer.input`` would name the first graph the layer was ever called in, and pruning,
    clustering and QAT rebuild the network around the same layer objects: the tensor must come
    from the node that made this model's output.
    """
    layer, node_index, _ = model.output._keras_history
    inputs = layer._inbound_nodes[node_index].input_tensors
    return inputs[0] if isinstance(inputs, list | tuple) else inputs


def _spec(tensor: Any, path: Path) -> TensorSpec:
    shape = tuple(None if d is None else int(d) for d in tensor.shape)
    return check_io_spec(TensorSpec(name=tensor.name, shape=shape,
                                    dtype=tensor.dtype.name), path)


def _set_tf_threads(tf: Any, num_threads: int) -> None:
    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(num_threads)
        threading.set_inter_op_parallelism_threads(1)
    except RuntimeError as exc:
        current = threading.get_intra_op_parallelism_threads()
        if current != num_threads:
            raise ConfigError(
                f"TensorFlow already runs with {current or 'all'} threads in this process and "
                f"cannot switch to {num_threads}; start a new process for that setting"
            ) from exc
