"""runtime.dicom and DICOM dispatch in runtime.imageio: every file is built in memory here.

The datasets carry a fake patient name and ID so that each refusal can also check that no
header value leaks into the message.
"""

from __future__ import annotations

import tracemalloc
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
import pytest

pydicom = pytest.importorskip(
    "pydicom", reason="pydicom comes with brainedge[edge]; DICOM input needs it"
)

from pydicom import uid  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.pixels import convert_color_space, get_decoder, get_encoder  # noqa: E402

import runtime.imageio  # noqa: E402
from brainedge.errors import ImageDecodeError  # noqa: E402
from runtime.dicom import decode_dicom, is_dicom  # noqa: E402
from runtime.imageio import decode_image, is_image_name, read_image  # noqa: E402

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-0042"
SOURCE = "upload-7"


def _dataset(
    pixels: np.ndarray | None,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **elements,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = uid.MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    ds.SOPClassUID = uid.MRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    if pixels is not None:
        ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8,
                          generate_instance_uid=False)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def _save(ds: Dataset) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _dicom(pixels: np.ndarray, **kwargs) -> bytes:
    return _save(_dataset(pixels, **kwargs))


def _ramp(rows: int, columns: int, lo: int, hi: int, dtype: type) -> np.ndarray:
    return np.linspace(lo, hi, rows * columns).round().astype(dtype).reshape(rows, columns)


def _texture(size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (128 + 100 * np.sin(xx / 7.0) * np.cos(yy / 9.0)).astype(np.uint8)


def _minmax(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float64)
    return np.rint((image - image.min()) * 255 / (image.max() - image.min())).astype(np.uint8)


def _jpeg_baseline_dicom(gray: np.ndarray, rows: int | None = None) -> tuple[bytes, bytes]:
    """A JPEG Baseline DICOM wrapping OpenCV's JPEG of ``gray``; also returns that JPEG."""
    ok, encoded = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    jpeg = encoded.tobytes()
    ds = _dataset(None)
    ds.file_meta.TransferSyntaxUID = uid.JPEGBaseline8Bit
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows or gray.shape[0]
    ds.Columns = gray.shape[1]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([jpeg])
    return _save(ds), jpeg


def _sample(name: str) -> bytes:
    """A file from pydicom's own test data, installed with it (never downloaded here)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not in this pydicom's bundled test data")
    return Path(path).read_bytes()


def _refused(data: bytes, match: str) -> str:
    with pytest.raises(ImageDecodeError, match=match) as info:
        decode_dicom(data, SOURCE)
    message = str(info.value)
    assert message.startswith(SOURCE)
    assert "Doe" not in message and PATIENT_ID not in message
    return message


@pytest.fixture
def pixels_untouched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records any attempt to decode pixels: a refusal from the header must come first."""
    touched: list[str] = []

    def pixel_array(self):
        touched.append("pixel_array")
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(pixel_array))
    return touched


# Recognising DICOM by content.

def test_is_dicom_wants_the_dicm_prefix_at_byte_128():
    data = _dicom(_texture(16))
    assert is_dicom(data)
    assert not is_dicom(data[:131])
    assert not is_dicom(b"DICM" + bytes(256))  # the prefix, but not at byte 128
    _, png = cv2.imencode(".png", _texture(16))
    assert not is_dicom(png.tobytes())
    assert not is_dicom(b"")


def test_a_dataset_without_preamble_is_not_taken_for_dicom():
    # Raw datasets have no signature; they go to OpenCV, which refuses them as non-images.
    buf = BytesIO()
    Dataset(_dataset(_texture(16))).save_as(
        buf, implicit_vr=True, little_endian=True, enforce_file_format=False
    )
    raw = buf.getvalue()
    assert not is_dicom(raw)
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(raw, SOURCE)


