"""Compare an emulated aarch64 run with the native x86_64 run of the same inputs.

Pure functions over the two sides' outputs (``brainedge predict --format json`` and the traces
of ``arm64_trace.py``), so they are unit-tested without QEMU (tests/test_arm64_compare.py).

A model x CPU row passes when every image was classified on both sides, the top-1 class is the
same on every image, a float model's probabilities agree within ``FLOAT_TOLERANCE``, and the
model input (the preprocessed float array) is identical. Integer models' probability
differences are reported as measured: they are not gated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FLOAT_TOLERANCE = 1e-3
MIN_IMAGES = 50
MODEL_INPUT_STEP = "preprocess.preprocess"
PREPARED_STEP = "preprocess.prepare"
INTEGER_MARKERS = ("int8", "uint8", "int4")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    precision: str
    spec_key: str

    @property
    def is_float(self) -> bool:
        """Float arithmetic end to end (fp32, fp16 weights); int8 of any kind is not."""
        return not any(marker in self.precision.lower() for marker in INTEGER_MARKERS)


@dataclass
class PredictionDiff:
    images: int = 0
    top1_agree: int = 0
    top1_mismatches: list[str] = field(default_factory=list)
    max_abs_dp: float = 0.0
    worst_file: str = ""
    failures: list[str] = field(default_factory=list)


@dataclass
class StepDiff:
    step: str
    images: int = 0
    max_abs: float = 0.0
    first_in: int = 0  # images where this was the first step to differ


@dataclass
class TraceDiff:
    images: int = 0
    input_identical: int = 0
    max_input_delta: float = 0.0
    prepared_identical: int = 0
    max_prepared_delta: float = 0.0
    steps: dict[str, StepDiff] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


@dataclass
class Row:
    model: str
    cpu: str
    precision: str
    gated_probabilities: bool
    images: int
    top1_agree: int
    max_abs_dp: float
    max_input_delta: float
    input_identical: int
    max_prepared_delta: float
    passed: bool
    reasons: list[str]


def predictions_by_file(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``brainedge predict --format json`` output -> file name -> its row."""
    rows = report.get("predictions")
    if not isinstance(rows, list):
        raise ValueError("not a brainedge predict JSON report: it has no 'predictions' list")
    return {Path(row["file"]).name: row for row in rows}


def compare_predictions(reference: Mapping[str, Any], candidate: Mapping[str, Any]
                        ) -> PredictionDiff:
    """Per image: same top-1 class, and the largest probability difference over all classes."""
    ref, cand = predictions_by_file(reference), predictions_by_file(candidate)
    diff = PredictionDiff()
    for name in sorted(set(ref) | set(cand)):
        a, b = ref.get(name), cand.get(name)
        if a is None or b is None:
            diff.failures.append(f"{name}: only on {'x86_64' if b is None else 'aarch64'}")
            continue
        if a.get("error") or b.get("error"):
            diff.failures.append(f"{name}: {a.get('error') or b.get('error')}")
            continue
        pa, pb = a["probabilities"], b["probabilities"]
        if set(pa) != set(pb):
            diff.failures.append(f"{name}: different class names {sorted(pa)} / {sorted(pb)}")
            continue
        diff.images += 1
        if a["label"] == b["label"]:
            diff.top1_agree += 1
        else:
            diff.top1_mismatches.append(f"{name}: {a['label']} on x86_64, {b['label']} on "
                                        "aarch64")
        dp = max(abs(float(pa[c]) - float(pb[c])) for c in pa)
        if not diff.worst_file or dp > diff.max_abs_dp:
            diff.max_abs_dp, diff.worst_file = dp, name
    return diff


def compare_served(answer: Mapping[str, Any], reference: Mapping[str, Any]) -> tuple[bool, str]:
    """The server's answer for one file (``file`` + the API's JSON) against x86_64's
    ``brainedge predict`` row for it, with the same (default) model."""
    row = predictions_by_file(reference).get(answer.get("file", ""))
    if row is None or row.get("error"):
        return False, f"x86_64 has no prediction for {answer.get('file')!r} to compare with"
    dp = max(abs(float(answer["probabilities"][c]) - float(p))
             for c, p in row["probabilities"].items())
    same = answer.get("class") == row["label"]
    return same, (f"{answer.get('file')}: {answer.get('class')} (x86_64 {row['label']}), "
                  f"max |Δp| {dp:.2e}")


