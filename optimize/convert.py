"""Keras model -> TFLite and ONNX artifacts in each post-training precision, as bytes.

Every artifact keeps a dynamic batch dimension (the benchmarks run batches, the web app runs
one image). TensorFlow, tf2onnx, onnx, onnxruntime and LiteRT are imported inside the functions,
so importing this module stays cheap. Failures become ``ConversionError`` (naming the variant and
the cause) or ``CalibrationError``; the caller decides whether one failed variant stops the run.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brainedge.errors import (
    BrainEdgeError,
    CalibrationError,
    ConfigError,
    ConversionError,
    requires,
)
from optimize.calibration import CalibrationSet
from optimize.config import QuantApproach

if TYPE_CHECKING:
    from brainedge.tf_compat import keras

log = logging.getLogger(__name__)

INT8_IO_TYPES = ("int8", "uint8")
DEFAULT_INPUT_NAME = "image"


# ---------------------------------------------------------------------------------- TFLite


def to_tflite(
    model: keras.Model,
    approach: QuantApproach | str,
    calibration: CalibrationSet | None = None,
    int8_io: str = "int8",
) -> bytes:
    """Convert ``model`` to a TFLite flatbuffer with a dynamic batch dimension.

    ``QuantApproach.INT8`` is full integer (int8 or uint8 input and output, per ``int8_io``) and
    needs ``calibration``; the other approaches ignore it. Models from
    ``tfmot.quantization.keras.quantize_model`` (QAT) convert with ``INT8`` too, and still need
    ``calibration``: TensorFlow refuses full-integer conversion without a representative dataset.
    """
    approach = _approach(approach)
    if approach is QuantApproach.INT8 and calibration is None:
        raise CalibrationError("full-integer int8 TFLite needs a calibration set; pass "
                               "calibration=CalibrationSet(...) or choose int8-dynamic")
    if int8_io not in INT8_IO_TYPES:
        raise ConfigError(f"int8_io must be one of {INT8_IO_TYPES}, got {int8_io!r}")
    with _converting(f"TFLite {approach.value}", model):
        return _tflite_convert(_concrete_function_converter(model), approach, calibration,
                               int8_io)


def _tflite_convert(
    converter: Any, approach: QuantApproach, calibration: CalibrationSet | None, int8_io: str
) -> bytes:
    from brainedge.tf_compat import tf

    if approach is not QuantApproach.FP32:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if approach is QuantApproach.FP16:
        converter.target_spec.supported_types = [tf.float16]
    if approach is QuantApproach.INT8:
        assert calibration is not None  # checked by to_tflite
        converter.representative_dataset = calibration.representative_dataset()
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_type = tf.int8 if int8_io == "int8" else tf.uint8
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    with warnings.catch_warnings():
        # Emitted by every full-integer conversion, plain or QAT: a legacy check asks for input
        # mean/std, which the representative dataset (or QAT's trained ranges) already supply.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected",
                                category=UserWarning)
        return converter.convert()


def _concrete_function_converter(model: keras.Model) -> Any:
    """Trace the model with a ``None`` batch, holding only its variables.

    The traced signature keeps the batch dynamic even when the Keras input fixes it, and
    ``from_keras_model`` would first serialize every layer as a SavedModel, which takes minutes
    for DenseNet121 (and longer for its QAT model) against seconds for this.
    """
    from brainedge.tf_compat import tf

    holder = tf.Module()
    holder.variables_to_freeze = list(model.variables)
    function = tf.function(lambda images: model(images, training=False))
    concrete = function.get_concrete_function(input_signature(model))
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)


def _litert_interpreter(tflite_bytes: bytes) -> Any:
    litert = requires("ai_edge_litert.interpreter", "edge")
    return litert.Interpreter(model_content=tflite_bytes)


# ------------------------------------------------------------------------------------ ONNX


def to_onnx(model: keras.Model, opset: int = 17) -> bytes:
    """Convert ``model`` to a serialized ONNX ModelProto (float32, dynamic batch, fixed opset)."""
    with _converting(f"ONNX fp32 (opset {opset})", model):
        from brainedge.tf_compat import tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

        tf2onnx = requires("tf2onnx", "train")
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=[input_signature(model)],
                                              opset=opset)
        return proto.SerializeToString()


def onnx_to_fp16(onnx_bytes: bytes) -> bytes:
    """Float16 weights and compute inside, float32 input and output for the callers."""
    with _converting("ONNX fp16"):
        onnx = requires("onnx", "train")
        float16 = requires("onnxruntime.transformers.float16", "edge")
        model = float16.convert_float_to_float16(onnx.load_from_string(onnx_bytes),
                                                 keep_io_types=True)
        return model.SerializeToString()


def onnx_to_int8(onnx_bytes: bytes, calibration: CalibrationSet, per_channel: bool = True) -> bytes:
    """Static int8 quantization (QDQ, int8 activations, 7-bit int8 weights, MinMax calibration)."""
    quant = requires("onnxruntime.quantization", "edge")
    with _converting("ONNX int8"), tempfile.TemporaryDirectory(prefix="brainedge-int8-") as tmp:
        source = Path(tmp) / "model.onnx"
        source.write_bytes(onnx_bytes)
        prepared = _quant_pre_process(source, Path(tmp) / "prepared.onnx")
        output = Path(tmp) / "int8.onnx"
        quant.quantize_static(
            str(prepared),
            str(output),
            calibration.ort_reader_for(prepared),
            quant_format=quant.QuantFormat.QDQ,
            activation_type=quant.QuantType.QInt8,
            weight_type=quant.QuantType.QInt8,
            per_channel=per_channel,
            # 7-bit weights. On x86 without VNNI (AVX2, AVX-512 before VNNI: many hospital
            # servers) onnxruntime multiplies u8 by s8 with VPMADDUBSW, whose int16 sums saturate
            # with full 8-bit weights (onnxruntime's quantization guide). On this project's
            # short DenseNet test model that cost 10 points of validation accuracy on an AVX2
            # EPYC, and 0 with 7 bits; VNNI and ARM machines lose nothing measurable, and the
            # artifact answers the same on all of them.
            reduce_range=True,
            # MinMax keeps only per-tensor minima and maxima per image, so memory stays small.
            # Do not set CalibMaxIntermediateOutputs: onnxruntime 1.31 drops the collected
            # ranges at each chunk instead of merging them (the fix of PR #20226 is not in it).
            calibrate_method=quant.CalibrationMethod.MinMax,
            # A BatchNormalization that cannot fold into a Conv (DenseNet's pre-activation BNs,
            # 62 of them) has rank-1 weights: their channel axis is 0, not the Conv default 1.
            extra_options={"QDQOpTypePerChannelSupportToAxis": {"BatchNormalization": 0}},
        )
        return output.read_bytes()


def _quant_pre_process(source: Path, target: Path) -> Path:
    """Shape inference and BatchNorm folding before quantizing; the unprocessed model if it fails.

    Quantizing the unprocessed model still works, only with more (de)quantize pairs, so a
    failure here is a warning rather than an error.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        # Symbolic shape inference (which needs sympy) is for transformers' symbolic dims; these
        # CNNs have static H and W, and ONNX shape inference covers them.
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    except Exception as exc:
        log.warning("ONNX quantization pre-processing failed (%s: %s); quantizing the model "
                    "as converted, which may leave extra QuantizeLinear/DequantizeLinear pairs",
                    type(exc).__name__, exc)
        return source
    return target