@pytest.mark.arm64
def test_decode_image_dispatches_dicom_by_content_whatever_the_name(tmp_path: Path):
    data = _dicom(_ramp(32, 32, 0, 4000, np.uint16), bits_stored=12)
    expected = decode_dicom(data)
    misnamed = tmp_path / "slice.png"
    misnamed.write_bytes(data)
    np.testing.assert_array_equal(read_image(misnamed), expected)
    np.testing.assert_array_equal(decode_image(data), expected)
    # The 12-bit ramp went through DICOM's min-max, not OpenCV: it spans 0..255.
    assert expected.min() == 0 and expected.max() == 255


def test_a_png_named_dcm_still_decodes_as_png(tmp_path: Path):
    gray = _texture(32)
    _, png = cv2.imencode(".png", gray)
    path = tmp_path / "slice.dcm"
    path.write_bytes(png.tobytes())
    np.testing.assert_array_equal(read_image(path), gray)


@pytest.mark.parametrize("name", ["a.dcm", "b.DCM", "c.dicom", "d.png"])
def test_folder_scans_pick_up_dicom_names(name: str):
    assert is_image_name(Path(name))


def test_folder_scans_still_skip_other_names():
    assert not is_image_name(Path("notes.txt"))
    assert not is_image_name(Path("dicomdir"))


# Grayscale: modality LUT, VOI, polarity.

@pytest.mark.arm64
def test_monochrome2_8bit_full_range_comes_out_unchanged():
    gray = _ramp(16, 16, 0, 255, np.uint8)
    out = decode_dicom(_dicom(gray))
    assert out.dtype == np.uint8 and out.shape == (16, 16)
    np.testing.assert_array_equal(out, gray)


@pytest.mark.arm64
def test_monochrome2_without_window_is_stretched_to_the_slice_range():
    values = _ramp(32, 32, 100, 4000, np.uint16)
    out = decode_dicom(_dicom(values, bits_stored=12))
    np.testing.assert_array_equal(out, _minmax(values))


@pytest.mark.arm64
def test_monochrome2_signed_16bit_is_stretched_to_the_slice_range():
    values = _ramp(32, 32, -1000, 3000, np.int16)
    out = decode_dicom(_dicom(values))
    np.testing.assert_array_equal(out, _minmax(values))


@pytest.mark.arm64
def test_monochrome1_is_inverted_so_that_higher_is_brighter():
    values = _ramp(32, 32, 0, 4000, np.uint16)
    mono2 = decode_dicom(_dicom(values, bits_stored=12))
    mono1 = decode_dicom(_dicom(values, photometric="MONOCHROME1", bits_stored=12))
    brightest = np.unravel_index(values.argmax(), values.shape)
    assert mono2[brightest] == 255 and mono1[brightest] == 0
    np.testing.assert_array_equal(mono1, 255 - mono2)


@pytest.mark.arm64
def test_monochrome1_inversion_comes_after_the_window():
    values = _ramp(32, 32, 0, 1000, np.uint16)
    window = {"WindowCenter": 500, "WindowWidth": 200}
    mono2 = decode_dicom(_dicom(values, **window))
    mono1 = decode_dicom(_dicom(values, photometric="MONOCHROME1", **window))
    np.testing.assert_array_equal(mono1, 255 - mono2)
    assert mono1[values < 400].min() == 255  # below the window: white once inverted


@pytest.mark.arm64
def test_window_saturates_pixels_outside_it():
    values = _ramp(32, 32, 0, 1000, np.uint16)
    out = decode_dicom(_dicom(values, WindowCenter=500, WindowWidth=200))
    assert (out[values < 400] == 0).all()
    assert (out[values > 600] == 255).all()
    inside = out[(values > 420) & (values < 580)]
    assert inside.min() > 0 and inside.max() < 255
    # Still monotonic, and not what the slice's min-max would give.
    assert (np.diff(out.ravel().astype(int)) >= 0).all()
    assert not np.array_equal(out, _minmax(values))


def test_only_the_first_of_several_windows_is_used():
    values = _ramp(32, 32, 0, 1000, np.uint16)
    first = decode_dicom(_dicom(values, WindowCenter=500, WindowWidth=200))
    several = decode_dicom(
        _dicom(values, WindowCenter=[500, 100], WindowWidth=[200, 50])
    )
    np.testing.assert_array_equal(several, first)


