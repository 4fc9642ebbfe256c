"""Pens and drawing helpers every panel shares."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtWidgets

PRED_COLOR = (255, 140, 0)
TRUTH_COLOR = (190, 190, 190)
PRED_PEN = pg.mkPen(PRED_COLOR, width=2)
TRUTH_PEN = pg.mkPen(TRUTH_COLOR, width=2)


def set_curve(curve: pg.PlotDataItem, x: np.ndarray, y: np.ndarray) -> None:
    """setData without pyqtgraph's finite scan when the data is finite (the common case); a NaN
    (e.g. a skipped prediction) breaks the line there instead of corrupting the path."""
    finite = bool(np.isfinite(y).all() and np.isfinite(x).all())
    curve.setData(x, y, skipFiniteCheck=finite, connect="all" if finite else "finite")


def cache_axes(p: pg.PlotItem) -> None:
    """Axes re-render their tick text on every repaint unless cached; with ranges that change only
    a few times a second, caching them is most of the frame budget in software rendering."""
    for name in ("left", "bottom", "right", "top"):
        p.getAxis(name).setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)


def fit_range(current: tuple[float, float], lo: float, hi: float, pad: float = 0.1) -> tuple[float, float] | None:
    """A new (low, high) when the data left the current range or uses less than half of it, else
    None, so axes change a few times per minute rather than every frame."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    span = max(hi - lo, 1e-6)
    a, b = current
    if lo < a or hi > b or (hi - lo) < 0.5 * (b - a):
        return lo - pad * span, hi + pad * span
    return None


def with_unit(name: str, unit: str) -> str:
    """An axis label 'name (unit)', or just the name when the stream gives no unit. Units go in the
    text, never through pyqtgraph's `units=` (that adds SI prefixes: 'ms' would become 'mms')."""
    return f"{name} ({unit})" if unit else name


def legend_html() -> str:
    """A one-line legend (predicted / true in their pen colours) shown above the plots, not on them."""
    def swatch(rgb: tuple[int, int, int], text: str) -> str:
        return f"<span style='color:rgb{rgb}'>━━</span> {text}"

    return f"{swatch(PRED_COLOR, 'predicted')} &nbsp;&nbsp; {swatch(TRUTH_COLOR, 'true')}"
