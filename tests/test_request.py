"""runtime.request: one upload decoded once, checked, preprocessed and classified, each stage
timed; what the web app answers with and the benchmark times (issue 11, item 4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pytest

from runtime import dicom, image_format, load_classifier
from runtime.classifier import Classifier
from runtime.preprocess import preprocess
from runtime.request import STAGES, run_request
from tests.test_webapp_support import dicom_bytes, encode, make_artifact, need_onnxruntime, phantom


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    need_onnxruntime()
    return load_classifier(make_artifact(tmp_path_factory.mktemp("request") / "onnx-fp32"))


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    calls: list[int] = []
    original: Callable[..., Any] = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def dicom_sniffs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls of is_dicom by any module that holds it (it used to be asked four times)."""
    calls = count_calls(monkeypatch, image_format, "is_dicom")
    monkeypatch.setattr(dicom, "is_dicom", image_format.is_dicom)
    return calls


def test_a_colour_jpeg_is_decoded_once_and_sniffed_once(classifier, monkeypatch) -> None:
    data = encode(cv2.cvtColor(phantom("glioma", 0, 128), cv2.COLOR_GRAY2BGR), ".jpg")
    decodes = count_calls(monkeypatch, cv2, "imdecode")
    sniffs = dicom_sniffs(monkeypatch)
    result = run_request(classifier, data, "upload")
    assert (len(decodes), len(sniffs)) == (1, 1)
    assert result.decoded.colour and result.ood.measures["colourful_fraction"] is not None


def test_a_dicom_header_is_parsed_once(classifier, monkeypatch) -> None:
    pydicom = pytest.importorskip("pydicom")
    data = dicom_bytes(phantom("glioma", 0, 64), Modality="CT")
    parses = count_calls(monkeypatch, pydicom, "dcmread")
    sniffs = dicom_sniffs(monkeypatch)
    result = run_request(classifier, data, "upload")
    assert (len(parses), len(sniffs)) == (1, 1)
    assert result.decoded.kind == "dicom" and result.decoded.modality == "CT"
    assert any("modality is CT" in r for r in result.ood.reasons)
    assert dicom.is_dicom(data)  # the bytes are DICOM: the single sniff said so


def test_the_answer_is_the_classifiers_on_the_same_pixels(classifier) -> None:
    gray = phantom("pituitary", 2, 96)
    result = run_request(classifier, encode(gray), "upload")
    expected = classifier.predict_batch(preprocess(gray, classifier.spec)[None])[0]
    got = np.array([result.prediction.probabilities[c] for c in classifier.class_names])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_array_equal(result.batch[0], preprocess(gray, classifier.spec))
    assert result.model_input.shape == (classifier.spec.image_size,) * 2 + (3,)


def test_every_stage_is_timed_and_the_total_is_their_sum(classifier) -> None:
    result = run_request(classifier, encode(phantom()), "upload")
    stages = result.stages.to_dict()
    assert list(stages) == list(STAGES) and all(ms > 0 for ms in stages.values())
    assert result.timing_ms()["total"] == pytest.approx(sum(stages.values()))
    p = result.prediction
    assert (p.decode_ms, p.preprocess_ms, p.inference_ms) == (
        stages["decode"], stages["preprocess"], stages["inference"])
    # The model-side check ran after inference: its measures are in the report.
    assert "top_probability" in result.ood.measures


def test_a_multi_page_upload_is_refused_before_any_model_work(classifier: Classifier) -> None:
    from brainedge.errors import ImageDecodeError

    with pytest.raises(ImageDecodeError, match=r"^upload: the TIFF file holds 2 pages"):
        run_request(classifier, cv2.imencodemulti(".tiff", [phantom()] * 2)[1].tobytes(),
                    "upload")
