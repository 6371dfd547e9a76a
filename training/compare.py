"""One table comparing trained runs: accuracy and what each model costs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from brainedge.manifest import atomic_path, load_manifest, read_json, write_json
from training.reports import markdown_table

log = logging.getLogger(__name__)

COLUMNS = [
    ("model", "Model"),
    ("image_size", "Input px"),
    ("test_accuracy", "Test acc."),
    ("test_accuracy_ci95", "95% CI"),
    ("clean_accuracy", "Leak-free acc."),
    ("test_macro_f1", "Macro-F1"),
    ("val_accuracy", "Val acc."),
    ("params_m", "Params (M)"),
    ("gflops", "GFLOPs/image"),
    ("size_mb", "model.keras MB"),
    ("seconds_per_epoch", "s/epoch"),
    ("epochs_run", "Epochs"),
    ("training_precision", "Train precision"),
]


def count_flops(model: Any) -> int:
    """Floating-point operations of one forward pass at batch 1, counted by TF's profiler."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2_as_graph,
    )

    from brainedge.tf_compat import tf

    spec = tf.TensorSpec([1, *model.input_shape[1:]], tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen, _ = convert_variables_to_constants_v2_as_graph(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=frozen.graph, cmd="op", options=options,
                                            run_meta=tf.compat.v1.RunMetadata())
    return int(profile.total_float_ops)


def run_row(run_dir: Path) -> dict[str, Any]:
    from training.train import MODEL_FILE, load_trained

    model, manifest = load_trained(run_dir)
    row: dict[str, Any] = {
        "model": manifest.model,
        "run_dir": str(run_dir),
        "image_size": manifest.preprocessing["image_size"],
        "val_accuracy": manifest.metrics.get("val_accuracy"),
        "params_m": manifest.metrics["params"] / 1e6,
        "gflops": count_flops(model) / 1e9,
        "size_mb": (Path(run_dir) / MODEL_FILE).stat().st_size / 1e6,
        "seconds_per_epoch": manifest.metrics.get("seconds_per_epoch"),
        "epochs_run": manifest.metrics.get("epochs_run"),
        "training_precision": manifest.extra.get("training_precision"),
    }
    metrics_path = Path(run_dir) / "eval" / "metrics.json"
    if metrics_path.exists():
        results = read_json(metrics_path)["results"]
        full = results.get("full test", {})
        row["test_accuracy"] = full.get("accuracy")
        row["test_accuracy_ci95"] = full.get("accuracy_ci95")
        row["test_macro_f1"] = full.get("macro_f1")
        row["clean_accuracy"] = results.get("leakage-free test", {}).get("accuracy")
    else:
        log.warning("%s has no eval/metrics.json; run `brainedge evaluate %s` first",
                    run_dir, run_dir)
    return row


def compare_runs(run_dirs: list[Path], out: Path | None = None) -> str:
    for run_dir in run_dirs:
        load_manifest(run_dir, verify=False)  # fail fast, before any model is loaded
    rows = [run_row(Path(r)) for r in run_dirs]
    table = markdown_table(rows, COLUMNS)
    if out:
        with atomic_path(Path(out)) as tmp:
            tmp.write_text("# Model comparison\n\n" + table + "\n")
        write_json(Path(out).with_suffix(".json"), rows)
    return table
