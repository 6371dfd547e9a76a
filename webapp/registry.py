"""The artifacts one server process answers with: loaded and verified once, at start-up.

The registry is built by ``create_app`` and kept in ``app.extensions``; it is read-only after
that, so concurrent requests share it without locks (each runtime handles its own concurrency:
LiteRT through its interpreter pool, ONNX Runtime sessions are thread-safe).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from brainedge.errors import BrainEdgeError, ConfigError, ModelLoadError
from runtime.artifact import Artifact, open_artifact
from runtime.classifier import Classifier, load_classifier
from webapp.config import ServeConfig

Loader = Callable[..., Classifier]


def artifact_name(artifact: Artifact) -> str:
    """URL-safe name from the manifest, e.g. ``densenet121-tflite-int8``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", artifact.label).strip("-").lower()


def _file_identity(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class LoadedModel:
    name: str
    source: Path  # as configured, to match a default given by path
    classifier: Classifier
    file_identity: tuple[int, int, int]  # inode, size, mtime of the model file at load

    def describe(self) -> dict[str, Any]:
        """What answered, for the page and the API; the server's file paths stay private."""
        info = self.classifier.describe()
        info.pop("path", None)
        return {"name": self.name, **info}

    def changed_on_disk(self) -> str | None:
        """A reason when the model file was replaced or edited after loading: LiteRT maps the
        file into memory, so an in-place edit could change a running model unverified."""
        path = self.classifier.artifact.model_path
        try:
            if _file_identity(path) == self.file_identity:
                return None
        except OSError:
            return f"{self.name}: its model file disappeared after loading; restart the server"
        return f"{self.name}: its model file changed after loading; restart the server"


@dataclass(frozen=True)
class ModelRegistry:
    models: Mapping[str, LoadedModel]
    default: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.models)

    def find(self, name: str | None) -> LoadedModel | None:
        """The model called ``name``, the default for an empty name, ``None`` if unknown."""
        return self.models[self.default] if not name else self.models.get(name)

    def problems(self) -> list[str]:
        return [reason for m in self.models.values() if (reason := m.changed_on_disk())]


def verify_artifacts(config: ServeConfig) -> list[Artifact]:
    """Manifest and sha256 check of every artifact without loading any runtime, so that a
    server can refuse to start before it forks workers (see ``webapp.serve``)."""
    return [open_artifact(path) for path in config.artifacts]


def load_models(config: ServeConfig, loader: Loader = load_classifier) -> ModelRegistry:
    """Load every configured artifact, run it once, and pick the default; raise a
    ``BrainEdgeError`` naming the artifact if any of this fails (no half-configured server)."""
    models: dict[str, LoadedModel] = {}
    for path in config.artifacts:
        classifier = loader(path, num_threads=config.threads, pool_size=config.concurrency)
        name = artifact_name(classifier.artifact)
        if name in models:
            raise ConfigError(f"two artifacts are both named {name!r}: {models[name].source} and "
                              f"{path}; serve one of them")
        _warm_up(classifier)
        models[name] = LoadedModel(name, path, classifier,
                                   _file_identity(classifier.artifact.model_path))
    return ModelRegistry(MappingProxyType(models), _default_name(config, models))


def _warm_up(classifier: Classifier) -> None:
    # One inference at start-up proves the runtime can execute the model (a file can load yet
    # fail at its first invoke) and keeps the first clinician's request from paying for it.
    size = classifier.spec.image_size
    try:
        classifier.predict_batch(np.zeros((1, size, size, 3), np.float32))
    except BrainEdgeError as exc:
        raise ModelLoadError(f"{classifier.artifact.folder}: loads but cannot run: {exc}") from exc


def _default_name(config: ServeConfig, models: Mapping[str, LoadedModel]) -> str:
    wanted = config.default_artifact
    if not wanted:
        return next(iter(models))
    if wanted in models:
        return wanted
    target = Path(wanted).resolve()
    for model in models.values():
        folder = model.classifier.artifact.folder
        if target in (model.source.resolve(), folder.resolve()):
            return model.name
    raise ConfigError(f"default artifact {wanted!r} is not among the loaded ones; name one of "
                      f"{', '.join(models)} or list its folder in BRAINEDGE_ARTIFACTS")


@dataclass(frozen=True)
class ServeState:
    """What ``create_app`` puts in ``app.extensions[EXTENSION]``: read-only after start-up."""

    config: ServeConfig
    registry: ModelRegistry


EXTENSION = "brainedge"


def current_state() -> ServeState:
    from flask import current_app

    return current_app.extensions[EXTENSION]