@pytest.mark.arm64
def test_rescale_is_applied_before_the_window():
    raw = _ramp(32, 32, 0, 1000, np.uint16)
    window = {"WindowCenter": 0, "WindowWidth": 400}  # in rescaled units: raw 400..600
    rescaled = decode_dicom(
        _dicom(raw, RescaleSlope=2, RescaleIntercept=-1000, **window)
    )
    # The same slice stored already rescaled, without slope/intercept.
    reference = decode_dicom(_dicom((raw.astype(np.int32) * 2 - 1000).astype(np.int16), **window))
    np.testing.assert_array_equal(rescaled, reference)
    unscaled = decode_dicom(_dicom(raw, **window))
    assert not np.array_equal(rescaled, unscaled)
    assert rescaled[raw == raw.max()] == 255 and rescaled[raw == 0] == 0


@pytest.mark.arm64
def test_voi_lut_sequence_is_applied_over_its_own_range():
    gray = _ramp(16, 16, 0, 255, np.uint8)
    ds = _dataset(gray)
    lut = Dataset()
    lut.add_new("LUTDescriptor", "US", [256, 0, 16])
    lut.add_new("LUTData", "US", [(255 - i) * 257 for i in range(256)])  # a reversing LUT
    ds.VOILUTSequence = [lut]
    np.testing.assert_array_equal(decode_dicom(_save(ds)), 255 - gray)


def test_a_malformed_window_falls_back_to_the_slice_range():
    values = _ramp(32, 32, 0, 1000, np.uint16)
    out = decode_dicom(_dicom(values, WindowCenter=500, WindowWidth=0))  # LINEAR needs >= 1
    np.testing.assert_array_equal(out, _minmax(values))


# Colour.

