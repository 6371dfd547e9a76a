"""Model files stored compressed in an artifact folder, for a repository or wheel size budget:
the format, written by ``brainedge ship --compress`` and read by every runtime.

``brainedge ship --compress`` stores ``model.tflite`` as ``model.tflite.xz`` (LZMA, Python's
standard library, so every edge install can read it). The manifest's ``files`` then lists the
``.xz`` file with its own sha256, and ``extra["compressed"]`` records the codec and the sha256
and size of the model bytes. Loading reads the ``.xz``, decompresses it in memory (never to
disk), refuses output larger than recorded, and checks the model bytes' sha256 before any
runtime sees them. The model's sha256 is therefore the same whether it is stored compressed
or not.
"""

from __future__ import annotations

import hashlib
import lzma
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brainedge.errors import ArtifactIntegrityError
from brainedge.manifest import MANIFEST_NAME, read_json, sha256_file, write_json

COMPRESSED_KEY = "compressed"  # the manifest's extra entry
CODEC = "xz"
SUFFIX = ".xz"


def compress_model(model: Path, target: Path) -> dict[str, Any]:
    """Write ``target`` (``model.tflite.xz``) from ``model``; return the manifest entry."""
    data = model.read_bytes()
    # preset 9 | extreme: smallest file; only done once, at shipping time
    target.write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    return {"file": target.name, "codec": CODEC, "model_file": model.name,
            "model_sha256": hashlib.sha256(data).hexdigest(), "model_bytes": len(data)}


def store_compressed(folder: Path, model_name: str) -> dict[str, Any]:
    """Replace ``folder/model_name`` by its ``.xz`` and record it in the folder's manifest:
    ``files`` lists the ``.xz`` (its own sha256), ``extra.compressed`` the model bytes'."""
    model = Path(folder) / model_name
    entry = compress_model(model, model.with_name(model_name + SUFFIX))
    model.unlink()
    data = read_json(Path(folder) / MANIFEST_NAME)
    files = {k: v for k, v in data["files"].items() if k != model_name}
    data["files"] = {entry["file"]: sha256_file(Path(folder) / entry["file"]), **files}
    data["extra"] = {**data.get("extra", {}), COMPRESSED_KEY: entry}
    write_json(Path(folder) / MANIFEST_NAME, data)
    return entry


def compressed_entry(extra: Mapping[str, Any], model_name: str) -> dict[str, Any] | None:
    """The manifest's record of a compressed ``model_name``, or None if it is stored plain."""
    entry = extra.get(COMPRESSED_KEY)
    if entry is None:
        return None
    if (not isinstance(entry, Mapping) or entry.get("codec") != CODEC
            or entry.get("model_file") != model_name
            or entry.get("file") != model_name + SUFFIX
            or not isinstance(entry.get("model_bytes"), int)
            or not isinstance(entry.get("model_sha256"), str)):
        raise ArtifactIntegrityError(
            f"its manifest's extra.{COMPRESSED_KEY} is {entry!r}; expected codec {CODEC!r}, "
            f"file {model_name + SUFFIX!r}, model_file {model_name!r}, model_bytes and "
            "model_sha256. Re-create the artifact with brainedge ship --compress")
    return dict(entry)


def read_compressed(path: Path, entry: Mapping[str, Any]) -> bytes:
    """Decompress ``path`` in memory and return the model bytes, verified against ``entry``."""
    size = int(entry["model_bytes"])
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        # One byte more than recorded: a longer stream is caught without inflating it whole.
        data = decompressor.decompress(path.read_bytes(), max_length=size + 1)
    except lzma.LZMAError as exc:
        raise ArtifactIntegrityError(f"{path}: not a readable xz stream ({exc}); re-copy the "
                                     "artifact folder") from exc
    if len(data) != size or not decompressor.eof:
        got = f"more than {size}" if len(data) > size else (
            f"{len(data)}" if decompressor.eof else f"{len(data)} (truncated)")
        raise ArtifactIntegrityError(
            f"{path}: decompresses to {got} bytes, but its manifest records {size}; refusing "
            "to load it. Re-copy the artifact")
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry["model_sha256"]:
        raise ArtifactIntegrityError(
            f"{path}: the model inside has sha256 {actual[:12]}…, its manifest says "
            f"{str(entry['model_sha256'])[:12]}…; refusing to load it. Re-copy the artifact")
    return data
