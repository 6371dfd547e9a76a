"""DICOM slices to the same record (``DecodedImage``) as every other image, decided by content.

A file is DICOM when it is a Part 10 file: 128-byte preamble, then "DICM". Raw datasets without
that prefix (ACR-NEMA style, some old exports) are not accepted, on purpose: nothing in their
bytes identifies them, pydicom itself refuses them unless forced (``force=True`` "parses"
almost any bytes into nonsense elements), and sniffing them would let arbitrary uploads reach
the DICOM parser. Such files must be re-exported as Part 10.

pydicom and its decoder plugins (pylibjpeg) come with ``brainedge[edge]`` and are imported on
first use, so the rest of the runtime works without them. Error messages name the ``source``
the caller gave and, from the header, only how the image is stored (size, frames, transfer
syntax, photometric interpretation, SOP class): DICOM headers carry patient data, and pydicom's
own messages may quote them, so those stay in the chained exception.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING

import numpy as np

from brainedge.errors import ImageDecodeError, requires
from runtime.decoded import DecodedImage

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
    from pydicom.uid import UID

_MAGIC_OFFSET = 128
_MAGIC = b"DICM"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
# pydicom's pixel_array returns these as RGB (YBR_FULL/_422 converted by pydicom, YBR_ICT/RCT
# by the JPEG 2000 decoder), so all of them reach the same RGB-to-gray step.
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
# What to pip install for each family of compressed transfer syntaxes; pydicom decodes the
# uncompressed ones and RLE Lossless by itself.
_LIBJPEG = "pylibjpeg pylibjpeg-libjpeg"
_OPENJPEG = "pylibjpeg pylibjpeg-openjpeg"
# A deflated dataset may inflate to at most what the largest accepted slice needs: MAX_PIXELS
# pixels of up to 8 bytes (double float; RGB 16-bit is 6), plus room for the other elements.
_INFLATE_BYTES_PER_PIXEL = 8
_INFLATE_HEADER_BYTES = 16 << 20
_INFLATE_CHUNK = 1 << 20
# JPEG start-of-frame markers (SOF0-15 without DHT, JPG and DAC) and JPEG-LS SOF55.
_JPEG_SOF = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7})
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"


def is_dicom(data: bytes) -> bool:
    """True for a DICOM Part 10 file: "DICM" at byte 128 (see the module docstring)."""
    return len(data) >= _MAGIC_OFFSET + len(_MAGIC) and (
        bytes(data[_MAGIC_OFFSET:_MAGIC_OFFSET + len(_MAGIC)]) == _MAGIC
    )


@dataclass(frozen=True)
class _Header:
    transfer_syntax: UID
    rows: int
    columns: int
    frames: int
    photometric: str


def decode(data: bytes, source: str = "<bytes>") -> DecodedImage:
    """Decode a single-frame DICOM slice into the record the checks read: HxW uint8
    greyscale pixels, and the Modality and Photometric Interpretation from the header parsed
    for them (no other header element is kept).

    The order is the DICOM display pipeline (PS3.3 C.11), because the training images are
    display exports (JPEG), slices as a viewer shows them. The modality LUT (rescale
    slope/intercept) comes first since the window centre/width and VOI LUT are defined on its
    output, not on the stored values; then the VOI LUT or first window, the intensity range
    the producer chose to show; without one, the slice's own min-max, as for 16-bit PNGs.
    MONOCHROME1 is inverted last: it states how the output is displayed, not what the
    window means.
    """
    from runtime import imageio  # imported here: runtime.imageio imports this module

    requires("pydicom", "edge")
    _refuse_deflate_bomb(data, source, imageio.MAX_PIXELS)
    ds = _parse(data, source)
    header = _check_header(ds, source, imageio.MAX_PIXELS)
    image = _decode_pixels(ds, header, source)
    if header.photometric in _MONOCHROME:
        gray = _monochrome_to_uint8(image, ds, source)
        if header.photometric == "MONOCHROME1":
            gray = 255 - gray
    else:
        import cv2  # after runtime.imageio, which sets OpenCV's pixel limit before importing it

        if image.dtype not in (np.uint8, np.uint16):
            image = image.astype(np.float32)  # cvtColor takes only 8/16-bit or float32
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    # The same final checks (minimum size) and 16-bit stretch as PNG/JPEG input.
    return DecodedImage(imageio.to_gray_uint8(gray, source), "dicom",
                        colour=header.photometric not in _MONOCHROME, frames=header.frames,
                        modality=_modality(ds), photometric=header.photometric or None)


def decode_dicom(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Only the HxW uint8 greyscale pixels of ``decode``."""
    return decode(data, source).pixels


