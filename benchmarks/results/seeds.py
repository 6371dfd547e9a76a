"""The recipe's stability across seeds, for ``brainedge results``: the same training command
run again with another ``--seed``, each run's test accuracy with its bootstrap CI, and whether
the runs land within each other's intervals.

A seed run is matched to the main run of the same model. Their configs must differ in the seed
alone: a run that also changed the recipe (learning rate, augmentation, ...) is another recipe,
not a second seed, and is listed with what differs instead of being counted as agreement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.results.evaluation import recall_text
from benchmarks.results.inputs import CLEAN_TEST, EVALUATION, FULL_TEST, RunFolder
from brainedge.learning_rates import rate_stretches, stretches_text
from brainedge.tables import markdown_table

# Config keys that do not change what is learned: the seed itself, and logging.
_NOT_RECIPE = frozenset({"seed", "tensorboard"})
SUBSETS = {FULL_TEST: "full test", CLEAN_TEST: "leakage-free"}


@dataclass(frozen=True)
class SeedGroup:
    """One model's main run and the other seeds of its recipe."""

    model: str
    runs: tuple[RunFolder, ...]  # the main run first
    other_recipe: Mapping[str, tuple[str, ...]]  # run name -> config keys that differ

    @property
    def same_recipe(self) -> tuple[RunFolder, ...]:
        return tuple(r for r in self.runs if r.name not in self.other_recipe)


def group_seeds(runs: Sequence[RunFolder], seed_runs: Sequence[RunFolder]) -> list[SeedGroup]:
    """A group per main run that has at least one seed run of the same model."""
    groups = []
    for main in runs:
        if main.manifest is None:
            continue
        extra = tuple(r for r in seed_runs if r.manifest is not None and r.model == main.model)
        if extra:
            other = {r.name: keys for r in extra if (keys := recipe_difference(main, r))}
            groups.append(SeedGroup(main.model, (main, *extra), other))
    return groups


def recipe_difference(a: RunFolder, b: RunFolder) -> tuple[str, ...]:
    """The config keys two runs differ in, besides the seed and where they are stored."""
    ca, cb = a.config or {}, b.config or {}
    return tuple(sorted(k for k in set(ca) | set(cb)
                        if k not in _NOT_RECIPE and ca.get(k) != cb.get(k)))


def unmatched(runs: Sequence[RunFolder], seed_runs: Sequence[RunFolder]) -> list[str]:
    """Notes for seed runs that cannot be shown: unfinished, unevaluated, or of no main run."""
    models = {r.model for r in runs if r.manifest is not None}
    notes = [r.problems[EVALUATION] for r in seed_runs if EVALUATION in r.problems]
    notes += [f"`{r.name}` is a {r.model} run, but no {r.model} run is among `--runs`: "
              "it has nothing to be compared with" for r in seed_runs
              if r.manifest is not None and r.model not in models]
    return notes


def seeds_markdown(runs: Sequence[RunFolder], seed_runs: Sequence[RunFolder]) -> str:
    """The "Seeds" section of the evaluation page (empty when no seed run was given)."""
    if not seed_runs:
        return ""
    parts = ["## Seeds: the same recipe, run again",
             "The same `brainedge train` command with another `--seed` (which also draws its "
             "own validation split). Each run is evaluated on the same test images."]
    for group in group_seeds(runs, seed_runs):
        parts.append(_table(group))
        parts += _verdicts(group)
    notes = unmatched(runs, seed_runs)
    if notes:
        parts.append("**Missing inputs**, left out of this section rather than guessed:\n\n"
                     + "\n".join(f"- {note}" for note in notes))
    return "\n\n".join(parts)


