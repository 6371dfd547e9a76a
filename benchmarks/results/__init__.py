"""``brainedge results``: every results table the README shows, regenerated from the run folders,
the bench JSON and the out-of-distribution reports into one folder of Markdown pages plus the
bench plots.

The README's numbers then come from a command instead of being pasted by hand. Each page
starts by naming the command that made it and the sha256 of every input it read, and the
same inputs always give byte-identical Markdown, so the pages can be committed and diffed.
A missing input leaves its table out with a note saying what to run; ``strict`` makes it an
error instead. No TensorFlow, no scikit-learn: it only reads JSON.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import render_report
from benchmarks.results.evaluation import evaluation_markdown
from benchmarks.results.inputs import (
    EVAL_METRICS,
    OPTIMIZE_SUMMARY,
    BenchInputs,
    InputFile,
    OODInputs,
    RunFolder,
    read_bench,
    read_ood,
    read_run_folder,
)
from benchmarks.results.optimize import optimize_markdown
from benchmarks.results.seeds import seeds_markdown, unmatched
from benchmarks.results.summary import summary_markdown
from benchmarks.results.training import training_markdown
from benchmarks.results.trust import trust_inputs, trust_markdown
from brainedge.errors import ConfigError
from brainedge.manifest import MANIFEST_NAME, atomic_path

# The Makefile's MODELS, under its RUNS folder.
DEFAULT_MODELS = ("vgg16", "densenet121")
DEFAULT_RUNS = tuple(Path("runs") / model for model in DEFAULT_MODELS)
DEFAULT_BENCH = Path("reports/bench")
DEFAULT_AUDIT = Path("reports/audit")
DEFAULT_OOD = Path("reports/ood")  # `make ood-eval` writes MODEL/ARTIFACT/ood.json there
AUDIT_PAGE = "audit.md"  # written by `brainedge audit`; copied with its provenance
DEFAULT_OUT = Path("docs/results")
SUMMARY_NAME = "summary.md"
# Detail pages, in the order the summary links them: file name -> link title.
PAGES = {
    AUDIT_PAGE: "data audit",
    "training.md": "training",
    "evaluation.md": "evaluation",
    "optimize.md": "optimized variants",
    "trust.md": "calibration and out-of-distribution",
    "bench.md": "benchmarks",
}


@dataclass(frozen=True)
class ResultsConfig:
    runs: tuple[Path, ...] = DEFAULT_RUNS
    # Other seeds of the runs' recipes (`brainedge train ... --seed N`), compared on the
    # evaluation page and in the summary.
    seeds: tuple[Path, ...] = ()
    bench: Path = DEFAULT_BENCH
    out: Path = DEFAULT_OUT
    audit: Path = DEFAULT_AUDIT
    ood: Path = DEFAULT_OOD
    readme: Path | None = None  # also embed the summary there, between the markers
    strict: bool = False

    def __post_init__(self) -> None:
        runs = tuple(Path(r) for r in self.runs)
        if not runs:
            raise ConfigError("no run folders given; pass --runs runs/vgg16 runs/densenet121")
        if len(set(runs)) != len(runs):
            raise ConfigError(f"a run folder is given twice: {[r.as_posix() for r in runs]}")
        object.__setattr__(self, "runs", runs)
        seeds = tuple(Path(r) for r in self.seeds)
        if set(seeds) & set(runs) or len(set(seeds)) != len(seeds):
            raise ConfigError("a seed run is given twice or also as a run: "
                              f"{[r.as_posix() for r in seeds]}")
        object.__setattr__(self, "seeds", seeds)
        object.__setattr__(self, "bench", Path(self.bench))
        object.__setattr__(self, "audit", Path(self.audit))
        object.__setattr__(self, "ood", Path(self.ood))
        if self.readme is not None:
            object.__setattr__(self, "readme", Path(self.readme))
        object.__setattr__(self, "out", Path(self.out))

    @property
    def command(self) -> str:
        """The command as a reader would type it, for each page's first line."""
        words = ["brainedge", "results", "--runs", *(r.as_posix() for r in self.runs),
                 *(["--seeds", *(r.as_posix() for r in self.seeds)] if self.seeds else []),
                 "--bench", self.bench.as_posix(), "--audit", self.audit.as_posix(),
                 "--ood", self.ood.as_posix(), "--out", self.out.as_posix()]
        words += ["--readme", self.readme.as_posix()] if self.readme else []
        return shlex.join(words + (["--strict"] if self.strict else []))


