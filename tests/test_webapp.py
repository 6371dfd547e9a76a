"""The web app through Flask's test client: every route and every refusal.

The artifacts are tiny ONNX classifiers written by hand (tests/test_webapp_support.py), so
these tests run on an edge install without TensorFlow; ``test_webapp_tf.py`` serves the real
optimized variants. Tests run with ``TESTING`` on, so an unhandled exception fails the test
instead of turning into a 500: only ``test_unhandled_error_*`` reaches the 500 handler.
"""

from __future__ import annotations

import base64
import logging
import re
import tempfile
from html import unescape
from pathlib import Path
from typing import Any

import cv2
import flask
import numpy as np
import pytest

from brainedge import MEDICAL_NOTICE
from tests.test_webapp_support import (
    CLASSES,
    CONFIDENT,
    PATIENT_ID,
    PATIENT_NAME,
    REVERSED,
    SIZE,
    UNSURE,
    csrf_from,
    dicom_bytes,
    encode,
    make_artifact,
    multipart,
    need_onnxruntime,
    noisy_png,
    phantom,
    png_bomb,
)
from webapp import create_app
from webapp.config import MB, ServeConfig
from webapp.openapi import openapi_document

TOKEN = "t0ken-for-tests-0123456789"
SECRET = "secret-key-for-tests-0123456789"
DEFAULT, REVERSE, UNSURE_NAME = "tinynet-onnx-fp32", "tinynet-onnx-rev", "tinynet-onnx-unsure"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    need_onnxruntime()
    root = tmp_path_factory.mktemp("webapp_artifacts")
    return (make_artifact(root / "onnx-fp32", CONFIDENT),
            make_artifact(root / "onnx-rev", REVERSED, variant="onnx-rev"),
            make_artifact(root / "onnx-unsure", UNSURE, variant="onnx-unsure"))


def build_app(artifacts: tuple[Path, ...], **config: Any) -> flask.Flask:
    return create_app({"TESTING": True},
                      config=ServeConfig(artifacts, secret_key=SECRET, **config))


@pytest.fixture
def app(artifacts: tuple[Path, ...]) -> flask.Flask:
    return build_app(artifacts)


@pytest.fixture
def client(app: flask.Flask) -> Any:
    return app.test_client()


def api_upload(client: Any, data: bytes, name: str = "slice.png", **kwargs: Any) -> Any:
    return client.post("/api/v1/predict", **multipart(data, name), **kwargs)


def page_upload(client: Any, data: bytes | None, name: str = "slice.png",
                **fields: str) -> Any:
    token = csrf_from(client.get("/").get_data(as_text=True))
    return client.post("/", **multipart(data, name, csrf_token=token, **fields))


def element(html: str, element_id: str) -> str | None:
    """Text inside the element with ``id`` (tags stripped), or None when it is absent."""
    match = re.search(rf'<(\w+)[^>]*\bid="{element_id}"[^>]*>(.*?)</\1>', html, re.S)
    if match is None:
        return None
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", match.group(2))).split())


def brain(label: str = "glioma", seed: int = 0) -> bytes:
    return encode(phantom(label, seed))


# --- the JSON API -----------------------------------------------------------------------------

@pytest.mark.arm64
def test_api_predicts_a_png_with_class_probabilities_model_timing_and_notice(client) -> None:
    response = api_upload(client, brain())
    assert response.status_code == 200
    body = response.get_json()
    assert body["class"] == "pituitary"  # CONFIDENT sends every non-black slice there
    assert list(body["probabilities"]) == list(CLASSES)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["confidence"] == body["probabilities"]["pituitary"]
    assert body["model"]["name"] == DEFAULT and body["model"]["format"] == "onnx"
    assert body["model"]["precision"] == "float32" and body["model"]["backend"] == "onnxruntime"
    # a float model's probabilities are continuous: no quantization step to warn about
    assert body["model"]["probability_step"] is None
    assert "path" not in body["model"]  # the server's file layout stays private
    assert set(body["timing_ms"]) == {"decode", "ood_checks", "preprocess", "inference", "total"}
    assert body["notice"] == MEDICAL_NOTICE
    assert body["input"] == {"kind": "image", "width": 96, "height": 96}
    assert body["ood"]["flagged"] is False
    assert body["request_id"] == response.headers["X-Request-ID"]


