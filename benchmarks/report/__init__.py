"""Merge benchmark runs from several devices into one Markdown report with plots.

Each device (a laptop, a Raspberry Pi, a GPU server) writes one ``brainedge-bench/1`` JSON run
with ``benchmarks/sweep.py``. This package reads any number of them and answers what the project
asks of a sweep: how much faster each optimized variant is than the FP32 Keras baseline on the
same device and thread count, whether the int8 target is met, whether the harness's own
overhead is small enough to trust the numbers, and what was not measured or failed. Missing
data is said out loud, never filled in or guessed.

It needs neither TensorFlow nor scikit-learn, so it runs on an edge install. matplotlib is
imported only inside the plotting functions; without it the report is written without plots
and says so.

- ``load``: which run files to merge and why others are skipped
- ``rows``: a run flattened into per-row numbers, and its baselines
- ``emulated``: runs made under a CPU emulator, whose timings are not shown
- ``tables``: the tables; ``checks``: the int8 target and the harness overhead
- ``figures``: each model's plots and the lines that link them
- ``document``: the report assembled and written
"""

from benchmarks.plots import (
    pareto_front,
    plot_latency_accuracy,
    plot_sizes,
    plot_thread_scaling,
)
from benchmarks.report.checks import TARGET_SPEEDUP, TARGET_VARIANT
from benchmarks.report.document import REPORT_NAME, render_report, select_runs, write_report
from benchmarks.report.formatting import markdown_table, slugify
from benchmarks.report.load import SCHEMA, load_runs

__all__ = [
    "REPORT_NAME",
    "SCHEMA",
    "TARGET_SPEEDUP",
    "TARGET_VARIANT",
    "load_runs",
    "markdown_table",
    "pareto_front",
    "plot_latency_accuracy",
    "plot_sizes",
    "plot_thread_scaling",
    "render_report",
    "select_runs",
    "slugify",
    "write_report",
]
