"""The parity gate's verdict on an artifact, read from its manifest, and the rule for serving it.

``brainedge optimize`` checks every artifact against its float32 parent and records the
verdict in the manifest's metrics (``status``, and ``val_drop``/``test_drop`` as fractions;
see ``optimize.validate``). An artifact that failed answers worse than the model it was made
from, so it is never served silently: loading it is refused unless the user explicitly allows
it, and where allowed every answer carries the verdict. A training run (the float32 parent
itself) records no gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from brainedge.errors import FailedGateError
from brainedge.manifest import Manifest

PASSED = "passed"
_SPLITS = ("val", "test")
# How each way of running says "allow it anyway", for the refusal message.
ALLOW_HINT = ("pass --allow-failed-gate (brainedge predict and serve) or set "
              "BRAINEDGE_ALLOW_FAILED_GATE=1 (web app)")


@dataclass(frozen=True)
class Gate:
    """``status``: what the manifest records (``passed`` or ``failed``). ``drop_points``: the
    largest accuracy drop below the parent over the splits checked, in points (negative: more
    accurate than the parent). ``tolerance_points``: the drop the gate allowed."""

    status: str
    drop_points: float | None = None
    tolerance_points: float | None = None

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "drop_points": self.drop_points,
                "tolerance_points": self.tolerance_points}

    def summary(self) -> str:
        """E.g. ``failed its parity gate: 1.40 accuracy points below its float32 parent
        (allowed: 1.00)``."""
        if self.status in (PASSED, "failed"):
            text = f"{self.status} its parity gate"
        else:  # a status this version does not know: not a pass
            text = f"records parity gate status {self.status!r}, not {PASSED!r}"
        if self.drop_points is not None:
            side = "below" if self.drop_points >= 0 else "above"
            text += f": {abs(self.drop_points):.2f} accuracy points {side} its float32 parent"
            if self.tolerance_points is not None:
                text += f" (allowed: {self.tolerance_points:.2f})"
        return text


def read_gate(manifest: Manifest) -> Gate | None:
    """The verdict ``manifest`` records, or ``None`` when it records none (a training run)."""
    metrics = manifest.metrics or {}
    status = metrics.get("status")
    if status is None:
        return None
    drops = [float(metrics[f"{split}_drop"]) for split in _SPLITS
             if isinstance(metrics.get(f"{split}_drop"), (int, float))]
    tolerance = metrics.get("tolerance")
    return Gate(str(status), round(100 * max(drops), 2) if drops else None,
                round(100 * float(tolerance), 2) if isinstance(tolerance, (int, float))
                else None)


def check_gate(manifest: Manifest, where: str, allow_failed: bool = False) -> Gate | None:
    """The gate of the artifact at ``where``; refuse one that did not pass, unless allowed."""
    gate = read_gate(manifest)
    if gate is not None and not gate.passed and not allow_failed:
        raise FailedGateError(
            f"{where}: this artifact {gate.summary()} (brainedge optimize), so it answers "
            "worse than the model it was made from; refusing to serve it. Use a variant that "
            "passed (see the run's optimized/summary.md), or, knowing this, "
            f"{ALLOW_HINT}; every answer will then say so"
        )
    return gate
