"""``brainedge optimize``: pruned, clustered and quantized TFLite/ONNX variants of a run."""

from __future__ import annotations

from pathlib import Path

import click

from cli.errors import friendly_errors


def _variant_names() -> list[str]:
    from optimize.config import ALL_VARIANTS

    return [v.name for v in ALL_VARIANTS]


@click.command()
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
@click.option("--rebuild", is_flag=True,
              help="Build every requested variant again. By default a stopped run resumes: "
                   "variants and fine-tuned models already built from this run with the same "
                   "settings are kept.")
@click.option("--test", "on_test", is_flag=True,
              help="Also measure every variant on the test split.")
@click.option("--ood-method", type=click.Choice(["mahalanobis", "energy", "msp"]),
              default="mahalanobis", show_default=True,
              help="The out-of-distribution score each artifact carries (README, 'Trust').")
@click.option("--ood-false-flag-rate", type=click.FloatRange(0, 0.5, min_open=True,
              max_open=True), default=0.01, show_default=True,
              help="Share of validation slices the score's threshold may flag.")
@friendly_errors
def optimize(run_dir: Path | None, data_dir: Path | None, out: Path | None,
             variants: tuple[str, ...], qat: bool, list_variants: bool, sparsity: float,
             prune_epochs: int, prune_learning_rate: float, clusters: int,
             cluster_epochs: int, batch_size: int, calibration_size: int, int8_io: str,
             opset: int, tolerance: float,
             allow_failures: bool, rebuild: bool, on_test: bool, ood_method: str,
             ood_false_flag_rate: float) -> None:
    """Prune, quantize and convert a trained run to TFLite and ONNX; check each against FP32.

    Writes RUN_DIR/optimized/VARIANT/ (model + manifest) and summary.md/summary.json. Exits 1
    when a variant loses more than --tolerance accuracy points or cannot be built. Run it
    again after an interruption: what was built with the same settings is kept.
    """
    if list_variants:
        click.echo("\n".join(_variant_names()))
        return
    if run_dir is None:
        raise click.UsageError("RUN_DIR is required (a finished `brainedge train` folder)")
    from cli.allocator import use_tcmalloc

    use_tcmalloc()  # pruning, clustering and QAT train, like `brainedge train`
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
        allow_failures=allow_failures, rebuild=rebuild, evaluate_on_test=on_test,
        qat_epochs=prune_epochs,
        ood_method=ood_method, ood_false_flag_rate=ood_false_flag_rate,
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


@click.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Folder under models/, e.g. densenet121.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True,
              help="The dataset it was trained on (its Testing/ split is evaluated).")
@click.option("--clean-list", type=click.Path(path_type=Path), required=True,
              help="clean_test.txt from `brainedge audit` (the leakage-free test list).")
@click.option("--models-dir", type=click.Path(path_type=Path), default=Path("models"),
              show_default=True)
@click.option("--sample-per-class", type=click.IntRange(10), default=60, show_default=True,
              help="Leakage-free test images per class whose predictions the card records.")
@click.option("--command", "commands", multiple=True, metavar="CMD",
              help="A command that made the artifact, quoted in the model card (repeatable).")
@click.option("--compress", is_flag=True,
              help="Store the model file xz-compressed (model.tflite.xz): loading decompresses "
                   "it in memory and checks the model bytes' sha256. For the 25 MB budget.")
@friendly_errors
def ship(artifact: Path, name: str, data_dir: Path, clean_list: Path, models_dir: Path,
         sample_per_class: int, commands: tuple[str, ...], compress: bool) -> None:
    """Ship an artifact with the package: evaluate it and copy it into models/NAME.

    Refuses an artifact that failed its parity gate or whose parent was trained on the
    phantoms. Writes card.json beside it and regenerates models/MODEL_CARD.md.
    """
    from optimize.ship import ShipConfig
    from optimize.ship import ship as ship_artifact

    target = ship_artifact(ShipConfig(artifact=artifact, name=name, data=data_dir,
                                      clean_list=clean_list, models_dir=models_dir,
                                      sample_per_class=sample_per_class, commands=commands,
                                      compress=compress))
    click.echo(f"shipped {artifact} as {target}; model card: {models_dir / 'MODEL_CARD.md'}")


@click.command("model-card")
@click.option("--models-dir", type=click.Path(path_type=Path), default=Path("models"),
              show_default=True)
@friendly_errors
def model_card(models_dir: Path) -> None:
    """Regenerate models/MODEL_CARD.md from the card.json of every shipped model."""
    from optimize.model_card import write_model_card

    click.echo(f"wrote {write_model_card(models_dir)}")
