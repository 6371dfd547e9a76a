"""The web app serving real optimized variants (TFLite int8/fp32 through LiteRT, ONNX through
ONNX Runtime) of the session's learned DenseNet run. Building them needs TensorFlow; serving them
must not, which the subprocess test checks."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from brainedge import MEDICAL_NOTICE
from tests.conftest import PROJECT_ROOT
from tests.test_webapp_support import csrf_from, encode, multipart, phantom
from webapp import create_app
from webapp.config import ServeConfig

pytestmark = pytest.mark.tf

VARIANTS = ("tflite-int8", "tflite-fp32", "onnx-fp32")
SECRET = "secret-key-for-tests-0123456789"


@pytest.fixture(scope="module")
def variants(optimized_run: Path) -> tuple[Path, ...]:
    folders = tuple(optimized_run / v for v in VARIANTS if (optimized_run / v / "manifest.json")
                    .is_file())
    if len(folders) != len(VARIANTS):
        pytest.skip(f"brainedge optimize did not produce all of {VARIANTS} in {optimized_run}")
    return folders


@pytest.fixture(scope="module")
def client(variants: tuple[Path, ...]):
    config = ServeConfig(variants, secret_key=SECRET, threads=1, concurrency=2)
    return create_app({"TESTING": True}, config=config).test_client()


def test_every_variant_answers_the_api_with_its_format_and_precision(client) -> None:
    models = client.get("/api/v1/models").get_json()
    names = [m["name"] for m in models["models"]]
    assert names == [f"densenet121-{v}" for v in VARIANTS]
    assert models["default"] == "densenet121-tflite-int8"
    expected = {"densenet121-tflite-int8": ("tflite", "int8", "litert"),
                "densenet121-tflite-fp32": ("tflite", "fp32", "litert"),
                "densenet121-onnx-fp32": ("onnx", "fp32", "onnxruntime")}
    for name in names:
        response = client.post("/api/v1/predict", query_string={"model": name},
                               **multipart(encode(phantom("glioma", 3, 64))))
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        m = body["model"]
        assert (m["format"], m["precision"], m["backend"]) == expected[name]
        assert m["image_size"] == 64
        assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=0.02)
        assert body["class"] in body["probabilities"] and body["notice"] == MEDICAL_NOTICE


def test_the_page_shows_the_64px_model_input_of_an_int8_variant(client) -> None:
    token = csrf_from(client.get("/").get_data(as_text=True))
    response = client.post("/", **multipart(encode(phantom("meningioma", 1, 128)),
                                            csrf_token=token, model="densenet121-tflite-int8"))
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'id="prediction-label"' in html and "int8" in html
    assert "64 x 64 px" in " ".join(html.split())  # the figure caption


def test_concurrent_requests_get_the_same_answers_as_sequential_ones(client) -> None:
    # LiteRT interpreters are pooled (concurrency=2); 4 threads contend for them.
    images = [encode(phantom(label, seed, 64)) for seed in range(2)
              for label in ("glioma", "notumor")]

    def ask(data: bytes) -> dict[str, float]:
        response = client.post("/api/v1/predict", **multipart(data))
        assert response.status_code == 200
        return response.get_json()["probabilities"]

    sequential = [ask(d) for d in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(ask, images * 3))
    for i, probs in enumerate(concurrent):
        expected = sequential[i % len(images)]
        np.testing.assert_allclose(list(probs.values()), list(expected.values()), atol=1e-6)


def test_serving_a_tflite_variant_never_imports_tensorflow(variants) -> None:
    code = (
        "import json, sys\n"
        "from webapp import create_app\n"
        "from webapp.config import ServeConfig\n"
        "from tests.test_webapp_support import encode, multipart, phantom\n"
        f"app = create_app({{'TESTING': True}}, config=ServeConfig(({str(variants[0])!r},)))\n"
        "r = app.test_client().post('/api/v1/predict', **multipart(encode(phantom())))\n"
        "print(json.dumps({'status': r.status_code,\n"
        "                  'tf': sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "                               ('tensorflow', 'tf_keras', 'keras'))}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"status": 200, "tf": []}
