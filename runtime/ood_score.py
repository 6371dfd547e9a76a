"""A learned out-of-distribution score, computed from the artifact's own features.

The image heuristics (``runtime.ood``) catch a holiday photo, not a CT slice, an X-ray or a
knee MRI: those have a dark background and pass. The model's penultimate features do tell
them apart: training slices of each class sit in a compact cloud, and the Mahalanobis
distance to the nearest class mean, under one covariance shared by the classes, measures how
far an upload lies from all of them (Lee et al., 2018, "A simple unified framework for
detecting out-of-distribution samples").

``ood.npz`` beside the model holds the class means and the shared precision matrix (fitted on
the training split by ``training.trust``), and the classification layer's weights, for the
energy score (Liu et al., 2020) that ``brainedge evaluate-ood`` compares it with. The manifest
records which score is used and its threshold, set on the validation split for a stated
false-flag rate. Every score here is "higher = less like the training data".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainedge.errors import ArtifactIntegrityError

OOD_FILE = "ood.npz"
METHODS = ("mahalanobis", "energy", "msp")


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Class means (K, D), shared precision (D, D), classifier weight (D, K) and bias (K)."""

    means: np.ndarray
    precision: np.ndarray
    weight: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        k, d = self.means.shape
        shapes = {"precision": (self.precision.shape, (d, d)),
                  "weight": (self.weight.shape, (d, k)), "bias": (self.bias.shape, (k,))}
        bad = {name: got for name, (got, want) in shapes.items() if got != want}
        if bad:
            raise ArtifactIntegrityError(f"{OOD_FILE}: shapes {bad} do not fit {k} class means "
                                         f"of {d} features; re-create the artifact")
        # Precomputed once: d_c(f) = f'Pf - 2 f'(P mu_c) + mu_c'P mu_c.
        object.__setattr__(self, "_p_mu", self.precision @ self.means.T)
        object.__setattr__(self, "_mu_p_mu", np.einsum("kd,dk->k", self.means, self._p_mu))

    @property
    def width(self) -> int:
        return int(self.means.shape[1])

    def mahalanobis(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance to the nearest class mean, one per row."""
        f = np.asarray(features, dtype=np.float32)
        quadratic = np.einsum("nd,nd->n", f @ self.precision, f)
        distances = quadratic[:, None] - 2.0 * (f @ self._p_mu) + self._mu_p_mu[None, :]
        return distances.min(axis=1).astype(np.float64)

    def energy(self, features: np.ndarray) -> np.ndarray:
        """-logsumexp of the logits: low (very negative) for confidently recognised inputs."""
        logits = np.asarray(features, dtype=np.float64) @ self.weight + self.bias
        top = logits.max(axis=1)
        return -(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))

    def save(self, path: Path) -> None:
        """An exactly symmetric precision is stored as its upper triangle: half the bytes of the
        D x D matrix (2 MB of DenseNet121's 4), which counts against the 25 MB that the shipped
        models may take. Any other matrix is stored whole, as earlier artifacts were."""
        p = self.precision
        if np.array_equal(p, p.T):
            matrix = {"precision_upper": p[np.triu_indices(p.shape[0])]}
        else:
            matrix = {"precision": p}
        with open(path, "wb") as fh:
            np.savez_compressed(fh, means=self.means, weight=self.weight, bias=self.bias,
                                **matrix)

    @classmethod
    def load(cls, path: Path) -> FeatureStats:
        try:
            with np.load(path, allow_pickle=False) as data:
                means, weight, bias = (data[name].astype(np.float32)
                                       for name in ("means", "weight", "bias"))
                if "precision_upper" in data.files:
                    precision = _symmetric_from_upper(
                        data["precision_upper"].astype(np.float32), means.shape[1])
                else:
                    precision = data["precision"].astype(np.float32)
                return cls(means, precision, weight, bias)
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactIntegrityError(f"{path}: cannot read the out-of-distribution "
                                         f"statistics ({exc}); re-create the artifact") from exc


def _symmetric_from_upper(upper: np.ndarray, d: int) -> np.ndarray:
    if upper.shape != (d * (d + 1) // 2,):
        raise ValueError(f"precision_upper holds {upper.shape} values, not the {d * (d + 1) // 2}"
                         f" of a {d} x {d} upper triangle")
    matrix = np.zeros((d, d), np.float32)
    matrix[np.triu_indices(d)] = upper
    return matrix + np.triu(matrix, 1).T


def max_softmax_score(probs: np.ndarray) -> np.ndarray:
    """1 - the top probability: the baseline score (Hendrycks and Gimpel, 2017)."""
    return 1.0 - np.asarray(probs, dtype=np.float64).max(axis=1)


def scores(stats: FeatureStats, features: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    """Every method's score for a batch, keyed as in ``METHODS``."""
    return {"mahalanobis": stats.mahalanobis(features), "energy": stats.energy(features),
            "msp": max_softmax_score(probs)}
