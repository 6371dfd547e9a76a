"""MRI volumes that a Debian package ships, resliced into 2-D slices: near-OOD and control.

Debian's ``mricron-data`` (``apt-get install mricron-data``) installs NIfTI templates under
``/usr/share/mricron/templates``: ``ch2`` (the "colin27" average of 27 T1 scans of one head),
``ch2bet`` (the same, skull removed) and ``inia19`` (a rhesus macaque T1 brain). The dataset
already holds axial, coronal and sagittal slices, so plain planes through ch2 are a *control*
(normal brain MRI from another source, arguably in-distribution); oblique planes, the
skull-stripped brain and the macaque are *near*-OOD. Absent package: skipped with a log line.

NIfTI-1 is read here with NumPy (a 348-byte header and raw voxels) rather than adding nibabel
as a dependency for three files; only axis-aligned volumes are accepted, which these are.
"""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.ood_set.image import OODImage, Skipped, skip, to_uint8

TEMPLATES = Path("/usr/share/mricron/templates")
_LICENCE = ("BSD-3-Clause per Debian's /usr/share/doc/mricron-data/copyright ('Files: *', "
            "MRIcron, Chris Rorden); the template's upstream terms are not restated there")
_DTYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64,
           512: np.uint16}
# Display frames in RAS millimetres: (column direction, row direction). Radiological
# convention: the patient's right on the image's left, anterior or superior at the top.
PLANES = {
    "axial": ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "coronal": ((-1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, -1.0, 0.0), (0.0, 0.0, -1.0)),
}
# (plane, tilt about the column axis, tilt about the row axis), degrees: no dataset slice
# is cut like this.
OBLIQUE = tuple((plane, a, b) for plane in PLANES
                for a, b in ((35, 0), (0, 35), (30, 30), (-45, 20)))


@dataclass(frozen=True)
class Volume:
    """Voxels in RAS order (x right, y anterior, z superior) and their size in mm."""

    voxels: np.ndarray
    spacing: tuple[float, float, float]

    @property
    def centre_mm(self) -> np.ndarray:
        return (np.array(self.voxels.shape) - 1) * np.array(self.spacing) / 2


def read_nifti(path: Path) -> Volume:
    """A single-volume NIfTI-1 file (.nii or .nii.gz) whose axes follow its sform/qform."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    endian = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
    if struct.unpack(endian + "i", raw[:4])[0] != 348 or raw[344:347] not in (b"n+1", b"ni1"):
        raise ValueError(f"{path}: not a NIfTI-1 file")
    dim = struct.unpack(endian + "8h", raw[40:56])
    datatype = struct.unpack(endian + "h", raw[70:72])[0]
    pixdim = struct.unpack(endian + "8f", raw[76:108])
    offset = int(struct.unpack(endian + "f", raw[108:112])[0])
    slope, inter = struct.unpack(endian + "2f", raw[112:120])
    sform_code = struct.unpack(endian + "h", raw[254:256])[0]
    if dim[0] < 3 or any(d > 1 for d in dim[4:dim[0] + 1]) or datatype not in _DTYPES:
        raise ValueError(f"{path}: only single 3-D volumes of types {sorted(_DTYPES)} are read")
    shape = dim[1:4]
    dtype = np.dtype(_DTYPES[datatype]).newbyteorder(endian)
    count = math.prod(shape)
    data = np.frombuffer(raw, dtype, count, offset).reshape(shape[::-1]).transpose(2, 1, 0)
    data = data.astype(np.float32) * (slope or 1.0) + inter
    affine = (np.array(struct.unpack(endian + "12f", raw[280:328])).reshape(3, 4)[:, :3]
              if sform_code > 0 else np.diag(pixdim[1:4]))
    return _to_ras(data, affine, path)


def _to_ras(data: np.ndarray, affine: np.ndarray, path: Path) -> Volume:
    axes = np.abs(affine).argmax(axis=0)  # the world axis each voxel axis runs along
    if sorted(axes) != [0, 1, 2]:
        raise ValueError(f"{path}: oblique volumes are not supported")
    order = np.argsort(axes)
    data = data.transpose(order)
    spacing = []
    for world, voxel_axis in enumerate(order):
        step = affine[world, voxel_axis]
        if step < 0:
            data = np.flip(data, axis=world)
        spacing.append(abs(float(step)))
    return Volume(np.ascontiguousarray(data), (spacing[0], spacing[1], spacing[2]))


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Rodrigues' rotation matrix about a unit axis."""
    x, y, z = axis
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    angle = math.radians(degrees)
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def reslice(volume: Volume, plane: str, offset_mm: float = 0.0, tilt: tuple[float, float] =
            (0.0, 0.0)) -> np.ndarray:
    """A square plane through the volume's centre (moved ``offset_mm`` along its normal,
    tilted about its own column then row axis), trilinear, zero outside the volume."""
    u, v = (np.array(d) for d in PLANES[plane])
    turn = _rotation(u, tilt[0]) @ _rotation(v, tilt[1])
    u, v = turn @ u, turn @ v
    step = min(volume.spacing)
    extent = max(np.array(volume.voxels.shape) * np.array(volume.spacing))
    n = round(extent / step)
    grid = (np.arange(n) - (n - 1) / 2) * step
    centre = volume.centre_mm + offset_mm * np.cross(u, v)
    points = centre + grid[:, None, None] * v + grid[None, :, None] * u  # (rows, cols, 3)
    return _trilinear(volume, points / np.array(volume.spacing))


