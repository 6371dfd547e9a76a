"""Text labels beside scatter points that overlap neither each other nor other markers.

A dozen variants crowd the fast, accurate corner of a latency-accuracy plot, and a label at a
fixed offset lands on its neighbour's. Each label tries a fixed list of offsets in turn and
keeps the one that costs least: overlapping another label costs most, then leaving the axes,
then covering a marker, then sitting nearer another marker than its own. Deterministic, and
no dependency beyond matplotlib (adjustText does this iteratively, but it would be one more
package for one plot).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in display pixels
Point = tuple[float, float]

# (dx, dy) in points, nearest first: right-above, centred above, right-below, centred below,
# the left side, then further out, where a leader line ties the label to its point.
_OFFSETS = (
    (6, 5), (0, 8), (6, -13), (0, -16), (-6, 5), (-6, -13),
    (10, 18), (10, -26), (-10, 18), (-10, -26), (0, 24), (0, -32),
    (14, 32), (14, -40), (-14, 32), (-14, -40),
)
_LEADER_FROM = 15  # points; nearer labels sit close enough to need no line
_MARKER_HALF_PX = 6
_BOX_PAD_PX = 2


def place_labels(ax: Any, labelled: Sequence[tuple[str, float, float]],
                 others: Sequence[tuple[float, float]] = (), fontsize: float = 8) -> list[Any]:
    """Annotate each (text, x, y) of ``labelled`` where it fits best; return the annotations.

    ``others`` are the remaining points' data coordinates, whose markers labels should avoid.
    Call it last: it draws the figure once to learn the final layout and axis limits, and the
    labels are kept out of the layout so that placing them cannot move the axes.
    """
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    centres = [tuple(to_px((x, y))) for _, x, y in labelled] + [tuple(to_px(p)) for p in others]
    axes_box = ax.get_window_extent(renderer)
    placed: list[Box] = []
    annotations = []
    for i, (text, x, y) in enumerate(labelled):
        own = centres[i]
        rest = [c for c in centres if c != own]
        candidates = []
        for k, offset in enumerate(_OFFSETS):
            box = _measure(ax, text, (x, y), offset, fontsize, renderer)
            candidates.append((_cost(box, own, rest, placed, axes_box), k, offset, box))
        _, _, offset, box = min(candidates)
        annotations.append(_annotate(ax, text, (x, y), offset, fontsize))
        placed.append(box)
    return annotations


def _annotate(ax: Any, text: str, xy: tuple[float, float], offset: tuple[int, int],
              fontsize: float, leader: bool = True) -> Any:
    far = leader and max(abs(offset[0]), abs(offset[1])) >= _LEADER_FROM
    annotation = ax.annotate(
        text, xy, xytext=offset, textcoords="offset points", fontsize=fontsize,
        ha="left" if offset[0] > 0 else "right" if offset[0] < 0 else "center",
        va="bottom" if offset[1] >= 0 else "top",
        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
        arrowprops={"arrowstyle": "-", "color": "0.45", "lw": 0.6} if far else None,
        zorder=4,
    )
    annotation.set_in_layout(False)
    return annotation


def _measure(ax: Any, text: str, xy: tuple[float, float], offset: tuple[int, int],
             fontsize: float, renderer: Any) -> Box:
    # The text alone, without its leader line, is what must not cover anything.
    probe = _annotate(ax, text, xy, offset, fontsize, leader=False)
    extent = probe.get_window_extent(renderer)
    probe.remove()
    # The white box drawn behind the text reaches a little beyond it.
    pad = _BOX_PAD_PX
    return (extent.x0 - pad, extent.y0 - pad, extent.x1 + pad, extent.y1 + pad)


def _cost(box: Box, own: Point, others: Sequence[Point], placed: Sequence[Box],
          axes_box: Any) -> int:
    inside = (axes_box.x0 <= box[0] and box[2] <= axes_box.x1
              and axes_box.y0 <= box[1] and box[3] <= axes_box.y1)
    covered = sum(_overlaps(box, _around(c, _MARKER_HALF_PX)) for c in others)
    # A label nearer another marker than its own reads as that marker's label.
    ambiguous = any(_distance(box, c) < _distance(box, own) for c in others)
    return (100 * sum(_overlaps(box, p) for p in placed) + 10 * (not inside) + 2 * covered
            + ambiguous)


def _around(centre: Point, half: float) -> Box:
    return (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _distance(box: Box, point: Point) -> float:
    dx = max(box[0] - point[0], 0.0, point[0] - box[2])
    dy = max(box[1] - point[1], 0.0, point[1] - box[3])
    return math.hypot(dx, dy)
