"""The live ζ image (first decay) from a Zeta stream, cropped to the canvas pixels that channels
occupy: 96 channels on a 16x16 canvas fill six rows, and the ten empty ones are not drawn."""

from __future__ import annotations

import numpy as np
from pyqtgraph.Qt import QtCore

from ..streams import StreamWatcher
from .image import ImagePanel


def canvas_shape(meta, n: int) -> tuple[int, int]:
    """(H, W) from the stream's desc canvas_h/canvas_w, else square, else one row."""
    try:
        h, w = int(meta.desc["canvas_h"]), int(meta.desc["canvas_w"])
    except (KeyError, ValueError):
        h = w = int(round(np.sqrt(n)))
    return (h, w) if h * w == n else (1, n)


def occupied_box(seen: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns spanning every pixel ever non-zero (channels sit there; empty pixels stay 0)."""
    rows, cols = np.flatnonzero(seen.any(axis=1)), np.flatnonzero(seen.any(axis=0))
    if not len(rows):
        return slice(0, seen.shape[0]), slice(0, seen.shape[1])
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


class ZetaView:
    def __init__(self, panel: ImagePanel) -> None:
        self.panel = panel
        self.seen: np.ndarray | None = None
        self.box: tuple[slice, slice] | None = None

    def draw(self, z: StreamWatcher) -> None:
        h, w = canvas_shape(z.meta, z.meta.channel_count)
        img = z.buffer.last(1)[1][0].reshape(h, w)
        p = self.panel
        if p.mode != "zeta" or self.seen is None or self.seen.shape != (h, w):
            p.set_mode("zeta", True, "canvas column", "canvas row", f"ζ (first decay) · {h}×{w} canvas")
            self.seen = np.zeros((h, w), bool)
            self.box = None
        self.seen |= img > 0
        box = occupied_box(self.seen)
        crop = img[box]
        top = float(np.max(crop)) if crop.size else 1.0  # ζ is in [0, 1] but mostly small: use the range
        rows, cols = box[0].stop - box[0].start, box[1].stop - box[1].start
        p.show(crop, (0.0, max(top, 0.05)), QtCore.QRectF(box[1].start, box[0].start, cols, rows))
        if box != self.box:
            self.box = box
            p.plot.setTitle(f"ζ (first decay) · rows {box[0].start}–{box[0].stop - 1} of the {h}×{w} canvas")
            p.plot.setRange(xRange=(box[1].start, box[1].stop), yRange=(box[0].start, box[0].stop), padding=0.02)
            p.size_to_content(rows, cols)
        else:
            p.refit()
