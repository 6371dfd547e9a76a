"""The runtime predictors against the Keras model their artifacts were converted from.

TF-marked tests build a tiny Keras model once per module and convert it to TFLite (float32,
fixed batch 1, int8, uint8) and ONNX. The others need no TensorFlow: they use an ONNX model
written with ``onnx.helper`` (skipped where ``onnx`` is not installed, as on an edge device).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from brainedge.errors import (
    ConfigError,
    MissingDependencyError,
    ModelLoadError,
    ShapeMismatchError,
    UnknownBackendError,
)
from runtime import BACKENDS, get_predictor
from runtime.base import TensorSpec, from_model_dtype, to_model_dtype

ROOT = Path(__file__).resolve().parents[1]
SIZE, CLASSES = 16, 4


def images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # A per-image colour offset survives global pooling, so predictions differ between images.
    noise = rng.normal(size=(n, SIZE, SIZE, 3))
    return (noise + rng.normal(scale=2.0, size=(n, 1, 1, 3))).astype(np.float32)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The Keras model and its artifacts: fp32/int8/uint8 TFLite, fixed-batch TFLite, ONNX."""
    import tf2onnx

    from brainedge.tf_compat import keras, tf

    out = tmp_path_factory.mktemp("artifacts")
    keras.utils.set_random_seed(0)

    def build(batch_size: int | None = None) -> Any:
        inputs = keras.Input((SIZE, SIZE, 3), batch_size=batch_size, name="image")
        x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(x))

    model = build()
    fixed = build(batch_size=1)
    fixed.set_weights(model.get_weights())

    def tflite(name: str, keras_model: Any, integer: Any = None) -> Path:
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
        if integer is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([x[None]] for x in images(64, seed=1))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = integer
            converter.inference_output_type = integer
        path = out / name
        path.write_bytes(converter.convert())
        return path

    paths = {
        "fp32": tflite("fp32.tflite", model),
        "fixed1": tflite("fixed1.tflite", fixed),
        "int8": tflite("int8.tflite", model, tf.int8),
        "uint8": tflite("uint8.tflite", model, tf.uint8),
        "onnx": out / "model.onnx",
    }
    signature = [tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="image")]
    tf2onnx.convert.from_keras(model, input_signature=signature, opset=17,
                               output_path=str(paths["onnx"]))
    return {"keras": lambda x: model(x, training=False).numpy(), **paths}


