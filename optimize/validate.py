"""Check an artifact against its float32 parent, running it in its own runtime.

A wrong output shape is fatal (``ShapeMismatchError``, raised by
``training.pipeline.predict_prepared``); an accuracy drop beyond the tolerance marks the artifact
failed, which the summary shows and the command's exit code reports unless the user allows it.
Failures are collected, never silently accepted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from training.metrics import classification_metrics

PASSED, FAILED = "passed", "failed"


@dataclass(frozen=True)
class Parity:
    split: str
    n: int
    accuracy: float
    macro_f1: float
    parent_accuracy: float
    parent_macro_f1: float
    agreement: float  # share of images where artifact and parent agree on the top class
    max_abs_diff: float  # largest probability difference to the parent
    tolerance: float
    status: str

    @property
    def drop(self) -> float:
        return self.parent_accuracy - self.accuracy

    def to_dict(self) -> dict[str, float | int | str]:
        return {**asdict(self), "drop": self.drop}


def compare(probs: np.ndarray, parent_probs: np.ndarray, labels: np.ndarray,
            class_names: tuple[str, ...], tolerance: float, split: str) -> Parity:
    ours = classification_metrics(labels, probs, class_names, n_bootstrap=100)
    theirs = classification_metrics(labels, parent_probs, class_names, n_bootstrap=100)
    drop = theirs["accuracy"] - ours["accuracy"]
    # A small epsilon: accuracies are ratios of counts and "exactly at the tolerance" passes.
    status = PASSED if drop <= tolerance + 1e-9 else FAILED
    return Parity(
        split=split, n=len(labels), accuracy=ours["accuracy"], macro_f1=ours["macro_f1"],
        parent_accuracy=theirs["accuracy"], parent_macro_f1=theirs["macro_f1"],
        agreement=float(np.mean(probs.argmax(1) == parent_probs.argmax(1))),
        max_abs_diff=float(np.max(np.abs(probs - parent_probs))),
        tolerance=tolerance, status=status,
    )
