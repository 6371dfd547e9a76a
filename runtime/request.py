"""One upload through one model, as the server answers it: decode once, check, preprocess,
infer, each stage timed.

The web app answers every request with ``run_request`` and the benchmark's end-to-end system
under test times the same function, so ``brainedge bench`` measures what the server does and
can say what share of a request each stage takes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.classifier import Classifier, Prediction
from runtime.decoded import DecodedImage
from runtime.imageio import decode
from runtime.ood import OODReport, check_image, check_probabilities, check_score
from runtime.preprocess import prepare, scale

STAGES = ("decode", "checks", "preprocess", "inference")


@dataclass(frozen=True)
class StageTimes:
    """Milliseconds per stage of one request. ``checks`` holds both the checks on the image
    and those on the model's answer."""

    decode: float
    checks: float
    preprocess: float
    inference: float

    @property
    def total(self) -> float:
        return self.decode + self.checks + self.preprocess + self.inference

    def to_dict(self) -> dict[str, float]:
        return {stage: getattr(self, stage) for stage in STAGES}


@dataclass(frozen=True, eq=False)
class RequestResult:
    """``decoded``: the upload's record. ``ood``: the checks' findings, the model-side ones
    included. ``model_input``: the (size, size, 3) uint8 image the model saw, before scaling
    (the page shows it); ``batch``: that image scaled, as the model took it (Grad-CAM reads
    it). ``prediction``'s timings are ``stages``' decode, preprocess and inference."""

    decoded: DecodedImage
    ood: OODReport
    prediction: Prediction
    model_input: np.ndarray
    batch: np.ndarray
    stages: StageTimes

    def timing_ms(self) -> dict[str, Any]:
        return {**self.stages.to_dict(), "total": self.stages.total}


def run_request(classifier: Classifier, data: bytes, source: str) -> RequestResult:
    """Classify ``data``. Raises ``ImageDecodeError`` when the bytes are not one readable
    slice; ``source`` names the upload in that message (never a client's file name)."""
    start = time.perf_counter()
    decoded = decode(data, source)
    decoded_at = time.perf_counter()
    report = check_image(decoded)
    checked_at = time.perf_counter()
    model_input = prepare(decoded.pixels, classifier.spec)
    batch = scale(model_input, classifier.spec)[None]
    prepared_at = time.perf_counter()
    raw, features = classifier.predictor.predict_with_features(batch)
    inferred_at = time.perf_counter()
    # Calibrating and scoring the answer count as checks, not inference.
    probs = classifier.trust.calibrate(raw)
    scored = classifier.trust.score(features, probs)
    ood_score = None if scored is None else scored[0]
    prediction = classifier.prediction(probs[0], (decoded_at - start) * 1e3,
                                       (prepared_at - checked_at) * 1e3,
                                       (inferred_at - prepared_at) * 1e3, ood_score)
    report = check_score(check_probabilities(report, prediction.probabilities), ood_score)
    done = time.perf_counter()
    stages = StageTimes(decode=prediction.decode_ms,
                        checks=((checked_at - decoded_at) + (done - inferred_at)) * 1e3,
                        preprocess=prediction.preprocess_ms, inference=prediction.inference_ms)
    return RequestResult(decoded, report, prediction, model_input, batch, stages)
