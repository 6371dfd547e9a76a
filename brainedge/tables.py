"""GitHub-flavoured Markdown tables shared by every report (evaluation, optimize, benchmarks).

NumPy only, so the benchmark report can use it on an edge install without matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

MISSING = "–"
# (row key, header) or (row key, header, format spec for the column's floats)
Column = tuple[str, str] | tuple[str, str, str]


def four_decimals(x: float) -> str:
    """Metrics: fixed 4 decimals keep a column aligned; below 1e-3 they would read as 0.0000."""
    if x != 0.0 and abs(x) < 1e-3:
        return f"{x:.4g}"
    return f"{x:.4f}"


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column],
                   float_format: Callable[[float], str] = four_decimals) -> str:
    """Numbers right-align, None prints as an en dash, pipes and newlines in text are escaped.

    A column's own format spec wins over ``float_format`` for its floats.
    """
    if not columns:
        raise ValueError("markdown_table needs at least one column")
    specs = [(c[0], c[1], c[2] if len(c) > 2 else None) for c in columns]
    header = "| " + " | ".join(escape(title) for _, title, _ in specs) + " |"
    align = "| " + " | ".join(_alignment(rows, key) for key, _, _ in specs) + " |"
    body = ["| " + " | ".join(format_cell(row.get(key), fmt, float_format)
                              for key, _, fmt in specs) + " |" for row in rows]
    return "\n".join([header, align, *body])


def format_cell(value: Any, fmt: str | None = None,
                float_format: Callable[[float], str] = four_decimals) -> str:
    if value is None:
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        x = float(value)
        if not math.isfinite(x):
            return str(x)
        return format(x, fmt) if fmt else float_format(x)
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(format_cell(v, fmt, float_format) for v in value) + "]"
    return escape(str(value))


def escape(text: str) -> str:
    # A bare pipe would split the cell and a newline would end the row.
    return text.replace("|", "\\|").replace("\n", " ")


def _alignment(rows: Sequence[Mapping[str, Any]], key: str) -> str:
    values = [row.get(key) for row in rows if row.get(key) is not None]
    numeric = bool(values) and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        for v in values
    )
    return "---:" if numeric else "---"