def seeds_summary(runs: Sequence[RunFolder], seed_runs: Sequence[RunFolder]) -> list[str]:
    """One line per model with seed runs, for the summary page."""
    lines = []
    for group in group_seeds(runs, seed_runs):
        same = group.same_recipe
        full = [_accuracy(r, FULL_TEST) for r in same]
        if len(same) < 2 or any(a is None for a in full):
            continue
        seeds = ", ".join(str(_seed(r)) for r in same)
        verdict = "within" if within_each_other(same, FULL_TEST) else "**not** within"
        lines.append(f"- {group.model}, seeds {seeds}: full test "
                     + " and ".join(f"{a:.3f}" for a in full if a is not None)
                     + f", {verdict} each other's 95% CIs")
    return lines


def within_each_other(runs: Sequence[RunFolder], subset: str) -> bool | None:
    """True when every run's accuracy lies inside every other run's 95% CI; None when a run
    lacks the figures."""
    figures = [f for r in runs if (f := _figures(r, subset)) is not None]
    if len(figures) != len(runs):
        return None
    return all(lo <= accuracy <= hi
               for i, (_, (lo, hi)) in enumerate(figures)
               for j, (accuracy, _) in enumerate(figures) if i != j)


def _figures(run: RunFolder, subset: str) -> tuple[float, tuple[float, float]] | None:
    m = (run.metrics or {}).get(subset) or {}
    accuracy, ci = m.get("accuracy"), m.get("accuracy_ci95")
    if accuracy is None or not (isinstance(ci, Sequence) and len(ci) == 2):
        return None
    return float(accuracy), (float(ci[0]), float(ci[1]))


def _accuracy(run: RunFolder, subset: str) -> float | None:
    figures = _figures(run, subset)
    return None if figures is None else figures[0]


def _seed(run: RunFolder) -> Any:
    return (run.config or {}).get("seed")


def _table(group: SeedGroup) -> str:
    rows = []
    for run in group.runs:
        results = run.metrics or {}
        row: dict[str, Any] = {"run": f"`{run.name}`", "seed": _seed(run)}
        for key, subset in (("full", FULL_TEST), ("clean", CLEAN_TEST)):
            figures = _figures(run, subset)
            row[key] = None if figures is None else (
                f"{figures[0]:.3f} [{figures[1][0]:.3f}, {figures[1][1]:.3f}]")
        per_class = (results.get(FULL_TEST) or {}).get("per_class") or {}
        row["meningioma"] = recall_text(per_class.get("meningioma"))
        metrics = (run.manifest or {}).get("metrics") or {}
        row["val"] = metrics.get("val_accuracy")
        row["epochs"] = metrics.get("epochs_run")
        row["lr"] = rates_as_run(run)
        rows.append(row)
    return f"### {group.model}\n\n" + markdown_table(rows, [
        ("run", "Run"), ("seed", "Seed"), ("full", "Full test [95% CI]"),
        ("clean", "Leak-free [95% CI]"), ("meningioma", "Meningioma recall (full)"),
        ("val", "Best val. acc.", ".3f"), ("epochs", "Epochs"),
        ("lr", "Learning rate as run"),
    ])


def rates_as_run(run: RunFolder) -> str | None:
    """The rate each stretch of epochs trained at, from the run's history.json: two seeds of
    one recipe can still differ here, e.g. a run resumed before the plateau fix."""
    epochs = [(int(h["epoch"]) + 1, float(h["lr"])) for h in run.history or []
              if isinstance(h, Mapping) and h.get("epoch") is not None
              and h.get("lr") is not None]
    return stretches_text(rate_stretches(epochs)) or None


def _verdicts(group: SeedGroup) -> list[str]:
    lines = []
    for name, keys in group.other_recipe.items():
        lines.append(f"`{name}` is not a second seed of the recipe: its config also differs "
                     f"in {', '.join(keys)}; it is left out of the verdict.")
    same = group.same_recipe
    if len(same) < 2:
        return lines
    for subset, label in SUBSETS.items():
        verdict = within_each_other(same, subset)
        if verdict is not None:
            lines.append(f"{label.capitalize()}: each run's accuracy "
                         + ("lies" if verdict else "does **not** lie")
                         + " within the other runs' 95% CIs.")
    return lines
