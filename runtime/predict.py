"""``brainedge predict``: classify image files with one artifact; table, JSON or CSV out.

A file that cannot be read is reported in its row and the others still run: one corrupt slice
in a folder of hundreds should not hide the rest. An artifact that did not pass its parity gate
runs only when the user allowed it (``load_classifier``), and then every row says so. Each file
goes through ``run_request``, as an upload to the server does: the same checks, the same
out-of-distribution score, the same answer.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainedge import MEDICAL_NOTICE
from brainedge.errors import BrainEdgeError, ImageDecodeError
from runtime.classifier import Classifier, Prediction
from runtime.imageio import is_image_name
from runtime.ood import OODReport
from runtime.request import run_request

FORMATS = ("table", "json", "csv")


@dataclass(frozen=True)
class FileResult:
    path: Path
    prediction: Prediction | None
    error: str | None = None
    ood: OODReport | None = None


def collect_images(target: Path) -> list[Path]:
    """``target`` itself, or every image file under it (recursively, sorted)."""
    if target.is_file():
        return [target]
    if not target.is_dir():
        raise ImageDecodeError(f"{target}: no such file or folder")
    files = sorted(p for p in target.rglob("*") if p.is_file() and is_image_name(p))
    if not files:
        raise ImageDecodeError(f"{target}: no image files in it (PNG, JPEG, BMP, TIFF, DICOM)")
    return files


def predict_files(classifier: Classifier, files: Iterable[Path]) -> list[FileResult]:
    results = []
    for path in files:
        try:
            answer = run_request(classifier, path.read_bytes(), str(path))
            results.append(FileResult(path, answer.prediction, None, answer.ood))
        except OSError as exc:
            results.append(FileResult(path, None, f"cannot read: {exc.strerror}"))
        except BrainEdgeError as exc:
            results.append(FileResult(path, None, str(exc)))
    return results


def render(results: list[FileResult], classifier: Classifier, fmt: str) -> str:
    if fmt == "json":
        return _json(results, classifier)
    if fmt == "csv":
        return _csv(results, classifier)
    if fmt == "table":
        return _table(results, classifier)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def _gate_cell(classifier: Classifier) -> str:
    """The gate column: empty for a training run (no gate), else passed or failed."""
    gate = classifier.gate
    if gate is None:
        return ""
    if gate.passed:
        return gate.status
    if gate.drop_points is None:
        return gate.status.upper()
    side = "below" if gate.drop_points >= 0 else "above"
    return f"{gate.status.upper()}, {abs(gate.drop_points):.2f} pts {side} parent"


def _ood_cell(r: FileResult) -> str:
    """``ok``, or ``FLAGGED`` and what fired: the learned score, the image rules, or both."""
    if r.ood is None:
        return ""
    score = r.prediction.ood_score if r.prediction else None
    shown = "" if score is None else f"score {score.score:.1f} / {score.threshold:.1f}"
    if not r.ood.flagged:
        return f"ok ({shown})" if shown else "ok"
    fired = [*(["score"] if r.ood.score_flagged else []),
             *(["image checks"] if r.ood.rules_flagged else [])]
    return f"FLAGGED by {' and '.join(fired)}" + (f" ({shown})" if shown else "")


def _json(results: list[FileResult], classifier: Classifier) -> str:
    gate = None if classifier.gate is None else classifier.gate.to_dict()
    rows: list[dict[str, Any]] = [
        {"file": str(r.path), **(r.prediction.to_dict() if r.prediction else {}),
         "ood": None if r.ood is None else r.ood.to_dict(),
         "gate": gate, "error": r.error} for r in results]
    return json.dumps({"notice": MEDICAL_NOTICE, "model": classifier.describe(),
                       "gate": gate, "predictions": rows}, indent=2)


def _csv(results: list[FileResult], classifier: Classifier) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = classifier.class_names
    gate = _gate_cell(classifier)
    writer.writerow(["file", "label", "confidence", *(f"p_{n}" for n in names), "decode_ms",
                     "preprocess_ms", "inference_ms", "total_ms", "error", "gate",
                     "ood_flagged", "ood_score", "ood_threshold", "ood_reasons"])
    for r in results:
        p = r.prediction
        if p is None:
            writer.writerow([r.path, "", "", *([""] * len(names)), "", "", "", "", r.error,
                             gate, "", "", "", ""])
            continue
        score = p.ood_score
        writer.writerow([r.path, p.label, f"{p.confidence:.6f}",
                         *(f"{p.probabilities[n]:.6f}" for n in names),
                         *(f"{t:.3f}" for t in (p.decode_ms, p.preprocess_ms, p.inference_ms,
                                                p.total_ms)), "", gate,
                         "" if r.ood is None else str(r.ood.flagged).lower(),
                         "" if score is None else f"{score.score:.4f}",
                         "" if score is None else f"{score.threshold:.4f}",
                         "" if r.ood is None else " | ".join(r.ood.reasons)])
    return out.getvalue()


def _table(results: list[FileResult], classifier: Classifier) -> str:
    names = classifier.class_names
    gate = classifier.gate
    # A gate column only when the gate did not pass: then beside every answer.
    failed = [_gate_cell(classifier)] if gate is not None and not gate.passed else []
    header = ["file", "prediction", *names, "ms", "ood", *(["gate"] if failed else [])]
    rows = []
    for r in results:
        p = r.prediction
        if p is None:
            rows.append([str(r.path), f"ERROR: {r.error}", *([""] * len(names)), "", "",
                         *failed])
        else:
            rows.append([str(r.path), p.label, *(f"{p.probabilities[n]:.3f}" for n in names),
                         f"{p.total_ms:.1f}", _ood_cell(r), *failed])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = "  ".join
    text = [line(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    text += [line(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    d = classifier.describe()
    text.append(f"\nmodel: {d['model']} {d['format']} {d['precision']} on {d['backend']} "
                f"{d['runtime_version']}; ms = decode + preprocess + inference")
    if (step := classifier.probability_step) is not None:
        text.append(f"probabilities: the {d['precision']} model outputs steps of {step:.4f} "
                    "(before calibration); 0.000 means below one step, and 1.000 that every "
                    "other class was below it, not certainty")
    trust = classifier.trust
    if trust.method is None:
        text.append("ood: image checks only; this artifact has no out-of-distribution score "
                    "(re-create it with brainedge optimize)")
    else:
        text.append(f"ood: score = {trust.method} distance from the training data, flagged "
                    f"above {trust.threshold:.1f}; probabilities calibrated at temperature "
                    f"{trust.temperature or 1.0:.2f}")
    flagged = [r for r in results if r.ood is not None and r.ood.flagged]
    if flagged:
        text.append(f"WARNING: {len(flagged)} file(s) FLAGGED as unlike the MRI slices the "
                    "model was made for; their answers are probably meaningless:")
        text += [f"  {r.path}: {'; '.join(r.ood.reasons)}" for r in flagged]
    if failed:
        text.append(f"WARNING: this model {gate.summary()}; it ran only because of "
                    "--allow-failed-gate: its answers are less accurate than its parent's")
    return "\n".join(text)
