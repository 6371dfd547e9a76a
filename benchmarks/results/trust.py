"""The trust page of ``brainedge results``: each artifact's temperature and what it does to the
expected calibration error (validation, from the manifest; test, from ``brainedge evaluate``),
then how well its out-of-distribution score separates the OOD set from the test split
(``brainedge evaluate-ood``), every score compared, and the summary's one line per model.

Artifacts made before calibration existed have no ``extra.calibration``: their cells are dashes
and a note names them. The targets and their verdicts are read from each ood.json, not
restated here, so the page cannot disagree with the evaluation that measured them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.report.checks import TARGET_VARIANT
from benchmarks.results.inputs import (
    FULL_TEST,
    TRAINING,
    Artifact,
    InputFile,
    OODInputs,
    OODReport,
    RunFolder,
)
from brainedge.tables import Column, markdown_table

RUN_LABEL = "run (Keras)"
GROUPS = ("far", "near")
# ood.json "targets" keys, as the verdict column names them.
TARGET_NAMES = {"auroc_far": "far", "auroc_near": "near", "id_flagged": "test flagged"}
Placed = tuple[RunFolder | None, Artifact | None, OODReport]


def trust_markdown(runs: Sequence[RunFolder], ood: OODInputs) -> str:
    parts = ["# Trust: calibration and out-of-distribution score"]
    artifacts = [(run, a) for run in runs for a in run.artifacts]
    if artifacts:
        parts += ["## Calibration", _calibration_table(artifacts),
                  "Temperature: fitted on the validation split by minimising the negative "
                  "log-likelihood; it rescales the probabilities, never the winning class. "
                  "Validation figures come from the artifact's manifest (`extra.calibration`), "
                  f"test figures from its `brainedge evaluate` on the {FULL_TEST} split, with "
                  "bootstrap 95% CIs. ECE: top-label expected calibration error.",
                  *_calibration_notes(artifacts)]
    placed = place_reports(runs, ood)
    if placed:
        parts += ["## Out-of-distribution score", _ood_table(placed), _targets_legend(placed),
                  "## Scores compared", _methods_table(placed),
                  "Every score is computed for every artifact; the chosen one (its manifest's "
                  "`extra.ood`) sets the threshold and the shares flagged. Higher AUROC "
                  "separates the OOD set from the test slices better.",
                  *_stale_notes(placed)]
        run, artifact, report = headline(placed)
        parts += [f"## By kind: {_labels(run, artifact, report)}", _kinds_table(report)]
    notes = [run.problems[TRAINING] for run in runs if TRAINING in run.problems]
    notes += ood.problems
    if notes:
        parts.append("**Missing inputs**, left out of this page rather than guessed:\n\n"
                     + "\n".join(f"- {note}" for note in notes))
    return "\n\n".join(parts) + "\n"


def trust_inputs(runs: Sequence[RunFolder], ood: OODInputs) -> list[InputFile]:
    """Every file the trust page read: manifests and evaluations per artifact, then ood.json."""
    return [f for run in runs for a in run.artifacts for f in a.files] + list(ood.files)


def trust_summary(runs: Sequence[RunFolder], ood: OODInputs) -> str:
    """One line per run, for its edge variant (else the run itself): temperature, validation
    ECE before and after, and the OOD score's AUROC, share of test slices flagged, verdict."""
    placed = place_reports(runs, ood)
    lines = []
    for run in runs:
        artifact = _edge_artifact(run.artifacts)
        if artifact is None:
            continue
        cal = _calibration(artifact)
        text = (f"T = {cal['temperature']:.2f}, validation ECE "
                f"{_arrow(cal.get('ece_before'), cal.get('ece_after'))}"
                if _number(cal.get("temperature")) is not None else "no calibration recorded")
        report = next((r for _, a, r in placed if a is artifact), None)
        if report is None:
            text += "; OOD: not evaluated (`make ood-eval`)"
        else:
            doc, method = report.doc, str(report.doc.get("method"))
            far, near = (_auroc(_group(doc, g), method) for g in GROUPS)
            text += (f"; OOD ({method}): far AUROC {_fixed(far)}, near AUROC {_fixed(near)}, "
                     f"test slices flagged {_percent(doc.get('id_flagged'))}; targets "
                     f"{targets_text(doc.get('targets')) or '–'}")
        lines.append(f"- {run.model} {_label(artifact)}: {text}")
    return "\n".join(lines) or "No finished run was read."