def max_abs_delta(a: Any, b: Any) -> float:
    """Largest elementwise difference; infinity when the shapes differ (e.g. another crop)."""
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return math.inf
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def compare_traces(ref_index: Mapping[str, Any], ref_blobs: Mapping[str, Any],
                   cand_index: Mapping[str, Any], cand_blobs: Mapping[str, Any],
                   spec_key: str) -> TraceDiff:
    """Step by step, per image, for one preprocessing spec: which steps differ, by how much,
    and whether the model input and the prepared uint8 image are identical."""
    diff = TraceDiff()
    if ref_index.get("code") != cand_index.get("code"):
        # Someone edited runtime/ between the two runs: the steps would not be comparable.
        diff.failures.append("runtime/ changed between the x86_64 and the aarch64 run; run "
                             "the check again on a tree nobody is editing")
    ref_traces, cand_traces = ref_index["traces"], cand_index["traces"]
    for side, index in (("x86_64", ref_index), ("aarch64", cand_index)):
        for name, error in index.get("errors", {}).items():
            diff.failures.append(f"{name}: could not be decoded on {side}: {error}")
    for name in sorted(set(ref_traces) & set(cand_traces)):
        key = f"spec:{spec_key}"
        if key not in ref_traces[name] or key not in cand_traces[name]:
            diff.failures.append(f"{name}: no trace for preprocessing {spec_key}")
            continue
        ref_steps = ref_traces[name]["decode"] + ref_traces[name][key]
        cand_steps = cand_traces[name]["decode"] + cand_traces[name][key]
        diff.images += 1
        _compare_steps(name, ref_steps, ref_blobs, cand_steps, cand_blobs, diff)
    for name in sorted(set(ref_traces) ^ set(cand_traces)):
        if name not in ref_index.get("errors", {}) and name not in cand_index.get("errors", {}):
            diff.failures.append(f"{name}: traced on one side only")
    return diff


def _compare_steps(name: str, ref_steps: list, ref_blobs: Mapping[str, Any], cand_steps: list,
                   cand_blobs: Mapping[str, Any], diff: TraceDiff) -> None:
    first = True
    found = {MODEL_INPUT_STEP: False, PREPARED_STEP: False}
    for (ref_step, ref_blob), (cand_step, cand_blob) in zip(ref_steps, cand_steps, strict=False):
        if ref_step != cand_step:
            # The code took another path (e.g. a crop found no head on one side only).
            step = _step(diff, f"{ref_step} (x86_64) / {cand_step} (aarch64): pipeline diverged")
            step.images += 1
            step.max_abs = math.inf
            step.first_in += first
            diff.max_input_delta = math.inf  # no model input to compare it by
            diff.failures.append(f"{name}: the pipeline diverged at {ref_step} / {cand_step}")
            return
        # Equal blob ids are equal contents (the id is a hash); an empty id is a result that
        # is not an array (e.g. a parsed DICOM dataset), compared through the later steps.
        if ref_blob == cand_blob:
            delta = 0.0
        elif ref_blob and cand_blob:
            delta = max_abs_delta(ref_blobs[ref_blob], cand_blobs[cand_blob])
        else:
            delta = math.inf
        if ref_blob != cand_blob:
            step = _step(diff, ref_step)
            step.images += 1
            step.max_abs = max(step.max_abs, delta)
            step.first_in += first
            first = False
        if ref_step == MODEL_INPUT_STEP:
            found[ref_step] = True
            diff.input_identical += ref_blob == cand_blob
            diff.max_input_delta = max(diff.max_input_delta, delta)
        elif ref_step == PREPARED_STEP:
            found[ref_step] = True
            diff.prepared_identical += ref_blob == cand_blob
            diff.max_prepared_delta = max(diff.max_prepared_delta, delta)
    if len(ref_steps) != len(cand_steps):
        diff.failures.append(f"{name}: {len(ref_steps)} steps on x86_64, {len(cand_steps)} on "
                             "aarch64")
    for step_name, seen in found.items():
        if not seen:
            diff.failures.append(f"{name}: the trace has no {step_name} step; the preprocessing "
                                 "entry points changed, update deploy/arm64-check/"
                                 "arm64_compare.py")


def _step(diff: TraceDiff, name: str) -> StepDiff:
    return diff.steps.setdefault(name, StepDiff(name))


