"""What ``brainedge results`` reads: each run folder's manifest, config, history, evaluation and
optimize summary, each optimized variant's manifest and evaluation, the bench JSON and the
``evaluate-ood`` reports. Nothing is required: a missing or unreadable input becomes a problem
note for the table that needed it, never an exception."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.report import select_runs
from brainedge.errors import ConfigError
from brainedge.manifest import MANIFEST_NAME, sha256_file

# Where `brainedge evaluate` and `brainedge optimize` write by default, inside a run folder.
EVAL_METRICS = "eval/metrics.json"
OPTIMIZE_SUMMARY = "optimized/summary.json"
OPTIMIZED = "optimized"  # each variant's folder, named after it, sits in here
OOD_REPORT = "ood.json"  # written by `brainedge evaluate-ood`, one per artifact
FULL_TEST, CLEAN_TEST = "full test", "leakage-free test"
# The table families; a run's problems are keyed by the one they leave incomplete.
TRAINING, EVALUATION, OPTIMIZE, BENCH = "training", "evaluation", "optimize", "bench"


@dataclass(frozen=True)
class InputFile:
    """A file a table was made from, named as the user gave it, with its sha256."""

    path: str
    sha256: str
    note: str = ""  # e.g. the machine a bench file was measured on


@dataclass(frozen=True)
class Artifact:
    """Something deployable a run made: its own Keras model or one optimized variant."""

    path: Path
    variant: str | None  # None for the run's own model
    manifest: dict[str, Any] | None
    metrics: dict[str, Any] | None  # its eval/metrics.json "results", when it was evaluated
    files: tuple[InputFile, ...] = ()  # what was read for it, for the page's provenance


@dataclass
class RunFolder:
    path: Path
    manifest: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    history: list[dict[str, Any]] | None = None
    metrics: dict[str, Any] | None = None  # eval/metrics.json "results": subset -> metrics
    optimized: list[dict[str, Any]] | None = None  # optimized/summary.json "variants"
    files: dict[str, InputFile] = field(default_factory=dict)  # EVAL_METRICS etc. -> file
    problems: dict[str, str] = field(default_factory=dict)  # table family -> what is missing
    artifacts: list[Artifact] = field(default_factory=list)  # the run itself, then variants

    @property
    def name(self) -> str:
        return self.path.as_posix()

    @property
    def model(self) -> str:
        return str((self.manifest or {}).get("model") or self.path.name)


@dataclass(frozen=True)
class BenchInputs:
    docs: list[dict[str, Any]]
    skipped: list[str]
    files: list[InputFile]
    problem: str | None = None


@dataclass(frozen=True)
class OODReport:
    path: Path  # the ood.json
    doc: dict[str, Any]


@dataclass(frozen=True)
class OODInputs:
    folder: Path
    reports: tuple[OODReport, ...] = ()
    files: tuple[InputFile, ...] = ()
    problems: tuple[str, ...] = ()


def read_run_folder(path: Path) -> RunFolder:
    """Everything ``results`` uses from one run folder, with a note for each piece missing."""
    run = RunFolder(Path(path))
    run.manifest, problem = _read(run, MANIFEST_NAME)
    if run.manifest is None:
        if not run.path.is_dir():
            note = f"`{run.name}` does not exist: no training run there (`make train` makes one)"
        elif not (run.path / MANIFEST_NAME).is_file():
            note = (f"`{run.name}` has no {MANIFEST_NAME}: its training has not finished "
                    "(the same `brainedge train` command resumes it)")
        else:
            note = f"`{run.name}/{MANIFEST_NAME}` {problem}: re-create the run"
        run.problems = dict.fromkeys((TRAINING, EVALUATION, OPTIMIZE), note)
        return run
    # The manifest holds these files' sha256, so they need no entry of their own.
    run.config = _json_or_none(run.path / "config.json")
    run.history = _json_or_none(run.path / "history.json")
    metrics, problem = _read(run, EVAL_METRICS)
    if metrics is None:
        run.problems[EVALUATION] = (
            f"`{run.name}/{EVAL_METRICS}` {problem}: run `brainedge evaluate {run.name} "
            "--clean-list reports/audit/clean_test.txt`"
        )
    else:
        run.metrics = metrics.get("results") or {}
        if CLEAN_TEST not in run.metrics:
            run.problems[EVALUATION] = (
                f"`{run.name}` was evaluated without `--clean-list`, so it has no "
                "leakage-free figures: re-run `brainedge evaluate` with the audit's "
                "clean_test.txt"
            )
    summary, problem = _read(run, OPTIMIZE_SUMMARY)
    if summary is None:
        run.problems[OPTIMIZE] = (
            f"`{run.name}/{OPTIMIZE_SUMMARY}` {problem}: run `brainedge optimize {run.name}`"
        )
    else:
        run.optimized = list(summary.get("variants") or [])
    run.artifacts = [Artifact(run.path, None, run.manifest, run.metrics, tuple(
        run.files[rel] for rel in (MANIFEST_NAME, EVAL_METRICS) if rel in run.files))]
    run.artifacts += [_read_variant(run, str(v["variant"])) for v in run.optimized or []
                      if isinstance(v, dict) and isinstance(v.get("variant"), str)
                      and (run.path / OPTIMIZED / v["variant"] / MANIFEST_NAME).is_file()]
    return run


def _read_variant(run: RunFolder, variant: str) -> Artifact:
    # A variant that failed to build has no folder and is skipped by the caller: the optimize
    # page already says why. An unreadable manifest is kept as a row of dashes.
    rels = [f"{OPTIMIZED}/{variant}/{MANIFEST_NAME}", f"{OPTIMIZED}/{variant}/{EVAL_METRICS}"]
    manifest, _ = _read(run, rels[0])
    metrics, _ = _read(run, rels[1])
    return Artifact(run.path / OPTIMIZED / variant, variant, manifest,
                    None if metrics is None else metrics.get("results") or {},
                    tuple(run.files[rel] for rel in rels if rel in run.files))


def problem_lines(runs: Sequence[RunFolder], family: str) -> list[str]:
    """A "Missing inputs" paragraph for a table family, or nothing when all were there."""
    notes = [run.problems[family] for run in runs if family in run.problems]
    if not notes:
        return []
    return ["**Missing inputs**, left out of this page rather than guessed:\n\n"
            + "\n".join(f"- {note}" for note in notes)]


def read_bench(folder: Path) -> BenchInputs:
    """The newest run of each device in ``folder``, merged as ``brainedge bench report`` does."""
    shown = Path(folder).as_posix()
    if not Path(folder).exists():
        return BenchInputs([], [], [], f"no benchmark results: `{shown}` does not exist "
                                       "(`make bench` writes them there)")
    try:
        docs, skipped = select_runs([folder])
    except ConfigError as exc:
        return BenchInputs([], [], [], f"no benchmark results from `{shown}`: {exc}")
    files = [
        InputFile(Path(doc["_source"]).as_posix(), sha256_file(Path(doc["_source"])),
                  machine_text(doc))
        for doc in docs
    ]
    return BenchInputs(docs, skipped, files)


def read_ood(folder: Path) -> OODInputs:
    """Every ood.json under ``folder``, in path order: ``make ood-eval`` writes
    MODEL/ARTIFACT/ood.json, a bare ``brainedge evaluate-ood`` ARTIFACT/ood.json."""
    folder = Path(folder)
    shown = folder.as_posix()
    if not folder.is_dir():
        return OODInputs(folder, problems=(
            f"no out-of-distribution evaluation: `{shown}` does not exist (`make ood-eval` "
            "writes it, one `brainedge evaluate-ood` per artifact)",))
    reports, files, problems = [], [], []
    for path in sorted(folder.rglob(OOD_REPORT)):
        doc = _json_or_none(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
            problems.append(f"`{path.as_posix()}` is not a `brainedge evaluate-ood` report: "
                            "re-run `make ood-eval`")
            continue
        reports.append(OODReport(path, doc))
        files.append(InputFile(path.as_posix(), sha256_file(path)))
    if not reports and not problems:
        problems.append(f"no out-of-distribution evaluation: `{shown}` holds no {OOD_REPORT} "
                        "(`make ood-eval` writes one per artifact)")
    return OODInputs(folder, tuple(reports), tuple(files), tuple(problems))


def machine_text(doc: dict[str, Any]) -> str:
    """The device a bench run measured, in one line: id, CPU, cores, OS, run and date."""
    device = doc["device"]
    return (f"device {device['id']}: {device.get('cpu_model') or 'unknown CPU'}, "
            f"{device.get('logical_cores', '?')} logical cores, {device.get('os') or '?'}; "
            f"run {doc.get('run_id')}, {doc.get('created')}")


def _read(run: RunFolder, rel: str) -> tuple[dict[str, Any] | None, str]:
    """(the JSON object, "") or (None, why not); a file read is recorded in ``run.files``."""
    path = run.path / rel
    if not path.is_file():
        return None, "is missing"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"cannot be read ({exc})"
    if not isinstance(data, dict):
        return None, "is not a JSON object"
    run.files[rel] = InputFile(f"{run.name}/{rel}", sha256_file(path))
    return data, ""


def _json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
