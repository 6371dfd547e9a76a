"""One rule for files holding several images, and which formats decoding accepts (issue 11).

A multi-page TIFF, an animated PNG or GIF is refused with the reason, as a multi-frame DICOM
is, never reduced to its first image; images are counted from the headers, never decoded.
The files are real: TIFFs written here by hand and by OpenCV, GIFs and APNGs by Pillow where
it is installed (the train extra; an edge install skips those with the reason).
"""

from __future__ import annotations

import io
import json
import struct

import cv2
import numpy as np
import pytest

from brainedge.errors import ImageDecodeError
from runtime import image_format
from runtime.image_format import count_images, sniff
from runtime.imageio import decode
from tests.test_webapp_support import dicom_bytes, encode, phantom

SOURCE = "upload"
SLICE = phantom("glioma", 0, 64)


def tiff_bytes(pages: list[tuple[np.ndarray, int]], big: bool = False) -> bytes:
    """A TIFF written by hand, one uncompressed 8-bit strip per page, so the page count does
    not depend on a library's writer. ``pages``: (pixels, NewSubfileType), 1 = thumbnail."""
    if big:  # BigTIFF: 8-byte counts and offsets
        out = bytearray(b"II+\x00" + struct.pack("<HHQ", 8, 0, 0))
        next_at, count_fmt, entry_fmt, next_fmt = 8, "<Q", "<HHQQ", "<Q"
    else:
        out = bytearray(b"II*\x00" + struct.pack("<I", 0))
        next_at, count_fmt, entry_fmt, next_fmt = 4, "<H", "<HHII", "<I"
    for pixels, subfile in pages:
        height, width = pixels.shape
        strip_at = len(out)
        out += pixels.tobytes()
        out += b"\0" * (len(out) % 2)  # IFDs start on a word boundary
        struct.pack_into(next_fmt, out, next_at, len(out))
        # (tag, type, value), sorted by tag; type 3 SHORT, 4 LONG.
        entries = [(254, 4, subfile), (256, 4, width), (257, 4, height), (258, 3, 8),
                   (259, 3, 1), (262, 3, 1), (273, 4, strip_at), (277, 3, 1),
                   (278, 4, height), (279, 4, height * width)]
        out += struct.pack(count_fmt, len(entries))
        for tag, kind, value in entries:
            out += struct.pack(entry_fmt, tag, kind, 1, value)
        next_at = len(out)
        out += struct.pack(next_fmt, 0)
    return bytes(out)


def pillow_frames(fmt: str, count: int) -> bytes:
    """A ``count``-frame animation (GIF, APNG) or page stack (TIFF), saved by Pillow."""
    image = pytest.importorskip(
        "PIL.Image", reason="building GIFs and APNGs needs Pillow (brainedge[train])")
    frames = [image.fromarray(np.roll(SLICE, 7 * i, axis=1)) for i in range(count)]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:])
    return buf.getvalue()


def refused(data: bytes) -> str:
    with pytest.raises(ImageDecodeError) as info:
        decode(data, SOURCE)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: ")
    return message


# --- several images in one file: refused, with the count ---------------------------------------

@pytest.mark.parametrize("big", [False, True], ids=["tiff", "bigtiff"])
def test_a_three_page_tiff_is_refused_with_its_page_count(big: bool) -> None:
    message = refused(tiff_bytes([(SLICE, 0)] * 3, big))
    assert "holds 3 pages" in message and "single-page TIFF" in message


def test_a_three_page_tiff_written_by_opencv_is_refused() -> None:
    ok, data = cv2.imencodemulti(".tiff", [SLICE] * 3)
    assert ok
    assert "holds 3 pages" in refused(data.tobytes())


def test_a_three_page_tiff_written_by_pillow_is_refused() -> None:
    assert "holds 3 pages" in refused(pillow_frames("TIFF", 3))


def test_a_three_frame_animated_gif_is_refused_with_its_frame_count() -> None:
    message = refused(pillow_frames("GIF", 3))
    assert "animated GIF of 3 frames" in message and "GIF is not accepted" in message


def test_a_single_frame_gif_is_refused_too_whatever_opencv_could_decode() -> None:
    data = pillow_frames("GIF", 1)
    assert sniff(data) == "GIF" and count_images(data, "GIF") == 1
    message = refused(data)
    assert "GIF is not accepted" in message and "send one slice as PNG" in message


def test_an_animated_png_is_refused_with_its_image_count() -> None:
    assert "animation of 3 images (APNG)" in refused(pillow_frames("PNG", 3))


def test_a_multi_frame_dicom_is_refused_like_the_others() -> None:
    assert "holds 3 frames" in refused(dicom_bytes(SLICE, frames=3))


