"""Datasets: ``brainedge data phantoms`` (the embedded default) and ``brainedge audit``."""

from __future__ import annotations

from pathlib import Path

import click

from cli.errors import friendly_errors

DEFAULT_DATA = "data/phantoms"


@click.group()
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

@click.command()
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