def write_results(config: ResultsConfig) -> list[Path]:
    """Write the summary and every detail page into ``config.out``; return their paths.

    Each file is written under a temporary name and moved into place. With ``strict``, any
    missing input raises a ``ConfigError`` naming all of them before anything is written.
    """
    runs = [read_run_folder(path) for path in config.runs]
    seed_runs = [read_run_folder(path) for path in config.seeds]
    bench = read_bench(config.bench)
    ood = read_ood(config.ood)
    audit_body, audit_inputs, audit_problem = _audit_page(config.audit)
    missing = (_missing(runs, bench, ood) + unmatched(runs, seed_runs)
               + ([audit_problem] if audit_problem else []))
    if config.strict and missing:
        raise ConfigError("missing inputs (--strict):\n" + "\n".join(f"- {m}" for m in missing))
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    pages = {
        AUDIT_PAGE: (audit_body, audit_inputs),
        "training.md": (training_markdown(runs), _files(runs, MANIFEST_NAME)),
        "evaluation.md": (evaluation_markdown(runs, seeds_markdown(runs, seed_runs)),
                          _files([*runs, *seed_runs], MANIFEST_NAME, EVAL_METRICS)),
        "optimize.md": (optimize_markdown(runs), _files(runs, OPTIMIZE_SUMMARY)),
        "trust.md": (trust_markdown(runs, ood), trust_inputs(runs, ood)),
        "bench.md": (_bench_markdown(bench, out), bench.files),
    }
    every_input = [f for _, files in pages.values() for f in files]
    summary = summary_markdown(runs, bench, ood, missing, PAGES, seed_runs)
    pages = {SUMMARY_NAME: (summary, every_input), **pages}
    written = []
    for name, (body, inputs) in pages.items():
        target = out / name
        with atomic_path(target) as tmp:
            tmp.write_text(provenance(config.command, inputs) + "\n\n" + body, encoding="utf-8")
        written.append(target)
    if config.readme is not None:
        from benchmarks.results.readme import embed_summary

        # The README names the command and where the inputs' hashes are, not all of them: a
        # reader wants the figures first.
        n_inputs = len(dict.fromkeys(every_input))
        embed_summary(config.readme, summary, out,
                      f"> Generated by `{config.command}` from {n_inputs} input files, each "
                      f"listed with its sha256 in [{SUMMARY_NAME}]({SUMMARY_NAME}): edit them "
                      "and re-run it, not this block.")
        written.append(config.readme)
    return written


def provenance(command: str, inputs: Iterable[InputFile]) -> str:
    """The lines each page starts with: the command that regenerates it and what it read."""
    unique = list(dict.fromkeys(inputs))
    lines = [f"> Generated by `{command}`: edit its inputs and re-run it, not this file. "
             + ("Inputs:" if unique else "No input was found.")]
    lines += [f"> - `{f.path}` sha256 `{f.sha256}`" + (f" ({f.note})" if f.note else "")
              for f in unique]
    return "\n".join(lines)


def _missing(runs: Sequence[RunFolder], bench: BenchInputs, ood: OODInputs) -> list[str]:
    notes = [note for run in runs for note in dict.fromkeys(run.problems.values())]
    return notes + ([bench.problem] if bench.problem else []) + list(ood.problems)


def _files(runs: Sequence[RunFolder], *names: str) -> list[InputFile]:
    return [run.files[name] for run in runs for name in names if name in run.files]


def _audit_page(folder: Path) -> tuple[str, list[InputFile], str | None]:
    from brainedge.manifest import sha256_file

    path = folder / AUDIT_PAGE
    if not path.is_file():
        problem = (f"no data audit: `{path.as_posix()}` does not exist (`make audit` or "
                   "`brainedge audit --data DATA --out reports/audit` writes it)")
        return f"# Data audit\n\n**Missing input**: {problem}\n", [], problem
    return path.read_text(), [InputFile(path.as_posix(), sha256_file(path))], None


def _bench_markdown(bench: BenchInputs, out: Path) -> str:
    if bench.problem:
        return ("# Benchmarks\n\n**Missing inputs**, left out rather than guessed:\n\n"
                f"- {bench.problem}\n")
    return render_report(bench.docs, bench.skipped, out)
