"""Predicted (orange) vs true (grey) over the last seconds: one small plot per output, matched by
channel label, x = time relative to now on the local LSL clock (the gap at the right edge of the
predicted trace is the decoder's latency). The legend is a line above the plots, so it never
hides a trace."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from .common import PRED_PEN, TRUTH_PEN, cache_axes, fit_range, legend_html, set_curve, with_unit


class TracesPanel:
    """The traces column of the window, built once the output labels are known."""

    def __init__(self, view: pg.GraphicsLayoutWidget, window_s: float) -> None:
        self.view = view
        self.window_s = window_s
        self.labels: list[str] = []
        self.units: dict[str, str] = {}
        self.plots: dict[str, pg.PlotItem] = {}
        self.pred: dict[str, pg.PlotDataItem] = {}
        self.truth: dict[str, pg.PlotDataItem] = {}
        self.legend: pg.LabelItem | None = None
        self.view.addLabel("waiting for the decoder and ground-truth streams…")

    def build(self, labels: list[str], units: dict[str, str]) -> None:
        """One plot per output label, x linked; the legend line on top."""
        self.view.clear()
        for d in (self.plots, self.pred, self.truth):
            d.clear()
        self.labels = list(labels)
        self.units = dict(units)
        self.legend = self.view.addLabel(legend_html(), row=0, col=0, size="9pt")
        first: pg.PlotItem | None = None
        for i, label in enumerate(labels):
            p = self.view.addPlot(row=i + 1, col=0)
            p.setXRange(-self.window_s, 0.0, padding=0)
            p.disableAutoRange()
            cache_axes(p)
            p.showGrid(x=True, y=True, alpha=0.2)
            p.setLabel("left", with_unit(label, units.get(label, "")))
            p.setMouseEnabled(x=False, y=True)
            if first is None:
                first = p
            else:
                p.setXLink(first)
            if i < len(labels) - 1:
                p.getAxis("bottom").setStyle(showValues=False)
            else:
                p.setLabel("bottom", "time relative to now (s, local LSL clock)")
            self.truth[label] = p.plot(pen=TRUTH_PEN, name="true")
            self.pred[label] = p.plot(pen=PRED_PEN, name="predicted")
            self.plots[label] = p

    def draw(self, curves: dict[str, pg.PlotDataItem], labels: list[str], t: np.ndarray, x: np.ndarray) -> None:
        """Set each labelled column of x (n, K) against t (s relative to now)."""
        for col, label in enumerate(labels):
            c = curves.get(label)
            if c is not None:
                set_curve(c, t, x[:, col])

    def fit(self, bounds: dict[str, list[float]]) -> None:
        """Fit each output's y range to its (low, high) over the window."""
        for label, (lo, hi) in bounds.items():
            p = self.plots.get(label)
            if p is None:
                continue
            new = fit_range(tuple(p.viewRange()[1]), lo, hi)
            if new is not None:
                p.setYRange(*new, padding=0)