def test_api_accepts_the_image_as_the_raw_request_body(client) -> None:
    response = client.post("/api/v1/predict", data=brain(),
                           content_type="application/octet-stream")
    assert response.status_code == 200
    assert response.get_json()["class"] == "pituitary"


@pytest.mark.arm64
def test_api_decides_by_content_a_dicom_named_png_is_read_as_dicom(client) -> None:
    response = api_upload(client, dicom_bytes(phantom()), name="slice.png")
    assert response.status_code == 200
    body = response.get_json()
    assert body["input"]["kind"] == "dicom" and body["ood"]["flagged"] is False
    assert body["ood"]["measures"]["modality"] == "MR"


def test_api_model_parameter_picks_a_loaded_artifact(client) -> None:
    by_query = api_upload(client, brain(), query_string={"model": REVERSE}).get_json()
    assert by_query["model"]["name"] == REVERSE and by_query["class"] == "glioma"
    by_form = client.post("/api/v1/predict", **multipart(brain(), model=REVERSE))
    assert by_form.get_json()["model"]["name"] == REVERSE
    raw = client.post(f"/api/v1/predict?model={REVERSE}", data=brain(),
                      content_type="image/png")
    assert raw.get_json()["class"] == "glioma"


def test_api_unknown_model_is_400_and_lists_the_loaded_ones(client) -> None:
    response = api_upload(client, brain(), query_string={"model": "resnet-9000"})
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "unknown_model"
    assert "'resnet-9000'" in body["error"] and DEFAULT in body["error"]


def test_api_models_lists_every_artifact_and_the_default(client) -> None:
    body = client.get("/api/v1/models").get_json()
    assert body["default"] == DEFAULT
    assert [m["name"] for m in body["models"]] == [DEFAULT, REVERSE, UNSURE_NAME]
    assert body["notice"] == MEDICAL_NOTICE


@pytest.mark.parametrize(("request_kwargs", "code", "fragment"), [
    (multipart(b"x", field="other"), "missing_file", "field 'file'"),
    (multipart(b"", filename=""), "missing_file", "No file was chosen"),
    ({"data": b"", "content_type": "application/octet-stream"}, "missing_file", "request body"),
    (multipart(b""), "empty_file", "empty (0 bytes)"),
])
def test_api_refuses_a_request_without_an_image_with_400(client, request_kwargs, code,
                                                          fragment) -> None:
    response = client.post("/api/v1/predict", **request_kwargs)
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == code and fragment in body["error"]


def _animated_gif(frames: int) -> bytes:
    from tests.test_image_format import pillow_frames  # skips where Pillow is missing

    return pillow_frames("GIF", frames)


def _corrupt_jpeg() -> bytes:
    data = bytearray(encode(phantom(), ".jpg"))
    data[200:] = np.random.default_rng(1).integers(0, 256, len(data) - 200, np.uint8).tobytes()
    return bytes(data)


HOSTILE = {
    "corrupt JPEG": (_corrupt_jpeg, "not a readable image"),
    "truncated JPEG": (lambda: encode(phantom(), ".jpg")[:300], "not a readable image"),
    "text named .png": (lambda: b"patient notes, not an image\n" * 20, "not a readable image"),
    # Over OpenCV's own default limit too: this process may have imported cv2 before
    # runtime.imageio set the lower one (test_webapp_config checks the served order).
    "40000x40000 PNG bomb": (lambda: png_bomb(40000, 40000), "over 64000000 pixels"),
    "multi-frame DICOM": (lambda: dicom_bytes(phantom(size=32), frames=3), "frames"),
    "3-page TIFF": (lambda: cv2.imencodemulti(".tiff", [phantom()] * 3)[1].tobytes(),
                    "the TIFF file holds 3 pages"),
    "3-frame animated GIF": (lambda: _animated_gif(3), "an animated GIF of 3 frames"),
    "DICOM without pixel data": (lambda: dicom_bytes(None), "no pixel data"),
}


