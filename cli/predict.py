"""``brainedge predict``: classify image files with an artifact, on any install."""

from __future__ import annotations

from pathlib import Path

import click

from cli.errors import friendly_errors


@click.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Artifact folder (RUN/optimized/VARIANT) or run folder (Keras FP32) "
                   "[default: the shipped DenseNet121, models/densenet121].")
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
@click.option("--allow-failed-gate", is_flag=True,
              help="Run an artifact that failed its parity gate (brainedge optimize); every "
                   "result then says so [default: refuse it].")
@friendly_errors
def predict(target: Path, model_path: Path | None, backend: str | None, threads: int | None,
            providers: tuple[str, ...], fmt: str, output: Path | None,
            allow_failed_gate: bool) -> None:
    """Classify an image (PNG, JPEG, BMP, single-page TIFF, single-frame DICOM) or every
    image under a folder.

    Prints the class, every class probability and the time per image (decode + preprocess +
    inference). Exits 1 if any file could not be classified; the others are still reported.
    """
    from brainedge import MEDICAL_NOTICE
    from runtime.classifier import load_classifier
    from runtime.predict import collect_images, predict_files, render

    files = collect_images(target)
    if model_path is None:
        from runtime.shipped import default_artifact

        model_path = default_artifact()
        click.echo(f"model: the shipped {model_path.name} ({model_path})", err=True)
    classifier = load_classifier(model_path, backend=backend, num_threads=threads,
                                 providers=providers or None,
                                 allow_failed_gate=allow_failed_gate)
    gate = classifier.gate
    # A table on the terminal ends with the same warning; anything else gets it here.
    if gate is not None and not gate.passed and (fmt != "table" or output is not None):
        click.echo(f"WARNING: this model {gate.summary()}; it runs only because of "
                   "--allow-failed-gate, and every result says so", err=True)
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
