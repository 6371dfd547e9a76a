"""How well an out-of-distribution score tells the OOD set (``brainedge data ood``) from the
dataset's test split: AUROC with a bootstrap interval per group and kind, the share flagged at
a threshold, and what the rule-based checks (``runtime.ood``) catch beside the score.

NumPy only: no scikit-learn (``training.metrics`` imports it at module level, so its bootstrap
helper is not reused; it also resamples a mean, not a two-sample statistic), so this runs on
an edge install with only the artifact's runtime. The score comes from a callable,
``score_fn(grays) -> {method: scores}``, higher meaning more OOD; this module never loads a
model itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainedge.errors import DatasetError
from brainedge.tables import markdown_table
from runtime.decoded import DecodedImage
from runtime.imageio import read_decoded
from runtime.ood import check_image
from training.data import scan_dataset
from training.ood_set import GROUPS, SOURCES_NAME

ScoreFn = Callable[[Sequence[np.ndarray]], Mapping[str, np.ndarray]]
# Issue 11: AUROC of the score per group, and the share of test slices it may flag.
TARGET_AUROC = {"far": 0.95, "near": 0.85}
MAX_ID_FLAGGED = 0.02
N_BOOTSTRAP = 1000


@dataclass(frozen=True, eq=False)
class OODItem:
    """One decoded file of the OOD set, with its group and kind from ``sources.json``."""

    image: DecodedImage
    group: str
    kind: str
    file: str


def load_ood_set(folder: Path) -> dict[str, list[OODItem]]:
    """The set's files decoded through ``runtime.imageio`` (the upload path), by group."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / SOURCES_NAME).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{folder} holds no readable {SOURCES_NAME}; build the set with "
                           "`brainedge data ood --data DATASET --out FOLDER`") from exc
    groups: dict[str, list[OODItem]] = {}
    for entry in manifest["files"]:
        item = OODItem(read_decoded(folder / entry["file"]), entry["group"], entry["kind"],
                       entry["file"])
        groups.setdefault(item.group, []).append(item)
    return groups


def load_test_images(data: Path) -> list[DecodedImage]:
    """The dataset's test split, decoded the way an upload is: the in-distribution side."""
    return [read_decoded(sample.path) for sample in scan_dataset(Path(data)).test]


def _scores(values: Any, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of scores, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or infinite scores")
    return x


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """P(score of an OOD image > score of an in-distribution one), a tie counting 1/2: the
    Mann-Whitney U from average ranks. 1.0 separates perfectly, 0.5 is chance."""
    x, y = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    pooled = np.concatenate([x, y])
    order = np.argsort(pooled, kind="mergesort")
    ordered = pooled[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1], [True]]))
    # A run of ties at sorted positions s..e-1 holds ranks s+1..e: each gets their mean.
    ranks = np.empty(pooled.size)
    ranks[order] = np.repeat((starts[:-1] + 1 + starts[1:]) / 2, np.diff(starts))
    u = ranks[x.size:].sum() - y.size * (y.size + 1) / 2
    return float(u / (x.size * y.size))


def bootstrap_auroc_ci(id_scores: np.ndarray, ood_scores: np.ndarray,
                       n_bootstrap: int = N_BOOTSTRAP, seed: int = 0,
                       alpha: float = 0.05) -> tuple[float, float]:
    """Percentile-bootstrap (1 - alpha) interval of ``auroc``, resampling each side on its own.

    Each OOD score's wins against the sorted in-distribution scores are read from cumulative
    resample counts, so a resample costs O(n) rather than a sort."""
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) \
            or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    x = np.sort(_scores(id_scores, "id_scores"))
    y = _scores(ood_scores, "ood_scores")
    below = np.searchsorted(x, y, side="left")  # in-distribution scores under each OOD one
    up_to = np.searchsorted(x, y, side="right")
    rng = np.random.default_rng(seed)
    values = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        counts = np.bincount(rng.integers(0, x.size, x.size), minlength=x.size)
        cumulative = np.concatenate([[0], np.cumsum(counts)])
        j = rng.integers(0, y.size, y.size)
        wins = cumulative[below[j]] + 0.5 * (cumulative[up_to[j]] - cumulative[below[j]])
        values[b] = wins.sum() / (x.size * y.size)
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class GroupResult:
    """One row: a group (``near``) or a kind within it (``near/inverted``). ``flagged``: share
    with the threshold's score above it; ``rules_flagged``: share the rule-based checks flag;
    ``rules_only``: flagged by the rules but not by the score (what the rules add)."""

    name: str
    n: int
    auroc: Mapping[str, float]
    auroc_ci95: Mapping[str, tuple[float, float]]
    flagged: float | None
    rules_flagged: float
    rules_only: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n": self.n, "auroc": dict(self.auroc),
                "auroc_ci95": {m: list(ci) for m, ci in self.auroc_ci95.items()},
                "flagged": self.flagged, "rules_flagged": self.rules_flagged,
                "rules_only": self.rules_only}