def _modality(ds: Dataset) -> str | None:
    # A malformed value only costs the check that reads it, not the slice.
    try:
        value = str(ds.get("Modality") or "").strip().upper()
    except Exception:
        return None
    return value or None


def _parse(data: bytes, source: str) -> Dataset:
    import pydicom

    try:
        ds = pydicom.dcmread(BytesIO(data))
    # pydicom raises many types on malformed input (InvalidDicomError, struct.error, EOFError,
    # ValueError, ...); to the caller every one of them means the same thing. Its message is
    # left in the chained exception, not in ours: it may quote header values.
    except Exception as exc:
        raise ImageDecodeError(
            f"{source}: not a readable DICOM file (corrupt or truncated; "
            f"{type(exc).__name__}); export the slice again"
        ) from exc
    # pydicom stops quietly at the end of the data: a value shorter than its declared
    # length is the sign of a truncated file.
    for elem in (*ds.file_meta.elements(), *ds.elements()):
        value = getattr(elem, "value", None)
        length = getattr(elem, "length", 0)
        if isinstance(value, bytes) and length != 0xFFFFFFFF and len(value) < length:
            raise ImageDecodeError(
                f"{source}: the DICOM file is truncated (it ends inside an element); "
                "send the complete file"
            )
    return ds


def _check_header(ds: Dataset, source: str, max_pixels: int) -> _Header:
    """Everything that can be refused from the header, before any pixel is decoded."""
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise ImageDecodeError(
            f"{source}: the DICOM file has no pixel data{_sop_class(ds)}: it is not an image "
            "(e.g. a structured report) or it was truncated before its pixels; send an image "
            "slice"
        )
    transfer_syntax = ds.file_meta.get("TransferSyntaxUID")
    if not transfer_syntax:
        raise ImageDecodeError(
            f"{source}: the DICOM file has no Transfer Syntax UID in its file meta information "
            "(truncated, or not written as a DICOM file); export the slice again"
        )
    try:
        header = _Header(
            transfer_syntax=transfer_syntax,
            rows=int(ds.get("Rows") or 0),
            columns=int(ds.get("Columns") or 0),
            frames=int(ds.get("NumberOfFrames") or 1),
            photometric=str(ds.get("PhotometricInterpretation") or "").strip().upper(),
        )
    except Exception as exc:  # malformed values: same reasoning as in _parse
        raise ImageDecodeError(
            f"{source}: the DICOM image header is malformed ({type(exc).__name__}); "
            "export the slice again"
        ) from exc
    if header.frames > 1:
        raise ImageDecodeError(
            f"{source}: the DICOM file holds {header.frames} frames (a volume or cine); "
            "send one slice: a single-frame DICOM, PNG or JPEG"
        )
    if header.rows < 1 or header.columns < 1:
        raise ImageDecodeError(
            f"{source}: the DICOM header gives no image size (Rows {header.rows}, "
            f"Columns {header.columns}); export the slice again"
        )
    # Decompression bombs: refused from the header, before pydicom allocates the array.
    if header.rows * header.columns > max_pixels:
        raise ImageDecodeError(
            f"{source}: {header.columns}x{header.rows} pixels exceeds the limit of {max_pixels}"
        )
    if header.photometric == "PALETTE COLOR":
        # Not converted: a palette is a pseudo-colour map whose gray levels need not follow
        # the measured intensity (rainbow maps are not monotonic), so the model would see a
        # different image from the scanner's. MR slices are never stored this way.
        raise ImageDecodeError(
            f"{source}: PALETTE COLOR DICOM is refused: its colours come from a lookup table, "
            "so their gray levels do not follow the scanner's intensities; export the slice "
            "as grayscale (MONOCHROME2)"
        )
    if header.photometric not in _MONOCHROME + _COLOUR:
        raise ImageDecodeError(
            f"{source}: DICOM photometric interpretation {header.photometric or '(none)'!r} "
            "is not supported; export the slice as grayscale (MONOCHROME2) or RGB"
        )
    return header


def _sop_class(ds: Dataset) -> str:
    try:
        return f" ({ds.SOPClassUID.name})" if "SOPClassUID" in ds else ""
    except Exception:  # a malformed UID only costs the hint
        return ""


