"""``summary.md`` of ``brainedge results``: the few numbers the README embeds, accuracy per
model, what int8 costs in accuracy and what it gains in speed, how far its probabilities and
its out-of-distribution score can be trusted, with links to the full pages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.report.checks import TARGET_THREADS, TARGET_VARIANT
from benchmarks.report.rows import baselines, prepare
from benchmarks.results.evaluation import recall_text
from benchmarks.results.inputs import (
    CLEAN_TEST,
    FULL_TEST,
    BenchInputs,
    OODInputs,
    RunFolder,
)
from benchmarks.results.optimize import variant_row
from benchmarks.results.seeds import seeds_summary
from benchmarks.results.trust import trust_summary
from brainedge.tables import markdown_table


def summary_markdown(runs: Sequence[RunFolder], bench: BenchInputs, ood: OODInputs,
                     missing: Sequence[str], pages: Mapping[str, str],
                     seed_runs: Sequence[RunFolder] = ()) -> str:
    """``missing`` notes every input not found; ``pages`` maps each detail page's file name
    to its title, for the links; ``seed_runs`` are other seeds of the runs' recipes."""
    seeds = seeds_summary(runs, seed_runs)
    parts = ["# BrainEdge results", "## Accuracy", _accuracy_table(runs),
             *(["Other seeds of the same recipe:\n\n" + "\n".join(seeds)] if seeds else []),
             f"## Edge variant ({TARGET_VARIANT})", _int8_table(runs),
             f"## Speed-up of {TARGET_VARIANT} over Keras FP32 (e2e p50)", _speed_table(bench),
             "## Trust (calibration, out-of-distribution score)", trust_summary(runs, ood),
             "Full tables: " + " · ".join(f"[{title}]({name})" for name, title in pages.items())]
    if missing:
        parts.append("**Missing inputs**, left out rather than guessed:\n\n"
                     + "\n".join(f"- {note}" for note in missing))
    return "\n\n".join(parts) + "\n"


def _accuracy_table(runs: Sequence[RunFolder]) -> str:
    rows = []
    for run in runs:
        if run.manifest is None:
            continue
        results = run.metrics or {}
        full, clean = results.get(FULL_TEST) or {}, results.get(CLEAN_TEST) or {}
        metrics = run.manifest.get("metrics") or {}
        rows.append({
            "model": run.model, "test": _with_ci(full), "test_n": full.get("n"),
            "clean": _with_ci(clean), "clean_n": clean.get("n"),
            "f1": _pair(full.get("macro_f1"), clean.get("macro_f1")),
            "lowest": _lowest_recall(full), "ece": full.get("ece"),
            "epochs": metrics.get("epochs_run"), "s_epoch": metrics.get("seconds_per_epoch"),
        })
    if not rows:
        return "No finished run was read."
    return markdown_table(rows, [
        ("model", "Model"), ("test", "Test acc. [95% CI]"), ("test_n", "Test n"),
        ("clean", "Leak-free acc. [95% CI]"), ("clean_n", "Leak-free n"),
        ("f1", "Macro-F1 (full / leak-free)"), ("lowest", "Lowest recall (full)"),
        ("ece", "ECE", ".3f"), ("epochs", "Epochs"), ("s_epoch", "s/epoch", ".1f"),
    ])


def _with_ci(metrics: Mapping[str, Any]) -> str | None:
    accuracy, ci = metrics.get("accuracy"), metrics.get("accuracy_ci95")
    if accuracy is None:
        return None
    if isinstance(ci, Sequence) and len(ci) == 2:
        return f"{accuracy:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{accuracy:.3f}"


def _pair(full: Any, clean: Any) -> str | None:
    if full is None and clean is None:
        return None
    return " / ".join("–" if v is None else f"{v:.3f}" for v in (full, clean))


def _lowest_recall(metrics: Mapping[str, Any]) -> str | None:
    per_class = metrics.get("per_class") or {}
    scored = [(v["recall"], name) for name, v in per_class.items() if v.get("recall") is not None]
    if not scored:
        return None
    _, name = min(scored)
    return f"{name} {recall_text(per_class[name])}"


def _int8_table(runs: Sequence[RunFolder]) -> str:
    rows = []
    for run in runs:
        found = [v for v in run.optimized or [] if v.get("variant") == TARGET_VARIANT]
        if found:
            rows.append({"model": run.model, **variant_row(found[0])})
    if not rows:
        return f"No {TARGET_VARIANT} variant among the optimize summaries read."
    return markdown_table(rows, [
        ("model", "Model"), ("size_mb", "Size MB", ".2f"), ("size_ratio", "vs TFLite FP32", ".2f"),
        ("val_drop_pts", "Val. drop (pts)", ".2f"), ("test_drop_pts", "Test drop (pts)", ".2f"),
        ("status", "Gate"),
    ])


def _speed_table(bench: BenchInputs) -> str:
    rows = []
    for run in prepare(bench.docs):
        cpu = run.cpu()
        for model in run.models():
            of_model = [r for r in cpu if r["model"] == model]
            base = baselines(of_model)
            int8 = {r["threads"]: r for r in of_model if r["variant"] == TARGET_VARIANT}
            for threads in TARGET_THREADS:
                fast = int8[threads]["e2e_p50"] if threads in int8 else None
                slow = base[threads]["e2e_p50"] if threads in base else None
                if fast and slow:  # an emulated run, or a pair not measured, has no ratio
                    rows.append({"device": run.label, "model": model, "threads": threads,
                                 "base": slow, "int8": fast, "speedup": f"{slow / fast:.2f}x"})
    if not rows:
        return f"No device run with both {TARGET_VARIANT} and Keras FP32 rows was read."
    return markdown_table(rows, [
        ("device", "Device"), ("model", "Model"), ("threads", "Threads"),
        ("base", "Keras FP32 ms", ".2f"), ("int8", f"{TARGET_VARIANT} ms", ".2f"),
        ("speedup", "Speed-up"),
    ])
