"""The models that ship with the package (``models/`` in the repository, ``brainedge_models``
once installed): what ``brainedge predict`` and ``brainedge serve`` use when given none."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from brainedge.errors import ModelLoadError
from brainedge.manifest import MANIFEST_NAME

PACKAGE = "brainedge_models"
DEFAULT_MODEL = "densenet121"


def shipped_root() -> Path | None:
    """The folder holding the shipped models, or None when the package is not installed."""
    try:
        root = resources.files(PACKAGE)
    except ModuleNotFoundError:
        return None
    path = Path(str(root))
    return path if path.is_dir() else None


def shipped_artifacts() -> dict[str, Path]:
    """Name (e.g. ``densenet121``) -> artifact folder, for every shipped model with a manifest."""
    root = shipped_root()
    if root is None:
        return {}
    return {p.parent.name: p.parent for p in sorted(root.glob(f"*/{MANIFEST_NAME}"))}


def default_artifact() -> Path:
    """The shipped DenseNet121: the model that answers when the user names none."""
    found = shipped_artifacts()
    if DEFAULT_MODEL not in found:
        where = shipped_root() or f"the {PACKAGE} package (not installed)"
        raise ModelLoadError(
            f"no model given and no shipped {DEFAULT_MODEL} in {where}; reinstall BrainEdge "
            "(pip install '.[edge]') or pass --model/--artifact with a folder made by "
            "brainedge optimize"
        )
    return found[DEFAULT_MODEL]