# --- one image: accepted ------------------------------------------------------------------------

@pytest.mark.parametrize("big", [False, True], ids=["tiff", "bigtiff"])
def test_a_single_page_tiff_is_decoded(big: bool) -> None:
    record = decode(tiff_bytes([(SLICE, 0)], big))
    assert record.file_format == "tiff" and record.frames == 1
    np.testing.assert_array_equal(record.pixels, SLICE)


def test_a_thumbnail_beside_the_page_is_not_a_second_page() -> None:
    thumbnail = cv2.resize(SLICE, (16, 16))
    data = tiff_bytes([(SLICE, 0), (thumbnail, 1)])
    assert count_images(data, "tiff") == 1
    np.testing.assert_array_equal(decode(data).pixels, SLICE)


def test_a_one_frame_pillow_png_is_an_ordinary_png() -> None:
    record = decode(pillow_frames("PNG", 1))
    assert record.file_format == "png" and record.frames == 1


@pytest.mark.parametrize(("ext", "fmt"), [(".png", "png"), (".jpg", "jpeg"), (".bmp", "bmp"),
                                          (".tiff", "tiff")])
def test_accepted_formats_are_told_apart_by_content(ext: str, fmt: str) -> None:
    data = encode(SLICE, ext)
    assert sniff(data) == fmt and count_images(data, fmt) == 1
    assert decode(data).file_format == fmt


# --- other formats: refused by name, whatever OpenCV can decode ---------------------------------

def test_webp_is_refused_by_name_though_opencv_decodes_it() -> None:
    ok, data = cv2.imencode(".webp", SLICE)
    if not ok:
        pytest.skip("this OpenCV cannot write WebP")
    assert cv2.imdecode(data, cv2.IMREAD_UNCHANGED) is not None
    assert "WebP images are not accepted" in refused(data.tobytes())


def test_an_unknown_signature_is_not_a_readable_image() -> None:
    message = refused(b"patient notes, not an image\n" * 20)
    assert "not a readable image" in message and "single-frame DICOM" in message


# --- hostile headers: bounded, never decoded ----------------------------------------------------

def test_a_tiff_whose_directory_points_at_itself_counts_once_and_stops() -> None:
    data = bytearray(tiff_bytes([(SLICE, 0)]))
    first = struct.unpack_from("<I", data, 4)[0]
    entries = struct.unpack_from("<H", data, first)[0]
    struct.pack_into("<I", data, first + 2 + 12 * entries, first)  # next IFD: itself
    assert count_images(bytes(data), "tiff") == 1


def test_thousands_of_pages_are_counted_from_headers_not_decoded(monkeypatch) -> None:
    tiny = np.zeros((8, 8), np.uint8)
    data = tiff_bytes([(tiny, 0)] * 3000)

    def refuse(*args, **kwargs):
        raise AssertionError("a page was decoded")

    monkeypatch.setattr(cv2, "imdecode", refuse)
    monkeypatch.setattr(cv2, "imdecodemulti", refuse)
    assert "holds 3000 pages" in refused(data)


def test_counting_stops_at_the_bound_and_says_at_least(monkeypatch) -> None:
    monkeypatch.setattr(image_format, "MAX_COUNTED", 5)
    assert "holds at least 5 pages" in refused(tiff_bytes([(SLICE, 0)] * 7))


@pytest.mark.parametrize("cut", [6, 9, 40])
def test_a_truncated_tiff_header_is_left_to_the_decoder(cut: int) -> None:
    data = tiff_bytes([(SLICE, 0)] * 2)
    assert count_images(data[:cut], "tiff") == 1
    assert "not a readable image" in refused(data[:cut])


# --- brainedge predict: an error row, the other files still answered ----------------------------

def test_predict_gives_a_multi_page_tiff_an_error_row_and_answers_the_rest(tmp_path) -> None:
    from click.testing import CliRunner

    from cli.main import main
    from tests.test_webapp_support import make_artifact, need_onnxruntime

    need_onnxruntime()
    artifact = make_artifact(tmp_path / "onnx-fp32")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a_slice.png").write_bytes(encode(SLICE))
    (tmp_path / "in" / "b_stack.tif").write_bytes(tiff_bytes([(SLICE, 0)] * 3))
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "in"), "--model",
                                       str(artifact), "--format", "json"])
    assert result.exit_code == 1 and "1 of 2 file(s) could not be classified" in result.output
    good, bad = json.loads(result.stdout)["predictions"]
    assert good["error"] is None and good["label"]
    assert "b_stack.tif: the TIFF file holds 3 pages" in bad["error"]
