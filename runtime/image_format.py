"""What format a file is, and how many images it holds, from its first bytes and its headers.

Decoding decides by content, never by name, and accepts one slice in one of a few formats:
PNG, JPEG, BMP, TIFF and DICOM (``runtime.decoded.FILE_FORMATS``). OpenCV decodes more (GIF,
WebP, JPEG 2000, PNM, OpenEXR, ...) depending on how it was built; those are refused here by
so what BrainEdge accepts does not change with the OpenCV on a device, and no other decoder
sees an upload. Signatures of common refused formats are named in the refusal.

A file holding several images (a multi-page TIFF, an animated PNG) is refused, as a
multi-frame DICOM is: OpenCV would silently decode the first one, and which image is the
slice is not ours to guess. The images are counted from the headers alone (TIFF's chain of
image directories, PNG's animation chunk), never by decoding them, so a file of thousands of
pages is refused in microseconds and none of its pages is ever allocated.
"""

from __future__ import annotations

import struct

from runtime.dicom import is_dicom

# Formats OpenCV may decode that BrainEdge refuses, by signature: named in the refusal.
_REFUSED = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"%PDF", "PDF"),
)
_TIFF = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_PNG = b"\x89PNG\r\n\x1a\n"
# Counting stops here: enough to say "thousands", and a bound on a hostile header's loop.
MAX_COUNTED = 10_000
_TIFF_NEW_SUBFILE_TYPE = 254
_TIFF_REDUCED_RESOLUTION = 1  # NewSubfileType bit 0: a thumbnail of another page, not a page
ACCEPTED_TEXT = "PNG, JPEG, BMP, single-page TIFF or single-frame DICOM"


def sniff(data: bytes) -> str | None:
    """The format of ``data``: one of ``runtime.decoded.FILE_FORMATS``, the name of a refused
    format (e.g. ``"GIF"``), or ``None`` when the signature is not one BrainEdge knows."""
    # DICOM first: its 128-byte preamble is free-form and may hold another format's
    # signature (DICOM/TIFF dual-personality files).
    if is_dicom(data):
        return "dicom"
    head = bytes(data[:16])
    if head.startswith(_PNG):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith(_TIFF):
        return "tiff"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1"):
        return "AVIF/HEIF"
    for signature, name in _REFUSED:
        if head.startswith(signature):
            return name
    return None


def count_images(data: bytes, file_format: str) -> int:
    """Images in the file by its headers: TIFF pages, APNG frames, GIF frames; 1 for formats
    that hold one. A header too damaged to follow counts what could be read, at least 1: the
    decoder then refuses the damage with its own message."""
    if file_format == "tiff":
        return tiff_pages(data)
    if file_format == "png":
        return png_frames(data)
    if file_format == "GIF":
        return gif_frames(data)
    return 1


def tiff_pages(data: bytes) -> int:
    """Pages in a TIFF: image directories in the main chain, thumbnails not counted."""
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(order + "H", data[2:4])[0] == 43
    # Classic TIFF: 2-byte entry count, 12-byte entries, 4-byte offsets; BigTIFF: 8, 20, 8.
    count_fmt, entry_size, offset_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    count_size, offset_size = struct.calcsize(count_fmt), struct.calcsize(offset_fmt)
    first = 8 if big else 4
    if len(data) < first + offset_size:
        return 1
    offset = struct.unpack_from(order + offset_fmt, data, first)[0]
    pages, seen = 0, set()
    while offset and offset not in seen and len(seen) < MAX_COUNTED:
        seen.add(offset)
        if offset + count_size > len(data):
            break
        entries = struct.unpack_from(order + count_fmt, data, offset)[0]
        start = offset + count_size
        end = start + entries * entry_size
        if end + offset_size > len(data):
            break
        if not _is_thumbnail(data, order, big, start, entries, entry_size):
            pages += 1
        offset = struct.unpack_from(order + offset_fmt, data, end)[0]
    return max(pages, 1)


def _is_thumbnail(data: bytes, order: str, big: bool, start: int, entries: int,
                  entry_size: int) -> bool:
    # Entries are sorted by tag, and NewSubfileType (254) is the lowest tag in common use,
    # so it is among the first few when present.
    for i in range(min(entries, 4)):
        at = start + i * entry_size
        tag, kind = struct.unpack_from(order + "HH", data, at)
        if tag != _TIFF_NEW_SUBFILE_TYPE:
            continue
        value_at = at + (12 if big else 8)
        # SHORT (3), LONG (4) or LONG8 (16), stored in the entry itself, left-justified.
        fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)
        if fmt is None or (fmt == "Q" and not big):
            return False
        return bool(struct.unpack_from(order + fmt, data, value_at)[0]
                    & _TIFF_REDUCED_RESOLUTION)
    return False


def png_frames(data: bytes) -> int:
    """Images in a PNG: 1, or for an animated PNG (APNG) its frames, plus the default image
    when that is not itself the first frame (then viewers without APNG show another image)."""
    pos, frames, fctl_first = len(_PNG), None, False
    for _ in range(MAX_COUNTED):
        if pos + 8 > len(data):
            break
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"acTL" and pos + 12 <= len(data):
            frames = struct.unpack_from(">I", data, pos + 8)[0]
        elif kind == b"fcTL":
            fctl_first = True  # a frame control before the image data: it is frame 1
        elif kind in (b"IDAT", b"IEND"):
            break
        pos += 12 + length  # length, type, data, CRC
    if not frames:
        return 1
    return min(frames + (0 if fctl_first else 1), MAX_COUNTED)


def gif_frames(data: bytes) -> int:
    """Frames in a GIF: its image descriptors, found by walking the block structure."""
    if len(data) < 13:
        return 1
    pos = 13 + _colour_table_size(data[10])
    frames = 0
    while pos < len(data) and frames < MAX_COUNTED:
        block = data[pos]
        if block == 0x2C:  # image descriptor: 9 bytes, colour table, LZW code size, data
            frames += 1
            if pos + 10 > len(data):
                break
            pos = _skip_sub_blocks(data, pos + 11 + _colour_table_size(data[pos + 9]))
        elif block == 0x21:  # extension: label, then sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        else:  # 0x3B trailer, or damage
            break
    return max(frames, 1)


def _colour_table_size(flags: int) -> int:
    return 3 * 2 ** ((flags & 0x07) + 1) if flags & 0x80 else 0


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos]:
        pos += data[pos] + 1
    return pos + 1


def refusal(file_format: str | None, images: int, source: str) -> str:
    """Why ``data`` of ``file_format`` holding ``images`` images is refused, and what to send
    instead; ``None`` format: not a signature BrainEdge knows."""
    instead = f"send one slice as {ACCEPTED_TEXT}"
    many = f"{images}" if images < MAX_COUNTED else f"at least {MAX_COUNTED}"
    if file_format == "tiff":
        return f"{source}: the TIFF file holds {many} pages (a stack or a volume); {instead}"
    if file_format == "png":
        return f"{source}: the PNG file is an animation of {many} images (APNG); {instead}"
    if file_format == "GIF":
        what = (f"an animated GIF of {many} frames" if images > 1
                else "a GIF (a 256-colour format, not used for MRI slices)")
        return f"{source}: {what}; GIF is not accepted; {instead}"
    if file_format is not None:
        return f"{source}: {file_format} images are not accepted; {instead}"
    return (f"{source}: not a readable image: its content is not {ACCEPTED_TEXT} "
            "(whatever its name says)")