@pytest.mark.arm64
@pytest.mark.parametrize("case", list(HOSTILE))
def test_api_refuses_hostile_or_broken_files_with_415_and_says_why(client, case) -> None:
    make, fragment = HOSTILE[case]
    response = api_upload(client, make(), name="scan.png")
    assert response.status_code == 415
    body = response.get_json()
    assert body["code"] == "unreadable_image"
    assert fragment in body["error"] and body["error"].startswith("upload:")
    assert PATIENT_NAME not in body["error"] and "scan.png" not in body["error"]


def test_upload_over_the_limit_is_413_with_a_json_message(client) -> None:
    response = client.post("/api/v1/predict", data=b"\0" * (21 * MB),
                           content_type="application/octet-stream")
    assert response.status_code == 413
    body = response.get_json()
    assert body["code"] == "too_large" and "20 MB" in body["error"]


def test_upload_limit_follows_the_configuration(artifacts) -> None:
    client = build_app(artifacts, max_upload_bytes=1 * MB).test_client()
    assert api_upload(client, noisy_png(2 * MB)).status_code == 413
    assert api_upload(client, brain()).status_code == 200


# --- bearer token -----------------------------------------------------------------------------

def test_api_token_off_by_default_lets_requests_in(client) -> None:
    assert client.get("/api/v1/models").status_code == 200


