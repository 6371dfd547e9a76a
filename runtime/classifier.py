"""A loaded artifact ready to classify images: predictor + preprocessing + class names, all
taken from the artifact's verified manifest.

This is what ``brainedge predict``, the benchmarks' end-to-end runs and the web app call. The
preprocessing is ``runtime.preprocess``, the very code training and evaluation use.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainedge import MEDICAL_NOTICE
from brainedge.errors import ModelLoadError, UnknownBackendError
from runtime.artifact import Artifact, open_artifact
from runtime.base import Predictor
from runtime.gate import Gate, check_gate, read_gate
from runtime.imageio import decode
from runtime.preprocess import PreprocessSpec, preprocess
from runtime.trust import OODScore, Trust


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]
    decode_ms: float
    preprocess_ms: float
    inference_ms: float
    # The learned out-of-distribution score, None when the artifact has no statistics.
    ood_score: OODScore | None = None

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]

    @property
    def total_ms(self) -> float:
        return self.decode_ms + self.preprocess_ms + self.inference_ms

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "confidence": self.confidence,
                "probabilities": self.probabilities,
                "ood_score": None if self.ood_score is None else self.ood_score.to_dict(),
                "timing_ms": {"decode": self.decode_ms, "preprocess": self.preprocess_ms,
                              "inference": self.inference_ms, "total": self.total_ms}}


@dataclass(frozen=True, eq=False)
class ModelOutputs:
    raw_probabilities: np.ndarray  # (N, K) as the model gives them
    probabilities: np.ndarray  # (N, K) at the artifact's temperature
    features: np.ndarray | None  # (N, D), None when the model has no features output
    ood_scores: dict[str, np.ndarray] | None  # per method, None without statistics


class Classifier:
    notice = MEDICAL_NOTICE

    def __init__(self, artifact: Artifact, predictor: Predictor) -> None:
        self.artifact = artifact
        self.predictor = predictor
        manifest = artifact.manifest
        self.class_names: tuple[str, ...] = tuple(manifest.class_names)
        self.spec = PreprocessSpec.from_dict(manifest.preprocessing)
        # The parity gate's verdict, shown beside every answer (None: a training run).
        self.gate: Gate | None = read_gate(manifest)
        outputs = predictor.output_spec.shape[-1]
        if outputs != len(self.class_names):
            raise ModelLoadError(f"{artifact.model_path}: the model outputs {outputs} scores but "
                                 f"its manifest names {len(self.class_names)} classes")
        size = predictor.input_spec.shape[1:3]
        if any(d is not None and d != self.spec.image_size for d in size):
            raise ModelLoadError(f"{artifact.model_path}: the model takes {size} images but its "
                                 f"manifest preprocesses to {self.spec.image_size}")
        features = predictor.feature_spec
        # The temperature and the out-of-distribution statistics fitted for this artifact.
        self.trust = Trust.from_artifact(artifact, None if features is None
                                         else features.shape[-1])

    def describe(self) -> dict[str, Any]:
        m = self.artifact.manifest
        return {"model": m.model, "variant": m.extra.get("variant"), "format": m.format,
                "precision": m.precision, "backend": self.predictor.name,
                "runtime_version": self.predictor.version, "path": str(self.artifact.model_path),
                "sha256": self.artifact.sha256, "image_size": self.spec.image_size,
                "class_names": list(self.class_names),
                "gate": None if self.gate is None else self.gate.to_dict(),
                "probability_step": self.probability_step,
                **self.trust.describe()}

    @property
    def probability_step(self) -> float | None:
        """The resolution of the model's probabilities: an integer model's output quantization
        step (1/256 for int8 softmax), None for a float model. With it a shown 100% reads as
        "every other class below one step", not as certainty."""
        out = self.predictor.output_spec
        if out.scale is None or not np.issubdtype(np.dtype(out.dtype), np.integer):
            return None
        return float(out.scale)

    def prepare(self, gray: np.ndarray) -> np.ndarray:
        """Decoded grayscale slice -> the float32 model input."""
        return preprocess(gray, self.spec)

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (the artifact's temperature applied)."""
        return self.trust.calibrate(self.predictor.predict(batch))

    def predict_scored(self, batch: np.ndarray) -> tuple[np.ndarray, list[OODScore] | None]:
        """Calibrated probabilities and each row's out-of-distribution score (or None)."""
        raw, features = self.predictor.predict_with_features(batch)
        probs = self.trust.calibrate(raw)
        return probs, self.trust.score(features, probs)

    def predict_outputs(self, batch: np.ndarray) -> ModelOutputs:
        """Everything one inference gives: raw and calibrated probabilities, features and the
        score of every out-of-distribution method (for evaluation and benchmarks)."""
        raw, features = self.predictor.predict_with_features(batch)
        probs = self.trust.calibrate(raw)
        return ModelOutputs(raw, probs, features, self.trust.all_scores(features, probs))

    def ood_scores(self, grays: Sequence[np.ndarray], batch_size: int = 32
                   ) -> dict[str, np.ndarray]:
        """Every method's out-of-distribution score for decoded slices (higher: less like the
        training data). Raises ``ModelLoadError`` for an artifact without statistics."""
        found: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(grays), batch_size):
            batch = np.stack([self.prepare(g) for g in grays[start:start + batch_size]])
            scored = self.predict_outputs(batch).ood_scores
            if scored is None:
                raise ModelLoadError(f"{self.artifact.folder} has no out-of-distribution "
                                     "statistics; re-create it with brainedge optimize")
            for method, values in scored.items():
                found.setdefault(method, []).append(values)
        return {method: np.concatenate(parts) for method, parts in found.items()}

    def classify(self, gray: np.ndarray, decode_ms: float = 0.0) -> Prediction:
        start = time.perf_counter()
        x = self.prepare(gray)[None]
        prepared = time.perf_counter()
        probs, scored = self.predict_scored(x)
        done = time.perf_counter()
        return self.prediction(probs[0], decode_ms, (prepared - start) * 1e3,
                               (done - prepared) * 1e3, None if scored is None else scored[0])

    def classify_bytes(self, data: bytes, source: str = "<upload>") -> Prediction:
        start = time.perf_counter()
        gray = decode(data, source).pixels
        return self.classify(gray, (time.perf_counter() - start) * 1e3)

    def classify_many(self, grays: Sequence[np.ndarray]) -> list[Prediction]:
        """One batched inference; the timings of each prediction are the batch's, shared."""
        start = time.perf_counter()
        batch = np.stack([self.prepare(g) for g in grays])
        prepared = time.perf_counter()
        probs, scored = self.predict_scored(batch)
        done = time.perf_counter()
        n = len(grays)
        return [self.prediction(p, 0.0, (prepared - start) * 1e3 / n,
                                (done - prepared) * 1e3 / n, None if scored is None else scored[i])
                for i, p in enumerate(probs)]

    def prediction(self, probs: np.ndarray, decode_ms: float, preprocess_ms: float,
                   inference_ms: float, ood_score: OODScore | None = None) -> Prediction:
        """The ``Prediction`` for one row of ``predict_batch``'s probabilities."""
        scores = {name: float(p) for name, p in zip(self.class_names, probs, strict=True)}
        return Prediction(self.class_names[int(np.argmax(probs))], scores, decode_ms,
                          preprocess_ms, inference_ms, ood_score)


