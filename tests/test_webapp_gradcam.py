"""The web app's optional Grad-CAM (``BRAINEDGE_GRADCAM``): the optimized variants of the
session's learned DenseNet run get heat maps from the run's float32 Keras model; the page always
shows one, the API only when asked; an artifact whose parent run is not on the server is
served without one, and says why; with Grad-CAM on but no TensorFlow, the server does not
start."""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
from html import unescape
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from brainedge.errors import BrainEdgeError, ConfigError
from brainedge.manifest import MANIFEST_NAME, read_json, write_json
from runtime.imageio import decode_image
from runtime.preprocess import prepare, scale
from tests.test_webapp_support import csrf_from, encode, make_artifact, multipart, phantom
from webapp import create_app
from webapp.config import ServeConfig

SECRET = "secret-key-for-tests-0123456789"
INT8, ONNX, RUN = ("densenet121-tflite-int8", "densenet121-onnx-fp32",
                   "densenet121-keras-float32")
PARENT_CAPTION = ("Grad-CAM (from the FP32 Keras parent, explains the parent, not necessarily "
                  "the int8 model)")


# --- the setting (no TensorFlow needed) -------------------------------------------------------

def test_gradcam_is_off_unless_asked_for() -> None:
    assert ServeConfig(("a",)).gradcam is False
    assert ServeConfig.from_env({"BRAINEDGE_ARTIFACTS": "a"}).gradcam is False


@pytest.mark.parametrize(("value", "expected"), [
    ("1", True), ("true", True), ("On", True), (" yes ", True),
    ("0", False), ("false", False), ("off", False), ("NO", False),
])
def test_brainedge_gradcam_accepts_the_usual_spellings(value: str, expected: bool) -> None:
    env = {"BRAINEDGE_ARTIFACTS": "a", "BRAINEDGE_GRADCAM": value}
    assert ServeConfig.from_env(env).gradcam is expected


def test_a_config_file_can_turn_gradcam_on(tmp_path: Path) -> None:
    path = tmp_path / "serve.json"
    path.write_text(json.dumps({"artifacts": ["a"], "gradcam": True}))
    assert ServeConfig.from_env({"BRAINEDGE_CONFIG": str(path)}).gradcam is True


@pytest.mark.parametrize("value", ["maybe", "2", ""])
def test_an_unclear_gradcam_setting_is_refused(value: str) -> None:
    if value == "":  # an empty variable counts as unset, like every BRAINEDGE_* variable
        assert ServeConfig.from_env({"BRAINEDGE_ARTIFACTS": "a",
                                     "BRAINEDGE_GRADCAM": value}).gradcam is False
        return
    with pytest.raises(ConfigError, match="gradcam must be one of"):
        ServeConfig.from_env({"BRAINEDGE_ARTIFACTS": "a", "BRAINEDGE_GRADCAM": value})
    with pytest.raises(ConfigError, match="gradcam must be true or false"):
        ServeConfig(("a",), gradcam=value)  # type: ignore[arg-type]


# --- serving the tiny run's variants with Grad-CAM on ---------------------------------------

@pytest.fixture(scope="module")
def variants(optimized_run: Path) -> tuple[Path, Path]:
    folders = (optimized_run / "tflite-int8", optimized_run / "onnx-fp32")
    if not all((f / MANIFEST_NAME).is_file() for f in folders):
        pytest.skip(f"brainedge optimize did not produce tflite-int8 and onnx-fp32 in "
                    f"{optimized_run}")
    return folders


@pytest.fixture(scope="module")
def client(variants: tuple[Path, Path], learned_run: Path) -> Any:
    # threads stays unset: TensorFlow already runs in this test process and cannot switch.
    config = ServeConfig((*variants, learned_run), secret_key=SECRET, gradcam=True)
    return create_app({"TESTING": True}, config=config).test_client()


@pytest.fixture(scope="module")
def parent_cam(learned_run: Path) -> Any:
    """The expected maps, from a GradCam of its own over an independently loaded parent."""
    from runtime import load_classifier
    from runtime.gradcam import GradCam

    classifier = load_classifier(learned_run)
    return classifier, GradCam(classifier.predictor.model)


def _expected_overlay(parent_cam: Any, image: np.ndarray, label: str) -> np.ndarray:
    from runtime.gradcam import overlay

    classifier, cam = parent_cam
    rgb = prepare(image, classifier.spec)
    heat = cam.heatmap(scale(rgb, classifier.spec), classifier.class_names.index(label))
    return overlay(rgb, heat)


