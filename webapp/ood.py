"""Does an upload look like a brain MRI slice at all? Cheap heuristics a person can check.

A classifier always names one of its four classes, even for a holiday photo. These checks
look at the decoded image (and, for colour, at the file's own colours) and give reasons in
plain words; the web app shows them as a warning beside the prediction instead of presenting
an answer about something that is not an MRI slice. They catch gross mistakes (a photo, a
blank or cropped-out image, a screenshot strip), not subtle ones such as the wrong sequence
or a non-brain MRI.

Thresholds were set on the shared Brain Tumor MRI dataset (7019 slices) and the phantoms,
with margin: no dataset slice trips any of them. On the dataset, the background (see
``dark_fraction``) covers at least 10% of every slice (air around the head); at most 4.9% of
any slice's pixels are colourful (coloured annotations); every slice has an intensity
standard deviation of at least 20 and an entropy of at least 2.2 bits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import cv2
import numpy as np

from runtime.dicom import is_dicom

# Share of pixels that are colourful (HSV saturation > 0.25 and not nearly black).
MAX_COLOURFUL_FRACTION = 0.10
# Share of background pixels: in the darkest 15% of the image's own intensity range, and
# never brighter than grey level 60 (some slices have a dark-grey rather than black background).
MIN_DARK_FRACTION = 0.05
DARK_LEVEL = 0.15
DARK_CAP = 60
MIN_STD = 8.0  # grey levels out of 255
MIN_ENTROPY_BITS = 1.5
MAX_ASPECT_RATIO = 2.0
# Secondary, model-side signal: an answer spread over the classes.
MIN_TOP_PROBABILITY = 0.5
MAX_NORMALIZED_ENTROPY = 0.8


@dataclass(frozen=True)
class OODReport:
    reasons: tuple[str, ...]
    measures: Mapping[str, float | str | None] = field(default_factory=dict)
    model_uncertain: bool = False
    model_note: str | None = None

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "reasons": list(self.reasons),
                "model_uncertain": self.model_uncertain, "model_note": self.model_note,
                "measures": dict(self.measures)}


def colourful_fraction(data: bytes) -> float | None:
    """Share of colourful pixels in an encoded PNG/JPEG/..., ``None`` for DICOM or when the
    file has no colour to look at. ``runtime.imageio`` reduces images to grey, so this reads
    the file's colours once more, at a quarter of its size (JPEG decodes that directly)."""
    if is_dicom(data):
        return None
    colour = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_4)
    if colour is None or colour.ndim != 3:
        return None
    hsv = cv2.cvtColor(colour, cv2.COLOR_BGR2HSV)
    saturated = (hsv[..., 1] > 0.25 * 255) & (hsv[..., 2] > 0.15 * 255)
    return float(np.mean(saturated))


def dicom_kind(data: bytes) -> dict[str, str | None]:
    """Modality and photometric interpretation of a DICOM file; no other tag is read (the
    header carries patient data). Empty for anything else."""
    if not is_dicom(data):
        return {}
    import pydicom

    # The pixels were already decoded from these bytes, so the header parses; pydicom's many
    # exception types on odd headers would only mean "unknown" here.
    try:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True,
                             specific_tags=["Modality", "PhotometricInterpretation"])
    except Exception:
        return {}
    return {"modality": _text(ds.get("Modality")),
            "photometric": _text(ds.get("PhotometricInterpretation"))}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value).strip().upper() or None


def intensity_entropy(gray: np.ndarray) -> float:
    """Shannon entropy of the 256-bin grey-level histogram, in bits (0 for a constant image)."""
    counts = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    p = counts[counts > 0] / gray.size
    return float(-(p * np.log2(p)).sum())


def dark_fraction(gray: np.ndarray) -> float:
    """Share of background pixels: in the darkest ``DARK_LEVEL`` of the slice's own intensity
    range (so a dark-grey background still counts) but no brighter than ``DARK_CAP``."""
    lo, hi = np.percentile(gray, [0.5, 99.5])
    return float(np.mean(gray <= min(DARK_CAP, lo + DARK_LEVEL * (hi - lo))))


def check_image(gray: np.ndarray, data: bytes | None = None) -> OODReport:
    """Heuristics on a decoded HxW uint8 slice and, when given, the bytes it came from."""
    reasons: list[str] = []
    height, width = gray.shape
    std = float(gray.std())
    entropy = intensity_entropy(gray)
    dark = dark_fraction(gray)
    aspect = max(height, width) / min(height, width)
    colourful = colourful_fraction(data) if data is not None else None
    kind = dicom_kind(data) if data is not None else {}
    if std < MIN_STD or entropy < MIN_ENTROPY_BITS:
        reasons.append(f"the image is nearly uniform (intensity spread {std:.1f} grey levels, "
                       f"{entropy:.1f} bits): blank, or not an MRI slice")
    elif dark < MIN_DARK_FRACTION:
        reasons.append(f"almost no dark background ({dark:.0%} of the image): an MRI slice "
                       "shows the dark air around the head; this may be a photo or a crop")
    if colourful is not None and colourful > MAX_COLOURFUL_FRACTION:
        reasons.append(f"the image is in colour ({colourful:.0%} of it colourful): MRI slices "
                       "are greyscale; this looks like a photo or a coloured rendering")
    if aspect > MAX_ASPECT_RATIO:
        reasons.append(f"extreme aspect ratio {width}x{height} ({aspect:.1f}:1): MRI slices "
                       "are close to square")
    modality = kind.get("modality")
    if modality and modality != "MR":
        reasons.append(f"the DICOM modality is {modality}, not MR: the model saw only MRI")
    if kind.get("photometric") and not kind["photometric"].startswith("MONOCHROME"):
        reasons.append(f"the DICOM image is in colour ({kind['photometric']}): MRI slices are "
                       "monochrome")
    measures = {"width": width, "height": height, "std": round(std, 2),
                "entropy_bits": round(entropy, 3), "dark_fraction": round(dark, 4),
                "colourful_fraction": None if colourful is None else round(colourful, 4),
                "aspect_ratio": round(aspect, 3), "modality": modality}
    return OODReport(tuple(reasons), measures)


def check_probabilities(report: OODReport, probabilities: Mapping[str, float]) -> OODReport:
    """Add the model-side signal: a low top probability or a near-uniform answer. It never
    flags on its own (an MRI slice can be genuinely ambiguous); it is shown as a note."""
    p = np.clip(np.asarray(list(probabilities.values()), np.float64), 1e-12, 1.0)
    top = float(p.max())
    entropy = float(-(p * np.log(p)).sum() / math.log(len(p))) if len(p) > 1 else 0.0
    uncertain = top < MIN_TOP_PROBABILITY or entropy > MAX_NORMALIZED_ENTROPY
    note = (f"the model is unsure: its top probability is {top:.0%} (normalized entropy "
            f"{entropy:.2f}); treat this answer with extra caution") if uncertain else None
    measures = {**report.measures, "top_probability": round(top, 4),
                "normalized_entropy": round(entropy, 4)}
    return OODReport(report.reasons, measures, uncertain, note)
