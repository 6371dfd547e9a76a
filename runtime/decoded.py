"""``DecodedImage``: an upload decoded once, and everything about it that the checks read.

Decoding is the only step that sees the file: its format, its colour channels, its DICOM
header, how many frames it holds. It writes what the later steps need into this record, so
that nothing after it opens the bytes again: the out-of-distribution checks
(``runtime.ood``) read the record, preprocessing reads ``pixels``.

The record describes the input, not a model: the same record may go to several artifacts.
What a model adds (its probabilities today, a learned out-of-distribution score later) goes
into the per-request result (``runtime.request.RequestResult``) and its ``OODReport``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The formats decoding accepts, by content (runtime.image_format tells them apart).
FILE_FORMATS = ("png", "jpeg", "bmp", "tiff", "dicom")


# eq=False: comparing two records would compare pixel arrays element-wise, which is not what
# == on a record should mean; a record is compared by identity.
@dataclass(frozen=True, eq=False)
class DecodedImage:
    """``pixels``: HxW uint8 greyscale, what preprocessing takes. ``file_format``: one of
    ``FILE_FORMATS``, from the bytes, never from a name. ``colour``: the file stored colour
    channels (the dataset's greyscale slices are mostly RGB JPEGs, so this alone says little).
    ``colourful_fraction``: share of pixels that are visibly coloured, measured on the decoded
    colours before they were reduced to grey; 0.0 for a greyscale file, ``None`` where not
    measured (DICOM, whose photometric interpretation says it instead). ``frames``: images in
    the file; decoding refuses more than one, so an accepted record holds 1. ``modality`` and
    ``photometric``: the DICOM header's Modality (0008,0060) and Photometric Interpretation
    (0028,0004), upper case; ``None`` for other formats. No other header element is kept:
    DICOM headers carry patient data."""

    pixels: np.ndarray
    file_format: str
    colour: bool = False
    colourful_fraction: float | None = None
    frames: int = 1
    modality: str | None = None
    photometric: str | None = None

    def __post_init__(self) -> None:
        if self.pixels.ndim != 2 or self.pixels.dtype != np.uint8:
            raise ValueError(f"pixels must be a 2-D uint8 array, got {self.pixels.ndim}-D "
                             f"{self.pixels.dtype}")
        if self.file_format not in FILE_FORMATS:
            raise ValueError(f"file_format must be one of {FILE_FORMATS}, "
                             f"got {self.file_format!r}")

    @property
    def kind(self) -> str:
        """``"dicom"`` or ``"image"``: what the page and the API call the input."""
        return "dicom" if self.file_format == "dicom" else "image"

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])