def _decode_rgb(b64: str) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)
    assert bgr is not None and bgr.ndim == 3 and bgr.shape[2] == 3, "not an RGB PNG"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _page_post(client: Any, data: bytes, model: str) -> str:
    token = csrf_from(client.get("/").get_data(as_text=True))
    response = client.post("/", **multipart(data, csrf_token=token, model=model))
    assert response.status_code == 200, response.get_data(as_text=True)[-500:]
    return response.get_data(as_text=True)


def _text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


@pytest.mark.tf
def test_models_report_gradcam_for_every_artifact_of_the_run(client) -> None:
    listing = client.get("/api/v1/models").get_json()["models"]
    assert {m["name"]: m["gradcam"] for m in listing} == {INT8: True, ONNX: True, RUN: True}
    assert not any("gradcam_reason" in m for m in listing)


@pytest.mark.tf
def test_the_page_shows_the_parent_gradcam_for_the_predicted_class(client, parent_cam) -> None:
    image = phantom("meningioma", 1, 128)
    html = _page_post(client, encode(image), INT8)
    uri = re.search(r'id="gradcam" src="data:image/png;base64,([^"]+)"', html)
    assert uri, "no Grad-CAM image on the page"
    shown = _decode_rgb(uri.group(1))
    assert shown.shape == (64, 64, 3)
    label = re.search(r'id="prediction-label">([^<]+)<', html).group(1)
    expected = _expected_overlay(parent_cam, decode_image(encode(image)), label)
    assert np.abs(shown.astype(int) - expected.astype(int)).max() <= 2
    assert PARENT_CAPTION in _text(html)
    assert 'id="preview"' in html  # next to, not instead of, the model's input
    assert 'id="gradcam-unavailable"' not in html


@pytest.mark.tf
def test_the_run_served_itself_explains_itself(client) -> None:
    html = _page_post(client, encode(phantom("glioma", 2, 96)), RUN)
    assert 'id="gradcam"' in html
    assert "Grad-CAM of this FP32 Keras model" in _text(html)
    assert "not necessarily" not in _text(html)


@pytest.mark.tf
def test_the_api_adds_the_gradcam_only_when_asked(client, parent_cam) -> None:
    image = phantom("pituitary", 4, 96)
    for query in ({}, {"gradcam": "0"}, {"gradcam": "false"}):
        body = client.post("/api/v1/predict", query_string={"model": ONNX, **query},
                           **multipart(encode(image))).get_json()
        assert "gradcam_png_base64" not in body and "gradcam" not in body["timing_ms"], query
    response = client.post("/api/v1/predict", query_string={"model": ONNX, "gradcam": "1"},
                           **multipart(encode(image)))
    assert response.status_code == 200
    body = response.get_json()
    shown = _decode_rgb(body["gradcam_png_base64"])
    expected = _expected_overlay(parent_cam, decode_image(encode(image)), body["class"])
    assert np.abs(shown.astype(int) - expected.astype(int)).max() <= 2
    assert body["timing_ms"]["gradcam"] >= 0 and "gradcam_reason" not in body


@pytest.mark.tf
def test_a_garbled_gradcam_parameter_is_a_400(client) -> None:
    response = client.post("/api/v1/predict", query_string={"gradcam": "please"},
                           **multipart(encode(phantom())))
    assert response.status_code == 400
    assert response.get_json()["code"] == "bad_parameter"


# --- the parent run not on the server, changed, or incompatible ------------------------------

def _copy_with_parent(variant: Path, run: Path, dest: Path) -> Path:
    """A copy of ``variant`` whose manifest names ``run`` as its parent."""
    shutil.copytree(variant, dest)
    manifest = read_json(dest / MANIFEST_NAME)
    manifest["parent"] = str(run)
    manifest["extra"]["parent_manifest"]["run_dir"] = str(run)
    write_json(dest / MANIFEST_NAME, manifest)
    return dest


def _gradcam_listing(app: Any) -> dict[str, Any]:
    (model,) = app.test_client().get("/api/v1/models").get_json()["models"]
    return model


