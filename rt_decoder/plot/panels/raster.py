"""A spike raster of the last seconds from the replay's SpikeCounts/SpikeEvents stream, shown in
the image panel when there is no ζ stream (the image itself: plot/raster.py, numpy only)."""

from __future__ import annotations

import numpy as np
from pyqtgraph.Qt import QtCore

from ..raster import raster_image
from ..streams import StreamWatcher
from .image import ImagePanel


class RasterView:
    def __init__(self, panel: ImagePanel, window_s: float) -> None:
        self.panel = panel
        self.window_s = window_s

    def draw(self, sp: StreamWatcher, now: float) -> None:
        p = self.panel
        ts, x = sp.buffer.since(now - self.window_s)
        img, t0, colw = raster_image(ts, x, sp.meta, now, self.window_s)
        ncols, d = img.shape
        if p.shape is not None and p.mode == "raster" and p.shape[1] != d:
            p.mode = ""  # channel count changed (events): redo the axes
        if p.mode != "raster":
            p.set_mode("raster", False, "time relative to now (s)", "channel", f"spikes · {d} channels (no ζ stream)")
            p.plot.setRange(xRange=(-self.window_s, 0), yRange=(0, d), padding=0)
            p.shape = (ncols, d)
        p.show(img.T, (0.0, max(1.0, float(np.percentile(img, 99)))), QtCore.QRectF(t0 - now, 0, ncols * colw, d))