def place_reports(runs: Sequence[RunFolder], ood: OODInputs) -> list[Placed]:
    """Each report beside the artifact it measured, in run and artifact order; reports of
    artifacts outside the given runs (a shipped model, say) follow in path order."""
    left = list(ood.reports)
    placed: list[Placed] = []
    for run in runs:
        for artifact in run.artifacts:
            mine = [r for r in left if _measures(r, run, artifact)]
            placed += [(run, artifact, r) for r in mine]
            left = [r for r in left if r not in mine]
    return placed + [(None, None, r) for r in left]


def headline(placed: Sequence[Placed]) -> Placed:
    """The edge variant's report if there is one (what ships), else the first."""
    return next((p for p in placed if p[1] is not None and p[1].variant == TARGET_VARIANT),
                placed[0])


def targets_text(targets: Any) -> str | None:
    """"pass", or which targets were missed and which could not be measured."""
    if not isinstance(targets, Mapping) or not targets:
        return None
    verdicts = {TARGET_NAMES.get(k, k): t.get("met") for k, t in targets.items()
                if isinstance(t, Mapping)}
    missed = [name for name, met in verdicts.items() if met is False]
    unknown = [name for name, met in verdicts.items() if met is None]
    parts = (["miss: " + ", ".join(missed)] if missed else []) + (
        ["not measured: " + ", ".join(unknown)] if unknown else [])
    return "; ".join(parts) or "pass"


def _measures(report: OODReport, run: RunFolder, artifact: Artifact) -> bool:
    # By the artifact path evaluate-ood recorded; failing that (run from another folder), by
    # the Makefile's layout RUN/ARTIFACT, where the run's own model is under the run's name.
    recorded = report.doc.get("artifact")
    if isinstance(recorded, str) and os.path.abspath(recorded) == os.path.abspath(artifact.path):
        return True
    return (report.path.parent.name == artifact.path.name
            and report.path.parent.parent.name == run.path.name)


def _edge_artifact(artifacts: Sequence[Artifact]) -> Artifact | None:
    return next((a for a in artifacts if a.variant == TARGET_VARIANT),
                artifacts[0] if artifacts else None)


def _label(artifact: Artifact) -> str:
    return artifact.variant or RUN_LABEL


def _labels(run: RunFolder | None, artifact: Artifact | None, report: OODReport) -> str:
    if run is None or artifact is None:
        return f"`{report.doc.get('artifact') or report.path.parent.as_posix()}`"
    return f"{run.model} {_label(artifact)}"


def _calibration(artifact: Artifact) -> Mapping[str, Any]:
    extra = (artifact.manifest or {}).get("extra") or {}
    calibration = extra.get("calibration")
    return calibration if isinstance(calibration, Mapping) else {}


def _calibration_table(artifacts: Sequence[tuple[RunFolder, Artifact]]) -> str:
    rows = []
    for run, artifact in artifacts:
        cal = _calibration(artifact)
        ood = ((artifact.manifest or {}).get("extra") or {}).get("ood")
        before, after = _test_ece(artifact)
        rows.append({
            "model": run.model, "artifact": _label(artifact),
            "temperature": _number(cal.get("temperature")),
            "val_ece": _arrow(cal.get("ece_before"), cal.get("ece_after")),
            "val_nll": _arrow(cal.get("nll_before"), cal.get("nll_after")),
            "val_n": cal.get("n"), "test_before": before, "test_after": after,
            "test_n": ((artifact.metrics or {}).get(FULL_TEST) or {}).get("n"),
            "ood": _threshold_text(ood) if isinstance(ood, Mapping) else None,
        })
    columns: list[Column] = [
        ("model", "Model"), ("artifact", "Artifact"), ("temperature", "Temperature", ".2f"),
        ("val_ece", "Val. ECE before → after"), ("val_nll", "Val. NLL before → after"),
        ("val_n", "Val. n"), ("test_before", "Test ECE before [95% CI]"),
        ("test_after", "Test ECE after [95% CI]"), ("test_n", "Test n"),
        ("ood", "OOD score > threshold (val. flagged)"),
    ]
    return markdown_table(rows, columns)


