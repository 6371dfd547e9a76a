"""The ``brainedge`` command: one group, and one thin command per pipeline step.

Each command validates its options into a config dataclass and calls one library function.
Heavy imports (TensorFlow above all) happen inside the commands, so ``--help`` stays fast and
works on an edge install. The commands live beside this file, one module per stage.
"""

from __future__ import annotations

import logging
import sys

import click

from brainedge import __version__
from cli.bench import bench
from cli.data import audit, data
from cli.optimize import model_card, optimize, ship
from cli.predict import predict
from cli.results import results
from cli.serve import serve
from cli.train import compare, evaluate, evaluate_ood, train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="brainedge")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """BrainEdge: brain-tumor MRI classification from training to the edge.

    \b
    The pipeline, one command per step:
      data phantoms  generate the embedded demo dataset (not real MRI)
      data ood       build the out-of-distribution evaluation set (CT, photos, other MRI...)
      audit          find duplicate and leaked images in a dataset
      train          train VGG16 or DenseNet121 (from scratch or a backbone)
      evaluate       test-set metrics of a trained run, with confidence intervals
      evaluate-ood   AUROC of an artifact's out-of-distribution score on that set
      compare        one table comparing trained runs (accuracy and cost)
      predict        classify PNG/JPEG/DICOM files with an artifact
      bench          latency, throughput, memory and accuracy benchmarks
      serve          the upload page and JSON API (gunicorn; --dev for Flask's server)
      optimize       pruned / quantized TFLite and ONNX variants, checked against FP32
      ship           put an artifact into models/ with its model card (package data)
      results        regenerate the README's results tables into docs/results

    Results are decision support, not a diagnosis.
    """
    level = logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


for command in (data, audit, train, evaluate, evaluate_ood, compare, optimize, ship, model_card,
                predict, bench, serve, results):
    main.add_command(command)


if __name__ == "__main__":
    main()
