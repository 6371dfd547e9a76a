"""Find an artifact's model file and manifest, and verify its sha256 before anything loads it.

An artifact is a folder with ``manifest.json`` beside the model: ``brainedge optimize`` writes
``VARIANT/model.tflite`` or ``VARIANT/model.onnx``; ``brainedge train`` writes a run folder whose
manifest lists ``model.keras``. The manifest, not the file name, says how to load and
preprocess: runtime/ trusts it instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from brainedge.errors import ArtifactIntegrityError, ModelLoadError
from brainedge.manifest import MANIFEST_NAME, Manifest, load_manifest, sha256_file
from runtime.compressed import compressed_entry, read_compressed
from runtime.keras import check_safe_format

# manifest "format" -> (model file inside the folder, backend that runs it)
FORMATS = {
    "tflite": ("model.tflite", "litert"),
    "onnx": ("model.onnx", "onnxruntime"),
    "keras": ("model.keras", "keras"),
}


@dataclass(frozen=True)
class Artifact:
    folder: Path
    model_path: Path  # the file on disk: model.tflite, or model.tflite.xz when compressed
    manifest: Manifest
    sha256: str  # of the model bytes, however they are stored
    # The verified model bytes of a compressed artifact (runtime.compressed); None when the
    # runtime reads model_path itself.
    content: bytes | None = field(default=None, repr=False)

    @property
    def size_bytes(self) -> int:
        """The model's size in bytes, however it is stored."""
        return len(self.content) if self.content is not None else self.model_path.stat().st_size

    @property
    def backend(self) -> str:
        return FORMATS[self.manifest.format][1]

    @property
    def label(self) -> str:
        """Short human name, e.g. ``densenet121 tflite int8``."""
        variant = self.manifest.extra.get("variant")
        if variant:
            return f"{self.manifest.model} {variant}"
        return f"{self.manifest.model} {self.manifest.format} {self.manifest.precision}"


def open_artifact(path: str | Path) -> Artifact:
    """Resolve ``path`` (an artifact folder, a run folder, or the model file in one), read its
    manifest and check the model file's sha256; refuse anything that does not match."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such artifact; pass a folder made by brainedge "
                             "optimize (e.g. runs/densenet121/optimized/tflite-int8) or train")
    check_safe_format(path)
    folder = path if path.is_dir() else path.parent
    if not (folder / MANIFEST_NAME).is_file():
        raise ModelLoadError(
            f"{folder} has no {MANIFEST_NAME}: BrainEdge loads only artifacts that carry one "
            "(it says how to preprocess and names the classes); produce it with brainedge "
            "optimize or brainedge train"
        )
    manifest = load_manifest(folder, verify=False)
    if manifest.format not in FORMATS:
        raise ModelLoadError(f"{folder}: unknown format {manifest.format!r} in its manifest; "
                             f"expected one of {', '.join(FORMATS)}")
    model_name = FORMATS[manifest.format][0]
    try:
        compressed = compressed_entry(manifest.extra, model_name)
    except ArtifactIntegrityError as exc:
        raise ArtifactIntegrityError(f"{folder}: {exc}") from None
    model_path = folder / (model_name if compressed is None else compressed["file"])
    if path.is_file() and path != model_path:
        raise ModelLoadError(f"{path}: its manifest describes {model_path.name}, not "
                             f"{path.name}")
    expected = manifest.files.get(model_path.name)
    if expected is None:
        raise ArtifactIntegrityError(f"{folder}/{MANIFEST_NAME} lists no sha256 for "
                                     f"{model_path.name}; refusing to load an unverified model")
    if not model_path.is_file():
        raise ModelLoadError(f"{model_path}: missing; the artifact is incomplete, re-create it")
    actual = sha256_file(model_path)
    if actual != expected:
        raise ArtifactIntegrityError(
            f"{model_path}: sha256 {actual[:12]}… does not match its manifest "
            f"({expected[:12]}…); the file was changed or is incomplete. Refusing to load it; "
            "re-create or re-copy the artifact folder"
        )
    if compressed is None:
        return Artifact(folder, model_path, manifest, actual)
    content = read_compressed(model_path, compressed)
    return Artifact(folder, model_path, manifest, compressed["model_sha256"], content)
