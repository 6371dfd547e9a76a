"""Helpers shared by the web app tests (this module holds no tests).

The tiny ONNX classifier is written as protobuf bytes by hand, so the web app tests run on an
edge install that has ONNX Runtime but neither TensorFlow nor the ``onnx`` package;
``test_webapp_config.py`` checks these bytes with ``onnx.checker`` where onnx is installed.
"""

from __future__ import annotations

import re
import struct
from io import BytesIO
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from brainedge.manifest import Manifest, hash_files, write_manifest
from runtime.preprocess import PreprocessSpec

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
SIZE = 32
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-0042"
# Large weights: a confident answer that depends on the slice's mean brightness.
CONFIDENT = np.array([[-30.0, -10.0, 10.0, 30.0]] * 3, np.float32)
# The mirror image: the same slices go to the other end of the class list.
REVERSED = -CONFIDENT
# Small weights: probabilities close to uniform, i.e. an unsure model.
UNSURE = np.full((3, len(CLASSES)), 0.01, np.float32)


# --- a tiny ONNX classifier in raw protobuf (field numbers from onnx/onnx.proto) -------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)  # wire type 0; values here are >= 0


def _len(field: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _value_info(name: str, dims: list[int | str]) -> bytes:
    # ValueInfoProto{name=1, type=2}; TypeProto{tensor_type=1}; Tensor{elem_type=1, shape=2};
    # TensorShapeProto{dim=1}; Dimension{dim_value=1, dim_param=2}; elem_type 1 = FLOAT.
    shape = b"".join(_len(1, _int(1, d) if isinstance(d, int) else _len(2, d)) for d in dims)
    return _len(1, name) + _len(2, _len(1, _int(1, 1) + _len(2, shape)))


def _node(op: str, inputs: list[str], outputs: list[str], attributes: list[bytes]) -> bytes:
    # NodeProto{input=1, output=2, op_type=4, attribute=5}
    return (b"".join(_len(1, i) for i in inputs) + b"".join(_len(2, o) for o in outputs)
            + _len(4, op) + b"".join(_len(5, a) for a in attributes))


def _attr_int(name: str, value: int) -> bytes:
    return _len(1, name) + _int(3, value) + _int(20, 2)  # AttributeProto{name, i, type=INT}


def _attr_ints(name: str, values: list[int]) -> bytes:
    return _len(1, name) + b"".join(_int(8, v) for v in values) + _int(20, 7)  # INTS


def tiny_onnx_bytes(weights: np.ndarray, size: int = SIZE, features: bool = False) -> bytes:
    """(N, size, size, 3) -> mean over H, W -> MatMul ``weights`` (3, K) -> Softmax.

    ``features``: a second output, the pooled means repeated three times (N, 9): wider than
    the K probabilities, as an exported model's penultimate features are."""
    w = np.ascontiguousarray(weights, "<f4")
    # TensorProto{dims=1, data_type=2 (1 = FLOAT), name=8, raw_data=9}
    initializer = (b"".join(_int(1, d) for d in w.shape) + _int(2, 1) + _len(8, "w")
                   + _len(9, w.tobytes()))
    graph = b"".join([
        _len(1, _node("ReduceMean", ["image"], ["pooled"],
                      [_attr_ints("axes", [1, 2]), _attr_int("keepdims", 0)])),
        _len(1, _node("MatMul", ["pooled", "w"], ["logits"], [])),
        _len(1, _node("Softmax", ["logits"], ["probs"], [_attr_int("axis", 1)])),
        _len(2, "tiny"),
        _len(5, initializer),
        *([_len(1, _node("Concat", ["pooled"] * 3, ["features"], [_attr_int("axis", 1)]))]
          if features else []),
        _len(11, _value_info("image", ["N", size, size, 3])),
        _len(12, _value_info("probs", ["N", w.shape[1]])),
        *([_len(12, _value_info("features", ["N", 3 * w.shape[0]]))] if features else []),
    ])
    # ModelProto{ir_version=1, graph=7, opset_import=8}; OperatorSetIdProto{version=2}
    return _int(1, 8) + _len(7, graph) + _len(8, _int(2, 17))


def make_artifact(folder: Path, weights: np.ndarray = CONFIDENT, variant: str = "onnx-fp32",
                  model: str = "tinynet", features: bool = False) -> Path:
    """An artifact folder as ``brainedge optimize`` writes it: model.onnx + manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(tiny_onnx_bytes(weights, features=features))
    write_manifest(folder, Manifest(
        model=model, format="onnx", precision="float32",
        input_spec={"name": "image", "shape": [None, SIZE, SIZE, 3], "dtype": "float32"},
        class_names=CLASSES,
        preprocessing=PreprocessSpec(image_size=SIZE, scaling="unit").to_dict(),
        files=hash_files(folder, ["model.onnx"]), metrics={}, extra={"variant": variant},
    ))
    return folder


def need_onnxruntime() -> None:
    pytest.importorskip("onnxruntime", reason="the web app tests run a tiny ONNX model; "
                        "onnxruntime comes with brainedge[edge]")


# --- images -----------------------------------------------------------------------------------

def phantom(label: str = "glioma", seed: int = 0, size: int = 96) -> np.ndarray:
    from training.phantoms import draw_phantom

    return draw_phantom(label, np.random.default_rng(seed), size)


def encode(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def noisy_png(nbytes: int) -> bytes:
    """A valid gray PNG of at least ``nbytes`` (random pixels barely compress)."""
    side = int(np.sqrt(nbytes)) + 16
    return encode(np.random.default_rng(0).integers(0, 256, (side, side), np.uint8))


def dicom_bytes(pixels: np.ndarray | None, frames: int = 1, **elements: Any) -> bytes:
    """A DICOM Part 10 MR slice built in memory (tests/test_dicom.py's builder), with a patient
    name that must never leak."""
    pytest.importorskip("pydicom", reason="DICOM input needs pydicom (edge extra)")
    from tests.test_dicom import _dataset, _save

    data = np.stack([pixels] * frames) if pixels is not None and frames > 1 else pixels
    return _save(_dataset(data, **elements))


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A small valid PNG whose IHDR was patched to declare ``width`` x ``height`` (CRC fixed)."""
    import zlib

    data = bytearray(encode(np.zeros((16, 16), np.uint8)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# --- the app ----------------------------------------------------------------------------------

def multipart(file: bytes | None = None, filename: str = "slice.png", field: str = "file",
              **fields: str) -> dict[str, Any]:
    """Keyword arguments for a test client POST of a multipart form, built in memory: the test
    client itself spools large bodies to a temporary file, which would confuse the
    no-temp-file checks and leak when the app answers 413 without reading it."""
    from werkzeug.datastructures import FileStorage
    from werkzeug.test import encode_multipart

    values: dict[str, Any] = dict(fields)
    if file is not None:
        values[field] = FileStorage(BytesIO(file), filename=filename,
                                    content_type="application/octet-stream")
    boundary, body = encode_multipart(values)
    return {"data": body, "content_type": f"multipart/form-data; boundary={boundary}"}


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)
