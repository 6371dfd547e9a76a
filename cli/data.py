"""Datasets: ``brainedge data phantoms`` (the embedded default), ``brainedge data ood`` (the
out-of-distribution evaluation set) and ``brainedge audit``."""

from __future__ import annotations

from pathlib import Path

import click

from cli.errors import friendly_errors

DEFAULT_DATA = "data/phantoms"
DEFAULT_OOD = "data/ood"


@click.group()
def data() -> None:
    """Datasets: generate the embedded default and the out-of-distribution set."""


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


@data.command("ood")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True,
              help="The Brain Tumor MRI dataset folder (its Testing/ split is transformed).")
@click.option("--out", type=click.Path(path_type=Path), default=Path(DEFAULT_OOD),
              show_default=True, help="Folder to write the set into (replaced if it is one).")
@click.option("--per-class", type=click.IntRange(1), default=15, show_default=True,
              help="Test slices per class for each transform (near-OOD).")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@friendly_errors
def data_ood(data_dir: Path, out: Path, per_class: int, seed: int) -> None:
    """Build the out-of-distribution evaluation set (near and far) from offline material.

    Near: the dataset's test slices inverted, cropped, rotated, re-windowed or noisy, and other
    MRI; far: photos, text, noise, CT, ultrasound, X-ray. sources.json gives each file's
    provenance and licence. Large and derived from the dataset: never commit it.
    """
    from training.ood_set import OODSetConfig, build_ood_set

    manifest = build_ood_set(data_dir, out, OODSetConfig(per_class=per_class, seed=seed))
    for group, kinds in manifest["counts"].items():
        detail = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
        click.echo(f"{group}: {sum(kinds.values())} images ({detail})")
    for skipped in manifest["skipped"]:
        click.echo(f"skipped {skipped['source']}: {skipped['reason']}", err=True)
    click.echo(f"OOD set ready in {out} (sources.json lists provenance and licence)")


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
