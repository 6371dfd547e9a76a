"""One upload through one model, for the page and the API: ``runtime.request.run_request``
(decode once, out-of-distribution checks, preprocess, predict), refusals as HTTP answers.

Shared by the page and the API so both answer the same, and the benchmark times the same
``run_request``. Decoding decides by content (see ``runtime.imageio``); the preprocessing is
``runtime.preprocess``, the code training used. When asked, and where the artifact has one
(``LoadedModel.gradcam``), a Grad-CAM heat map of the float32 parent for the class the
artifact predicted is laid over the model's input.
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
from runtime.gate import Gate
from runtime.gradcam import overlay
from runtime.ood import OODReport
from runtime.request import RequestResult, run_request
from webapp.errors import Refusal
from webapp.registry import LoadedModel

# The name decoding errors start with: never the client's file name, which may be a patient's.
SOURCE = "upload"


@dataclass(frozen=True)
class Outcome:
    model: LoadedModel
    result: RequestResult
    # The Grad-CAM overlay, uint8 RGB of the model input's size, when asked for and available.
    gradcam: np.ndarray | None = None
    gradcam_ms: float | None = None

    @property
    def prediction(self) -> Prediction:
        return self.result.prediction

    @property
    def ood(self) -> OODReport:
        return self.result.ood

    @property
    def input_kind(self) -> str:  # "dicom" or "image"
        return self.result.decoded.kind

    @property
    def width(self) -> int:
        return self.result.decoded.width

    @property
    def height(self) -> int:
        return self.result.decoded.height

    @property
    def model_input(self) -> np.ndarray:
        """The (size, size) uint8 image the model saw, before scaling."""
        return self.result.model_input[..., 0]

    @property
    def gate(self) -> Gate | None:
        """The artifact's parity gate; one that did not pass is served only when allowed."""
        return self.model.classifier.gate

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
        stages = self.result.stages
        timing = {"decode": round(stages.decode, 3), "ood_checks": round(stages.checks, 3),
                  "preprocess": round(stages.preprocess, 3),
                  "inference": round(stages.inference, 3), "total": round(stages.total, 3)}
        if self.gradcam_ms is not None:
            # Apart from the total: that stays the classification's, comparable across requests.
            timing["gradcam"] = round(self.gradcam_ms, 3)
        return timing

    def to_json(self, gradcam: bool = False) -> dict[str, Any]:
        """The API's answer; ``gradcam`` adds the heat map (a few kB of base64 PNG, so only
        when a client asks), or ``null`` and the reason when this artifact has none.
        ``gate`` is the artifact's parity gate verdict beside every answer (``null`` for a
        training run, which has none)."""
        p = self.prediction
        gate = self.gate
        body = {"class": p.label, "confidence": p.confidence,
                "probabilities": p.probabilities, "model": self.model.describe(),
                "gate": None if gate is None else gate.to_dict(),
                "timing_ms": self.timing_ms(), "ood": self.ood.to_dict(),
                "input": {"kind": self.input_kind, "width": self.width, "height": self.height},
                "notice": MEDICAL_NOTICE}
        if gate is not None and not gate.passed:
            body["gate_warning"] = gate_warning(gate)
        if gradcam:
            body["gradcam_png_base64"] = self.gradcam_png_base64()
            if self.gradcam is None:
                body["gradcam_reason"] = self.model.gradcam_reason
        return body


def gate_warning(gate: Gate) -> str:
    """What the page and the API say beside an answer of an artifact that did not pass."""
    return (f"This model {gate.summary()}: it answers worse than the model it was made from. "
            "It is served only because the operator allowed it (BRAINEDGE_ALLOW_FAILED_GATE).")


def _png_base64(image: np.ndarray) -> str:
    ok, png = cv2.imencode(".png", image)
    if not ok:  # cannot happen for a uint8 2-D or 3-channel array; a bug if it does
        raise RuntimeError("PNG encoding of an image for the page failed")
    return base64.b64encode(png.tobytes()).decode("ascii")


def classify_upload(model: LoadedModel, data: bytes, gradcam: bool = False) -> Outcome:
    """Classify ``data``; with ``gradcam``, also explain the answer where ``model`` can."""
    try:
        result = run_request(model.classifier, data, SOURCE)
    except ImageDecodeError as exc:
        raise Refusal(415, "unreadable_image",
                      f"{exc}. Accepted: one PNG, JPEG, BMP or single-page TIFF image, or a "
                      "single-frame DICOM slice.") from exc
    heat, heat_ms = None, None
    if gradcam and model.gradcam is not None:
        # The class the served artifact predicted, by index: the registry checked that the
        # parent names the same classes in the same order, and preprocesses alike.
        start = time.perf_counter()
        label = model.classifier.class_names.index(result.prediction.label)
        heat = overlay(result.model_input, model.gradcam.heatmap(result.batch[0], label))
        heat_ms = (time.perf_counter() - start) * 1e3
    return Outcome(model, result, heat, heat_ms)
