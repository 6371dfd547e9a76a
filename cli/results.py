"""``brainedge results``: the README's results tables regenerated into docs/results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from cli.errors import friendly_errors

RUNS_OPTION = "--runs"
SEEDS_OPTION = "--seeds"


def spread_option(args: Sequence[str], name: str) -> list[str]:
    """``--runs A B --bench X`` -> ``--runs A --runs B --bench X``.

    click options take a fixed number of values, but the Makefile and the README pass several
    run folders after one ``--runs``. An option given with no value is left alone, so click
    reports it as missing its argument.
    """
    out: list[str] = []
    taking = False
    for arg in args:
        if taking and not arg.startswith("-"):
            if out[-1] != name:
                out.append(name)
            out.append(arg)
            continue
        taking = arg == name  # "--" and any other option end the list
        out.append(arg)
    return out


class _SeveralRuns(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, spread_option(spread_option(args, RUNS_OPTION),
                                                     SEEDS_OPTION))


@click.command("results", cls=_SeveralRuns)
@click.option(RUNS_OPTION, "run_dirs", multiple=True, type=click.Path(path_type=Path),
              metavar="RUN_DIR...",
              help="Run folders, in table order [default: runs/vgg16 runs/densenet121, the "
                   "Makefile's MODELS].")
@click.option(SEEDS_OPTION, "seed_dirs", multiple=True, type=click.Path(path_type=Path),
              metavar="RUN_DIR...",
              help="Other seeds of those runs' recipes (the same `brainedge train` command "
                   "with another --seed): the evaluation page compares them, CIs and all.")
@click.option("--bench", "bench_dir", type=click.Path(path_type=Path),
              default=Path("reports/bench"), show_default=True,
              help="Folder of bench JSON files (`brainedge bench run`); newest run per device.")
@click.option("--audit", "audit_dir", type=click.Path(path_type=Path),
              default=Path("reports/audit"), show_default=True,
              help="Folder of `brainedge audit` (its audit.md becomes the data audit page).")
@click.option("--ood", "ood_dir", type=click.Path(path_type=Path),
              default=Path("reports/ood"), show_default=True,
              help="Folder of `brainedge evaluate-ood` reports (every ood.json under it, as "
                   "`make ood-eval` writes them) for the trust page.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("docs/results"), show_default=True,
              help="Folder for summary.md, one page per table family, and the plots.")
@click.option("--readme", type=click.Path(path_type=Path), default=None,
              help="Also embed the summary in this README, between its results markers.")
@click.option("--strict", is_flag=True,
              help="A missing input (unfinished run, no evaluation, no bench JSON, no OOD "
                   "report) is an error instead of a note in the page.")
@friendly_errors
def results(run_dirs: tuple[Path, ...], seed_dirs: tuple[Path, ...], bench_dir: Path,
            audit_dir: Path, ood_dir: Path, out_dir: Path, readme: Path | None,
            strict: bool) -> None:
    """Regenerate every results table (training, evaluation, optimize, trust, bench) from run
    folders, bench JSON and OOD reports: Markdown pages that name their command and inputs,
    plus the bench plots."""
    from benchmarks.results import DEFAULT_RUNS, ResultsConfig, write_results

    config = ResultsConfig(runs=run_dirs or DEFAULT_RUNS, seeds=seed_dirs, bench=bench_dir,
                           audit=audit_dir, ood=ood_dir, out=out_dir, readme=readme,
                           strict=strict)
    for path in write_results(config):
        click.echo(f"wrote {path}")