def _test_ece(artifact: Artifact) -> tuple[str | None, str | None]:
    """(before, after) on the full test split. Without a temperature (an older evaluate, or an
    uncalibrated artifact) the probabilities were not rescaled, so ``ece`` is the "before"."""
    m = (artifact.metrics or {}).get(FULL_TEST)
    if not isinstance(m, Mapping):
        return None, None
    if _number(m.get("temperature")) is None:
        return _with_ci(m.get("ece"), m.get("ece_ci95")), None
    return (_with_ci(m.get("ece_uncalibrated"), m.get("ece_uncalibrated_ci95")),
            _with_ci(m.get("ece"), m.get("ece_ci95")))


def _calibration_notes(artifacts: Sequence[tuple[RunFolder, Artifact]]) -> list[str]:
    notes = []
    bare = [f"{run.model} {_label(a)}" for run, a in artifacts
            if _number(_calibration(a).get("temperature")) is None]
    if bare:
        notes.append("- No `extra.calibration` in the manifest of " + ", ".join(bare) + ": "
                     "made before calibration was fitted into every artifact; re-create it "
                     "(`brainedge optimize RUN` for a variant, `brainedge train` for a run).")
    for run, a in artifacts:
        fitted = _number(_calibration(a).get("temperature"))
        tested = ((a.metrics or {}).get(FULL_TEST) or {}).get("temperature")
        if a.metrics is not None and fitted is not None and tested != fitted:
            # The test figures would describe another calibration than the one shipped.
            was = ("without a temperature" if _number(tested) is None
                   else f"at temperature {tested:.2f}")
            notes.append(f"- {run.model} {_label(a)} was evaluated {was}, its manifest now "
                         f"holds {fitted:.2f}: re-run `brainedge evaluate "
                         f"{a.path.as_posix()}`.")
    return ["\n".join(notes)] if notes else []


def _ood_table(placed: Sequence[Placed]) -> str:
    rows = []
    for run, artifact, report in placed:
        doc, method = report.doc, str(report.doc.get("method"))
        rows.append({
            "model": run.model if run else None,
            "artifact": _label(artifact) if artifact else _labels(run, artifact, report),
            "method": method, "threshold": _number(doc.get("threshold")),
            "far": _auroc_text(_group(doc, "far"), method),
            "near": _auroc_text(_group(doc, "near"), method),
            "flagged": _number(doc.get("id_flagged")), "n_id": doc.get("n_id"),
            "rules": _number(doc.get("id_rules_flagged")),
            "targets": targets_text(doc.get("targets")),
        })
    return markdown_table(rows, [
        ("model", "Model"), ("artifact", "Artifact"), ("method", "Score"),
        ("threshold", "Threshold", ".4g"), ("far", "Far AUROC [95% CI]"),
        ("near", "Near AUROC [95% CI]"), ("flagged", "Test flagged", ".1%"),
        ("n_id", "Test n"), ("rules", "Test flagged by rules", ".1%"), ("targets", "Targets"),
    ])


def _targets_legend(placed: Sequence[Placed]) -> str:
    targets = next((r.doc["targets"] for _, _, r in placed
                    if isinstance(r.doc.get("targets"), Mapping)), {})
    goals = []
    for key, t in targets.items():
        if isinstance(t, Mapping) and _number(t.get("target")) is not None:
            goal = (f"≤ {t['target']:.0%}" if key == "id_flagged" else f"≥ {t['target']:g}")
            goals.append(f"{TARGET_NAMES.get(key, key)} {goal}")
    return ("AUROC of the chosen score against the test slices (higher score = more "
            "out-of-distribution), per group of the OOD set; Test flagged: share of test "
            "slices above the threshold. Targets"
            + (f" ({', '.join(goals)})" if goals else "") + ": pass when all are met.")


