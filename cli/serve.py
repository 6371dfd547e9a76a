"""``brainedge serve``: the upload page and JSON API behind gunicorn."""

from __future__ import annotations

from pathlib import Path

import click

from cli.errors import friendly_errors


@click.command()
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
@click.option("--allow-failed-gate", is_flag=True,
              help="Serve artifacts that failed their parity gate (brainedge optimize), "
                   "with a warning beside every answer [default: BRAINEDGE_ALLOW_FAILED_GATE, "
                   "else refuse to start].")
@click.option("--dev", is_flag=True,
              help="Flask's development server (one process) instead of gunicorn.")
@friendly_errors
def serve(artifacts: tuple[Path, ...], default_artifact: str | None, host: str, port: int,
          workers: int | None, threads: int | None, max_upload_mb: float | None,
          gradcam: bool | None, allow_failed_gate: bool, dev: bool) -> None:
    """Serve the upload page and the JSON API (/api/v1/predict) for clinicians and integrators.

    Every artifact is verified (manifest, sha256, parity gate) and loaded before the server
    accepts a request; one that cannot be is an error, not a half-configured server. Other settings
    (API token, secret key, concurrency, a config file) come from BRAINEDGE_* variables.
    """
    from brainedge import MEDICAL_NOTICE
    from webapp.config import ServeConfig
    from webapp.serve import run_server

    config = ServeConfig.from_env(overrides={
        "artifacts": [str(p) for p in artifacts], "default_artifact": default_artifact,
        "threads": threads, "max_upload_mb": max_upload_mb, "gradcam": gradcam,
        # Only ever switches it on: leaving the flag out keeps the environment's choice.
        "allow_failed_gate": True if allow_failed_gate else None})
    click.echo(f"note: {MEDICAL_NOTICE}", err=True)
    run_server(config, host=host, port=port, workers=workers, dev=dev)
