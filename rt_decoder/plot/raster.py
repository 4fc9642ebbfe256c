"""A spike raster image from a SpikeCounts or SpikeEvents stream's recent samples (numpy, no Qt)."""

from __future__ import annotations

import numpy as np

from .streams import StreamMeta


def is_events(meta: StreamMeta) -> bool:
    """SpikeEvents: irregular rate, one sample per spike carrying the channel index (DESIGN §5)."""
    return meta.type == "SpikeEvents" or (meta.nominal_srate == 0 and meta.channel_count <= 2)


def event_channels(meta: StreamMeta, x: np.ndarray) -> int:
    """How many channels an events stream spans: desc n_channels, else the largest index seen + 1."""
    try:
        return max(1, int(meta.desc["n_channels"]))
    except (KeyError, ValueError):
        return int(np.nanmax(x[:, 0])) + 1 if len(x) else 1


def raster_image(ts: np.ndarray, x: np.ndarray, meta: StreamMeta, now: float, window_s: float,
                 max_cols: int = 500) -> tuple[np.ndarray, float, float]:
    """Spike counts per (time column, channel) over [now - window_s, now].

    Returns (image (n_cols, channels), t_start, column width in s). Columns are one source sample
    wide, or window_s / max_cols when the stream is faster (e.g. 1 kHz sub-bins) or irregular.
    """
    rate = meta.nominal_srate
    colw = max(1.0 / rate, window_s / max_cols) if rate > 0 else window_s / max_cols
    ncols = max(1, int(np.ceil(window_s / colw)))
    t0 = now - ncols * colw
    events = is_events(meta)
    d = event_channels(meta, x) if events else x.shape[1]
    img = np.zeros((ncols, d), dtype=np.float32)
    if len(ts) == 0:
        return img, t0, colw
    pos = (np.asarray(ts) - t0) / colw
    # an event at t falls in the column holding t; a counts sample stamped with its bin's end t
    # covers (t - bin, t], i.e. the column that ends at t
    col = (np.floor(pos) if events else np.ceil(pos - 1e-6) - 1).astype(np.int64)
    keep = (col >= 0) & (col < ncols)
    if events:
        ch = x[keep, 0].astype(np.int64)
        col = col[keep]
        ok = (ch >= 0) & (ch < d)
        flat = np.bincount(col[ok] * d + ch[ok], minlength=ncols * d)
        return flat.reshape(ncols, d).astype(np.float32), t0, colw
    col, xk = col[keep], x[keep]
    if len(col):
        u, starts = np.unique(col, return_index=True)
        img[u] = np.add.reduceat(xk, starts, axis=0)
    return img, t0, colw
