"""Fine-tuned source models kept beside the variants, so an interrupted optimize resumes.

Pruning, 2:4 pruning, clustering and QAT each fine-tune the parent for epochs, in float32. On
two cores a DenseNet121 epoch at 150 px took 5 to 7 minutes with AVX-512 and about 17 with
AVX2, a VGG16 epoch 18 to 20 with AVX-512, so the default variants need hours and a session may
end before they are done (an unfinished fine-tune resumes per epoch: ``finetune_backup``). Each
source model is saved as soon as it is built, with a key: its parent's manifest and every
setting that shaped it. A later run whose key is the same loads the model instead of training
it again; any other key rebuilds and replaces it. The key file is written last and names the
model file's sha256, so a model cut off mid-write, or changed since, is rebuilt rather than
trusted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from brainedge.errors import BrainEdgeError
from brainedge.manifest import read_json, sha256_file, write_json
from optimize.config import OptimizeConfig, Source

log = logging.getLogger(__name__)

CACHE_DIR = ".sources"


def source_key(source: Source, parent_manifest_sha256: str,
               config: OptimizeConfig) -> dict[str, Any]:
    """Everything that decides what fine-tuning ``source`` gives: its parent and settings."""
    settings: dict[str, Any] = {"seed": config.seed}
    if source in (Source.PRUNED, Source.PRUNED_2_4, Source.PRUNED_CLUSTERED):
        settings["prune"] = asdict(config.prune)
    if source is Source.PRUNED_CLUSTERED:
        settings["cluster"] = asdict(config.cluster)
    if source is Source.QAT:
        settings.update(qat_epochs=config.qat_epochs,
                        learning_rate=config.prune.learning_rate,
                        batch_size=config.prune.batch_size)
    return {"source": source.value, "parent_manifest_sha256": parent_manifest_sha256,
            "settings": settings}


def _paths(out_dir: Path, source: Source) -> tuple[Path, Path]:
    folder = Path(out_dir) / CACHE_DIR
    return folder / f"{source.value}.h5", folder / f"{source.value}.json"


def save_source(out_dir: Path, key: dict[str, Any], model: Any,
                notes: dict[str, Any]) -> None:
    """Save a built source model, then its key (with the model file's sha256)."""
    model_path, key_path = _paths(out_dir, Source(key["source"]))
    model_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.unlink(missing_ok=True)  # the old key must not vouch for the new file
    # Keras picks the format from the suffix, so stage under the final name in a private folder.
    with tempfile.TemporaryDirectory(prefix=".staging.", dir=model_path.parent) as staging:
        staged = Path(staging) / model_path.name
        model.save(str(staged))
        os.replace(staged, model_path)
    write_json(key_path, {**key, "model_sha256": sha256_file(model_path), "notes": notes})


def load_source(out_dir: Path, key: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
    """The saved model and its build notes if its key matches ``key``; otherwise None."""
    model_path, key_path = _paths(out_dir, Source(key["source"]))
    if not key_path.is_file() or not model_path.is_file():
        return None
    try:
        saved = read_json(key_path)
    except BrainEdgeError as exc:
        log.warning("%s: unreadable, building the %s model again: %s", key_path,
                    key["source"], exc)
        return None
    if {k: saved.get(k) for k in key} != key:
        log.info("%s model: saved with other settings or another parent; building it again",
                 key["source"])
        return None
    if sha256_file(model_path) != saved.get("model_sha256"):
        log.warning("%s: changed since it was saved; building the %s model again", model_path,
                    key["source"])
        return None
    return _load(model_path, Source(key["source"])), dict(saved.get("notes", {}))


def _load(path: Path, source: Source) -> Any:
    from brainedge.tf_compat import keras
    from optimize.qat import qat_scope

    # TFMOT's wrappers and quantizers are custom objects: Keras needs their scope to load QAT.
    with qat_scope() if source is Source.QAT else contextlib.nullcontext():
        return keras.models.load_model(str(path), compile=False)
