"""How numbers and names are written in the report: table cells, ratios, file-safe names."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from brainedge import tables
from brainedge.tables import Column


def slugify(text: str, max_len: int = 60) -> str:
    """A file-name-safe form of ``text``: lowercase ASCII letters, digits and single hyphens.

    Device ids come from the machines themselves ("Pi 5 / 4c", "gpu-box.local"), and a slash or
    a space in a PNG name would break the file or its Markdown link.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].rstrip("-")
    return slug or "x"


def unique_slug(text: str, used: set[str]) -> str:
    """``slugify(text)``, made distinct from the slugs in ``used`` (and added to it)."""
    # Two ids can slugify alike ("x86 2c", "x86-2c"); a hash of the id keeps names stable.
    slug = slugify(text)
    if slug in used:
        slug = f"{slug}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    used.add(slug)
    return slug


def _auto_float(x: float) -> str:
    # Enough digits to compare rows, without a latency of 1234.5678 ms suggesting nanoseconds.
    if abs(x) >= 100:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.4f}"


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    return tables.markdown_table(rows, columns, float_format=_auto_float)


def ratio(base: float | None, value: float | None) -> str | None:
    """``base / value`` as a speed-up ("4.00x"), or None when either is missing or not positive."""
    if base is None or value is None or base <= 0 or value <= 0:
        return None
    return f"{base / value:.2f}x"


def threads_text(threads: int | None) -> str:
    if threads is None:
        return "unknown threads"
    return f"{threads} thread" + ("" if threads == 1 else "s")
