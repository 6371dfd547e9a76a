"""The artifacts one server process answers with: loaded and verified once, at start-up.

The registry is built by ``create_app`` and kept in ``app.extensions``; it is read-only after
that, so concurrent requests share it without locks (each runtime handles its own concurrency:
LiteRT through its interpreter pool, ONNX Runtime sessions are thread-safe; a Grad-CAM holds
its own lock).

With ``gradcam`` on, each artifact is paired with the float32 Keras model of the training run
it was made from (its manifest's ``parent``), or with itself when it is such a run. An artifact
whose parent is not on the server is still served, without a heat map and with the reason.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from brainedge.errors import BrainEdgeError, ConfigError, MissingDependencyError, ModelLoadError
from brainedge.manifest import MANIFEST_NAME, sha256_file
from runtime.artifact import Artifact, open_artifact
from runtime.classifier import Classifier, load_classifier
from runtime.gate import check_gate
from runtime.gradcam import GradCam, require_tensorflow
from runtime.preprocess import PreprocessSpec
from webapp.config import ServeConfig

log = logging.getLogger(__name__)

Loader = Callable[..., Classifier]

GRADCAM_OFF = "Grad-CAM is off on this server (BRAINEDGE_GRADCAM)"


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
    # The parent run's Grad-CAM (shared by the artifacts of one run), or why there is none.
    gradcam: GradCam | None = None
    gradcam_reason: str = GRADCAM_OFF
    gradcam_of_itself: bool = False  # the artifact is the Keras run, not one made from it

    def describe(self) -> dict[str, Any]:
        """What answered, for the page and the API; the server's file paths stay private."""
        info = self.classifier.describe()
        info.pop("path", None)
        return {"name": self.name, **info}

    def gradcam_status(self) -> dict[str, Any]:
        """For GET /api/v1/models and the page: can this artifact get a heat map, else why."""
        if self.gradcam is not None:
            return {"gradcam": True}
        return {"gradcam": False, "gradcam_reason": self.gradcam_reason}

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
    """Manifest, sha256 and parity gate check of every artifact without loading any runtime,
    so that a server can refuse to start before it forks workers (see ``webapp.serve``)."""
    artifacts = [open_artifact(path) for path in config.artifacts]
    for artifact in artifacts:
        check_gate(artifact.manifest, str(artifact.folder), config.allow_failed_gate)
    return artifacts


def load_models(config: ServeConfig, loader: Loader = load_classifier) -> ModelRegistry:
    """Load every configured artifact, run it once, and pick the default; raise a
    ``BrainEdgeError`` naming the artifact if any of this fails (no half-configured server).
    With ``config.gradcam``, also pair each with its parent run's Grad-CAM where possible."""
    if config.gradcam:
        _require_gradcam_support()  # before anything loads: a missing TensorFlow fails fast
    models: dict[str, LoadedModel] = {}
    for path in config.artifacts:
        classifier = loader(path, num_threads=config.threads, pool_size=config.concurrency,
                            allow_failed_gate=config.allow_failed_gate)
        name = artifact_name(classifier.artifact)
        if classifier.gate is not None and not classifier.gate.passed:
            log.warning("%s: served although it %s (BRAINEDGE_ALLOW_FAILED_GATE); every "
                        "answer says so", name, classifier.gate.summary())
        if name in models:
            raise ConfigError(f"two artifacts are both named {name!r}: {models[name].source} and "
                              f"{path}; serve one of them")
        _warm_up(classifier)
        models[name] = LoadedModel(name, path, classifier,
                                   _file_identity(classifier.artifact.model_path))
    if config.gradcam:
        models = _attach_gradcams(config, models)
    return ModelRegistry(MappingProxyType(models), _default_name(config, models))


def _warm_up(classifier: Classifier) -> None:
    # One inference at start-up proves the runtime can execute the model (a file can load yet
    # fail at its first invoke) and keeps the first clinician's request from paying for it.
    size = classifier.spec.image_size
    try:
        classifier.predict_batch(np.zeros((1, size, size, 3), np.float32))
    except BrainEdgeError as exc:
        raise ModelLoadError(f"{classifier.artifact.folder}: loads but cannot run: {exc}") from exc


def _require_gradcam_support() -> None:
    # Never a silent fallback: an operator who asked for heat maps learns at start-up that
    # this install cannot make them, instead of finding them missing on every page.
    try:
        require_tensorflow()
    except MissingDependencyError as exc:
        raise MissingDependencyError(
            f"BRAINEDGE_GRADCAM is on, but TensorFlow cannot be imported here ({exc}). Install "
            "it with: pip install 'brainedge[train]', or turn Grad-CAM off (unset "
            "BRAINEDGE_GRADCAM or set it to 0)"
        ) from exc


class _NoGradCam(Exception):
    """Why one artifact gets no heat map: said in the API and on the page, never fatal. The
    message is shown to clients, so it never holds a server path (those go to the log)."""


@dataclass(frozen=True)
class _ParentCam:
    gradcam: GradCam
    class_names: tuple[str, ...]
    spec: PreprocessSpec