def _decode_pixels(ds: Dataset, header: _Header, source: str) -> np.ndarray:
    from pydicom import uid
    from pydicom.pixels import get_decoder

    tsyntax = header.transfer_syntax
    label = tsyntax.name if tsyntax.name != str(tsyntax) else "an unknown transfer syntax"
    label = f"{label} ({tsyntax})"
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as exc:
        raise ImageDecodeError(
            f"{source}: the DICOM pixel data is encoded as {label}, which pydicom cannot "
            "decode; export the slice uncompressed, or as RLE, JPEG, JPEG-LS or JPEG 2000"
        ) from exc
    if not decoder.is_available:
        if tsyntax in uid.JPEG2000TransferSyntaxes:
            packages = _OPENJPEG
        elif tsyntax in uid.JPEGTransferSyntaxes + uid.JPEGLSTransferSyntaxes:
            packages = _LIBJPEG
        else:  # pydicom 3 decodes the rest natively; only a changed pydicom gets here
            packages = "pylibjpeg"
        raise ImageDecodeError(
            f"{source}: the DICOM pixel data is compressed as {label} and no decoder for it is "
            f"installed; install one with: pip install {packages} (part of brainedge[edge])"
        )
    if tsyntax in uid.JPEGTransferSyntaxes + uid.JPEGLSTransferSyntaxes + (
        uid.JPEG2000TransferSyntaxes
    ):
        _check_codestream_size(ds, header, tsyntax, label, source)
    try:
        image = ds.pixel_array
    except Exception as exc:  # decoder errors vary by plugin; same reasoning as in _parse
        raise ImageDecodeError(
            f"{source}: the DICOM pixel data ({label}) cannot be decoded: truncated or corrupt "
            f"({type(exc).__name__}); export the slice again"
        ) from exc
    expected_ndim = 2 if header.photometric in _MONOCHROME else 3
    if image.ndim != expected_ndim or (expected_ndim == 3 and image.shape[2] != 3):
        raise ImageDecodeError(
            f"{source}: the DICOM pixel data decoded to shape {image.shape}, which does not "
            f"fit {header.photometric}; export the slice again"
        )
    return image


def _check_codestream_size(
    ds: Dataset, header: _Header, tsyntax: UID, label: str, source: str
) -> None:
    """Refuse a JPEG-family frame whose own header disagrees with Rows x Columns.

    The plugins allocate what the codestream declares (up to 2^32 x 2^32 for JPEG 2000), not
    what the DICOM header says, so the pixel limit checked on the header only holds if the two
    agree.
    """
    from pydicom import uid
    from pydicom.encaps import generate_frames

    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    except Exception as exc:  # malformed item tags or lengths in the encapsulation
        raise ImageDecodeError(
            f"{source}: the DICOM pixel data ({label}) is not validly encapsulated: truncated "
            f"or corrupt ({type(exc).__name__}); export the slice again"
        ) from exc
    shape = _j2k_shape(frame) if tsyntax in uid.JPEG2000TransferSyntaxes else _jpeg_shape(frame)
    if shape is None:
        raise ImageDecodeError(
            f"{source}: the DICOM pixel data ({label}) has no readable image header: "
            "truncated or corrupt; export the slice again"
        )
    if shape != (header.rows, header.columns):
        raise ImageDecodeError(
            f"{source}: the {label} image inside the DICOM file is {shape[1]}x{shape[0]} "
            f"pixels but its header says {header.columns}x{header.rows}; the file is corrupt"
        )