@dataclass(frozen=True)
class OODEvaluation:
    """Every method's AUROC per row; shares flagged for ``method`` at ``threshold`` only."""

    method: str
    threshold: float | None
    methods: tuple[str, ...]
    n_id: int
    id_flagged: float | None
    id_rules_flagged: float
    rows: tuple[GroupResult, ...]
    n_bootstrap: int

    def row(self, name: str) -> GroupResult | None:
        return next((r for r in self.rows if r.name == name), None)

    def targets(self) -> dict[str, dict[str, Any]]:
        """The issue's targets for ``method``: AUROC per group, share of test slices flagged."""
        out: dict[str, dict[str, Any]] = {}
        for group, target in TARGET_AUROC.items():
            row = self.row(group)
            value = None if row is None or self.method not in row.auroc else row.auroc[
                self.method]
            out[f"auroc_{group}"] = {"target": target, "value": value,
                                     "met": None if value is None else value >= target}
        out["id_flagged"] = {"target": MAX_ID_FLAGGED, "value": self.id_flagged,
                             "met": None if self.id_flagged is None
                             else self.id_flagged <= MAX_ID_FLAGGED}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "threshold": self.threshold,
                "methods": list(self.methods), "n_id": self.n_id,
                "id_flagged": self.id_flagged, "id_rules_flagged": self.id_rules_flagged,
                "n_bootstrap": self.n_bootstrap, "targets": self.targets(),
                "rows": [r.to_dict() for r in self.rows]}

    def to_markdown(self) -> str:
        rows = []
        for r in self.rows:
            row: dict[str, Any] = {"name": r.name, "n": r.n, "flagged": r.flagged,
                                   "rules": r.rules_flagged, "rules_only": r.rules_only}
            for m in self.methods:
                lo, hi = r.auroc_ci95[m]
                row[m] = f"{r.auroc[m]:.3f} [{lo:.3f}, {hi:.3f}]"
            rows.append(row)
        at = "" if self.threshold is None else f" > {self.threshold:.4g}"
        columns = [("name", "group / kind"), ("n", "images"),
                   *((m, f"AUROC {m} [95% CI]") for m in self.methods),
                   ("flagged", f"flagged ({self.method}{at})", ".1%"),
                   ("rules", "flagged by the rules", ".1%"),
                   ("rules_only", "rules only", ".1%")]
        lines = [f"AUROC of each score against the {self.n_id} test slices (higher score = "
                 f"more out-of-distribution; percentile bootstrap, {self.n_bootstrap} "
                 "resamples).", "", markdown_table(rows, columns), ""]
        for name, t in self.targets().items():
            value = "–" if t["value"] is None else (f"{t['value']:.1%}" if name == "id_flagged"
                                                    else f"{t['value']:.3f}")
            verdict = {None: "not measured", True: "met", False: "MISSED"}[t["met"]]
            goal = (f"≤ {t['target']:.0%}" if name == "id_flagged" else f"≥ {t['target']}")
            lines.append(f"- {name} ({self.method}): {value}, target {goal}: {verdict}")
        lines.append(f"- test slices flagged by the rules: {self.id_rules_flagged:.1%}")
        return "\n".join(lines) + "\n"


def evaluate_ood(score_fn: ScoreFn, id_images: Sequence[DecodedImage],
                 groups: Mapping[str, Sequence[OODItem]], threshold: float | None,
                 method: str, *, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0,
                 batch_size: int = 64) -> OODEvaluation:
    """Score the test split and every OOD group with ``score_fn``; see ``OODEvaluation``.

    ``threshold`` belongs to ``method``: an image is flagged when its score is above it
    (``None``: no shares flagged). Images go to ``score_fn`` in batches of ``batch_size``.
    """
    if not id_images:
        raise ValueError("id_images is empty: pass the decoded test split")
    id_scores = _score_all(score_fn, [im.pixels for im in id_images], batch_size)
    methods = tuple(id_scores)
    if method not in methods:
        raise ValueError(f"method {method!r} is not among the scores {list(methods)}")
    id_rules = np.array([check_image(im).flagged for im in id_images])
    ordered = [g for g in GROUPS if g in groups] + sorted(set(groups) - set(GROUPS))
    rows: list[GroupResult] = []
    for group in ordered:
        items = list(groups[group])
        if not items:
            continue
        scores = _score_all(score_fn, [it.image.pixels for it in items], batch_size)
        if set(scores) != set(methods):
            raise ValueError(f"score_fn returned {sorted(scores)} for {group}, "
                             f"{sorted(methods)} for the test split")
        rules = np.array([check_image(it.image).flagged for it in items])
        kinds = np.array([it.kind for it in items])
        rows.append(_row(group, id_scores, scores, rules, None, threshold, method,
                         n_bootstrap, seed))
        for kind in sorted(set(kinds)):
            rows.append(_row(f"{group}/{kind}", id_scores, scores, rules, kinds == kind,
                             threshold, method, n_bootstrap, seed))
    id_flagged = (None if threshold is None
                  else float(np.mean(id_scores[method] > threshold)))
    return OODEvaluation(method, threshold, methods, len(id_images), id_flagged,
                         float(id_rules.mean()), tuple(rows), n_bootstrap)


