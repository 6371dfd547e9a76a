"""``brainedge predict``: classify image files with one artifact; table, JSON or CSV out.

A file that cannot be read is reported in its row and the others still run: one corrupt slice
in a folder of hundreds should not hide the rest. An artifact that did not pass its parity gate
runs only when the user allowed it (``load_classifier``), and then every row says so.
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

FORMATS = ("table", "json", "csv")


@dataclass(frozen=True)
class FileResult:
    path: Path
    prediction: Prediction | None
    error: str | None = None


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
            data = path.read_bytes()
            results.append(FileResult(path, classifier.classify_bytes(data, str(path))))
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


def _json(results: list[FileResult], classifier: Classifier) -> str:
    gate = None if classifier.gate is None else classifier.gate.to_dict()
    rows: list[dict[str, Any]] = [
        {"file": str(r.path), **(r.prediction.to_dict() if r.prediction else {}),
         "gate": gate, "error": r.error} for r in results]
    return json.dumps({"notice": MEDICAL_NOTICE, "model": classifier.describe(),
                       "gate": gate, "predictions": rows}, indent=2)


def _csv(results: list[FileResult], classifier: Classifier) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = classifier.class_names
    gate = _gate_cell(classifier)
    writer.writerow(["file", "label", "confidence", *(f"p_{n}" for n in names), "decode_ms",
                     "preprocess_ms", "inference_ms", "total_ms", "error", "gate"])
    for r in results:
        p = r.prediction
        if p is None:
            writer.writerow([r.path, "", "", *([""] * len(names)), "", "", "", "", r.error,
                             gate])
            continue
        writer.writerow([r.path, p.label, f"{p.confidence:.6f}",
                         *(f"{p.probabilities[n]:.6f}" for n in names),
                         *(f"{t:.3f}" for t in (p.decode_ms, p.preprocess_ms, p.inference_ms,
                                                p.total_ms)), "", gate])
    return out.getvalue()


def _table(results: list[FileResult], classifier: Classifier) -> str:
    names = classifier.class_names
    gate = classifier.gate
    # A gate column only when the gate did not pass: then beside every answer.
    failed = [_gate_cell(classifier)] if gate is not None and not gate.passed else []
    header = ["file", "prediction", *names, "ms", *(["gate"] if failed else [])]
    rows = []
    for r in results:
        p = r.prediction
        if p is None:
            rows.append([str(r.path), f"ERROR: {r.error}", *([""] * len(names)), "", *failed])
        else:
            rows.append([str(r.path), p.label, *(f"{p.probabilities[n]:.3f}" for n in names),
                         f"{p.total_ms:.1f}", *failed])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = "  ".join
    text = [line(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    text += [line(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    d = classifier.describe()
    text.append(f"\nmodel: {d['model']} {d['format']} {d['precision']} on {d['backend']} "
                f"{d['runtime_version']}; ms = decode + preprocess + inference")
    if failed:
        text.append(f"WARNING: this model {gate.summary()}; it ran only because of "
                    "--allow-failed-gate: its answers are less accurate than its parent's")
    return "\n".join(text)