def _attach_gradcams(config: ServeConfig,
                     models: Mapping[str, LoadedModel]) -> dict[str, LoadedModel]:
    # One Grad-CAM per parent run: the int8, fp32 and ONNX artifacts of a run share its model.
    # Runs served as such go first, so that their already loaded model is the one shared.
    by_run: dict[Path, _ParentCam | str] = {}  # a run's Grad-CAM, or why it has none
    attached: dict[str, LoadedModel] = {}
    for name in sorted(models, key=lambda n: models[n].classifier.artifact.manifest.format
                       != "keras"):
        model = models[name]
        itself = model.classifier.artifact.manifest.format == "keras"
        try:
            gradcam = _gradcam_for(config, model, by_run)
        except _NoGradCam as exc:
            log.warning("%s: no Grad-CAM: %s", name, exc)
            attached[name] = dataclasses.replace(model, gradcam_reason=str(exc))
            continue
        log.info("%s: Grad-CAM from %s (layer %s)", name,
                 "itself" if itself else "its parent run", gradcam.layer_name)
        attached[name] = dataclasses.replace(model, gradcam=gradcam, gradcam_of_itself=itself)
    return {name: attached[name] for name in models}  # the configured order


def _gradcam_for(config: ServeConfig, model: LoadedModel,
                 by_run: dict[Path, _ParentCam | str]) -> GradCam:
    artifact = model.classifier.artifact
    if artifact.manifest.format == "keras":
        # A training run served as such is its own float32 parent: explain the loaded model.
        run_dir, parent = artifact.folder, model.classifier
    else:
        run_dir, parent = _parent_run(model.name, artifact), None
    key = run_dir.resolve()
    if key not in by_run:
        try:
            by_run[key] = _build_gradcam(config, model.name, run_dir, parent)
        except _NoGradCam as exc:
            by_run[key] = str(exc)
    found = by_run[key]
    if isinstance(found, str):
        raise _NoGradCam(found)
    # The map is computed on the input preprocessed for the served artifact, for the index of
    # the class it predicted: both must mean the same to the parent.
    if found.class_names != model.classifier.class_names:
        raise _NoGradCam(f"its parent run names other classes ({', '.join(found.class_names)})")
    if found.spec != model.classifier.spec:
        raise _NoGradCam("its parent run preprocesses images differently")
    return found.gradcam


def _parent_run(name: str, artifact: Artifact) -> Path:
    manifest = artifact.manifest
    if not manifest.parent:
        raise _NoGradCam("its manifest names no parent training run")
    recorded = Path(manifest.parent)
    candidates = [recorded]
    if not recorded.is_absolute():
        # optimize records the run relative to where it ran; its default output is
        # RUN/optimized/VARIANT, so a server started elsewhere finds the run two levels up.
        candidates.append(artifact.folder.parent.parent)
    reference = manifest.extra.get("parent_manifest")
    expected = reference.get("manifest_sha256") if isinstance(reference, Mapping) else None
    changed = False
    for run_dir in candidates:
        if not ((run_dir / "model.keras").is_file() and (run_dir / MANIFEST_NAME).is_file()):
            continue
        # The artifact was made from one exact run: a retrained folder at the same path holds
        # another model, whose heat map would explain something else.
        if expected is not None and sha256_file(run_dir / MANIFEST_NAME) != expected:
            changed = True
            continue
        return run_dir
    if changed:
        log.warning("%s: the run at %s is not the one it was made from (manifest sha256 "
                    "differs)", name, recorded)
        raise _NoGradCam("its parent training run changed after this artifact was made "
                         "(the run's manifest differs from the one the artifact records)")
    log.warning("%s: no model.keras with a manifest at its parent run %s", name,
                ", ".join(str(c) for c in candidates))
    raise _NoGradCam("its parent training run (model.keras) is not on this server; copy the "
                     "run folder to the path its manifest records to get heat maps")


def _build_gradcam(config: ServeConfig, name: str, run_dir: Path,
                   parent: Classifier | None) -> _ParentCam:
    if parent is None:
        try:
            parent = load_classifier(run_dir, num_threads=config.threads)
        except BrainEdgeError as exc:  # e.g. a sha256 mismatch: refuse the model, keep serving
            log.warning("%s: its parent run %s cannot be loaded: %s", name, run_dir, exc)
            raise _NoGradCam("its parent training run fails its checks or cannot be loaded "
                             "(see the server log)") from exc
    keras_model = getattr(parent.predictor, "model", None)
    if parent.artifact.manifest.format != "keras" or keras_model is None:
        raise _NoGradCam(f"its parent is a {parent.artifact.manifest.format} artifact, not a "
                         "Keras training run")
    try:
        gradcam = GradCam(keras_model)
    except ModelLoadError as exc:
        log.warning("%s: Grad-CAM cannot explain %s: %s", name, run_dir, exc)
        raise _NoGradCam(f"Grad-CAM cannot explain its parent model: {exc}") from exc
    return _ParentCam(gradcam, parent.class_names, parent.spec)


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
