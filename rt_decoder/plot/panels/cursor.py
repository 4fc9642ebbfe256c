"""2-D cursor view: predicted vs true position (pos_x/pos_y, else the first two outputs), with
short trails and the last window's true path; aspect locked, so distances look like distances."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from .common import PRED_COLOR, PRED_PEN, TRUTH_COLOR, TRUTH_PEN, fit_range, set_curve, with_unit


class CursorPanel:
    def __init__(self, layout: pg.GraphicsLayout, row: int) -> None:
        self.plot = layout.addPlot(row=row, col=0, title="position: predicted (orange) vs true (grey)")
        self.plot.setAspectLocked(True)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.truth_path = self.plot.plot(pen=pg.mkPen((110, 110, 110), width=1))
        self.truth_trail = self.plot.plot(pen=TRUTH_PEN)
        self.pred_trail = self.plot.plot(pen=PRED_PEN)
        self.truth_head = self.plot.plot(pen=None, symbol="o", symbolSize=14, symbolBrush=TRUTH_COLOR, symbolPen=None)
        self.pred_head = self.plot.plot(pen=None, symbol="o", symbolSize=14, symbolBrush=PRED_COLOR, symbolPen=None)
        self.axes: tuple[str, str] | None = None
        self._req = ((0.0, 0.0), (0.0, 0.0))

    def draw_trail(self, role: str, xy: np.ndarray) -> None:
        """The last trail_s seconds of (n, 2) positions for 'decoder' or 'truth', head at the newest."""
        trail, head = (self.pred_trail, self.pred_head) if role == "decoder" else (self.truth_trail, self.truth_head)
        set_curve(trail, xy[:, 0], xy[:, 1])
        head.setData(xy[-1:, 0], xy[-1:, 1])

    def draw_path(self, xy: np.ndarray) -> None:
        set_curve(self.truth_path, xy[:, 0], xy[:, 1])

    def fit(self, lo: np.ndarray, hi: np.ndarray) -> None:
        """Fit the view to positions spanning lo..hi (a few times a second, not per frame)."""
        (xa, xb), (ya, yb) = self._req
        nx = fit_range((xa, xb), lo[0], hi[0], pad=0.08)
        ny = fit_range((ya, yb), lo[1], hi[1], pad=0.08)
        if nx is not None or ny is not None:
            self._req = (nx or (xa, xb), ny or (ya, yb))
            self.plot.setRange(xRange=self._req[0], yRange=self._req[1], padding=0)

    def set_axes(self, x: tuple[str, str], y: tuple[str, str]) -> None:
        """Axis labels from the (label, unit) of the two position outputs."""
        if self.axes != (x, y):
            self.axes = (x, y)
            self.plot.setLabel("bottom", with_unit(*x))
            self.plot.setLabel("left", with_unit(*y))