def _methods_table(placed: Sequence[Placed]) -> str:
    rows = []
    for run, artifact, report in placed:
        doc = report.doc
        for method in doc.get("methods") or []:
            rows.append({
                "model": run.model if run else None,
                "artifact": _label(artifact) if artifact else _labels(run, artifact, report),
                "method": method, "chosen": method == doc.get("method"),
                "far": _auroc_text(_group(doc, "far"), method, with_n=False),
                "near": _auroc_text(_group(doc, "near"), method, with_n=False),
            })
    return markdown_table(rows, [
        ("model", "Model"), ("artifact", "Artifact"), ("method", "Score"),
        ("chosen", "Chosen"), ("far", "Far AUROC [95% CI]"), ("near", "Near AUROC [95% CI]"),
    ])


def _stale_notes(placed: Sequence[Placed]) -> list[str]:
    # A report whose model file is not the artifact's any more measured an older build.
    notes = []
    for _, artifact, report in placed:
        measured = report.doc.get("sha256")
        files = ((artifact.manifest if artifact else None) or {}).get("files") or {}
        if artifact and isinstance(measured, str) and files and measured not in files.values():
            notes.append(f"- `{report.path.as_posix()}` measured a model file with sha256 "
                         f"{measured[:12]}…, not the one in `{artifact.path.as_posix()}`: "
                         f"re-run `brainedge evaluate-ood {artifact.path.as_posix()}`.")
    return ["\n".join(notes)] if notes else []


def _kinds_table(report: OODReport) -> str:
    method = str(report.doc.get("method"))
    rows = [{"name": row.get("name"), "n": row.get("n"),
             "auroc": _auroc_text(row, method, with_n=False),
             "flagged": _number(row.get("flagged")), "rules": _number(row.get("rules_flagged")),
             "rules_only": _number(row.get("rules_only"))}
            for row in report.doc.get("rows") or [] if isinstance(row, Mapping)]
    return markdown_table(rows, [
        ("name", "Group / kind"), ("n", "Images"), ("auroc", f"AUROC {method} [95% CI]"),
        ("flagged", "Flagged", ".1%"), ("rules", "Flagged by rules", ".1%"),
        ("rules_only", "Rules only", ".1%"),
    ])


def _group(doc: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return next((r for r in doc.get("rows") or []
                 if isinstance(r, Mapping) and r.get("name") == name), None)


def _auroc(row: Mapping[str, Any] | None, method: str) -> float | None:
    return _number(((row or {}).get("auroc") or {}).get(method))


def _auroc_text(row: Mapping[str, Any] | None, method: str, with_n: bool = True) -> str | None:
    """"0.991 [0.982, 0.997] (n=120)": the group's AUROC for ``method``, its CI, its size."""
    value = _auroc(row, method)
    if row is None or value is None:
        return None
    text = _with_ci(value, (row.get("auroc_ci95") or {}).get(method)) or ""
    return text + (f" (n={row['n']})" if with_n and row.get("n") is not None else "")


def _threshold_text(ood: Mapping[str, Any]) -> str | None:
    threshold, flagged = _number(ood.get("threshold")), _number(ood.get("validation_flagged"))
    if ood.get("method") is None or threshold is None:
        return None
    return f"{ood['method']} > {threshold:.4g}" + (
        f" ({flagged:.1%})" if flagged is not None else "")


def _with_ci(value: Any, ci: Any) -> str | None:
    if _number(value) is None:
        return None
    if isinstance(ci, Sequence) and len(ci) == 2 and all(_number(c) is not None for c in ci):
        return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{value:.3f}"


def _arrow(before: Any, after: Any) -> str | None:
    if _number(before) is None and _number(after) is None:
        return None
    return f"{_fixed(_number(before))} → {_fixed(_number(after))}"


def _fixed(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _percent(value: Any) -> str:
    number = _number(value)
    return "–" if number is None else f"{number:.1%}"


def _number(value: Any) -> float | None:
    # JSON gives ints, floats or anything else; a bool is not a measurement.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