def merge_steps(into: TraceDiff, other: TraceDiff) -> None:
    """Fold one spec's differing steps into a per-CPU summary (decoding is shared by all
    specs, so counts are maxima, not sums)."""
    for step in other.steps.values():
        merged = _step(into, step.step)
        merged.images = max(merged.images, step.images)
        merged.max_abs = max(merged.max_abs, step.max_abs)
        merged.first_in = max(merged.first_in, step.first_in)


def evaluate(model: ModelInfo, cpu: str, predictions: PredictionDiff, trace: TraceDiff,
             min_images: int = MIN_IMAGES, tolerance: float = FLOAT_TOLERANCE) -> Row:
    """One table row, with every reason it fails."""
    reasons = [*predictions.failures, *trace.failures]
    if predictions.images < min_images:
        reasons.append(f"only {predictions.images} images compared; the check needs at least "
                       f"{min_images}")
    if predictions.top1_mismatches:
        reasons.append(f"top-1 differs on {len(predictions.top1_mismatches)} image(s): "
                       + "; ".join(predictions.top1_mismatches[:5]))
    if model.is_float and predictions.max_abs_dp > tolerance:
        reasons.append(f"float model: max |Δp| {predictions.max_abs_dp:.2e} > {tolerance:g} "
                       f"({predictions.worst_file})")
    if trace.input_identical < trace.images:
        firsts = sorted(trace.steps.values(), key=lambda s: -s.first_in)
        reasons.append(f"model input differs on {trace.images - trace.input_identical} of "
                       f"{trace.images} image(s), by up to {trace.max_input_delta:.3g}; first "
                       f"differing step: {', '.join(s.step for s in firsts if s.first_in)}")
    return Row(model=model.name, cpu=cpu, precision=model.precision,
               gated_probabilities=model.is_float, images=predictions.images,
               top1_agree=predictions.top1_agree, max_abs_dp=predictions.max_abs_dp,
               max_input_delta=trace.max_input_delta, input_identical=trace.input_identical,
               max_prepared_delta=trace.max_prepared_delta, passed=not reasons,
               reasons=reasons)


def step_table(traces: Mapping[str, TraceDiff]) -> list[dict[str, Any]]:
    """CPU -> trace diff, flattened: one entry per (CPU, differing step)."""
    return [{"cpu": cpu, **asdict(step)} for cpu, trace in traces.items()
            for step in trace.steps.values()]


def _fmt(value: float) -> str:
    return "differs in shape" if math.isinf(value) else (f"{value:.2e}" if value else "0")


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def render_markdown(rows: list[Row], steps: list[dict[str, Any]],
                    checks: list[dict[str, Any]]) -> str:
    lines = ["| Model | Precision | CPU | Images | Top-1 agreement | Max \\|Δp\\| | "
             "Max Δ model input | Identical inputs | Check |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        gate = f"≤ {FLOAT_TOLERANCE:g}" if r.gated_probabilities else "measured"
        lines.append(f"| {r.model} | {r.precision} | {r.cpu} | {r.images} | "
                     f"{r.top1_agree}/{r.images} | {_fmt(r.max_abs_dp)} ({gate}) | "
                     f"{_fmt(r.max_input_delta)} | {r.input_identical}/{r.images} | "
                     f"{'pass' if r.passed else 'FAIL'} |")
    lines.append("")
    if steps:
        lines += ["Decoding and preprocessing steps that differ from x86_64:", "",
                  "| CPU | Step | Images | Max \\|Δ\\| | First differing step in |",
                  "| --- | --- | ---: | ---: | ---: |"]
        lines += [f"| {s['cpu']} | {s['step']} | {s['images']} | {_fmt(s['max_abs'])} | "
                  f"{s['first_in']} |" for s in steps]
    else:
        lines.append("Every decoding and preprocessing step gave identical results on x86_64 "
                     "and aarch64, for every image.")
    lines.append("")
    if checks:
        # CPU seconds, unlike wall seconds, hardly depend on what else the machine runs.
        lines += ["| CPU | Check | Result | Wall s | CPU s | Detail |",
                  "| --- | --- | --- | ---: | ---: | --- |"]
        lines += [f"| {c['cpu']} | {c['check']} | {'pass' if c['passed'] else 'FAIL'} | "
                  f"{_seconds(c.get('seconds'))} | {_seconds(c.get('cpu_seconds'))} | "
                  f"{c['detail']} |" for c in checks]
        lines.append("")
    failed = [r for r in rows if not r.passed]
    for r in failed:
        lines += [f"**{r.model} on {r.cpu} failed:**", *(f"- {reason}" for reason in r.reasons),
                  ""]
    return "\n".join(lines)
