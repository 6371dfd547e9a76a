"""The training table of ``brainedge results``: per run, the recipe in one line, epochs, best
validation accuracy and time per epoch; then every config value side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.results.inputs import TRAINING, RunFolder, problem_lines
from brainedge.tables import markdown_table


def training_markdown(runs: Sequence[RunFolder]) -> str:
    done = [r for r in runs if r.manifest is not None]
    parts = ["# Training"]
    if done:
        parts += [
            markdown_table([_row(r) for r in done], [
                ("model", "Model"), ("run", "Run"), ("recipe", "Recipe"), ("epochs", "Epochs"),
                ("val_accuracy", "Best val. acc.", ".3f"), ("val_images", "Val. images"),
                ("seconds_per_epoch", "s/epoch", ".1f"), ("minutes", "Training min", ".1f"),
                ("precision", "Precision"), ("params_m", "Params (M)", ".2f"),
                ("host", "Host"),
            ]),
            "Best val. acc. is the saved (best) epoch's, on the validation split carved from "
            "Training; s/epoch is the median epoch after the first (which also compiles); "
            "Training min adds up every epoch, resumed ones included.",
            "## Recipe",
            _recipe_table(done),
        ]
    parts += problem_lines(runs, TRAINING)
    return "\n\n".join(parts) + "\n"


def recipe_summary(config: Mapping[str, Any] | None) -> str | None:
    """The training config in one line: input, weights, learning rate and schedule, epochs."""
    if not config:
        return None
    c = config
    parts = [f"{c.get('image_size')} px", _weights_text(c)]
    lr = f"lr {c.get('learning_rate'):g}" if c.get("learning_rate") is not None else "lr ?"
    if c.get("lr_schedule") == "cosine":
        lr += (f" cosine to {c.get('min_learning_rate', 0):g} after "
               f"{c.get('warmup_epochs', 0):g} warm-up epoch(s)")
    elif c.get("lr_schedule") == "plateau" or "reduce_lr_patience" in c:
        lr += f" x0.3 on plateau (patience {c.get('reduce_lr_patience')})"
    parts.append(lr)
    if c.get("label_smoothing"):
        parts.append(f"label smoothing {c['label_smoothing']:g}")
    if c.get("class_weight") not in (None, "none"):
        parts.append(f"{c['class_weight']} class weights")
    epochs = f"{c.get('epochs')} epochs, batch {c.get('batch_size')}"
    if c.get("fine_tune_epochs"):
        epochs += f", then {c['fine_tune_epochs']} fine-tuning the top {c.get('fine_tune_layers')}"
    parts.append(epochs)
    parts.append(_augment_text(c.get("augment") or {}))
    if c.get("val_fraction") is not None:
        parts.append(f"val {c['val_fraction']:.0%}")
    parts.append(f"seed {c.get('seed')}")
    return ", ".join(p for p in parts if p)


def _row(run: RunFolder) -> dict[str, Any]:
    manifest = run.manifest or {}
    metrics, extra = manifest.get("metrics") or {}, manifest.get("extra") or {}
    config = run.config or {}
    planned = (config.get("epochs") or 0) + (config.get("fine_tune_epochs") or 0)
    run_epochs = metrics.get("epochs_run")
    seconds = [h.get("epoch_seconds") for h in run.history or [] if isinstance(h, Mapping)]
    seconds = [s for s in seconds if isinstance(s, (int, float))]
    return {
        "model": run.model,
        "run": run.name,
        "recipe": recipe_summary(run.config),
        "epochs": f"{run_epochs} of {planned}" if planned else run_epochs,
        "val_accuracy": metrics.get("val_accuracy"),
        "val_images": metrics.get("val_images"),
        "seconds_per_epoch": metrics.get("seconds_per_epoch"),
        "minutes": sum(seconds) / 60 if seconds else None,
        "precision": extra.get("training_precision"),
        "params_m": metrics["params"] / 1e6 if metrics.get("params") else None,
        "host": extra.get("host"),
    }


def _weights_text(c: Mapping[str, Any]) -> str:
    weights = c.get("weights")
    if weights == "none":
        return "from scratch"
    name = "ImageNet" if weights == "imagenet" else Path(str(weights)).name
    frozen = c.get("freeze_base")
    return f"{name} weights" + (", base frozen" if frozen or frozen is None else "")


def _augment_text(augment: Mapping[str, Any]) -> str | None:
    if not augment:
        return None
    parts = [
        f"rotation ±{augment.get('rotation_deg', 0):g}°",
        f"shift {augment.get('shift', 0):g}",
        f"brightness ±{augment.get('brightness', 0):g}",
    ]
    parts += [name for key, name in (("hflip", "h-flip"), ("vflip", "v-flip")) if augment.get(key)]
    return "augment " + " ".join(parts)


def _recipe_table(runs: Sequence[RunFolder]) -> str:
    """Every config value (augmentation flattened), one row per key, one column per run."""
    flat = [_flatten(r.config or {}) for r in runs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    rows = [{"key": k, **{f"r{i}": _value_text(f.get(k)) for i, f in enumerate(flat)}}
            for k in keys]
    columns = [("key", "config.json"), *((f"r{i}", r.name) for i, r in enumerate(runs))]
    return markdown_table(rows, columns)


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _value_text(value: Any) -> str | None:
    # `g` keeps 1e-06 and 0.001 as written in the config, not padded to four decimals.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return None if value is None else str(value)