# --------------------------------------------------------------------- shared and inspection


def with_features(model: keras.Model) -> keras.Model:
    """``model`` with a second output: the classification layer's input, the penultimate
    features the out-of-distribution score reads (``runtime.ood_score``). Dropout before it is
    the identity at inference, so these are the features the classifier sees. The runtimes
    tell the outputs apart by width (K probabilities against D features)."""
    from brainedge.tf_compat import keras
    from runtime.keras import head_input

    features = head_input(model)
    width, classes = features.shape[-1], model.output.shape[-1]
    if width == classes:
        raise ConversionError(f"{model.name}: its features ({width}) are as wide as its "
                              f"output ({classes}); the runtimes could not tell them apart")
    return keras.Model(model.inputs, [model.output, features], name=model.name)


def input_signature(model: keras.Model) -> Any:
    """``TensorSpec([None, H, W, 3], float32)`` named like the model's input."""
    from brainedge.tf_compat import tf

    shapes = model.input_shape
    if isinstance(shapes, list) or len(shapes) != 4 or None in shapes[1:]:
        raise ConversionError(f"expected one image input of shape (batch, H, W, C) with fixed "
                              f"H, W, C, got {shapes}")
    return tf.TensorSpec([None, *shapes[1:]], tf.float32, name=_input_name(model))


def _input_name(model: keras.Model) -> str:
    names = getattr(model, "input_names", None) or [DEFAULT_INPUT_NAME]
    return str(names[0]).split(":")[0]


def count_tflite_tensor_types(tflite_bytes: bytes) -> dict[str, int]:
    """Number of tensors per dtype name (weights and activations), e.g. ``{"int8": 12, ...}``."""
    details = _litert_interpreter(tflite_bytes).get_tensor_details()
    return dict(Counter(np.dtype(d["dtype"]).name for d in details))


def count_onnx_ops(onnx_bytes: bytes) -> dict[str, int]:
    """Number of nodes per op type in the main graph, e.g. ``{"QuantizeLinear": 8, ...}``."""
    onnx = requires("onnx", "train")
    return dict(Counter(node.op_type for node in onnx.load_from_string(onnx_bytes).graph.node))


def _approach(approach: QuantApproach | str) -> QuantApproach:
    try:
        return QuantApproach(approach)
    except ValueError:
        raise ConfigError(f"unknown quantization approach {approach!r}; choose from: "
                          + ", ".join(a.value for a in QuantApproach)) from None


@contextmanager
def _converting(what: str, model: keras.Model | None = None) -> Iterator[None]:
    """Log the time a conversion took; turn any foreign exception into ConversionError."""
    subject = f"{what} of {model.name}" if model is not None else what
    start = time.monotonic()
    try:
        yield
    except BrainEdgeError:
        raise
    except Exception as exc:
        raise ConversionError(f"{subject} failed: {_cause(exc)}") from exc
    log.info("%s took %.1f s", subject, time.monotonic() - start)


def _cause(exc: BaseException, limit: int = 400) -> str:
    # Converter errors can carry whole MLIR dumps; the chained exception keeps all of it.
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= limit else text[:limit] + " … (see the chained exception)"


__all__ = [
    "count_onnx_ops",
    "count_tflite_tensor_types",
    "input_signature",
    "onnx_to_fp16",
    "onnx_to_int8",
    "to_onnx",
    "to_tflite",
    "with_features",
]
