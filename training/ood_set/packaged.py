"""Images that Python packages ship inside their wheels: scikit-image's sample images and
pydicom's bundled test files (far-OOD, plus two non-brain MRI slices that are near-OOD).

Only files inside the installed package are read, never a fetcher: ``skimage.data.*`` and
``pydicom.data.get_testdata_file`` download what is missing, which must not happen here (no
internet on the target machines), so a missing file is skipped with a log line instead.
Licences are quoted from each package's own notes: the docstrings of ``skimage.data`` and
``pydicom/data/test_files/README.txt`` (with pydicom's MIT LICENSE and GDCM's BSD licence).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from training.ood_set.image import OODImage, Skipped, fit, skip

_SKIMAGE_PACKAGE_LICENCE = ("no licence stated in the skimage.data docstring; shipped in the "
                            "scikit-image wheel (BSD-3-Clause)")
# file in skimage/data -> (kind, licence as the skimage.data docstring states it)
SKIMAGE_IMAGES: dict[str, tuple[str, str]] = {
    "astronaut.png": ("photo", "public domain (NASA Great Images; 'No known copyright "
                               "restrictions, released into the public domain')"),
    "camera.png": ("photo", "CC0 by the photographer (Lav Varshney)"),
    "chelsea.png": ("photo", "CC0 by the photographer (Stefan van der Walt)"),
    "coffee.png": ("photo", "CC0 by the photographer (Rachel Michetti)"),
    "clock_motion.png": ("photo", "public domain, released by the photographer "
                                  "(Stefan van der Walt)"),
    "coins.png": ("photo", "no known copyright restrictions (Brooklyn Museum collection)"),
    "rocket.jpg": ("photo", "public domain (SpaceX)"),
    "motorcycle_left.png": ("photo", "Middlebury 2014 stereo benchmark; "
                                     + _SKIMAGE_PACKAGE_LICENCE),
    "brick.png": ("texture", "CC0 (CC0Textures, Bricks25)"),
    "grass.png": ("texture", "CC0 (DeviantArt, linolafett)"),
    "gravel.png": ("texture", "CC0 (CC0Textures, Gravel04)"),
    "cell.png": ("microscopy", "CC0, dedicated to the public domain"),
    "ihc.png": ("microscopy", "no known copyright restrictions (CMMI)"),
    "retina.jpg": ("fundus-photo", "CC0 1.0 Universal Public Domain Dedication"),
    "microaneurysms.png": ("fundus-photo", "CC0 given by the owner (Andreas Maier)"),
    "moon.png": ("astronomy", _SKIMAGE_PACKAGE_LICENCE),
    "hubble_deep_field.jpg": ("astronomy", "public domain (NASA)"),
    "page.png": ("text", _SKIMAGE_PACKAGE_LICENCE),
    "text.png": ("text", "no known copyright restrictions, released into the public domain"),
    "chessboard_GRAY.png": ("graphic", _SKIMAGE_PACKAGE_LICENCE),
    "color.png": ("graphic", _SKIMAGE_PACKAGE_LICENCE),
    "logo.png": ("graphic", "the scikit-image logo; " + _SKIMAGE_PACKAGE_LICENCE),
    "horse.png": ("graphic", "CC0 given by the owner (Andreas Preuss)"),
    # The Shepp-Logan head phantom: a mathematical CT test object, not a scan.
    "phantom.png": ("ct-phantom", _SKIMAGE_PACKAGE_LICENCE),
}

_PYDICOM_TERMS = ("pydicom test file; pydicom's README.txt: 'I believe there is no restriction "
                  "on using any of these files in this manner' (pydicom: MIT)")
_NEMA = "from the NEMA WG04 sample data sets (medical.nema.org), downsized by pydicom"
_GDCM = "from GDCM; used under GDCM's BSD-3-Clause-style licence (pydicom README.txt)"
# file -> (group, kind, provenance, licence); only files pydicom ships in its wheel.
PYDICOM_FILES: dict[str, tuple[str, str, str, str]] = {
    "CT_small.dcm": ("far", "ct", f"CT slice, {_NEMA} (CT1_UNC)", _PYDICOM_TERMS),
    "J2K_pixelrep_mismatch.dcm": ("far", "ct", "axial head CT slice (pydicom issue 1149)",
                                  _PYDICOM_TERMS),
    "693_J2KI.dcm": ("far", "ct", "axial CT slice (pydicom issue 693)", _PYDICOM_TERMS),
    "JPEG2000.dcm": ("far", "nuclear-medicine", f"whole-body bone scan, {_NEMA} (NM1_J2KI)",
                     _PYDICOM_TERMS),
    "examples_jpeg2k.dcm": ("far", "ultrasound", f"ultrasound, {_NEMA} (US1_J2KR)",
                            _PYDICOM_TERMS),
    "examples_rgb_color.dcm": ("far", "ultrasound", f"colour ultrasound, {_NEMA} (US1_UNCR)",
                               _PYDICOM_TERMS),
    "examples_ybr_color.dcm": ("far", "ultrasound", "colour ultrasound, first of 30 frames "
                               "(color3d_jpeg_baseline)", _PYDICOM_TERMS),
    "liver_1frame.dcm": ("far", "mask", "liver segmentation (DICOM SEG, dcmqi example)",
                         _PYDICOM_TERMS),
    "image_dfl.dcm": ("far", "graphic", "deflate test image (dclunie.com)", _PYDICOM_TERMS),
    "SC_rgb_rle.dcm": ("far", "graphic", "RGB test pattern", _PYDICOM_TERMS),
    "GDCMJ2K_TextGBR.dcm": ("far", "text", f"text rendered as a DICOM image, {_GDCM}",
                            _PYDICOM_TERMS + "; " + _GDCM),
    # The only radiographs offline: C-spine CR thumbnails, 16x16 px (pcir.org, downsized).
    **{f"dicomdirtests/77654033/{series}": (
        "far", "xray", "computed radiography of the cervical spine, downsized by pydicom to "
        "16x16 px (pcir.org free image sets)", _PYDICOM_TERMS)
       for series in ("CR1/6154", "CR2/6247", "CR3/6278")},
    "MR_small.dcm": ("near", "mri-other-anatomy", f"MR slice, {_NEMA} (MR1_UNC) to 64x64; "
                     "anatomy not stated in its header", _PYDICOM_TERMS),
    "examples_overlay.dcm": ("near", "mri-other-anatomy", f"abdominal (liver) MR, {_GDCM} "
                             "(MR-SIEMENS-DICOM-WithOverlays, cropped)",
                             _PYDICOM_TERMS + "; " + _GDCM),
}


def skimage_images(max_side: int, skipped: list[Skipped]) -> Iterator[OODImage]:
    try:
        import skimage
    except ImportError:
        skip(skipped, "scikit-image", "not installed (pip install 'brainedge[train]')")
        return
    folder = Path(skimage.__file__).parent / "data"
    version = importlib.metadata.version("scikit-image")
    for filename, (kind, licence) in SKIMAGE_IMAGES.items():
        path = folder / filename
        if not path.is_file():  # not in this wheel: skimage would try to download it
            skip(skipped, f"scikit-image: skimage/data/{filename}", "not bundled offline")
            continue
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        yield OODImage(f"skimage-{Path(filename).stem}", "far", kind,
                       f"scikit-image {version}: skimage/data/{filename}",
                       "sample image bundled with scikit-image", licence,
                       fit(_rgb_or_gray(image), max_side))


def pydicom_images(max_side: int, skipped: list[Skipped]) -> Iterator[OODImage]:
    try:
        import pydicom
        from pydicom.data import get_testdata_file
    except ImportError:
        skip(skipped, "pydicom", "not installed (pip install 'brainedge[edge]')")
        return
    root = Path(pydicom.__file__).parent / "data" / "test_files"
    for name, (group, kind, provenance, licence) in PYDICOM_FILES.items():
        # download=False: a file kept in pydicom's external store is skipped, not fetched.
        found = (root / name) if "/" in name else get_testdata_file(name, download=False)
        if found is None or not Path(found).is_file():
            skip(skipped, f"pydicom: {name}", "not bundled offline (external data store)")
            continue
        stem = name.replace("dicomdirtests/", "").replace("/", "-").removesuffix(".dcm")
        yield OODImage(f"pydicom-{stem}", group, kind,
                       f"pydicom {pydicom.__version__}: pydicom/data/test_files/{name}",
                       provenance, licence, fit(_dicom_pixels(Path(found)), max_side))


def _dicom_pixels(path: Path) -> np.ndarray:
    """Monochrome: through BrainEdge's own DICOM decoding (modality LUT, window, MONOCHROME1),
    so the PNG shows what the app would have shown. Colour: pydicom's RGB, first frame."""
    import pydicom

    from runtime.dicom import decode

    ds = pydicom.dcmread(path)
    if str(ds.PhotometricInterpretation).startswith("MONOCHROME"):
        return decode(path.read_bytes(), str(path)).pixels
    pixels = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    if pixels.dtype != np.uint8:  # 16/32-bit RGB test files: their own range into 8 bits
        pixels = cv2.normalize(pixels, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return np.ascontiguousarray(pixels)


def _rgb_or_gray(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR(A) or grey, as RGB or grey; alpha composited onto white (a logo on a page)."""
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float64) / 255.0
        image = (image[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(image[:, :, 2::-1])
