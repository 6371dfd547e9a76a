"""The systems under test: callables the harness times, built on ``runtime.Classifier``.

Two latencies matter and are kept apart. ``InferenceSUT`` is the model alone on a batch
preprocessed up front (MLPerf's untimed sample loading): what a runtime or a quantization
changes. ``EndToEndSUT`` is one image file's bytes to an answer, exactly as the web app makes
it (``runtime.request.run_request``: decode, out-of-distribution checks, preprocess,
inference): what a clinician waits for, with the share of each stage. ``evaluate`` is
accuracy mode, run apart from the timed runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import LatencyStats
from brainedge.errors import ConfigError, ImageDecodeError
from runtime import Classifier
from runtime.imageio import decode, decode_image, read_image
from runtime.request import STAGES, RequestResult, StageTimes, run_request


def synthetic_slice(size: int, seed: int = 0) -> np.ndarray:
    """A dark background with a bright textured ellipse: enough like a slice that brain crop
    and an int8 input's value range behave as on real images. Used when no image is given."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inside = ((yy - size / 2) / (0.42 * size)) ** 2 + ((xx - size / 2) / (0.36 * size)) ** 2 < 1
    image = np.where(inside, rng.normal(120, 30, (size, size)), rng.normal(8, 3, (size, size)))
    return np.clip(image, 0, 255).astype(np.uint8)


class InferenceSUT:
    """``predict_batch`` on one fixed batch of ``batch_size`` preprocessed images."""

    name = "inference"

    def __init__(self, classifier: Classifier, batch_size: int,
                 grays: Sequence[np.ndarray] = ()) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.classifier = classifier
        self.batch_size = batch_size
        sources = list(grays) or [synthetic_slice(2 * classifier.spec.image_size)]
        prepared = [classifier.prepare(g) for g in sources]
        self.batch = np.stack([prepared[i % len(prepared)] for i in range(batch_size)])

    def __call__(self) -> np.ndarray:
        return self.classifier.predict_batch(self.batch)


class EndToEndSUT:
    """``run_request`` on one image per call, cycling over files held in memory, so disk reads
    stay out of the timing but decoding and the checks do not. Each call's stage times are
    kept for ``stage_summary``."""

    name = "end-to-end"

    def __init__(self, classifier: Classifier, image_files: Sequence[str | Path]) -> None:
        if not image_files:
            raise ConfigError("the end-to-end benchmark needs at least one image file")
        self.classifier = classifier
        self.images: list[tuple[bytes, str]] = []
        for path in image_files:
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise ImageDecodeError(f"{path}: cannot read ({exc.strerror})") from exc
            decode(data, str(path))  # refuse a bad file now, not mid-measurement
            self.images.append((data, str(path)))
        self._next = 0
        self._stages: list[StageTimes] = []

    def grays(self) -> list[np.ndarray]:
        return [decode_image(data, source) for data, source in self.images]

    def __call__(self) -> RequestResult:
        data, source = self.images[self._next]
        self._next = (self._next + 1) % len(self.images)
        result = run_request(self.classifier, data, source)
        self._stages.append(result.stages)
        return result

    def stage_summary(self, last: int) -> dict[str, dict[str, float]]:
        """Per stage, p50 and mean ms over the last ``last`` calls, and the stage's share of
        the mean request. ``measure`` makes its warm-up calls first, so its ``runs`` last calls
        are the timed ones. Shares are of means, which add up (percentiles do not); they
        leave out the harness's own few microseconds, which the e2e latency includes."""
        if not 0 < last <= len(self._stages):
            raise ConfigError(f"stage_summary needs 1 to {len(self._stages)} calls, got {last}")
        calls = self._stages[-last:]
        stats = {stage: LatencyStats.from_ms([getattr(c, stage) for c in calls])
                 for stage in STAGES}
        total = sum(s.mean for s in stats.values())
        return {stage: {"p50": s.p50, "mean": s.mean,
                        "share": s.mean / total if total > 0 else None}
                for stage, s in stats.items()}


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y_true`` or ``y_pred``
    (scikit-learn's default), computed with NumPy: edge devices may not have scikit-learn."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ConfigError(f"macro_f1 needs two equal, non-empty label vectors, got "
                          f"{y_true.shape} and {y_pred.shape}")
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    denominator = predicted + actual
    f1 = np.divide(2 * tp, denominator, out=np.zeros(n_classes), where=denominator > 0)
    present = denominator > 0
    return float(f1[present].mean())


def evaluate(classifier: Classifier, samples: Sequence[tuple[str | Path, str]],
             batch_size: int = 32) -> dict[str, Any]:
    """Accuracy and macro-F1 on labelled image files; labels are class names, matched to the
    classifier's own (so a dataset's folder order cannot shift them). Unreadable files are
    skipped and counted in ``skipped``; ``n`` is the number evaluated."""
    if not samples:
        raise ConfigError("evaluation needs at least one labelled image")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    index = {name: i for i, name in enumerate(classifier.class_names)}
    unknown = sorted({label for _, label in samples if label not in index})
    if unknown:
        raise ConfigError(f"evaluation labels {unknown} are not classes of this model "
                          f"({', '.join(classifier.class_names)})")
    y_true: list[int] = []
    y_pred: list[int] = []
    skipped = 0
    for start in range(0, len(samples), batch_size):
        prepared, labels = [], []
        for path, label in samples[start:start + batch_size]:
            try:
                gray = read_image(Path(path))
            except ImageDecodeError:  # counted, as training counts corrupt files
                skipped += 1
                continue
            prepared.append(classifier.prepare(gray))
            labels.append(index[label])
        if prepared:
            probs = classifier.predict_batch(np.stack(prepared))
            y_pred += np.argmax(probs, axis=1).tolist()
            y_true += labels
    if not y_true:
        raise ImageDecodeError(f"none of the {len(samples)} evaluation images could be read")
    truth, pred = np.array(y_true), np.array(y_pred)
    return {"accuracy": float(np.mean(truth == pred)),
            "macro_f1": macro_f1(truth, pred, len(classifier.class_names)),
            "n": len(y_true), "skipped": skipped}