@pytest.mark.arm64
def test_rgb_is_converted_to_gray():
    rgb = np.stack([_texture(32), _texture(32).T, np.full((32, 32), 40, np.uint8)], axis=-1)
    out = decode_dicom(_dicom(rgb, photometric="RGB"))
    np.testing.assert_array_equal(out, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


@pytest.mark.arm64
def test_ybr_full_is_converted_to_gray():
    rgb = np.stack([_texture(32), _texture(32).T, np.full((32, 32), 40, np.uint8)], axis=-1)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    out = decode_dicom(_dicom(ybr, photometric="YBR_FULL"))
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(int)
    assert np.abs(out.astype(int) - expected).max() <= 2  # YBR round trip rounds


def test_palette_color_is_refused_with_a_reason():
    ds = _dataset(_texture(16))
    ds.PhotometricInterpretation = "PALETTE COLOR"
    _refused(_save(ds), "PALETTE COLOR DICOM is refused: its colours come from a lookup table")


# Compressed transfer syntaxes.

def _compressed(tsyntax: str, values: np.ndarray, **kwargs) -> bytes:
    ds = _dataset(values, **kwargs)
    ds.compress(tsyntax, generate_instance_uid=False)
    return _save(ds)


@pytest.mark.arm64
def test_rle_lossless_decodes_like_uncompressed():
    values = _ramp(32, 32, 0, 4000, np.uint16)
    data = _compressed(uid.RLELossless, values, bits_stored=12)
    assert pydicom.dcmread(BytesIO(data)).file_meta.TransferSyntaxUID == uid.RLELossless
    np.testing.assert_array_equal(decode_dicom(data), decode_dicom(_dicom(values, bits_stored=12)))


@pytest.mark.arm64
def test_jpeg2000_lossless_decodes_like_uncompressed():
    if not get_encoder(uid.JPEG2000Lossless).is_available:
        pytest.skip("JPEG 2000 encoding needs pylibjpeg-openjpeg")
    values = (_texture(32).astype(np.uint16) * 16)
    data = _compressed(uid.JPEG2000Lossless, values, bits_stored=12)
    assert pydicom.dcmread(BytesIO(data)).file_meta.TransferSyntaxUID == uid.JPEG2000Lossless
    np.testing.assert_array_equal(decode_dicom(data), decode_dicom(_dicom(values, bits_stored=12)))


@pytest.mark.arm64
def test_jpeg_ls_sample_decodes_like_its_uncompressed_original():
    # No JPEG-LS encoder is installed (that is pyjpegls); pydicom ships this pair.
    original = decode_dicom(_sample("MR_small.dcm"))
    np.testing.assert_array_equal(decode_dicom(_sample("MR_small_jpeg_ls_lossless.dcm")), original)


@pytest.mark.arm64
def test_jpeg_baseline_decodes_like_the_same_jpeg_through_opencv():
    data, jpeg = _jpeg_baseline_dicom(_texture(64))
    direct = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    # Different libjpeg builds may differ by one level, which min-max can stretch a little.
    assert np.abs(decode_dicom(data).astype(int) - _minmax(direct).astype(int)).max() <= 3


@pytest.mark.arm64
@pytest.mark.parametrize(
    "name",
    ["JPGExtended.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jls_lossy_line.dcm",
     "JPEGLSNearLossless_16.dcm", "MR_small_jp2klossless.dcm", "examples_jpeg2k.dcm"],
)
def test_pydicom_compressed_samples_decode_at_their_header_size(name: str):
    data = _sample(name)
    ds = pydicom.dcmread(BytesIO(data))
    assert decode_dicom(data).shape == (ds.Rows, ds.Columns)


@pytest.mark.arm64
def test_deflated_dataset_decodes_like_uncompressed():
    values = _ramp(32, 32, 0, 4000, np.uint16)
    ds = _dataset(values, bits_stored=12)
    ds.file_meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
    np.testing.assert_array_equal(decode_dicom(_save(ds)),
                                  decode_dicom(_dicom(values, bits_stored=12)))


def _jpeg_ls_sample() -> bytes:
    return _sample("MR_small_jpeg_ls_lossless.dcm")


def _jpeg2000_sample() -> bytes:
    return _sample("MR_small_jp2klossless.dcm")


@pytest.mark.parametrize(
    ("make", "tsyntax", "syntax_name", "package"),
    [
        (lambda: _jpeg_baseline_dicom(_texture(32))[0], uid.JPEGBaseline8Bit,
         "JPEG Baseline", "pylibjpeg-libjpeg"),
        (_jpeg_ls_sample, uid.JPEGLSLossless, "JPEG-LS Lossless", "pylibjpeg-libjpeg"),
        (_jpeg2000_sample, uid.JPEG2000Lossless, "JPEG 2000", "pylibjpeg-openjpeg"),
    ],
    ids=["jpeg", "jpeg-ls", "jpeg2000"],
)
def test_a_missing_decoder_names_the_transfer_syntax_and_the_package(
    monkeypatch: pytest.MonkeyPatch, make, tsyntax: str, syntax_name: str, package: str
):
    data = make()
    # As on a device without the plugins: pydicom's decoder has no available plugin.
    monkeypatch.setattr(get_decoder(tsyntax), "_available", {})
    message = _refused(data, "no decoder for it is installed")
    assert syntax_name in message and str(tsyntax) in message
    assert f"pip install pylibjpeg {package}" in message


def test_a_transfer_syntax_pydicom_cannot_decode_is_named():
    data, _ = _jpeg_baseline_dicom(_texture(32))
    ds = pydicom.dcmread(BytesIO(data))
    ds.file_meta.TransferSyntaxUID = uid.MPEG2MPML  # video: pydicom decodes no MPEG
    _refused(_save(ds), r"MPEG2 Main Profile / Main Level \(1.2.840.10008.1.2.4.100\), which "
             "pydicom cannot decode")


# Refusals.

def test_a_structured_report_without_pixels_is_refused():
    ds = _dataset(None)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = uid.BasicTextSRStorage
    ds.Modality = "SR"
    _refused(_save(ds), "no pixel data .Basic Text SR Storage.*send an image slice")


def test_multi_frame_is_refused_before_decoding(pixels_untouched: list[str]):
    frames = np.stack([_texture(16), _texture(16)])
    _refused(_dicom(frames), "holds 2 frames.*send one slice")
    assert not pixels_untouched


def test_too_many_pixels_in_the_header_is_refused_without_allocating(
    pixels_untouched: list[str],
):
    ds = _dataset(_texture(16))  # 256 bytes of pixel data ...
    ds.Rows = ds.Columns = 65535  # ... declared as 4.3 gigapixels (US caps Rows at 65535)
    data = _save(ds)
    tracemalloc.start()
    try:
        _refused(data, "65535x65535 pixels exceeds the limit")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not pixels_untouched
    assert peak < 8 << 20, f"refusing allocated {peak} bytes"


def test_the_pixel_limit_admits_exactly_max_pixels(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runtime.imageio, "MAX_PIXELS", 16 * 16)
    assert decode_dicom(_dicom(_texture(16))).shape == (16, 16)
    _refused(_dicom(_texture(17)[:, :16]), "16x17 pixels exceeds the limit of 256")


def test_a_codestream_larger_than_the_header_is_refused_before_decoding(
    pixels_untouched: list[str],
):
    data, jpeg = _jpeg_baseline_dicom(_texture(64))
    sof = jpeg.index(b"\xff\xc0")
    bomb = jpeg[:sof + 5] + (60000).to_bytes(2, "big") * 2 + jpeg[sof + 9:]
    patched = data.replace(jpeg, bomb)
    assert len(patched) == len(data)
    _refused(patched, "is 60000x60000 pixels but its header says 64x64")
    assert not pixels_untouched


def test_a_deflate_bomb_is_refused_before_pydicom_inflates_it(monkeypatch: pytest.MonkeyPatch):
    ds = _dataset(np.zeros((4200, 4200), np.uint8))  # 17.6 MB inflated, a few kB deflated
    ds.file_meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
    data = _save(ds)
    assert len(data) < 1 << 20
    monkeypatch.setattr(runtime.imageio, "MAX_PIXELS", 1000)

    def dcmread(*args, **kwargs):
        raise AssertionError("pydicom inflated the dataset")

    monkeypatch.setattr(pydicom, "dcmread", dcmread)
    _refused(data, "deflated DICOM dataset inflates to more than")


@pytest.mark.parametrize("tsyntax", [None, uid.RLELossless], ids=["native", "rle"])
def test_every_truncation_is_refused_as_truncated(tsyntax: str | None):
    values = _ramp(16, 16, 0, 4000, np.uint16)
    data = _compressed(tsyntax, values, bits_stored=12) if tsyntax else _dicom(
        values, bits_stored=12
    )
    # An encapsulated file cut inside its final 8-byte sequence delimiter still has all its
    # pixels, and decodes; every other cut must be refused.
    end = len(data) - 8 if tsyntax else len(data)
    for cut in range(0, end):
        with pytest.raises(ImageDecodeError, match="truncated") as info:
            decode_dicom(data[:cut], SOURCE)
        assert "Doe" not in str(info.value), cut


def test_a_file_cut_inside_its_pixel_data_is_called_truncated():
    data = _dicom(_ramp(32, 32, 0, 4000, np.uint16), bits_stored=12)
    _refused(data[:-100], "truncated .it ends inside an element")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_garbage_after_the_dicm_prefix_is_refused(seed: int):
    garbage = np.random.default_rng(seed).bytes(4096)
    with pytest.raises(ImageDecodeError, match=SOURCE):
        decode_image(bytes(128) + b"DICM" + garbage, SOURCE)


def test_garbage_after_a_valid_file_meta_is_refused():
    data = _dicom(_texture(16))
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")  # group length (0002,0000)
    garbage = np.random.default_rng(3).bytes(2048)
    _refused(data[:meta_end] + garbage, "DICOM")
