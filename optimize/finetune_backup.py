"""Per-epoch backups of a fine-tune in progress, so an interrupted optimize loses one epoch.

``source_cache`` keeps each fine-tuned source once it is finished, but a fine-tune is several
epochs in float32 (on two AVX-512 cores one epoch took 5 to 7 minutes for DenseNet121 and 18
to 20 for VGG16): a session that ends mid-fine-tune used to throw all of it away.
Keras's BackupAndRestore saves the wrapped model's weights (TFMOT's masks, pruning step and
cluster centroids included), the optimizer and the epoch counter after every epoch, and a later
``fit`` on the same wrapped model resumes from them.

A backup is only resumed by the same fine-tune: its folder holds the source's key (parent
manifest and every setting, from ``source_cache.source_key``), and a folder whose key differs
is deleted before training starts. Keras deletes the checkpoints when ``fit`` finishes.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from brainedge.errors import BrainEdgeError
from brainedge.manifest import read_json, write_json

log = logging.getLogger(__name__)

KEY_NAME = "key.json"


def _folder(sources_dir: Path, source: str) -> Path:
    return Path(sources_dir) / f"{source}.backup"


def backup_dir(sources_dir: Path, key: dict[str, Any]) -> Path:
    """The backup folder for the fine-tune ``key`` names, emptied if it held another's."""
    folder = _folder(sources_dir, key["source"])
    key_path = folder / KEY_NAME
    if folder.exists():
        try:
            same = read_json(key_path) == key
        except BrainEdgeError:
            same = False
        if same:
            log.info("%s fine-tune: resuming from the per-epoch backup in %s", key["source"],
                     folder)
            return folder
        log.info("%s fine-tune: backup in %s was made with other settings or another parent; "
                 "starting over", key["source"], folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_json(key_path, key)
    return folder


def clear_backup(sources_dir: Path, source: str) -> None:
    """Remove a finished fine-tune's backup folder (its key file outlives Keras's cleanup)."""
    shutil.rmtree(_folder(sources_dir, source), ignore_errors=True)


def backup_callbacks(backup: Path | None) -> list[Any]:
    """BackupAndRestore into ``backup`` (or nothing), to go first in a fit's callbacks.

    First, so that the weights, the optimizer and TFMOT's pruning step are restored before any
    other callback reads them.
    """
    if backup is None:
        return []
    from brainedge.tf_compat import keras

    return [keras.callbacks.BackupAndRestore(str(Path(backup) / "checkpoints"))]
