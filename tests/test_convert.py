"""TFLite and ONNX conversion on a tiny random model: structure of each artifact, agreement with
Keras in its own runtime, and the calibration set both int8 paths share."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest

from brainedge.errors import CalibrationError, ConfigError, ConversionError
from optimize.calibration import CalibrationSet, stratified_indices
from optimize.config import QuantApproach
from runtime.preprocess import PreprocessSpec, scale
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.tf

SIZE = 16
CLASSES = 4


def tiny_model(batch_size: int | None = None, qat_friendly: bool = False, filters: int = 8):
    """16x16x3 -> Conv -> BatchNorm -> Conv -> GAP -> Dense(4, softmax), random weights.

    ``qat_friendly`` moves the ReLU after the BatchNorm: TFMOT folds Conv+BN(+ReLU) but refuses a
    BatchNorm that follows an activation.
    """
    from brainedge.tf_compat import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), batch_size=batch_size, name="image")
    x = keras.layers.Conv2D(filters, 3, activation=None if qat_friendly else "relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    if qat_friendly:
        x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(filters, 3)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="tiny")


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, SIZE, SIZE, 3)).astype(np.float32)


def run_tflite(data: bytes, x: np.ndarray) -> np.ndarray:
    """Float probabilities from a TFLite model of any precision, with the batch resized to x."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    if np.issubdtype(inp["dtype"], np.integer):
        s, z = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / s + z), info.min, info.max).astype(inp["dtype"])
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"])
    if np.issubdtype(out["dtype"], np.integer):
        s, z = out["quantization"]
        y = (y.astype(np.float32) - z) * s
    return y


def run_onnx(data: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def argmax_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(axis=1) == b.argmax(axis=1)).mean())


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def calibration() -> CalibrationSet:
    return CalibrationSet(images(32, seed=1))


@pytest.fixture(scope="module")
def batch(model) -> tuple[np.ndarray, np.ndarray]:
    """Held-out inputs (not the calibration images) and the Keras reference probabilities."""
    x = images(32, seed=2)
    return x, model.predict_on_batch(x)


@pytest.fixture(scope="module")
def tflite(model, calibration) -> Callable[..., bytes]:
    """Convert once per (approach, int8_io) for the whole module."""
    from optimize.convert import to_tflite

    cache: dict[tuple[QuantApproach, str], bytes] = {}

    def get(approach: QuantApproach, int8_io: str = "int8") -> bytes:
        if (approach, int8_io) not in cache:
            cache[approach, int8_io] = to_tflite(model, approach, calibration, int8_io)
        return cache[approach, int8_io]

    return get


@pytest.fixture(scope="module")
def onnx_fp32(model) -> bytes:
    from optimize.convert import to_onnx

    return to_onnx(model)


# ----------------------------------------------------------------------------------- TFLite


def test_fp32_tflite_matches_keras_within_1e_5(tflite, batch) -> None:
    x, reference = batch
    np.testing.assert_allclose(run_tflite(tflite(QuantApproach.FP32), x), reference, atol=1e-5)


@pytest.mark.parametrize("approach", list(QuantApproach))
def test_every_tflite_variant_keeps_a_dynamic_batch(tflite, approach, batch) -> None:
    from ai_edge_litert.interpreter import Interpreter

    data = tflite(approach)
    details = Interpreter(model_content=data).get_input_details()[0]
    assert list(details["shape_signature"]) == [-1, SIZE, SIZE, 3]
    assert run_tflite(data, batch[0][:5]).shape == (5, CLASSES)


def test_fp16_tflite_has_float16_weights_and_matches_within_1e_2(tflite, batch) -> None:
    from optimize.convert import count_tflite_tensor_types

    data = tflite(QuantApproach.FP16)
    assert count_tflite_tensor_types(data).get("float16", 0) > 0
    np.testing.assert_allclose(run_tflite(data, batch[0]), batch[1], atol=1e-2)