def _score_all(score_fn: ScoreFn, grays: list[np.ndarray],
               batch_size: int) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(grays), batch_size):
        batch = grays[start:start + batch_size]
        result = score_fn(batch)
        if parts and set(result) != set(parts):
            raise ValueError(f"score_fn returned methods {sorted(result)}, before "
                             f"{sorted(parts)}")
        for name, values in result.items():
            values = _scores(values, f"score_fn()[{name!r}]")
            if values.size != len(batch):
                raise ValueError(f"score_fn()[{name!r}] has {values.size} scores for "
                                 f"{len(batch)} images")
            parts.setdefault(name, []).append(values)
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _row(name: str, id_scores: Mapping[str, np.ndarray], scores: Mapping[str, np.ndarray],
         rules: np.ndarray, mask: np.ndarray | None, threshold: float | None, method: str,
         n_bootstrap: int, seed: int) -> GroupResult:
    select = np.ones(rules.size, bool) if mask is None else mask
    aurocs, cis = {}, {}
    for m, values in scores.items():
        aurocs[m] = auroc(id_scores[m], values[select])
        cis[m] = bootstrap_auroc_ci(id_scores[m], values[select], n_bootstrap, seed)
    hit_rules = rules[select]
    if threshold is None:
        return GroupResult(name, int(select.sum()), aurocs, cis, None,
                           float(hit_rules.mean()), None)
    hit_score = scores[method][select] > threshold
    return GroupResult(name, int(select.sum()), aurocs, cis, float(hit_score.mean()),
                       float(hit_rules.mean()), float((hit_rules & ~hit_score).mean()))


def reference_data(folder: Path, data: Path | None) -> Path:
    """The dataset whose test split is the in-distribution reference: ``data``, or by default
    the one the artifact was trained on. The phantoms are refused for a model trained on real
    MRI and the other way round: the AUROC would measure the wrong distribution."""
    from brainedge.manifest import trained_on
    from training.phantoms import MARKER_NAME

    trained = trained_on(folder)
    if data is None:
        if trained is None:
            raise DatasetError(f"{folder}: its parent run is not here to say which dataset it "
                               "was trained on; pass --data with that dataset")
        return trained
    if trained is not None and (data / MARKER_NAME).exists() != (trained / MARKER_NAME).exists():
        kind = "the synthetic phantoms" if (data / MARKER_NAME).exists() else "real MRI"
        raise DatasetError(f"--data {data} is {kind}, but {folder} was trained on {trained}: "
                           "its test split is no in-distribution reference for this model. "
                           "Leave --data out to use the dataset it was trained on")
    return data


def evaluate_artifact(artifact: Path, ood_set: Path, data: Path | None, out: Path,
                      n_bootstrap: int = N_BOOTSTRAP) -> OODEvaluation:
    """``brainedge evaluate-ood``: the artifact's own scores (``Classifier.ood_scores``) on
    the test split of ``data`` (by default the dataset it was trained on) against ``ood_set``;
    writes ``ood.json`` and ``ood.md``."""
    from brainedge.manifest import write_json
    from runtime.classifier import load_classifier

    folder = artifact if artifact.is_dir() else artifact.parent
    data = reference_data(folder, data)
    classifier = load_classifier(artifact, allow_failed_gate=True)
    trust = classifier.trust
    if trust.method is None:
        raise DatasetError(f"{artifact} carries no out-of-distribution statistics; re-create "
                           "it with brainedge optimize (or brainedge train)")
    result = evaluate_ood(classifier.ood_scores, load_test_images(data), load_ood_set(ood_set),
                          trust.threshold, trust.method, n_bootstrap=n_bootstrap)
    out.mkdir(parents=True, exist_ok=True)
    described = classifier.describe()
    write_json(out / "ood.json", {"artifact": str(artifact), "sha256": described["sha256"],
                                  "ood_set": str(ood_set), "data": str(data),
                                  **result.to_dict()})
    title = (f"# Out-of-distribution evaluation of {classifier.artifact.label}\n\n"
             f"Artifact `{artifact}` (sha256 {described['sha256'][:12]}), OOD set `{ood_set}`, "
             f"in-distribution: the test split of `{data}`.\n\n")
    (out / "ood.md").write_text(title + result.to_markdown())
    return result
