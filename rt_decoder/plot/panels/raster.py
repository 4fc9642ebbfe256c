"""A spike raster of the last seconds from the replay's SpikeCounts/SpikeEvents stream, shown in
the image panel when there is no ζ stream (the image itself: plot/raster.py, numpy only).

More channels than MAX_ROWS are summed in groups of neighbours before drawing: a panel a few
hundred pixels tall cannot show 1024 rows, and uploading them 4 times a second costs frames."""

from __future__ import annotations

import numpy as np
from pyqtgraph.Qt import QtCore

from ..raster import raster_image
from ..streams import StreamWatcher
from .image import ImagePanel

MAX_ROWS = 256


def group_channels(img: np.ndarray, max_rows: int = MAX_ROWS) -> tuple[np.ndarray, int]:
    """(n_cols, D) counts -> (n_cols, ceil(D / g)) summed over g neighbouring channels, and g."""
    d = img.shape[1]
    g = max(1, int(np.ceil(d / max_rows)))
    if g == 1:
        return img, 1
    pad = (-d) % g
    if pad:
        img = np.concatenate([img, np.zeros((img.shape[0], pad), img.dtype)], axis=1)
    return img.reshape(img.shape[0], -1, g).sum(axis=2), g


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
        shown, g = group_channels(img)
        if p.mode != "raster":
            per_row = f", {g} per row" if g > 1 else ""
            p.set_mode("raster", False, "time relative to now (s)", "channel",
                       f"spikes · {d} channels{per_row} (no ζ stream)")
            p.plot.setRange(xRange=(-self.window_s, 0), yRange=(0, d), padding=0)
            p.shape = (ncols, d)
        top = max(1.0, float(np.percentile(shown[:: max(1, ncols // 100)], 99)))
        p.show(shown.T, (0.0, top), QtCore.QRectF(t0 - now, 0, ncols * colw, d))