def test_dynamic_int8_tflite_has_int8_weights_and_float_io(tflite) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from optimize.convert import count_tflite_tensor_types, to_tflite

    # Dynamic-range quantization leaves weights under 1024 elements in float; the 8-filter
    # model has none that large, so its second conv (3x3x8x8) stays float32.
    small = count_tflite_tensor_types(tflite(QuantApproach.INT8_DYNAMIC))
    assert small.get("int8", 0) == 0
    data = to_tflite(tiny_model(filters=32), QuantApproach.INT8_DYNAMIC)
    assert count_tflite_tensor_types(data).get("int8", 0) > 0
    interpreter = Interpreter(model_content=data)
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32


@pytest.mark.parametrize("int8_io", ["int8", "uint8"])
def test_full_integer_tflite_has_integer_io_with_quantization_params_and_agrees_on_argmax(
    tflite, batch, int8_io
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    data = tflite(QuantApproach.INT8, int8_io)
    interpreter = Interpreter(model_content=data)
    for details in (interpreter.get_input_details()[0], interpreter.get_output_details()[0]):
        assert details["dtype"] == np.dtype(int8_io)
        scale_, _zero_point = details["quantization"]
        assert scale_ > 0
    assert argmax_agreement(run_tflite(data, batch[0]), batch[1]) >= 0.9


def test_int8_without_calibration_raises_calibration_error(model) -> None:
    from optimize.convert import to_tflite

    with pytest.raises(CalibrationError, match="calibration"):
        to_tflite(model, QuantApproach.INT8, calibration=None)


def test_unknown_approach_or_io_type_is_a_config_error(model, calibration) -> None:
    from optimize.convert import to_tflite

    with pytest.raises(ConfigError, match="int4"):
        to_tflite(model, "int4")
    with pytest.raises(ConfigError, match="int8_io"):
        to_tflite(model, QuantApproach.INT8, calibration, int8_io="int16")


def test_fixed_batch_keras_input_still_gives_a_dynamic_batch(batch) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from optimize.convert import to_tflite

    data = to_tflite(tiny_model(batch_size=1), QuantApproach.FP32)
    details = Interpreter(model_content=data).get_input_details()[0]
    assert list(details["shape_signature"]) == [-1, SIZE, SIZE, 3]
    assert run_tflite(data, batch[0][:5]).shape == (5, CLASSES)


def test_qat_model_converts_to_full_integer_int8(calibration, batch) -> None:
    import tensorflow_model_optimization as tfmot
    from ai_edge_litert.interpreter import Interpreter

    from optimize.convert import to_tflite

    qat = tfmot.quantization.keras.quantize_model(tiny_model(qat_friendly=True))
    # One training step sets the fake-quant ranges, as QAT fine-tuning would.
    qat.compile("adam", "categorical_crossentropy")
    x = calibration.images
    qat.fit(x, np.eye(CLASSES)[np.arange(len(x)) % CLASSES], batch_size=len(x), verbose=0)
    data = to_tflite(qat, QuantApproach.INT8, calibration)
    details = Interpreter(model_content=data).get_input_details()[0]
    assert details["dtype"] == np.int8
    assert list(details["shape_signature"]) == [-1, SIZE, SIZE, 3]
    assert argmax_agreement(run_tflite(data, batch[0]), qat.predict_on_batch(batch[0])) >= 0.9


def test_tflite_converter_failure_becomes_conversion_error(model, monkeypatch) -> None:
    from tensorflow.lite.python import lite

    from optimize.convert import to_tflite

    def broken(self):
        raise RuntimeError("unsupported op: Frobnicate")

    # from_concrete_functions returns this subclass, which overrides convert().
    monkeypatch.setattr(lite.TFLiteFrozenGraphConverterV2, "convert", broken)
    with pytest.raises(ConversionError, match=r"TFLite fp16 of tiny failed.*Frobnicate"):
        to_tflite(model, QuantApproach.FP16)


# ------------------------------------------------------------------------------------- ONNX


def test_onnx_fp32_has_dynamic_batch_and_matches_keras_within_1e_5(onnx_fp32, batch) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_fp32, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "image"
    assert not isinstance(inp.shape[0], int)  # symbolic: any batch size
    assert inp.shape[1:] == [SIZE, SIZE, 3]
    np.testing.assert_allclose(run_onnx(onnx_fp32, batch[0][:5]), batch[1][:5], atol=1e-5)


def test_onnx_fp16_has_float16_initializers_float32_io_and_runs(onnx_fp32, batch) -> None:
    import onnx

    from optimize.convert import onnx_to_fp16

    data = onnx_to_fp16(onnx_fp32)
    graph = onnx.load_from_string(data).graph
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    initializer_types = {i.data_type for i in graph.initializer} & float_types
    assert initializer_types == {onnx.TensorProto.FLOAT16}
    for value in (*graph.input, *graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    probs = run_onnx(data, batch[0][:5])
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, batch[1][:5], atol=1e-2)


@pytest.mark.parametrize("per_channel", [True, False])
def test_onnx_int8_has_qdq_nodes_and_agrees_on_argmax(
    onnx_fp32, calibration, batch, per_channel, caplog
) -> None:
    from optimize.convert import count_onnx_ops, onnx_to_int8

    with caplog.at_level(logging.WARNING):
        data = onnx_to_int8(onnx_fp32, calibration, per_channel=per_channel)
    # Pre-processing ran, and no BatchNorm fell back from per-channel with a warning.
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    ops = count_onnx_ops(data)
    assert ops.get("QuantizeLinear", 0) > 0
    assert ops.get("DequantizeLinear", 0) > 0
    assert count_onnx_ops(onnx_fp32).get("QuantizeLinear", 0) == 0
    assert argmax_agreement(run_onnx(data, batch[0]), batch[1]) >= 0.9


def test_onnx_int8_weights_keep_to_7_bits_so_avx2_cannot_saturate(onnx_fp32, calibration) -> None:
    import onnx
    from onnx import numpy_helper

    from optimize.convert import onnx_to_int8

    graph = onnx.load_from_string(onnx_to_int8(onnx_fp32, calibration)).graph
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    weights = [initializers[node.input[0]] for node in graph.node
               if node.op_type == "DequantizeLinear" and node.input[0] in initializers
               and initializers[node.input[0]].dtype == np.int8]
    assert weights, "no int8 weight feeds a DequantizeLinear"
    # Full 8 bits reach -127/127; reduce_range keeps every weight within [-64, 63].
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64


def test_onnx_int8_warns_and_still_quantizes_when_pre_processing_fails(
    onnx_fp32, calibration, monkeypatch, caplog
) -> None:
    import onnxruntime.quantization.shape_inference as shape_inference

    from optimize.convert import count_onnx_ops, onnx_to_int8

    def broken(*args, **kwargs):
        raise RuntimeError("shape inference exploded")

    monkeypatch.setattr(shape_inference, "quant_pre_process", broken)
    with caplog.at_level(logging.WARNING, logger="optimize.convert"):
        data = onnx_to_int8(onnx_fp32, calibration)
    assert "shape inference exploded" in caplog.text
    assert count_onnx_ops(data).get("QuantizeLinear", 0) > 0


def test_onnx_converter_failure_becomes_conversion_error(model, monkeypatch) -> None:
    import tf2onnx

    from optimize.convert import to_onnx

    def broken(*args, **kwargs):
        raise ValueError("opset too old")

    monkeypatch.setattr(tf2onnx.convert, "from_keras", broken)
    with pytest.raises(ConversionError, match=r"ONNX fp32 \(opset 17\) of tiny.*opset too old"):
        to_onnx(model)


def test_corrupt_onnx_bytes_give_conversion_error(calibration) -> None:
    from optimize.convert import onnx_to_fp16, onnx_to_int8

    with pytest.raises(ConversionError, match="ONNX fp16"):
        onnx_to_fp16(b"not a model")
    with pytest.raises(ConversionError, match="ONNX int8"):
        onnx_to_int8(b"not a model", calibration)


# ------------------------------------------------------------------------------ calibration


def test_importing_the_converters_loads_no_ml_framework() -> None:
    code = ("import sys, optimize.convert, optimize.calibration; "
            "print([m for m in ('tensorflow', 'onnxruntime', 'onnx', 'tf2onnx', 'ai_edge_litert')"
            " if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=PROJECT_ROOT)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("count", [0, 3])
def test_calibration_set_rejects_empty_or_too_small_sets(count) -> None:
    expected = rf"got {count} image.*at least 10.*calibration-size"
    with pytest.raises(CalibrationError, match=expected):
        CalibrationSet(images(count, seed=0))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((12, SIZE, SIZE), np.float32), "N, H, W, 3"),
        (np.zeros((12, SIZE, SIZE, 3), np.float64), "float32"),
        (np.full((12, SIZE, SIZE, 3), np.nan, np.float32), "NaN"),
    ],
)
def test_calibration_set_rejects_wrong_rank_dtype_or_non_finite(bad, message) -> None:
    with pytest.raises(CalibrationError, match=message):
        CalibrationSet(bad)


