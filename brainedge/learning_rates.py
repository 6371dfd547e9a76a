"""The learning rate a run actually trained at, as stretches of epochs.

A recipe names its schedule; a run resumed across sessions may not have followed it (README,
"Resume"). The model card and the results pages show what the run's own log recorded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def rate_stretches(epochs: Iterable[tuple[int, float]]) -> list[dict[str, Any]]:
    """(epoch counted from 1, rate) in epoch order -> ``[{"first": 1, "last": 14, "lr": 1e-3},
    ...]``, one entry per stretch at one rate (equal to 1e-4 relative)."""
    stretches: list[dict[str, Any]] = []
    for epoch, lr in epochs:
        if stretches and math.isclose(stretches[-1]["lr"], lr, rel_tol=1e-4):
            stretches[-1]["last"] = epoch
        else:
            stretches.append({"first": epoch, "last": epoch, "lr": lr})
    return stretches


def stretches_text(stretches: Sequence[Mapping[str, Any]]) -> str:
    """"0.001 (epochs 1–14), 0.0003 (epochs 15–19), 9e-05 (epoch 20)"."""
    return ", ".join(
        f"{s['lr']:.2g} (epoch{'s' if s['last'] > s['first'] else ''} {s['first']}"
        + (f"–{s['last']})" if s["last"] > s["first"] else ")") for s in stretches)
