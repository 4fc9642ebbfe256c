"""The image panel: the live ζ (zeta.py) when the decoder publishes it, else a spike raster
(raster.py). One plot and one ImageItem, re-dressed when the mode changes; pyqtgraph downsamples
the image to the screen's pixels (1024 channels never draw 1024 rows into 300 pixels)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore

from .common import cache_axes

TITLE_AND_AXES_PX = 70  # title, bottom axis and margins of a PlotItem: what an image row count does not set


class ImagePanel:
    def __init__(self, layout: pg.GraphicsLayout, row: int) -> None:
        self.layout = layout
        self.row = row
        self.plot = layout.addPlot(row=row, col=0, title="ζ / spikes: waiting")
        self.item = pg.ImageItem(axisOrder="row-major", autoDownsample=True)
        self.item.setColorMap(pg.colormap.get("viridis"))
        self.plot.addItem(self.item)
        cache_axes(self.plot)
        self.mode = ""  # "zeta" or "raster" once data is shown
        self.shape: tuple[int, int] | None = None
        self.aspect: float | None = None  # rows / columns when the aspect is locked (ζ), else None

    def set_mode(self, mode: str, aspect_locked: bool, xlabel: str, ylabel: str, title: str) -> None:
        """Re-dress the panel when it switches between the ζ image and the spike raster."""
        self.mode = mode
        self.shape = None
        self.plot.setAspectLocked(aspect_locked)
        self.plot.invertY(True)
        self.plot.setLabel("bottom", xlabel)
        self.plot.setLabel("left", ylabel)
        self.plot.setTitle(title)
        if not aspect_locked:
            self.aspect = None
            self.plot.setMinimumHeight(0)
            self.plot.setMaximumHeight(1e6)

    def show(self, img: np.ndarray, levels: tuple[float, float], rect: QtCore.QRectF) -> None:
        self.item.setImage(img, levels=levels, autoLevels=False)
        self.item.setRect(rect)  # after setImage: setRect scales by the current image's size

    def size_to_content(self, rows: int, cols: int) -> None:
        """With the aspect locked, no taller than the image needs at the panel's width: a 6x16 ζ
        does not take a third of the window and leave empty range above and below it."""
        self.aspect = rows / max(cols, 1)
        self.refit()

    def refit(self) -> None:
        """Match the panel's height to its width (called on resize and with each image refresh:
        the axes' widths settle only once tick labels exist)."""
        if self.aspect is None:
            return
        vb = self.plot.vb
        overhead = self.plot.geometry().height() - vb.height()  # title, bottom axis, margins
        if vb.width() < 20 or overhead <= 0:
            overhead = TITLE_AND_AXES_PX
        height = max(vb.width(), 50.0) * self.aspect + overhead
        if abs(height - self.plot.maximumHeight()) > 1.0:
            self.plot.setMinimumHeight(min(height, 0.45 * self.layout.geometry().height()))
            self.plot.setMaximumHeight(height)
