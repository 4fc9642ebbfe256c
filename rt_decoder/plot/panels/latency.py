"""Latency histogram from the DecoderStats stream, with p50/p99 lines and miss/skip/gap counts.

The axis is in ms with pyqtgraph's SI prefixing off: latencies are already in ms, and auto-prefix
would label 0.5 ms values "500 (mms)"."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore

BAR = (80, 140, 255)


def fmt_ms(v: float) -> str:
    return "–" if not np.isfinite(v) else f"{v:.2f} ms"


class LatencyPanel:
    def __init__(self, layout: pg.GraphicsLayout, row: int) -> None:
        self.plot = layout.addPlot(row=row, col=0, title="latency: no stats yet")
        self.plot.setLabel("bottom", "latency (ms)")
        self.plot.setLabel("left", "bins")
        for name in ("bottom", "left"):
            self.plot.getAxis(name).enableAutoSIPrefix(False)
        self.curve = self.plot.plot(stepMode="center", fillLevel=0, brush=(*BAR, 150), pen=pg.mkPen(BAR))
        self.p50 = pg.InfiniteLine(angle=90, pen=pg.mkPen((255, 255, 255), style=QtCore.Qt.PenStyle.DashLine))
        self.p99 = pg.InfiniteLine(angle=90, pen=pg.mkPen((255, 80, 80), style=QtCore.Qt.PenStyle.DashLine))
        for line in (self.p50, self.p99):
            line.setVisible(False)
            self.plot.addItem(line)

    def no_column(self, stream: str) -> None:
        self.plot.setTitle(f"latency: {stream} has no latency_ms channel")

    def draw(self, lat: np.ndarray, s: dict) -> None:
        """Histogram of latencies (ms) and the summary s (p50, p99, counts)."""
        top = max(float(np.percentile(lat, 99.9)) * 1.1, 1e-3)
        counts, edges = np.histogram(np.clip(lat, 0, top), bins=40, range=(0, top))
        self.curve.setData(edges, counts)
        self.p50.setValue(s["p50"])
        self.p99.setValue(s["p99"])
        self.p50.setVisible(True)
        self.p99.setVisible(True)
        self.plot.setTitle(
            f"latency p50 {fmt_ms(s['p50'])} (white) · p99 {fmt_ms(s['p99'])} (red)<br>"
            f"misses {s['deadline_miss']} · skipped {s['skipped']} · gaps {s['gap_bins']} of {s['bins']} bins")
