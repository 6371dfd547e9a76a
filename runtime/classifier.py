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


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]
    decode_ms: float
    preprocess_ms: float
    inference_ms: float

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]

    @property
    def total_ms(self) -> float:
        return self.decode_ms + self.preprocess_ms + self.inference_ms

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "confidence": self.confidence,
                "probabilities": self.probabilities,
                "timing_ms": {"decode": self.decode_ms, "preprocess": self.preprocess_ms,
                              "inference": self.inference_ms, "total": self.total_ms}}


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

    def describe(self) -> dict[str, Any]:
        m = self.artifact.manifest
        return {"model": m.model, "variant": m.extra.get("variant"), "format": m.format,
                "precision": m.precision, "backend": self.predictor.name,
                "runtime_version": self.predictor.version, "path": str(self.artifact.model_path),
                "sha256": self.artifact.sha256, "image_size": self.spec.image_size,
                "class_names": list(self.class_names),
                "gate": None if self.gate is None else self.gate.to_dict()}

    def prepare(self, gray: np.ndarray) -> np.ndarray:
        """Decoded grayscale slice -> the float32 model input."""
        return preprocess(gray, self.spec)

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        return self.predictor.predict(batch)

    def classify(self, gray: np.ndarray, decode_ms: float = 0.0) -> Prediction:
        start = time.perf_counter()
        x = self.prepare(gray)[None]
        prepared = time.perf_counter()
        probs = self.predictor.predict(x)[0]
        done = time.perf_counter()
        return self.prediction(probs, decode_ms, (prepared - start) * 1e3,
                               (done - prepared) * 1e3)

    def classify_bytes(self, data: bytes, source: str = "<upload>") -> Prediction:
        start = time.perf_counter()
        gray = decode(data, source).pixels
        return self.classify(gray, (time.perf_counter() - start) * 1e3)

    def classify_many(self, grays: Sequence[np.ndarray]) -> list[Prediction]:
        """One batched inference; the timings of each prediction are the batch's, shared."""
        start = time.perf_counter()
        batch = np.stack([self.prepare(g) for g in grays])
        prepared = time.perf_counter()
        probs = self.predictor.predict(batch)
        done = time.perf_counter()
        n = len(grays)
        return [self.prediction(p, 0.0, (prepared - start) * 1e3 / n,
                                (done - prepared) * 1e3 / n) for p in probs]

    def prediction(self, probs: np.ndarray, decode_ms: float, preprocess_ms: float,
                   inference_ms: float) -> Prediction:
        """The ``Prediction`` for one row of ``predict_batch``'s probabilities."""
        scores = {name: float(p) for name, p in zip(self.class_names, probs, strict=True)}
        return Prediction(self.class_names[int(np.argmax(probs))], scores, decode_ms,
                          preprocess_ms, inference_ms)


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
                              providers=providers, pool_size=pool_size)
    return Classifier(artifact, predictor)