def test_api_token_on_refuses_requests_without_it_and_accepts_it(artifacts) -> None:
    client = build_app(artifacts, api_token=TOKEN).test_client()
    missing = api_upload(client, brain())
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert missing.get_json()["code"] == "unauthorized"
    wrong = api_upload(client, brain(), headers={"Authorization": f"Bearer {TOKEN}x"})
    assert wrong.status_code == 401 and "invalid_token" in wrong.headers["WWW-Authenticate"]
    basic = client.get("/api/v1/models", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    assert client.get("/api/v1/models").status_code == 401
    ok = api_upload(client, brain(), headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.get_json()["class"] == "pituitary"
    # Probes and the API description stay open.
    for path in ("/healthz", "/readyz", "/api/v1/openapi.json"):
        assert client.get(path).status_code == 200, path


# --- the page ---------------------------------------------------------------------------------

def test_page_has_the_notice_the_form_and_every_loaded_model(client) -> None:
    response = client.get("/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert MEDICAL_NOTICE in html
    for element_id in ("file", "submit", "model", "upload-form"):
        assert f'id="{element_id}"' in html
    assert 'enctype="multipart/form-data"' in html
    assert re.findall(r'<option value="([^"]+)"', html) == [DEFAULT, REVERSE, UNSURE_NAME]
    assert re.search(rf'<option value="{DEFAULT}"\s+selected', html)
    for element_id in ("prediction-label", "ood-warning", "error"):
        assert element(html, element_id) is None


def test_page_loads_nothing_from_other_hosts_and_serves_its_assets(client) -> None:
    html = client.get("/").get_data(as_text=True)
    assert not re.search(r'(src|href)="(https?:)?//', html)
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        response = client.get(asset)
        assert response.status_code == 200, asset
        response.close()
    assert "/static/style.css" in html and "/static/app.js" in html


def test_page_post_shows_the_prediction_every_probability_and_what_the_model_saw(
        client) -> None:
    response = page_upload(client, brain(), model=REVERSE)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert element(html, "prediction-label") == "glioma"
    rows = re.findall(r'<tr data-class="([^"]+)"', html)
    assert rows == list(CLASSES)
    assert len(re.findall(r"<meter ", html)) == len(CLASSES)
    assert REVERSE in element(html, "model-info") and "float32" in element(html, "model-info")
    assert "ms" in element(html, "timing")
    assert MEDICAL_NOTICE in html
    assert re.search(rf'<option value="{REVERSE}"\s+selected', html)
    uri = re.search(r'id="preview" src="data:image/png;base64,([^"]+)"', html)
    assert uri, "no preview data URI"
    preview = cv2.imdecode(np.frombuffer(base64.b64decode(uri.group(1)), np.uint8),
                           cv2.IMREAD_UNCHANGED)
    assert preview.shape == (SIZE, SIZE)
    assert response.headers["Cache-Control"] == "no-store"


def test_page_refusals_rerender_the_page_with_the_message(client) -> None:
    response = page_upload(client, b"not an image at all" * 10)
    html = response.get_data(as_text=True)
    assert response.status_code == 415
    assert "not a readable image" in element(html, "error")
    assert element(html, "prediction-label") is None
    assert 'id="file"' in html  # the form is there to try again

    missing = page_upload(client, None)
    assert missing.status_code == 400 and "No file" in element(missing.get_data(as_text=True),
                                                               "error")


def test_page_unknown_model_is_400(client) -> None:
    response = page_upload(client, brain(), model="nope")
    assert response.status_code == 400
    assert "Unknown model 'nope'" in element(response.get_data(as_text=True), "error")


def test_page_upload_over_the_limit_is_413_with_an_html_message(client) -> None:
    token = csrf_from(client.get("/").get_data(as_text=True))
    response = client.post("/", **multipart(b"\0" * (21 * MB), csrf_token=token))
    assert response.status_code == 413 and response.mimetype == "text/html"
    assert "20 MB" in element(response.get_data(as_text=True), "error")


# --- CSRF -------------------------------------------------------------------------------------

def test_page_post_without_or_with_a_wrong_csrf_token_is_refused(client, artifacts) -> None:
    without = client.post("/", **multipart(brain()))
    assert without.status_code == 400
    assert "security token" in element(without.get_data(as_text=True), "error")

    client.get("/")
    wrong = client.post("/", **multipart(brain(), csrf_token="x" * 43))
    assert wrong.status_code == 400

    # A token from another browser session is worth nothing in this one.
    other = build_app(artifacts).test_client()
    foreign = csrf_from(other.get("/").get_data(as_text=True))
    stolen = client.post("/", **multipart(brain(), csrf_token=foreign))
    assert stolen.status_code == 400


def test_page_post_with_the_sessions_csrf_token_is_accepted(client) -> None:
    response = page_upload(client, brain())
    assert response.status_code == 200
    assert element(response.get_data(as_text=True), "prediction-label") == "pituitary"


def test_session_cookie_is_http_only_and_same_site_strict(client) -> None:
    cookie = client.get("/").headers["Set-Cookie"]
    assert cookie.startswith("brainedge_session=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


# --- out of distribution ----------------------------------------------------------------------

def _colour_photo() -> bytes:
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (12, 16, 3), np.uint8)
    return encode(cv2.resize(small, (320, 240), interpolation=cv2.INTER_CUBIC), ".jpg")


def test_api_flags_a_colour_photo_and_a_blank_image_as_out_of_distribution(client) -> None:
    photo = api_upload(client, _colour_photo(), name="holiday.jpg").get_json()
    assert photo["ood"]["flagged"] is True
    assert any("colour" in reason for reason in photo["ood"]["reasons"])
    assert "class" in photo  # still answered, but flagged: never silently classified

    blank = api_upload(client, encode(np.full((128, 128), 90, np.uint8))).get_json()
    assert blank["ood"]["flagged"] is True
    assert any("uniform" in reason for reason in blank["ood"]["reasons"])


def test_page_shows_a_visible_warning_for_an_out_of_distribution_image(client) -> None:
    flagged = page_upload(client, _colour_photo(), name="holiday.jpg").get_data(as_text=True)
    warning = element(flagged, "ood-warning")
    assert warning is not None and "does not look like a brain MRI" in warning
    assert "colour" in warning
    clean = page_upload(client, brain()).get_data(as_text=True)
    assert element(clean, "ood-warning") is None


def test_an_unsure_model_is_reported_as_a_secondary_signal(client) -> None:
    body = api_upload(client, brain(), query_string={"model": UNSURE_NAME}).get_json()
    assert body["ood"]["model_uncertain"] is True and body["ood"]["flagged"] is False
    assert "unsure" in body["ood"]["model_note"]
    html = page_upload(client, brain(), model=UNSURE_NAME).get_data(as_text=True)
    assert "unsure" in element(html, "uncertain-note")
    sure = api_upload(client, brain()).get_json()
    assert sure["ood"]["model_uncertain"] is False


# --- health, OpenAPI --------------------------------------------------------------------------

@pytest.mark.arm64
def test_healthz_and_readyz_answer_when_everything_is_loaded(client) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["status"] == "ready"
    assert ready.get_json()["models"] == [DEFAULT, REVERSE, UNSURE_NAME]


def test_readyz_is_503_when_a_model_file_changes_after_loading(tmp_path) -> None:
    need_onnxruntime()
    folder = make_artifact(tmp_path / "onnx-fp32")
    client = build_app((folder,)).test_client()
    assert client.get("/readyz").status_code == 200
    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "changed after loading" in response.get_json()["problems"][0]
    assert client.get("/healthz").status_code == 200


def _documented_methods(doc: dict[str, Any]) -> dict[str, set[str]]:
    return {path: {m.upper() for m in ops} for path, ops in doc["paths"].items()}


def test_openapi_documents_every_api_route_and_only_existing_ones(app, client) -> None:
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    documented = _documented_methods(doc)
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api") or rule.endpoint.startswith("health."):
            routes.setdefault(rule.rule, set()).update(rule.methods - {"HEAD", "OPTIONS"})
    assert any(path.startswith("/api") for path in routes)
    assert routes == documented


def test_openapi_references_resolve_and_auth_is_documented_when_on() -> None:
    doc = openapi_document(20 * MB, ["a"], auth=True)
    text = repr(doc)
    for ref in set(re.findall(r"'#/components/schemas/(\w+)'", text)):
        assert ref in doc["components"]["schemas"], ref
    predict = doc["paths"]["/api/v1/predict"]["post"]
    assert predict["security"] == [{"bearerAuth": []}] and "401" in predict["responses"]
    assert "20 MB" in predict["responses"]["413"]["description"]
    open_doc = openapi_document(20 * MB, ["a"], auth=False)
    assert open_doc["paths"]["/api/v1/predict"]["post"]["security"] == []


# --- in memory only, logs without patient data, errors ----------------------------------------

@pytest.fixture
def no_temp_files(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every way Werkzeug or anyone could put an upload on disk raises (and is recorded)."""
    import werkzeug.formparser

    attempts: list[str] = []

    def trap(name: str):
        def refuse(*args: Any, **kwargs: Any) -> Any:
            attempts.append(name)
            raise AssertionError(f"{name} called: an upload would touch the disk")
        return refuse

    for name in ("TemporaryFile", "SpooledTemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, trap(name))
    monkeypatch.setattr(werkzeug.formparser, "SpooledTemporaryFile", trap("SpooledTemporaryFile"))
    return attempts


def test_large_uploads_stay_in_memory(client, no_temp_files) -> None:
    big = noisy_png(2 * MB)  # far above Werkzeug's 500 KB spooling threshold
    assert len(big) > 2 * MB
    assert api_upload(client, big).status_code == 200
    assert page_upload(client, big).status_code == 200
    assert no_temp_files == []


def test_the_temp_file_trap_catches_flasks_default_request(artifacts, no_temp_files) -> None:
    # Proves the test above can fail: the stock Request spools the same upload.
    app = build_app(artifacts)
    app.request_class = flask.Request
    with pytest.raises(AssertionError, match="would touch the disk"):
        api_upload(app.test_client(), noisy_png(2 * MB))
    assert no_temp_files


def test_logs_have_request_lines_but_no_file_names_or_dicom_tags(client, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    name = f"{PATIENT_NAME.replace('^', '_')}_{PATIENT_ID}.dcm"
    assert api_upload(client, dicom_bytes(phantom()), name=name).status_code == 200
    assert api_upload(client, dicom_bytes(None), name=name).status_code == 415
    assert page_upload(client, dicom_bytes(phantom()), name=name).status_code == 200
    assert client.post("/api/v1/predict", data=b"x" * 300, content_type="image/png",
                       headers={"X-Request-ID": f"{PATIENT_NAME} {PATIENT_ID}"}
                       ).status_code == 415
    lines = [r.getMessage() for r in caplog.records if r.name == "webapp.requestlog"]
    assert len(lines) >= 5 and all("request_id=" in line for line in lines)
    assert any("route=/api/v1/predict status=415" in line for line in lines)
    for needle in ("Doe", PATIENT_ID, name):
        assert needle not in caplog.text


def test_request_ids_are_made_by_the_server_never_taken_from_the_caller(client) -> None:
    first = client.get("/healthz", headers={"X-Request-ID": "MRN12345678"})
    second = client.get("/healthz")
    ids = [first.headers["X-Request-ID"], second.headers["X-Request-ID"]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and ids[0] != ids[1]


def test_security_headers_forbid_inline_code_and_other_origins(client) -> None:
    headers = client.get("/").headers
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"


def test_unknown_paths_are_404_json_under_api_and_html_elsewhere(client) -> None:
    api = client.get("/api/v1/nothing")
    assert api.status_code == 404 and api.get_json()["code"] == "not_found"
    page = client.get("/Doe_Jane.png")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "Doe" not in page.get_data(as_text=True)
    assert client.get("/api/v1/predict").status_code == 405


def test_unhandled_error_is_a_generic_500_logged_without_its_message(
        artifacts, caplog, monkeypatch) -> None:
    app = create_app({"TESTING": True, "PROPAGATE_EXCEPTIONS": False},
                     config=ServeConfig(artifacts, secret_key=SECRET))
    classifier = app.extensions["brainedge"].registry.find(None).classifier

    def boom(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError(f"runtime choked on {PATIENT_NAME}")

    monkeypatch.setattr(classifier.predictor, "predict_with_features", boom)
    caplog.set_level(logging.INFO)
    response = api_upload(app.test_client(), brain())
    assert response.status_code == 500
    body = response.get_json()
    assert body["code"] == "internal_error" and body["request_id"] in body["error"]
    assert "Doe" not in body["error"]
    assert "unhandled RuntimeError" in caplog.text and "Doe" not in caplog.text


class _RecordingCam:
    """Stands in for a parent's GradCam (TF-free): records what it was asked to explain."""

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, int]] = []

    def heatmap(self, x: np.ndarray, class_index: int) -> np.ndarray:
        self.calls.append((x, class_index))
        return np.linspace(0, 1, x.shape[0] * x.shape[1], dtype=np.float32).reshape(x.shape[:2])


def test_gradcam_explains_the_input_and_class_the_served_model_used(app) -> None:
    import dataclasses

    from runtime.gradcam import overlay
    from runtime.preprocess import prepare, scale
    from webapp.inference import classify_upload

    cam = _RecordingCam()
    model = dataclasses.replace(app.extensions["brainedge"].registry.find(None), gradcam=cam)
    gray = phantom("meningioma", 1, 128)
    outcome = classify_upload(model, encode(gray), gradcam=True)
    ((x, index),) = cam.calls
    rgb = prepare(gray, model.classifier.spec)
    np.testing.assert_array_equal(x, scale(rgb, model.classifier.spec))
    assert model.classifier.class_names[index] == outcome.prediction.label
    np.testing.assert_array_equal(outcome.gradcam, overlay(rgb, cam.heatmap(x, index)))
    assert outcome.timing_ms()["gradcam"] >= 0
    np.testing.assert_array_equal(outcome.model_input, rgb[..., 0])  # what the page shows