@pytest.fixture(scope="module")
def helper_onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Mean-pool -> linear -> softmax written with onnx.helper, with float32 and float16 I/O."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    out = tmp_path_factory.mktemp("helper_onnx")
    weights = np.random.default_rng(0).normal(size=(3, CLASSES)).astype(np.float32)
    paths = {}
    for name, elem in (("fp32", TensorProto.FLOAT), ("fp16", TensorProto.FLOAT16)):
        graph = helper.make_graph(
            [
                helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
                helper.make_node("ReduceMean", ["x"], ["pooled"], axes=[1, 2], keepdims=0),
                helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
                helper.make_node("Softmax", ["logits"], ["p"], axis=-1),
                helper.make_node("Cast", ["p"], ["probs"], to=elem),
            ],
            "tiny",
            [helper.make_tensor_value_info("image", elem, ["N", SIZE, SIZE, 3])],
            [helper.make_tensor_value_info("probs", elem, ["N", CLASSES])],
            initializer=[numpy_helper.from_array(weights, "w")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # what opset 17 needs; older than onnx's default, so ORT takes it
        onnx.checker.check_model(model)
        paths[name] = out / f"{name}.onnx"
        onnx.save(model, paths[name])
    return paths


def truncated_copy(path: Path, tmp_path: Path) -> Path:
    cut = tmp_path / f"truncated{path.suffix}"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return cut


# --- against Keras (TensorFlow needed to build the artifacts) ----------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("artifact", ["fp32", "fixed1", "onnx"])
def test_float_artifacts_match_keras_within_1e5_for_batches_of_1_3_7(artifacts, artifact):
    predictor = get_predictor(artifacts[artifact])
    assert predictor.input_spec.dtype == "float32" and not predictor.input_spec.quantized
    assert predictor.input_spec.shape[1:] == (SIZE, SIZE, 3)
    # 3 after 7 checks that shrinking the batch again works, not only growing it.
    for n, seed in ((1, 10), (3, 11), (7, 12), (3, 13)):
        x = images(n, seed)
        probs = predictor.predict(x)
        assert probs.dtype == np.float32 and probs.shape == (n, CLASSES)
        np.testing.assert_allclose(probs, artifacts["keras"](x), atol=1e-5, rtol=0)


@pytest.mark.tf
def test_fixed_batch_tflite_declares_batch_1(artifacts):
    # The chunked path is only exercised if the model really has a fixed batch.
    assert get_predictor(artifacts["fixed1"]).input_spec.shape == (1, SIZE, SIZE, 3)
    assert get_predictor(artifacts["fp32"]).input_spec.shape == (None, SIZE, SIZE, 3)


@pytest.mark.tf
@pytest.mark.parametrize("artifact", ["int8", "uint8"])
def test_integer_tflite_matches_keras_within_loose_tolerance(artifacts, artifact):
    predictor = get_predictor(artifacts[artifact])
    assert predictor.input_spec.dtype == artifact and predictor.input_spec.scale
    assert predictor.output_spec.dtype == artifact and predictor.output_spec.scale
    x = images(200, seed=20)
    probs = np.concatenate([predictor.predict(x[i:i + n]) for i, n in ((0, 1), (1, 3), (4, 196))])
    reference = artifacts["keras"](x)
    assert probs.dtype == np.float32 and probs.shape == reference.shape
    assert np.abs(probs - reference).max() < 0.1
    # Argmax is only meaningful where the float model is not close to a tie.
    top2 = np.sort(reference, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.05
    assert clear.sum() > 100
    agree = probs.argmax(1)[clear] == reference.argmax(1)[clear]
    assert agree.mean() > 0.95


@pytest.mark.tf
@pytest.mark.parametrize("artifact", ["fp32", "int8"])
def test_concurrent_litert_predicts_from_8_threads_equal_sequential(artifacts, artifact):
    predictor = get_predictor(artifacts[artifact])
    # Different batch sizes force resizes that would corrupt a concurrent invoke.
    batches = [images(n, seed) for seed, n in enumerate([1, 3, 7, 2, 5, 8, 1, 4] * 4)]
    sequential = [predictor.predict(b) for b in batches]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(predictor.predict, batches))
    for a, b in zip(sequential, concurrent, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.tf
@pytest.mark.parametrize("artifact", ["fp32", "fixed1", "int8", "onnx"])
@pytest.mark.parametrize(
    ("batch", "received"),
    [
        (np.zeros((2, SIZE, SIZE - 1, 3), np.float32), f"(2, {SIZE}, {SIZE - 1}, 3)"),
        (np.zeros((2, SIZE, SIZE, 1), np.float32), f"(2, {SIZE}, {SIZE}, 1)"),
        (np.zeros((SIZE, SIZE, 3), np.float32), f"({SIZE}, {SIZE}, 3)"),
        (np.zeros((0, SIZE, SIZE, 3), np.float32), f"(0, {SIZE}, {SIZE}, 3)"),
        (np.zeros((2, SIZE, SIZE, 3), np.uint8), "uint8"),
        (np.full((2, SIZE, SIZE, 3), np.nan, np.float32), "NaN/inf"),
    ],
    ids=["width", "channels", "rank", "empty", "uint8", "nan"],
)
def test_bad_batch_raises_shape_mismatch_with_expected_and_received(
    artifacts, artifact, batch, received
):
    predictor = get_predictor(artifacts[artifact])
    with pytest.raises(ShapeMismatchError) as info:
        predictor.predict(batch)
    assert received in str(info.value)
    assert "expected" in str(info.value)


@pytest.mark.tf
@pytest.mark.parametrize("artifact", ["fp32", "onnx"])
def test_truncated_artifact_raises_model_load_error_naming_the_file(
    artifacts, artifact, tmp_path
):
    cut = truncated_copy(artifacts[artifact], tmp_path)
    with pytest.raises(ModelLoadError, match=str(cut)):
        get_predictor(cut)


@pytest.mark.tf
def test_get_predictor_picks_the_backend_by_suffix_unless_told(artifacts, tmp_path):
    from runtime.litert import LiteRTPredictor
    from runtime.onnx import OnnxPredictor

    litert = get_predictor(artifacts["fp32"], num_threads=2)
    assert isinstance(litert, LiteRTPredictor) and litert.name == "litert"
    assert litert.version and litert.num_threads == 2
    onnx = get_predictor(artifacts["onnx"])
    assert isinstance(onnx, OnnxPredictor) and onnx.name == "onnxruntime"
    renamed = tmp_path / "model.bin"
    shutil.copy(artifacts["fp32"], renamed)
    assert isinstance(get_predictor(renamed, backend="litert"), LiteRTPredictor)
    # Told the wrong backend, the runtime refuses the file rather than misreading it.
    with pytest.raises(ModelLoadError, match=str(artifacts["fp32"])):
        get_predictor(artifacts["fp32"], backend="onnxruntime")


@pytest.mark.tf
def test_litert_predicting_does_not_import_tensorflow(artifacts):
    assert_no_tensorflow_after(artifacts["fp32"])


# --- no TensorFlow needed ----------------------------------------------------------------------


def assert_no_tensorflow_after(model: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import runtime, runtime.litert, runtime.onnx

        predictor = runtime.get_predictor({str(model)!r})
        probs = predictor.predict(np.zeros((2, {SIZE}, {SIZE}, 3), np.float32))
        assert probs.shape == (2, {CLASSES}), probs.shape
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("tensorflow", "tf_keras", "keras", "tf2onnx"))
        assert not heavy, heavy
        print("no tensorflow")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "no tensorflow" in result.stdout


def test_onnx_predicting_does_not_import_tensorflow(helper_onnx):
    assert_no_tensorflow_after(helper_onnx["fp32"])


def test_float16_onnx_io_is_cast_to_and_from_float32(helper_onnx):
    fp16, fp32 = get_predictor(helper_onnx["fp16"]), get_predictor(helper_onnx["fp32"])
    assert fp16.input_spec.dtype == fp16.output_spec.dtype == "float16"
    assert fp16.input_spec.shape == (None, SIZE, SIZE, 3)
    x = images(5, seed=30)
    probs = fp16.predict(x)
    assert probs.dtype == np.float32 and probs.shape == (5, CLASSES)
    np.testing.assert_allclose(probs, fp32.predict(x), atol=1e-2)


def test_truncated_onnx_raises_model_load_error_naming_the_file(helper_onnx, tmp_path):
    cut = truncated_copy(helper_onnx["fp32"], tmp_path)
    with pytest.raises(ModelLoadError, match=str(cut)):
        get_predictor(cut)


def test_onnx_refuses_a_provider_it_does_not_have(helper_onnx):
    from runtime.onnx import OnnxPredictor

    with pytest.raises(UnknownBackendError, match="CPUExecutionProvider"):
        OnnxPredictor(helper_onnx["fp32"], providers=["NoSuchExecutionProvider"])


def test_get_predictor_rejects_unknown_backend_listing_the_choices(tmp_path):
    with pytest.raises(UnknownBackendError) as info:
        get_predictor(tmp_path / "model.tflite", backend="tensorflow")
    assert all(name in str(info.value) for name in BACKENDS)


@pytest.mark.parametrize("name", ["model.h5", "model", "missing.tflite"])
def test_get_predictor_raises_model_load_error_for_unknown_suffix_or_missing_file(
    tmp_path, name
):
    with pytest.raises(ModelLoadError, match=name):
        get_predictor(tmp_path / name)


def test_bad_num_threads_is_a_config_error(helper_onnx):
    with pytest.raises(ConfigError, match="num_threads"):
        get_predictor(helper_onnx["fp32"], num_threads=0)


def test_litert_missing_names_the_pip_extra(monkeypatch, tmp_path):
    from runtime import litert

    for module in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime",
                   "tflite_runtime.interpreter", "tensorflow"):
        monkeypatch.setitem(sys.modules, module, None)  # None makes the import fail
    litert._interpreter_class.cache_clear()
    try:
        with pytest.raises(MissingDependencyError, match=r"pip install 'brainedge\[edge\]'"):
            litert.LiteRTPredictor(tmp_path / "model.tflite")
    finally:
        litert._interpreter_class.cache_clear()


@pytest.mark.tf
def test_tensorflow_lite_is_the_last_fallback_and_answers_like_litert(monkeypatch, artifacts):
    from runtime import litert

    path = artifacts["fp32"]
    expected = litert.LiteRTPredictor(path).predict(images(3))
    for module in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime",
                   "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, module, None)
    litert._interpreter_class.cache_clear()
    try:
        # TensorFlow says its interpreter is deprecated; the user sees that warning too.
        with pytest.warns(UserWarning, match="deprecated"):
            predictor = litert.LiteRTPredictor(path)
        assert predictor.library == "tensorflow-lite"
        np.testing.assert_allclose(predictor.predict(images(3)), expected, atol=1e-5)
    finally:
        litert._interpreter_class.cache_clear()


def test_quantization_rounds_clips_and_round_trips():
    spec = TensorSpec("x", (None, 2), "int8", scale=0.5, zero_point=-10)
    q = to_model_dtype(np.array([[0.26, 1000.0], [-1000.0, 0.0]], np.float32), spec)
    assert q.dtype == np.int8
    np.testing.assert_array_equal(q, [[-9, 127], [-128, -10]])
    np.testing.assert_array_equal(from_model_dtype(q, spec), [[0.5, 68.5], [-59.0, 0.0]])
