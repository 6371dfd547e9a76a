"""One upload through one model: decode, out-of-distribution checks, preprocess, predict.

Shared by the page and the API so both answer the same. Decoding decides by content (see
``runtime.imageio``); the preprocessing is ``runtime.preprocess``, the code training used.
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

    def preview_data_uri(self) -> str:
        """The model's input as a PNG data URI, encoded in memory for the page."""
        ok, png = cv2.imencode(".png", self.model_input)
        if not ok:  # cannot happen for a uint8 2-D array; a bug if it does
            raise RuntimeError("PNG encoding of the preview failed")
        return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")

    def timing_ms(self) -> dict[str, float]:
        p = self.prediction
        return {"decode": round(p.decode_ms, 3), "ood_checks": round(self.ood_ms, 3),
                "preprocess": round(p.preprocess_ms, 3), "inference": round(p.inference_ms, 3),
                "total": round(p.total_ms + self.ood_ms, 3)}

    def to_json(self) -> dict[str, Any]:
        p = self.prediction
        return {"class": p.label, "confidence": p.confidence,
                "probabilities": p.probabilities, "model": self.model.describe(),
                "timing_ms": self.timing_ms(), "ood": self.ood.to_dict(),
                "input": {"kind": self.input_kind, "width": self.width, "height": self.height},
                "notice": MEDICAL_NOTICE}


def classify_upload(model: LoadedModel, data: bytes) -> Outcome:
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
    return Outcome(model, prediction, check_probabilities(report, scores),
                   "dicom" if is_dicom(data) else "image", gray.shape[1], gray.shape[0],
                   (checked - decoded) * 1e3, model_input[..., 0])
