"""Quantization and retention: zeta_k = gamma * zeta_{k-1} + (1 - gamma) * q(x_k), zeta_0 = 0.

The one numpy home of this math. Training has a differentiable twin (training/retention.py),
the ONNX step graph has a third (rt_decoder/step_graph.py); tests pin all three together.
With gamma = 1/M and M-level quantization, zeta is the base-M expansion of the whole history
(thesis eq. 3.9/3.10).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.signal import lfilter

QUANTIZERS = ("binary", "levels", "learned")


def quantize(x: np.ndarray, levels: int = 2, kind: str = "binary") -> np.ndarray:
    """Map counts to [0, 1]: binary [x > 0], or min(x, M-1)/(M-1) with M = `levels`.

    The learned quantizer (thesis eq. 3.1) has trainable weights and lives in training/; its
    exported form runs inside the ONNX graph.
    """
    x = np.asarray(x)
    if kind == "binary" or (kind == "levels" and levels == 2):
        return (x > 0).astype(np.float64)
    if kind == "levels":
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        return np.minimum(np.maximum(x, 0), levels - 1).astype(np.float64) / (levels - 1)
    raise ValueError(f"quantizer {kind!r} has no numpy form here (choose from binary, levels)")


AUTO_LEVELS = (4, 8)          # retention.levels: auto picks one of these
AUTO_MAX_CLIPPED = 0.01       # ... the larger when the smaller would clip more than this fraction of the spikes


def clipped_fraction(counts: np.ndarray, levels: int) -> float:
    """The fraction of spikes that `levels`-level quantization discards (counts above levels - 1)."""
    x = np.maximum(np.asarray(counts, dtype=np.float64), 0)
    total = x.sum()
    return float(np.maximum(x - (levels - 1), 0).sum() / total) if total > 0 else 0.0


def auto_levels(counts: np.ndarray) -> int:
    """4 levels (counts 0..3, each spike worth 1/3), or 8 where clipping at 3 would discard more than
    1% of the spikes. 50 ms threshold crossings lose 10-21% at 4 levels (chestek, limblab) and
    decode better at 8; sparse data (5 ms bins, calcium events) lose none, and at 8 levels each spike
    is worth 1/7 instead of 1/3, which broke mc_maze_small (README "Ablations")."""
    lo, hi = AUTO_LEVELS
    return hi if clipped_fraction(counts, lo) > AUTO_MAX_CLIPPED else lo


def as_decays(decays: float | Sequence[float]) -> np.ndarray:
    """Validate decay factors gamma in [0, 1); one image channel per decay."""
    g = np.atleast_1d(np.asarray(decays, dtype=np.float64))
    if g.ndim != 1 or g.size == 0 or np.any(g < 0) or np.any(g >= 1):
        raise ValueError(f"decays must be a non-empty list of numbers in [0, 1), got {decays!r}")
    return g


def retention_step(zeta: np.ndarray, q: np.ndarray, decays: Sequence[float]) -> np.ndarray:
    """One recurrent step. zeta: (S, ...) one slice per decay; q: (...) broadcast over S."""
    g = as_decays(decays).reshape((-1,) + (1,) * (np.ndim(zeta) - 1))
    return g * zeta + (1.0 - g) * q


def retention_parallel(q: np.ndarray, decays: Sequence[float]) -> np.ndarray:
    """Whole-array form: (T, ...) -> (T, S, ...), zeta_k for every k (a causal exponential filter)."""
    g = as_decays(decays)
    q = np.asarray(q, dtype=np.float64)
    out = np.empty((q.shape[0], g.size) + q.shape[1:], dtype=np.float64)
    for s, gamma in enumerate(g):
        out[:, s] = lfilter([1.0 - gamma], [1.0, -gamma], q, axis=0)
    return out


def retention_parallel_f32(q: np.ndarray, decays: Sequence[float]) -> np.ndarray:
    """float32 recurrence over a whole array, bit-for-bit what a float32 step graph computes."""
    g = as_decays(decays).astype(np.float32)
    q = np.asarray(q, dtype=np.float32)
    out = np.empty((q.shape[0], g.size) + q.shape[1:], dtype=np.float32)
    z = np.zeros((g.size,) + q.shape[1:], dtype=np.float32)
    gs = g.reshape((-1,) + (1,) * (q.ndim - 1))
    one_minus = (np.float32(1) - g).reshape(gs.shape)
    for k in range(q.shape[0]):
        z = gs * z + one_minus * q[k]
        out[k] = z
    return out


def shift_for_lag(z: np.ndarray, lag_bins: int) -> np.ndarray:
    """Features for y_k under `lag_bins`: zeta built from bins <= k - lag (zeros before the start)."""
    if lag_bins <= 0:
        return z
    out = np.zeros_like(z)
    out[lag_bins:] = z[:-lag_bins]
    return out


def decode_history(zeta: np.ndarray, levels: int, n_bins: int) -> np.ndarray:
    """Recover the last `n_bins` quantized levels from zeta built with gamma = 1/M (thesis eq. 3.10).

    zeta = (1 - 1/M) * sum_j M^-j q_{k-j}, q in {0, 1/(M-1), ..., 1}; returns digits (n_bins, ...)
    with digits[0] the newest bin. Exact while the history fits the mantissa (52 binary bins in
    float64, 24 in float32); older bins are rounded away and can carry into the digits.
    """
    M = levels
    scaled = np.asarray(zeta, dtype=np.float64) * float(M) ** n_bins  # sum_j d_j M^(n-1-j) + tail
    exact = M & (M - 1) == 0  # gamma = 1/M is exact in binary floating point
    slack = 0.0 if exact else 8 * n_bins * np.finfo(np.float64).eps * float(M) ** n_bins
    number = np.floor(scaled + slack).astype(np.int64)
    digits = []
    for _ in range(n_bins):
        number, d = np.divmod(number, M)
        digits.append(d)
    return np.stack(digits[::-1])