def test_representative_dataset_yields_each_image_once_per_call(calibration) -> None:
    generate = calibration.representative_dataset()
    for _ in range(2):  # the converter may iterate it more than once
        steps = list(generate())
        assert len(steps) == len(calibration)
        for step in steps:
            assert len(step) == 1
            assert step[0].shape == (1, SIZE, SIZE, 3)
            assert step[0].dtype == np.float32


def test_ort_reader_yields_n_feeds_then_none_and_rewinds(calibration) -> None:
    from onnxruntime.quantization import CalibrationDataReader

    reader = calibration.ort_reader("image")
    assert isinstance(reader, CalibrationDataReader)
    feeds = [reader.get_next() for _ in range(len(calibration))]
    assert all(set(f) == {"image"} and f["image"].shape == (1, SIZE, SIZE, 3) for f in feeds)
    np.testing.assert_array_equal(feeds[-1]["image"][0], calibration.images[-1])
    assert reader.get_next() is None
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["image"], feeds[0]["image"])


def test_ort_reader_takes_the_input_name_from_the_model(onnx_fp32, calibration) -> None:
    assert calibration.ort_reader_for(onnx_fp32).input_name == "image"
    with pytest.raises(CalibrationError, match="shape"):
        CalibrationSet(np.zeros((10, 8, 8, 3), np.float32)).ort_reader_for(onnx_fp32)


