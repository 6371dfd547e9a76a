"""The manifest beside every artifact, and the file-safety helpers that go with it.

A manifest records what an artifact is (model, format, precision, input spec, class names,
preprocessing), where it came from (parent artifact, config) and the sha256 of every file it
covers, so later stages trust it instead of guessing. It is written last, atomically: a folder
without a valid manifest is an unfinished artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from brainedge.errors import ArtifactIntegrityError, RunDirError

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling path and move it onto ``target`` only if the block succeeds.

    A crash or a kill mid-write leaves ``target`` as it was (or absent), never half-written.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; artifacts and reports are meant to be readable by others.
    os.chmod(tmp_path, 0o644)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: Path, data: Any) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise RunDirError(f"{path} is missing") from exc
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path} is not valid JSON ({exc}); it may be half-written") from exc


@dataclass(frozen=True)
class Manifest:
    """What an artifact folder holds; ``files`` maps a relative path to its sha256."""

    model: str
    format: str
    precision: str
    input_spec: Mapping[str, Any]
    class_names: tuple[str, ...]
    preprocessing: Mapping[str, Any]
    files: Mapping[str, str]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    parent: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ArtifactIntegrityError(
                f"manifest has unknown fields {sorted(unknown)}; it was written by a newer "
                "BrainEdge or edited by hand"
            )
        values = dict(data)
        values["class_names"] = tuple(values.get("class_names", ()))
        return cls(**values)


def hash_files(root: Path, relpaths: list[str]) -> dict[str, str]:
    """sha256 of each file; a folder (e.g. a SavedModel) contributes every file under it."""
    root = Path(root)
    hashes: dict[str, str] = {}
    for rel in relpaths:
        path = root / rel
        if path.is_dir():
            for sub in sorted(p for p in path.rglob("*") if p.is_file()):
                hashes[sub.relative_to(root).as_posix()] = sha256_file(sub)
        elif path.is_file():
            hashes[rel] = sha256_file(path)
        else:
            raise RunDirError(f"cannot hash {path}: it does not exist")
    return hashes


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    path = Path(folder) / MANIFEST_NAME
    write_json(path, manifest.to_dict())
    return path


def load_manifest(folder: Path, verify: bool = True) -> Manifest:
    """Read a folder's manifest and, by default, check every file against its sha256."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise RunDirError(
            f"{folder} has no {MANIFEST_NAME}: it is not a finished BrainEdge artifact "
            "(an interrupted run? re-run the same command to resume it)"
        )
    manifest = Manifest.from_dict(read_json(path))
    if verify:
        verify_files(folder, manifest.files)
    return manifest


def verify_files(folder: Path, files: Mapping[str, str]) -> None:
    problems = []
    for rel, expected in files.items():
        path = Path(folder) / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif (actual := sha256_file(path)) != expected:
            problems.append(f"{rel}: sha256 {actual[:12]}… but the manifest says {expected[:12]}…")
    if problems:
        raise ArtifactIntegrityError(
            f"{folder} does not match its manifest; refusing to use it. Re-create the artifact. "
            + "; ".join(problems)
        )


def trained_on(folder: Path) -> Path | None:
    """The dataset an artifact's float32 parent run was trained on (the run's manifest records
    it; a run is its own parent), or None when that run is not on this machine."""
    manifest = read_json(folder / MANIFEST_NAME)
    run = folder if manifest.get("format") == "keras" else Path(manifest.get("parent") or "")
    if not (run / MANIFEST_NAME).is_file():
        return None
    root = read_json(run / MANIFEST_NAME).get("extra", {}).get("dataset_root")
    return Path(root) if root else None