def _jpeg_shape(stream: bytes) -> tuple[int, int] | None:
    """(rows, columns) from a JPEG or JPEG-LS start-of-frame segment, None if there is none."""
    if not stream.startswith(b"\xff\xd8"):
        return None
    pos = 2
    while pos + 4 <= len(stream):
        if stream[pos] != 0xFF:
            return None
        marker = stream[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _JPEG_SOF:
            if pos + 9 > len(stream):
                return None
            rows, columns = struct.unpack(">HH", stream[pos + 5:pos + 9])
            return rows, columns
        elif marker in (0xDA, 0xD9):  # scan data or end of image before any frame header
            return None
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(stream[pos + 2:pos + 4], "big")
    return None


def _j2k_shape(stream: bytes) -> tuple[int, int] | None:
    """(rows, columns) from a JPEG 2000 SIZ segment (bare codestream or JP2-wrapped)."""
    start = 0 if stream.startswith(_J2K_SOC_SIZ) else stream.find(_J2K_SOC_SIZ)
    if start < 0 or len(stream) < start + 24:
        return None
    # SOC, SIZ, Lsiz, Rsiz, then Xsiz, Ysiz, XOsiz, YOsiz (ISO/IEC 15444-1 A.5.1).
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", stream[start + 8:start + 24])
    return ysiz - yosiz, xsiz - xosiz


def _refuse_deflate_bomb(data: bytes, source: str, max_pixels: int) -> None:
    """Deflated datasets: pydicom inflates the whole dataset in one call, before any header
    can be checked, so a small upload could expand to gigabytes. Inflate it here first, in
    chunks and without keeping the output, against a limit derived from MAX_PIXELS."""
    from pydicom import filereader, uid

    # pydicom's own reader of the file meta group, so that this check finds the same transfer
    # syntax and dataset start as dcmread. It is private: looked up outside the try, so that a
    # pydicom without it fails loudly instead of skipping the check (pydicom is pinned < 4).
    read_file_meta = filereader._read_file_meta_info
    fp = BytesIO(data)
    try:
        filereader.read_preamble(fp, False)
        meta = read_file_meta(fp)
        deflated = meta.get("TransferSyntaxUID") == uid.DeflatedExplicitVRLittleEndian
    except Exception:
        return  # unreadable meta: dcmread refuses it with the usual message
    if not deflated:
        return
    limit = _INFLATE_BYTES_PER_PIXEL * max_pixels + _INFLATE_HEADER_BYTES
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending = memoryview(data)[fp.tell():]
    total = 0
    while not inflater.eof:
        try:
            chunk = inflater.decompress(pending, _INFLATE_CHUNK)
        except zlib.error as exc:
            raise ImageDecodeError(
                f"{source}: the deflated DICOM dataset is corrupt ({exc}); export the slice "
                "again"
            ) from exc
        total += len(chunk)
        if total > limit:
            raise ImageDecodeError(
                f"{source}: the deflated DICOM dataset inflates to more than {limit} bytes, "
                f"beyond what a slice of at most {max_pixels} pixels needs; refused"
            )
        if not chunk:  # input used up before the end of the stream: dcmread reports it
            return
        pending = inflater.unconsumed_tail


def _monochrome_to_uint8(image: np.ndarray, ds: Dataset, source: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    try:
        values = apply_modality_lut(image, ds)
    except Exception as exc:  # malformed Modality LUT / rescale values
        raise ImageDecodeError(
            f"{source}: the DICOM modality LUT or rescale slope/intercept is malformed "
            f"({type(exc).__name__}); export the slice again"
        ) from exc
    # A malformed VOI LUT or window is skipped rather than refused: the slice itself is fine,
    # and its min-max is what an unwindowed slice gets anyway.
    for voi in (_voi_lut, _window):
        try:
            result = voi(values, ds)
        except Exception:
            continue
        if result is not None:
            values, lo, hi = result
            break
    else:
        lo, hi = float(np.min(values)), float(np.max(values))
    if not hi > lo:  # a uniform slice carries no contrast to keep
        return np.zeros(values.shape, np.uint8)
    scaled = (values.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _voi_lut(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, float, float] | None:
    """First VOI LUT of the VOI LUT Sequence, and the output range of that LUT."""
    from pydicom.pixels import apply_voi

    if not ds.get("VOILUTSequence"):
        return None
    entries, first_mapped, _ = ds.VOILUTSequence[0].LUTDescriptor
    entries = entries or 1 << 16
    if not np.issubdtype(values.dtype, np.integer):
        values = np.rint(values).astype(np.int64)  # a LUT is indexed by integers
    table = apply_voi(np.arange(first_mapped, first_mapped + entries, dtype=np.int64), ds, 0)
    # The LUT's own range rather than its nominal bit depth: files that declare 16 bits and
    # store 12 are common, and would otherwise come out dark.
    return apply_voi(values, ds, 0), float(table.min()), float(table.max())


def _window(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, float, float] | None:
    """First window centre/width, through pydicom's windowing, into 0..255."""
    from pydicom.dataset import Dataset as PydicomDataset
    from pydicom.pixels import apply_windowing

    if ds.get("WindowCenter") in (None, "") or ds.get("WindowWidth") in (None, ""):
        return None
    # apply_windowing scales into the stored values' range, which it derives from the bit
    # depth and rescale; a stand-in unsigned 8-bit dataset without rescale makes it 0..255.
    display = PydicomDataset()
    display.PhotometricInterpretation = "MONOCHROME2"
    display.BitsStored = 8
    display.PixelRepresentation = 0
    display.WindowCenter = ds.WindowCenter
    display.WindowWidth = ds.WindowWidth
    if ds.get("VOILUTFunction"):
        display.VOILUTFunction = ds.VOILUTFunction
    return apply_windowing(values, display, 0), 0.0, 255.0
