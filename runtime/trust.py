"""What an artifact's manifest says about trusting its answers: the temperature that
calibrates its probabilities and the out-of-distribution score with its threshold.

Both are fitted per artifact (``training.trust``; an int8 model gets its own) and read here
the same way by every runtime. An artifact made before they existed has neither: its answers
are then uncalibrated and unscored, and ``describe`` says so rather than pretending.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from brainedge.errors import ArtifactIntegrityError
from brainedge.manifest import sha256_file
from runtime.artifact import Artifact
from runtime.ood_score import METHODS, OOD_FILE, FeatureStats, scores
from runtime.temperature import apply_temperature, check_temperature


@dataclass(frozen=True)
class OODScore:
    """One answer's score against the artifact's threshold; ``flagged`` when above it."""

    method: str
    score: float
    threshold: float
    false_flag_rate: float

    @property
    def flagged(self) -> bool:
        return self.score > self.threshold

    @property
    def reason(self) -> str | None:
        if not self.flagged:
            return None
        return (f"unlike the MRI slices the model was trained on: its out-of-distribution "
                f"score is {self.score:.1f}, above the threshold of {self.threshold:.1f} that "
                f"only {self.false_flag_rate:.0%} of its validation slices exceed. It may be "
                "another kind of scan, another body part or orientation, or a damaged or "
                "edited image")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "score": self.score, "threshold": self.threshold,
                "false_flag_rate": self.false_flag_rate, "flagged": self.flagged,
                "reason": self.reason}


@dataclass(frozen=True, eq=False)
class Trust:
    temperature: float | None
    stats: FeatureStats | None
    method: str | None
    threshold: float | None
    false_flag_rate: float | None = None

    @classmethod
    def from_artifact(cls, artifact: Artifact, feature_width: int | None) -> Trust:
        extra = artifact.manifest.extra
        calibration = extra.get("calibration") or {}
        temperature = calibration.get("temperature")
        if temperature is not None:
            temperature = check_temperature(temperature)
        ood = extra.get("ood")
        if not ood:
            return cls(temperature, None, None, None)
        return cls(temperature, *_load_ood(artifact, ood, feature_width))

    def calibrate(self, probs: np.ndarray) -> np.ndarray:
        return apply_temperature(probs, self.temperature)

    def all_scores(self, features: np.ndarray | None,
                   probs: np.ndarray) -> dict[str, np.ndarray] | None:
        """Every method's score (``runtime.ood_score.METHODS``), or None without statistics."""
        if self.stats is None or features is None:
            return None
        return scores(self.stats, features, probs)

    def score(self, features: np.ndarray | None, probs: np.ndarray) -> list[OODScore] | None:
        """Each row's score under the artifact's chosen method and threshold."""
        found = self.all_scores(features, probs)
        if found is None or self.method is None or self.threshold is None:
            return None
        rate = self.false_flag_rate or 0.0
        return [OODScore(self.method, float(s), self.threshold, rate)
                for s in found[self.method]]

    def describe(self) -> dict[str, Any]:
        return {"temperature": self.temperature,
                "ood": None if self.method is None else {
                    "method": self.method, "threshold": self.threshold,
                    "false_flag_rate": self.false_flag_rate}}


def _load_ood(artifact: Artifact, ood: Mapping[str, Any],
              feature_width: int | None) -> tuple[FeatureStats, str, float, float]:
    folder, manifest = artifact.folder, artifact.manifest
    method, threshold = ood.get("method"), ood.get("threshold")
    if method not in METHODS or not isinstance(threshold, int | float):
        raise ArtifactIntegrityError(f"{folder}: its manifest's ood entry names method "
                                     f"{method!r} and threshold {threshold!r}; expected one of "
                                     f"{', '.join(METHODS)} and a number. Re-create it")
    path = folder / OOD_FILE
    expected = manifest.files.get(OOD_FILE)
    if expected is None or not path.is_file() or sha256_file(path) != expected:
        raise ArtifactIntegrityError(f"{path}: missing or not the file its manifest lists; "
                                     "refusing to score against unverified statistics. "
                                     "Re-copy or re-create the artifact folder")
    if feature_width is None:
        raise ArtifactIntegrityError(f"{folder}: its manifest has out-of-distribution "
                                     "statistics but the model has no features output")
    stats = FeatureStats.load(path)
    if stats.width != feature_width:
        raise ArtifactIntegrityError(f"{path}: statistics of {stats.width} features, but the "
                                     f"model outputs {feature_width}; re-create the artifact")
    return stats, str(method), float(threshold), float(ood.get("false_flag_rate", 0.0))