def _trilinear(volume: Volume, index: np.ndarray) -> np.ndarray:
    data = volume.voxels
    shape = np.array(data.shape)
    base = np.floor(index).astype(np.int64)
    frac = index - base
    out = np.zeros(index.shape[:2])
    for corner in np.ndindex(2, 2, 2):
        idx = base + corner
        inside = np.all((idx >= 0) & (idx < shape), axis=-1)
        clipped = np.clip(idx, 0, shape - 1)
        weight = np.prod(np.where(corner, frac, 1 - frac), axis=-1)
        values = data[clipped[..., 0], clipped[..., 1], clipped[..., 2]]
        out += np.where(inside, weight * values, 0.0)
    return out


# file -> (group, kind, provenance, [(plane, offset mm, tilt)])
_SLICES = {
    "ch2.nii.gz": [
        ("control", "mri-standard-plane",
         "colin27 T1 average (MNI), as shipped by MRIcron; plain plane",
         [(p, off, (0, 0)) for p in PLANES for off in (-20.0, 0.0, 20.0)]),
        ("near", "mri-oblique", "colin27 T1 average (MNI), as shipped by MRIcron; oblique plane",
         [(p, 0.0, (a, b)) for p, a, b in OBLIQUE]),
    ],
    "ch2bet.nii.gz": [
        ("near", "mri-skull-stripped", "colin27 T1 average with the skull removed (BET), as "
         "shipped by MRIcron", [(p, 0.0, (0, 0)) for p in PLANES]),
    ],
    "inia19-t1-brain.nii.gz": [
        ("near", "mri-other-species", "INIA19 rhesus macaque T1 brain template (Rohlfing et "
         "al. 2012), as shipped by MRIcron", [(p, off, (0, 0)) for p in PLANES
                                             for off in (-5.0, 5.0)]),
    ],
}


def template_slices(skipped: list[Skipped], folder: Path | None = None) -> Iterator[OODImage]:
    folder = TEMPLATES if folder is None else folder  # read at call time: tests point it away
    for filename, groups in _SLICES.items():
        path = folder / filename
        if not path.is_file():
            skip(skipped, f"mricron-data: {path}", "not installed (apt-get install "
                 "mricron-data)")
            continue
        volume = read_nifti(path)
        # One intensity mapping per volume, so slices keep their relative brightness.
        lo, hi = float(volume.voxels.min()), float(np.percentile(volume.voxels, 99.5))
        stem = filename.removesuffix(".nii.gz")
        for group, kind, provenance, cuts in groups:
            for plane, offset, (a, b) in cuts:
                pixels = to_uint8(reslice(volume, plane, offset, (a, b)), lo, hi)
                name = f"{stem}-{plane}-{offset:+.0f}mm" + (f"-tilt{a:+d}{b:+d}" if a or b
                                                            else "")
                yield OODImage(name, group, kind, f"Debian mricron-data: {path}",
                               provenance, _LICENCE, pixels)
