"""Placing D channels on an H x W canvas (DESIGN §1): raster, similarity, or an explicit map.

A layout is an integer array `pixel[d]` = flat pixel index (row * W + col) of channel d.
The step graph scatters with its inverse, `channel_of_pixel`, where -1 marks an empty pixel.
"""

from __future__ import annotations

import math

import numpy as np

LAYOUTS = ("raster", "similarity", "explicit", "map")


def default_canvas(n_channels: int) -> tuple[int, int]:
    """Smallest square with a side that is a multiple of 8 (>= 16) holding every channel."""
    side = max(16, int(math.ceil(math.sqrt(n_channels) / 8.0)) * 8)
    while side * side < n_channels:
        side += 8
    return side, side


def fit_canvas(n_channels: int, multiple: int = 1, max_ratio: float = 1.5) -> tuple[int, int]:
    """Smallest H x W (H <= W, both multiples of `multiple`, W/H <= max_ratio) holding every
    channel, the squarest on ties. A decoder's FC head reads every pixel, so empty pixels cost
    time and parameters: 95 channels fit 8x12 (96 pixels) instead of 16x16 (256)."""
    if n_channels < 1 or multiple < 1:
        raise ValueError(f"need n_channels >= 1 and multiple >= 1, got {n_channels}, {multiple}")
    best: tuple[int, int] | None = None
    h = multiple
    while best is None or h * h <= best[0] * best[1]:
        w = max(h, -(-n_channels // h))
        w = -(-w // multiple) * multiple
        if w <= max_ratio * h and (best is None or (h * w, w - h) < (best[0] * best[1], best[1] - best[0])):
            best = (h, w)
        h += multiple
    return best


def raster_layout(n_channels: int, canvas: tuple[int, int]) -> np.ndarray:
    """Channel d at pixel d, row by row (the thesis's layout)."""
    H, W = canvas
    if n_channels > H * W:
        raise ValueError(f"{n_channels} channels do not fit a {H}x{W} canvas")
    return np.arange(n_channels, dtype=np.int64)


def explicit_layout(rows_cols: np.ndarray, canvas: tuple[int, int]) -> np.ndarray:
    """An electrode map: (D, 2) integer (row, col) per channel, each on its own pixel."""
    rc = np.asarray(rows_cols, dtype=np.int64)
    H, W = canvas
    if rc.ndim != 2 or rc.shape[1] != 2:
        raise ValueError(f"an explicit layout is (D, 2) rows and columns, got shape {rc.shape}")
    if rc.min() < 0 or rc[:, 0].max() >= H or rc[:, 1].max() >= W:
        raise ValueError(f"explicit layout places channels outside the {H}x{W} canvas")
    pix = rc[:, 0] * W + rc[:, 1]
    if np.unique(pix).size != pix.size:
        raise ValueError("explicit layout puts two channels on one pixel")
    return pix


def map_layout(grid, n_channels: int, canvas: tuple[int, int]) -> np.ndarray:
    """An electrode map given as a grid (R rows of C entries): entry = the channel (0-based index
    into the recording's channels) recorded by the electrode at that place, -1 = no electrode or
    not recorded (a Utah array: 10 x 10 with its corners empty). The grid sits centred on the
    canvas, so neighbouring electrodes are neighbouring pixels and a convolution sees cortex."""
    g = np.asarray(grid)
    if g.ndim != 2 or g.size == 0 or not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"an electrode map is a grid of channel numbers (rows of integers), got shape {g.shape}")
    R, C = g.shape
    H, W = canvas
    if R > H or C > W:
        raise ValueError(f"the {R}x{C} electrode map does not fit the {H}x{W} canvas")
    placed = g[g >= 0]
    if placed.size and placed.max() >= n_channels:
        raise ValueError(f"the electrode map names channel {int(placed.max())}, the recording has {n_channels} (0-based)")
    if np.unique(placed).size != placed.size:
        raise ValueError("the electrode map names a channel twice")
    missing = sorted(set(range(n_channels)) - set(placed.tolist()))
    if missing:
        raise ValueError(f"the electrode map places no electrode for channel(s) {missing[:5]}{'...' if len(missing) > 5 else ''}")
    r0, c0 = (H - R) // 2, (W - C) // 2
    rc = np.zeros((n_channels, 2), np.int64)
    for r, c in zip(*np.nonzero(g >= 0)):
        rc[g[r, c]] = (r + r0, c + c0)
    return explicit_layout(rc, canvas)


def utah_grid(n_channels: int = 96, side: int = 10) -> list[list[int]]:
    """Channels 0..n-1 in order on a side x side grid with the four corners empty (a Utah array's
    footprint). Only a stand-in: a real array's wiring comes from its map file (.cmp)."""
    cells = [(r, c) for r in range(side) for c in range(side)
             if (r, c) not in {(0, 0), (0, side - 1), (side - 1, 0), (side - 1, side - 1)}]
    if n_channels > len(cells):
        raise ValueError(f"{n_channels} channels do not fit a {side}x{side} array without corners")
    grid = [[-1] * side for _ in range(side)]
    for ch, (r, c) in zip(range(n_channels), cells):
        grid[r][c] = ch
    return grid


def similarity_layout(counts: np.ndarray, canvas: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Correlated channels near each other: spectral ordering, then a Hilbert-like snake fill.

    Channels are sorted by the 2-D spectral embedding of their correlation matrix (Fiedler
    vectors), then assigned to pixels by solving a linear assignment between the embedding
    (scaled to the canvas) and the pixel grid, so neighbours in correlation are neighbours on
    the canvas. Deterministic for a given input.
    """
    from scipy.optimize import linear_sum_assignment

    x = np.asarray(counts, dtype=np.float64)
    D = x.shape[1]
    H, W = canvas
    if D > H * W:
        raise ValueError(f"{D} channels do not fit a {H}x{W} canvas")
    x = x - x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd == 0] = 1.0
    c = (x / sd).T @ (x / sd) / max(1, x.shape[0])
    a = np.clip(c, 0, None)
    np.fill_diagonal(a, 0)
    deg = a.sum(axis=1) + 1e-9
    lap = np.eye(D) - a / np.sqrt(np.outer(deg, deg))
    _, vecs = np.linalg.eigh(lap)
    emb = vecs[:, 1:3] if D >= 3 else np.zeros((D, 2))
    for j in range(emb.shape[1]):
        if emb[np.argmax(np.abs(emb[:, j])), j] < 0:
            emb[:, j] = -emb[:, j]
    side = int(math.ceil(math.sqrt(D)))
    rows = int(math.ceil(D / side))
    rows, cols = min(rows, H), min(max(side, int(math.ceil(D / min(rows, H)))), W)
    r0, c0 = (H - rows) // 2, (W - cols) // 2
    grid = np.array([(r, cc) for r in range(rows) for cc in range(cols)], dtype=np.float64)
    e = emb.copy()
    for j in range(2):
        lo, hi = e[:, j].min(), e[:, j].max()
        e[:, j] = (e[:, j] - lo) / (hi - lo + 1e-12)
    target = np.stack([e[:, 0] * (rows - 1), e[:, 1] * (cols - 1)], axis=1)
    cost = ((target[:, None, :] - grid[None, :, :]) ** 2).sum(axis=2)
    ri, ci = linear_sum_assignment(cost)
    pix = np.empty(D, dtype=np.int64)
    g = grid[ci].astype(np.int64)
    pix[ri] = (g[:, 0] + r0) * W + (g[:, 1] + c0)
    return pix


def channel_of_pixel(pixel: np.ndarray, canvas: tuple[int, int]) -> np.ndarray:
    """Inverse map: for each flat pixel, the channel on it, or -1."""
    H, W = canvas
    inv = np.full(H * W, -1, dtype=np.int64)
    inv[np.asarray(pixel, dtype=np.int64)] = np.arange(len(pixel))
    return inv


def to_canvas(values: np.ndarray, pixel: np.ndarray, canvas: tuple[int, int]) -> np.ndarray:
    """(..., D) -> (..., H, W), zeros on empty pixels."""
    H, W = canvas
    v = np.asarray(values)
    out = np.zeros(v.shape[:-1] + (H * W,), dtype=v.dtype)
    out[..., np.asarray(pixel, dtype=np.int64)] = v
    return out.reshape(v.shape[:-1] + (H, W))


def from_canvas(image: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """(..., H, W) -> (..., D): the value at each channel's pixel."""
    im = np.asarray(image)
    flat = im.reshape(im.shape[:-2] + (-1,))
    return flat[..., np.asarray(pixel, dtype=np.int64)]


def mean_neighbour_distance(pixel: np.ndarray, canvas: tuple[int, int], pairs: np.ndarray) -> float:
    """Mean Euclidean canvas distance over channel pairs (P, 2): how close a layout keeps them."""
    W = canvas[1]
    p = np.asarray(pixel)
    r, c = p // W, p % W
    a, b = pairs[:, 0], pairs[:, 1]
    return float(np.mean(np.hypot(r[a] - r[b], c[a] - c[b])))
