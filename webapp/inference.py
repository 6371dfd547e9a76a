"""One upload through one model: decode, out-of-distribution checks, preprocess, predict.

Shared by the page and the API so both answer the same. Decoding decides by content (see
``runtime.imageio``); the preprocessing is ``runtime.preprocess``, the code training used.
When asked, and where the artifact has one (``LoadedModel.gradcam``), a Grad-CAM heat map of
the float32 parent for the class the artifact predicted is laid over the model's input.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from brainedge import MEDICAL_NOTICE
from brainedge.errors import ImageDecodeError
from runtime.classifier import Prediction
from runtime.dicom import is_dicom
from runtime.gradcam import overlay
from runtime.imageio import decode_image
from runtime.preprocess import prepare, scale
from webapp.errors import Refusal
from webapp.ood import OODReport, check_image, check_probabilities
from webapp.registry import LoadedModel

# The name decoding errors start with: never the client's file name, which may be a patient's.
SOURCE = "upload"


@dataclass(frozen=True)
class Outcome:
    model: LoadedModel
    prediction: Prediction
    ood: OODReport
    input_kind: str  # "dicom" or "image"
    width: int
    height: int
    ood_ms: float
    model_input: np.ndarray  # the (size, size) uint8 image the model saw, before scaling
    # The Grad-CAM overlay, uint8 RGB of the model input's size, when asked for and available.
    gradcam: np.ndarray | None = None
    gradcam_ms: float | None = None

    def preview_data_uri(self) -> str:
        """The model's input as a PNG data URI, encoded in memory for the page."""
        return "data:image/png;base64," + _png_base64(self.model_input)

    def gradcam_png_base64(self) -> str | None:
        if self.gradcam is None:
            return None
        # OpenCV writes 3-channel arrays as BGR.
        return _png_base64(cv2.cvtColor(self.gradcam, cv2.COLOR_RGB2BGR))

    def gradcam_data_uri(self) -> str | None:
        encoded = self.gradcam_png_base64()
        return None if encoded is None else "data:image/png;base64," + encoded

    def timing_ms(self) -> dict[str, float]:
        p = self.prediction
        timing = {"decode": round(p.decode_ms, 3), "ood_checks": round(self.ood_ms, 3),
                  "preprocess": round(p.preprocess_ms, 3), "inference": round(p.inference_ms, 3),
                  "total": round(p.total_ms + self.ood_ms, 3)}
        if self.gradcam_ms is not None:
            # Apart from the total: that stays the classification's, comparable across requests.
            timing["gradcam"] = round(self.gradcam_ms, 3)
        return timing

    def to_json(self, gradcam: bool = False) -> dict[str, Any]:
        """The API's answer; ``gradcam`` adds the heat map (a few kB of base64 PNG, so only
        when a client asks), or ``null`` and the reason when this artifact has none."""
        p = self.prediction
        body = {"class": p.label, "confidence": p.confidence,
                "probabilities": p.probabilities, "model": self.model.describe(),
                "timing_ms": self.timing_ms(), "ood": self.ood.to_dict(),
                "input": {"kind": self.input_kind, "width": self.width, "height": self.height},
                "notice": MEDICAL_NOTICE}
        if gradcam:
            body["gradcam_png_base64"] = self.gradcam_png_base64()
            if self.gradcam is None:
                body["gradcam_reason"] = self.model.gradcam_reason
        return body


def _png_base64(image: np.ndarray) -> str:
    ok, png = cv2.imencode(".png", image)
    if not ok:  # cannot happen for a uint8 2-D or 3-channel array; a bug if it does
        raise RuntimeError("PNG encoding of an image for the page failed")
    return base64.b64encode(png.tobytes()).decode("ascii")


def classify_upload(model: LoadedModel, data: bytes, gradcam: bool = False) -> Outcome:
    """Classify ``data``; with ``gradcam``, also explain the answer where ``model`` can."""
    classifier = model.classifier
    start = time.perf_counter()
    try:
        gray = decode_image(data, SOURCE)
    except ImageDecodeError as exc:
        raise Refusal(415, "unreadable_image",
                      f"{exc}. Accepted: one PNG, JPEG, BMP or TIFF image, or a single-frame "
                      "DICOM slice.") from exc
    decoded = time.perf_counter()
    report = check_image(gray, data)
    checked = time.perf_counter()
    model_input = prepare(gray, classifier.spec)
    batch = scale(model_input, classifier.spec)[None]
    prepared = time.perf_counter()
    probs = classifier.predict_batch(batch)[0]
    done = time.perf_counter()
    scores = {name: float(p) for name, p in zip(classifier.class_names, probs, strict=True)}
    prediction = Prediction(classifier.class_names[int(np.argmax(probs))], scores,
                            (decoded - start) * 1e3, (prepared - checked) * 1e3,
                            (done - prepared) * 1e3)
    heat, heat_ms = None, None
    if gradcam and model.gradcam is not None:
        # The class the served artifact predicted, by index: the registry checked that the
        # parent names the same classes in the same order, and preprocesses alike.
        heat = overlay(model_input, model.gradcam.heatmap(batch[0], int(np.argmax(probs))))
        heat_ms = (time.perf_counter() - done) * 1e3
    return Outcome(model, prediction, check_probabilities(report, scores),
                   "dicom" if is_dicom(data) else "image", gray.shape[1], gray.shape[0],
                   (checked - decoded) * 1e3, model_input[..., 0], heat, heat_ms)