@pytest.mark.tf
def test_a_parent_run_moved_away_is_reported_and_the_server_still_starts(
        variants, learned_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(learned_run, run)
    artifact = _copy_with_parent(variants[0], run, tmp_path / "tflite-int8")
    config = ServeConfig((artifact,), secret_key=SECRET, gradcam=True)
    # First with the run in place: the copy itself is fine, only the move below matters.
    assert _gradcam_listing(create_app({"TESTING": True}, config=config))["gradcam"] is True

    shutil.move(run, tmp_path / "elsewhere")
    app = create_app({"TESTING": True}, config=config)
    model = _gradcam_listing(app)
    assert model["gradcam"] is False
    assert "not on this server" in model["gradcam_reason"]
    assert str(tmp_path) not in model["gradcam_reason"]  # server paths stay private

    client = app.test_client()
    html = _page_post(client, encode(phantom("glioma", 1, 96)), INT8)
    assert 'id="gradcam"' not in html
    note = re.search(r'id="gradcam-unavailable"[^>]*>(.*?)</p>', html, re.S)
    assert note and "not on this server" in _text(note.group(1))
    body = client.post("/api/v1/predict", query_string={"gradcam": "1"},
                       **multipart(encode(phantom()))).get_json()
    assert body["gradcam_png_base64"] is None
    assert body["gradcam_reason"] == model["gradcam_reason"]
    assert body["class"] in body["probabilities"]  # the prediction itself is unaffected


@pytest.mark.tf
def test_a_retrained_parent_is_not_used_to_explain(variants, learned_run: Path,
                                                  tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(learned_run, run)
    artifact = _copy_with_parent(variants[0], run, tmp_path / "tflite-int8")
    manifest = run / MANIFEST_NAME
    manifest.write_text(manifest.read_text() + "\n")  # another manifest at the same path
    app = create_app({"TESTING": True},
                     config=ServeConfig((artifact,), secret_key=SECRET, gradcam=True))
    model = _gradcam_listing(app)
    assert model["gradcam"] is False and "changed" in model["gradcam_reason"]


@pytest.mark.tf
def test_an_artifact_without_a_parent_or_preprocessed_otherwise_gets_no_gradcam(
        trained_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    orphan = make_artifact(tmp_path / "orphan")
    unlike = make_artifact(tmp_path / "unlike", variant="onnx-unlike")
    manifest = read_json(unlike / MANIFEST_NAME)
    manifest["parent"] = str(trained_run)  # same classes, but "unit" scaling, not VGG16's
    write_json(unlike / MANIFEST_NAME, manifest)
    app = create_app({"TESTING": True},
                     config=ServeConfig((orphan, unlike), secret_key=SECRET, gradcam=True))
    listing = {m["name"]: m for m in app.test_client().get("/api/v1/models").get_json()["models"]}
    assert listing["tinynet-onnx-fp32"]["gradcam"] is False
    assert "names no parent" in listing["tinynet-onnx-fp32"]["gradcam_reason"]
    assert listing["tinynet-onnx-unlike"]["gradcam"] is False
    assert "preprocesses images differently" in listing["tinynet-onnx-unlike"]["gradcam_reason"]


@pytest.mark.tf
def test_gradcam_off_lists_why_and_never_computes_one(variants) -> None:
    app = create_app({"TESTING": True}, config=ServeConfig(variants[:1], secret_key=SECRET))
    model = _gradcam_listing(app)
    assert model["gradcam"] is False and "off on this server" in model["gradcam_reason"]
    client = app.test_client()
    html = _page_post(client, encode(phantom()), INT8)
    assert 'id="gradcam' not in html  # neither the image nor a note when the feature is off
    body = client.post("/api/v1/predict", query_string={"gradcam": "1"},
                       **multipart(encode(phantom()))).get_json()
    assert body["gradcam_png_base64"] is None and "off" in body["gradcam_reason"]


# --- no TensorFlow --------------------------------------------------------------------------

@pytest.mark.tf
def test_gradcam_on_without_tensorflow_refuses_to_start(variants,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes "import tensorflow" fail as on an edge install, even though
    # this process has loaded it; the int8 artifact itself needs only LiteRT.
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    config = ServeConfig(variants[:1], secret_key=SECRET, gradcam=True)
    with pytest.raises(BrainEdgeError) as caught:
        create_app({"TESTING": True}, config=config)
    message = str(caught.value)
    assert "BRAINEDGE_GRADCAM" in message and "pip install 'brainedge[train]'" in message
    assert "turn Grad-CAM off" in message
    # The same server without Grad-CAM starts: the refusal is about Grad-CAM alone.
    off = ServeConfig(variants[:1], secret_key=SECRET)
    assert create_app({"TESTING": True}, config=off).test_client().get("/readyz").status_code \
        == 200