def load_classifier(
    path: str | Path,
    backend: str | None = None,
    num_threads: int | None = None,
    providers: Sequence[str] | None = None,
    pool_size: int = 1,
    allow_failed_gate: bool = False,
) -> Classifier:
    """Open and verify an artifact (see ``runtime.artifact``) and load it in its runtime.

    ``backend`` defaults to the one the manifest's format implies; ``providers`` are ONNX
    Runtime execution providers (e.g. CUDAExecutionProvider); ``pool_size`` is the number of
    LiteRT interpreters shared by concurrent callers. An artifact that failed its parity gate
    is refused (``FailedGateError``) unless ``allow_failed_gate``; then ``Classifier.gate``
    says so, for every answer to show.
    """
    from runtime import get_predictor

    artifact = open_artifact(path)
    check_gate(artifact.manifest, str(artifact.folder), allow_failed_gate)
    if backend is not None and backend != artifact.backend:
        raise UnknownBackendError(f"{artifact.folder} is a {artifact.manifest.format} artifact, "
                                  f"run by {artifact.backend}, not {backend}")
    predictor = get_predictor(artifact.model_path, artifact.backend, num_threads=num_threads,
                              providers=providers, pool_size=pool_size, content=artifact.content)
    return Classifier(artifact, predictor)