def _prepared_set(counts: list[int]):
    from training.pipeline import PreparedSet

    labels = np.repeat(np.arange(len(counts)), counts)
    pixels = np.random.default_rng(0).integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    return PreparedSet(pixels, labels, tuple(f"{i}.png" for i in range(len(labels))), ())


def test_from_prepared_is_a_seeded_stratified_scaled_sample() -> None:
    prepared = _prepared_set([40, 20, 30, 10])
    spec = PreprocessSpec(image_size=32, scaling="torch")
    first = CalibrationSet.from_prepared(prepared, spec, size=20, seed=3)
    again = CalibrationSet.from_prepared(prepared, spec, size=20, seed=3)
    np.testing.assert_array_equal(first.images, again.images)
    idx = stratified_indices(prepared.labels, 20, seed=3)
    assert np.bincount(prepared.labels[idx]).tolist() == [8, 4, 6, 2]
    np.testing.assert_allclose(first.images, scale(prepared.images[idx], spec))
    other = stratified_indices(prepared.labels, 20, seed=4)
    assert not np.array_equal(idx, other)


def test_from_prepared_takes_everything_when_asked_for_more_and_checks_the_minimum() -> None:
    spec = PreprocessSpec(image_size=32, scaling="caffe")
    assert len(CalibrationSet.from_prepared(_prepared_set([5, 7]), spec, 200, seed=0)) == 12
    with pytest.raises(CalibrationError, match="got 4 image"):
        CalibrationSet.from_prepared(_prepared_set([2, 2]), spec, 200, seed=0)
