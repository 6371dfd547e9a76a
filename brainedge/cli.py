"""The ``brainedge`` command line: one thin command per pipeline step.

Each command validates its options into a config dataclass and calls one library function.
Heavy imports (TensorFlow above all) happen inside the command, so ``--help`` stays fast and
works on an edge install.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from brainedge import MEDICAL_NOTICE, __version__
from brainedge.clicommon import friendly_errors

DEFAULT_DATA = "data/phantoms"




@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="brainedge")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """BrainEdge: brain-tumor MRI classification from training to the edge.

    \b
    The pipeline, one command per step:
      data phantoms  generate the embedded demo dataset (not real MRI)
      audit          find duplicate and leaked images in a dataset
      train          train VGG16 or DenseNet121 (transfer learning)
      evaluate       test-set metrics of a trained run, with confidence intervals
      compare        one table comparing trained runs (accuracy and cost)
      predict        classify PNG/JPEG/DICOM files with an artifact
      bench          latency, throughput, memory and accuracy benchmarks
      serve          the upload page and JSON API (gunicorn; --dev for Flask's server)
      optimize       pruned / quantized TFLite and ONNX variants, checked against FP32

    Results are decision support, not a diagnosis.
    """
    level = logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


# --- data -------------------------------------------------------------------------------------

@main.group()
def data() -> None:
    """Datasets: generate the embedded default."""


@data.command("phantoms")
@click.option("--out", type=click.Path(path_type=Path), default=Path(DEFAULT_DATA),
              show_default=True, help="Folder to write Training/ and Testing/ into.")
@click.option("--train-per-class", type=click.IntRange(1), default=200, show_default=True)
@click.option("--test-per-class", type=click.IntRange(1), default=50, show_default=True)
@click.option("--image-size", type=click.IntRange(32, 1024), default=160, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@friendly_errors
def data_phantoms(out: Path, train_per_class: int, test_per_class: int, image_size: int,
                  seed: int) -> None:
    """Generate procedural MRI-like phantoms in the Kaggle layout (for demos and tests only)."""
    from training.phantoms import PhantomConfig, generate_phantoms

    config = PhantomConfig(train_per_class=train_per_class, test_per_class=test_per_class,
                           image_size=image_size, seed=seed)
    path = generate_phantoms(out, config)
    click.echo(f"phantom dataset ready in {path} (synthetic, not real MRI)")


# --- audit ------------------------------------------------------------------------------------

@main.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=Path(DEFAULT_DATA),
              show_default=True, help="Dataset folder (Training/ and Testing/, or per class).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/audit"),
              show_default=True, help="Folder for audit.json, audit.md and clean_test.txt.")
@click.option("--near-threshold", type=click.IntRange(0, 32), default=None,
              help="Max Hamming distance between 256-bit pHashes that counts as a near "
                   "duplicate [default: 12].")
@friendly_errors
def audit(data_dir: Path, out: Path, near_threshold: int | None) -> None:
    """Find exact and near-duplicate images within and across splits; list a leak-free test set."""
    from training.audit import AuditConfig, audit_dataset, write_audit
    from training.data import scan_dataset

    config = AuditConfig() if near_threshold is None else AuditConfig(near_threshold=near_threshold)
    result = audit_dataset(scan_dataset(data_dir), config)
    paths = write_audit(result, out)
    click.echo(paths["markdown"].read_text())
    for path in paths.values():
        click.echo(f"wrote {path}", err=True)


# --- train ------------------------------------------------------------------------------------

def _train_options(func: Callable[..., Any]) -> Callable[..., Any]:
    from training.config import Arch, Precision, Strategy

    options = [
        click.option("--data", "data_dir", type=click.Path(path_type=Path),
                     default=Path(DEFAULT_DATA), show_default=True, help="Dataset folder."),
        click.option("--model", "arch", type=click.Choice([a.value for a in Arch]),
                     default=Arch.DENSENET121.value, show_default=True),
        click.option("--preset", type=click.Choice(["reference", "demo"]), default="reference",
                     show_default=True,
                     help="reference: 150 px, 20 epochs, batch 32, Adam 1e-3, ImageNet weights. "
                          "demo: 64 px, 12 epochs, from scratch (minutes on a CPU)."),
        click.option("--run-dir", type=click.Path(path_type=Path), default=None,
                     help="Output folder [default: runs/MODEL]. Re-run to resume a killed run."),
        click.option("--overwrite", is_flag=True, help="Replace a finished or different run."),
        click.option("--image-size", type=int, help="Input size in pixels."),
        click.option("--epochs", type=int),
        click.option("--batch-size", type=int),
        click.option("--learning-rate", type=float),
        click.option("--weights", help="imagenet | none | PATH to a backbone 'notop' .h5 file."),
        click.option("--freeze-base/--no-freeze-base", default=None,
                     help="Freeze the backbone [default: when weights are pre-trained]."),
        click.option("--fine-tune-epochs", type=int,
                     help="Epochs of fine-tuning the top backbone layers after the head."),
        click.option("--fine-tune-layers", type=int),
        click.option("--fine-tune-learning-rate", type=float),
        click.option("--dropout", type=float),
        click.option("--val-fraction", type=float,
                     help="Share of Training held out for validation (stratified, seeded)."),
        click.option("--seed", type=int),
        click.option("--crop-brain/--no-crop-brain", default=None),
        click.option("--precision", type=click.Choice([p.value for p in Precision]),
                     help="auto: bfloat16 on CPUs with AVX-512 BF16, float16 on GPUs."),
        click.option("--strategy", type=click.Choice([s.value for s in Strategy]),
                     help="tf.distribute strategy; multi-worker reads TF_CONFIG."),
        click.option("--max-train-images", type=int, help="Subsample for a quick run."),
        click.option("--early-stopping-patience", type=int),
        click.option("--reduce-lr-patience", type=int,
                     help="Epochs without val_loss improvement before the LR is cut to 30%."),
        click.option("--tensorboard/--no-tensorboard", default=None),
        click.option("--rotation", "rotation_deg", type=float, help="Augmentation: +- degrees."),
        click.option("--brightness", type=float, help="Augmentation: +- share of 255."),
        click.option("--shift", type=float, help="Augmentation: +- share of the size."),
        click.option("--hflip/--no-hflip", default=None),
        click.option("--vflip/--no-vflip", default=None),
    ]
    for option in reversed(options):
        func = option(func)
    return func


_AUGMENT_KEYS = ("rotation_deg", "brightness", "shift", "hflip", "vflip")


@main.command()
@_train_options
@friendly_errors
def train(data_dir: Path, arch: str, preset: str, run_dir: Path | None, overwrite: bool,
          **overrides: Any) -> None:
    """Train VGG16 or DenseNet121 by transfer learning and write a self-describing run folder.

    Every option not given comes from the preset. The run folder holds the model (Keras and
    SavedModel), config, class names, preprocessing, history and a manifest with sha256 sums.
    """
    import dataclasses

    from training.config import PRESETS

    given = {k: v for k, v in overrides.items() if v is not None}
    augment = {k: given.pop(k) for k in _AUGMENT_KEYS if k in given}
    config = PRESETS[preset](str(data_dir), arch, **given)
    if augment:
        config = config.with_(augment=dataclasses.replace(config.augment, **augment))
    from training.train import train as run_training

    result = run_training(config, run_dir or Path("runs") / arch, overwrite=overwrite)
    click.echo(f"{result.run_dir}: validation accuracy {result.val_accuracy:.4f} after "
               f"{result.epochs_run} epochs, {result.seconds_per_epoch:.1f} s/epoch "
               f"({result.precision})")


# --- evaluate ---------------------------------------------------------------------------------

@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Dataset folder [default: the one the run was trained on].")
@click.option("--clean-list", type=click.Path(path_type=Path), default=None,
              help="clean_test.txt from `brainedge audit`: also report the leakage-free subset.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Report folder [default: RUN_DIR/eval].")
@click.option("--bootstrap", type=click.IntRange(100), default=1000, show_default=True,
              help="Bootstrap resamples for the 95% confidence interval.")
@friendly_errors
def evaluate(run_dir: Path, data_dir: Path | None, clean_list: Path | None, out: Path | None,
             bootstrap: int) -> None:
    """Test-split metrics of a trained run: accuracy with 95% CI, per-class P/R/F1, macro-F1,
    ROC-AUC, calibration error and confusion matrix, on the full and the leakage-free test set."""
    from training.evaluate import EvalConfig, evaluate_run

    config = EvalConfig(run_dir=run_dir, data=data_dir, clean_list=clean_list,
                        out=out, n_bootstrap=bootstrap)
    report = evaluate_run(config)
    click.echo(report.markdown)
    click.echo(MEDICAL_NOTICE, err=True)


# --- optimize ---------------------------------------------------------------------------------

def _variant_names() -> list[str]:
    from optimize.config import ALL_VARIANTS

    return [v.name for v in ALL_VARIANTS]


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path), required=False)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Dataset folder [default: the one the run was trained on].")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder [default: RUN_DIR/optimized].")
@click.option("--variant", "variants", multiple=True, metavar="NAME",
              help="Only these variants (repeatable) [default: all but qat-tflite-int8 and "
                   "pruned-clustered-tflite-fp32]. "
                   "See --list-variants.")
@click.option("--qat", is_flag=True, help="Also run quantization-aware training (int8).")
@click.option("--list-variants", is_flag=True, help="List the variant names and exit.")
@click.option("--sparsity", type=float, default=0.5, show_default=True,
              help="Target sparsity of magnitude pruning.")
@click.option("--prune-epochs", type=click.IntRange(1), default=3, show_default=True,
              help="Fine-tuning epochs while pruning (and for QAT).")
@click.option("--prune-learning-rate", type=float, default=1e-4, show_default=True,
              help="Adam learning rate while pruning (and for QAT).")
@click.option("--clusters", type=click.IntRange(2, 256), default=16, show_default=True,
              help="Shared weight values per kernel in the pruned-clustered variants.")
@click.option("--cluster-epochs", type=click.IntRange(0), default=1, show_default=True,
              help="Fine-tuning epochs of the cluster centroids (0: k-means only).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--calibration-size", type=click.IntRange(1), default=200, show_default=True,
              help="Training images used to calibrate full-integer quantization.")
@click.option("--int8-io", type=click.Choice(["int8", "uint8"]), default="int8",
              show_default=True, help="Input/output type of full-integer TFLite models.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset.")
@click.option("--tolerance", type=float, default=1.0, show_default=True,
              help="Accuracy points an artifact may lose against its float32 parent.")
@click.option("--allow-failures", is_flag=True,
              help="Exit 0 even when a variant fails the parity gate or cannot be built.")
@click.option("--test", "on_test", is_flag=True,
              help="Also measure every variant on the test split.")
@friendly_errors
def optimize(run_dir: Path | None, data_dir: Path | None, out: Path | None,
             variants: tuple[str, ...], qat: bool, list_variants: bool, sparsity: float,
             prune_epochs: int, prune_learning_rate: float, clusters: int,
             cluster_epochs: int, batch_size: int, calibration_size: int, int8_io: str,
             opset: int, tolerance: float,
             allow_failures: bool, on_test: bool) -> None:
    """Prune, quantize and convert a trained run to TFLite and ONNX; check each against FP32.

    Writes RUN_DIR/optimized/VARIANT/ (model + manifest) and summary.md/summary.json. Exits 1
    when a variant loses more than --tolerance accuracy points or cannot be built.
    """
    if list_variants:
        click.echo("\n".join(_variant_names()))
        return
    if run_dir is None:
        raise click.UsageError("RUN_DIR is required (a finished `brainedge train` folder)")
    from optimize.config import (
        DEFAULT_VARIANTS,
        ClusterConfig,
        OptimizeConfig,
        PruneConfig,
        Source,
        Variant,
    )

    chosen = tuple(Variant.parse(v) for v in variants) or DEFAULT_VARIANTS
    if qat and not any(v.source is Source.QAT for v in chosen):
        chosen += (Variant.parse("qat-tflite-int8"),)
    config = OptimizeConfig(
        run_dir=run_dir, out_dir=out, variants=chosen, calibration_size=calibration_size,
        onnx_opset=opset, int8_io=int8_io, tolerance=tolerance / 100.0,
        allow_failures=allow_failures, evaluate_on_test=on_test, qat_epochs=prune_epochs,
        prune=PruneConfig(target_sparsity=sparsity, fine_tune_epochs=prune_epochs,
                          learning_rate=prune_learning_rate, batch_size=batch_size),
        cluster=ClusterConfig(clusters=clusters, fine_tune_epochs=cluster_epochs,
                              batch_size=batch_size),
    )
    from optimize.pipeline import optimize_run

    summary = optimize_run(config, data_dir)
    click.echo(summary.markdown)
    if not summary.ok:
        bad = [r.variant.name for r in summary.results if r.status != "passed"]
        message = f"{len(bad)} variant(s) did not pass: {', '.join(bad)} (see {summary.out_dir})"
        if not allow_failures:
            raise click.ClickException(message + "; --allow-failures accepts them")
        click.echo(f"warning: {message}", err=True)


# --- compare ----------------------------------------------------------------------------------

@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Also write the Markdown table (and JSON beside it) here.")
@friendly_errors
def compare(run_dirs: tuple[Path, ...], out: Path | None) -> None:
    """Compare trained runs: accuracy, macro-F1, parameters, FLOPs, file size, time per epoch."""
    from training.compare import compare_runs

    table = compare_runs(list(run_dirs), out)
    click.echo(table)




@main.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True,
              help="Artifact folder (RUN/optimized/VARIANT) or run folder (Keras FP32).")
@click.option("--backend", type=click.Choice(["litert", "onnxruntime", "keras"]), default=None,
              help="Runtime [default: the one the artifact's manifest implies].")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="Inference threads [default: the runtime's choice].")
@click.option("--provider", "providers", multiple=True, metavar="NAME",
              help="ONNX Runtime execution provider, e.g. CUDAExecutionProvider (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Write the results to this file instead of standard output.")
@friendly_errors
def predict(target: Path, model_path: Path, backend: str | None, threads: int | None,
            providers: tuple[str, ...], fmt: str, output: Path | None) -> None:
    """Classify an image (PNG, JPEG, DICOM) or every image under a folder.

    Prints the class, every class probability and the time per image (decode + preprocess +
    inference). Exits 1 if any file could not be classified; the others are still reported.
    """
    from brainedge import MEDICAL_NOTICE
    from runtime.classifier import load_classifier
    from runtime.predict import collect_images, predict_files, render

    files = collect_images(target)
    classifier = load_classifier(model_path, backend=backend, num_threads=threads,
                                 providers=providers or None)
    results = predict_files(classifier, files)
    text = render(results, classifier, fmt)
    if output is None:
        click.echo(text)
    else:
        from brainedge.manifest import atomic_path

        with atomic_path(output) as tmp:
            tmp.write_text(text if text.endswith("\n") else text + "\n")
        click.echo(f"wrote {len(results)} result(s) to {output}", err=True)
    if fmt != "json":
        click.echo(f"note: {MEDICAL_NOTICE}", err=True)
    failed = [r for r in results if r.error]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(results)} file(s) could not be "
                                   "classified; see their rows")


def _register_bench() -> None:
    from benchmarks.cli import bench

    main.add_command(bench)


_register_bench()


@main.command()
@click.option("--artifact", "artifacts", multiple=True, type=click.Path(path_type=Path),
              help="Artifact folder to load (repeatable), e.g. "
                   "runs/densenet121/optimized/tflite-int8 [default: BRAINEDGE_ARTIFACTS].")
@click.option("--default", "default_artifact", default=None,
              help="Name or folder of the artifact that answers requests naming none "
                   "[default: BRAINEDGE_DEFAULT_ARTIFACT, else the first].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 for every interface.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=None,
              help="gunicorn worker processes, each with its own copy of the models "
                   "[default: min(2, CPUs)].")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="Inference threads per model [default: BRAINEDGE_THREADS, else the "
                   "runtime's choice].")
@click.option("--max-upload-mb", type=click.FloatRange(0, min_open=True), default=None,
              help="Largest accepted upload [default: BRAINEDGE_MAX_UPLOAD_MB, else 20].")
@click.option("--gradcam/--no-gradcam", default=None,
              help="Grad-CAM heat maps from each artifact's FP32 Keras parent run; needs "
                   "brainedge[train] [default: BRAINEDGE_GRADCAM, else off].")
@click.option("--dev", is_flag=True,
              help="Flask's development server (one process) instead of gunicorn.")
@friendly_errors
def serve(artifacts: tuple[Path, ...], default_artifact: str | None, host: str, port: int,
          workers: int | None, threads: int | None, max_upload_mb: float | None,
          gradcam: bool | None, dev: bool) -> None:
    """Serve the upload page and the JSON API (/api/v1/predict) for clinicians and integrators.

    Every artifact is verified (manifest, sha256) and loaded before the server accepts a
    request; one that cannot be is an error, not a half-configured server. Other settings
    (API token, secret key, concurrency, a config file) come from BRAINEDGE_* variables.
    """
    from brainedge import MEDICAL_NOTICE
    from webapp.config import ServeConfig
    from webapp.serve import run_server

    config = ServeConfig.from_env(overrides={
        "artifacts": [str(p) for p in artifacts], "default_artifact": default_artifact,
        "threads": threads, "max_upload_mb": max_upload_mb, "gradcam": gradcam})
    click.echo(f"note: {MEDICAL_NOTICE}", err=True)
    run_server(config, host=host, port=port, workers=workers, dev=dev)


if __name__ == "__main__":
    main()
