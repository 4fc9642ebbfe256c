"""From a recording to training tensors: split, layout, quantize, zeta (numpy), targets.

Offline mode (thesis algorithm 2) precomputes zeta over the whole recording with the numpy
functions in rt_decoder.retention (float32, bit-for-bit the step graph's recurrence), so
training and the exported graph see the same features. Online mode keeps raw counts and lets
training/retention.py build zeta with gradients (learned quantizer, thesis algorithm 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rt_decoder.errors import DataError, where
from rt_decoder.layout import map_layout, raster_layout, similarity_layout
from rt_decoder.recording import Recording, split_bounds
from rt_decoder.retention import (
    auto_levels,
    clipped_fraction,
    quantize,
    retention_parallel_f32,
    shift_for_lag,
)

from .config import canvas_for

MIN_BINS = {"train": 200, "val": 20, "test": 20}


@dataclass
class Prepared:
    """Everything training and export need, derived once from the recording and the config."""

    rec: Recording
    split: dict[str, tuple[int, int]]
    canvas: tuple[int, int]
    pixels: np.ndarray          # (D,) flat pixel per channel
    decays: list[float]
    q: np.ndarray | None        # (T, D) float32 quantized counts (fixed quantizers)
    feats: np.ndarray | None    # (T, S, D) float32 zeta per channel, already shifted for lag
    target: np.ndarray          # (T, K) float32 normalized behaviour (NaN kept) or (T, D) next-bin counts
    valid: np.ndarray           # (T,) rows usable for training/validation
    out_mean: np.ndarray
    out_std: np.ndarray
    nan_rows: int               # behaviour rows with NaN, excluded from the loss and counted
    layout: str = "raster"      # the layout used (auto resolved to map or similarity)
    base: object = None         # model.glm_base: the fitted GLM (rt_decoder.glm.GLMParams)
    base_eta: np.ndarray | None = None   # (T, D) float32 its log-rate for bin k+1 from the counts up to bin k

    @property
    def n_outputs(self) -> int:
        return int(self.target.shape[1])


def check_lengths(rec: Recording, split: dict[str, tuple[int, int]]) -> None:
    for name, (a, b) in split.items():
        if b - a < MIN_BINS[name]:
            need = max(int(np.ceil(MIN_BINS[k] / f)) for k, f in (("train", 0.7), ("val", 0.1), ("test", 0.2)))
            raise DataError(where(rec.source, f"{rec.n_bins} bins are too few to train: the {name} block has {b - a} "
                                              f"bins, needs >= {MIN_BINS[name]} (about {need} bins in all)"))


def resolve_levels(cfg: dict, rec: Recording, log=None, split: dict | None = None) -> dict:
    """The config with retention.levels: auto replaced by a number chosen on the training block
    (rt_decoder.retention.auto_levels), so the step graph, card and metrics.json hold the number."""
    r = cfg["retention"]
    if r["levels"] != "auto":
        return cfg
    a, b = (split or split_bounds(rec.n_bins, cfg["split"]["val"], cfg["split"]["test"]))["train"]
    levels = auto_levels(rec.counts[a:b])
    if log is not None:
        log(f"retention.levels auto: {levels} (4 levels would clip {clipped_fraction(rec.counts[a:b], 4):.1%} "
            "of the training block's spikes)")
    return {**cfg, "retention": {**r, "levels": levels}}


def prepare(rec: Recording, cfg: dict, split: dict[str, tuple[int, int]] | None = None) -> Prepared:
    """Split, lay out, quantize, precompute zeta, normalize targets (train-block statistics).

    split: explicit {"train", "val", "test"} bin ranges (calibration blocks); default: the config's fractions."""
    rec.validate()
    kind = cfg["kind"]
    if kind == "decoder" and rec.behavior is None:
        raise DataError(where(rec.source, "has no behaviour to decode (a decoder config needs 'behavior')"))
    T, D = rec.counts.shape
    if split is None:
        split = split_bounds(T, cfg["split"]["val"], cfg["split"]["test"])
    check_lengths(rec, split)
    rcfg = cfg["retention"]
    if rcfg["levels"] == "auto":
        raise ValueError("retention.levels is auto: resolve_levels(cfg, rec) picks the number before prepare")
    canvas = canvas_for(cfg, D)
    if canvas[0] * canvas[1] < D:
        raise DataError(where(rec.source, f"{D} channels do not fit the configured canvas {canvas[0]}x{canvas[1]}"))
    t1 = split["train"][1]
    layout = rcfg["layout"]
    if layout == "auto":
        layout = "map" if rcfg["map"] is not None else "similarity"
    if layout == "similarity":
        pixels = similarity_layout(rec.counts[:t1], canvas)
    elif layout == "map":
        try:
            pixels = map_layout(rcfg["map"], D, canvas)
        except ValueError as e:
            raise DataError(where(rec.source, f"retention.map: {e}")) from None
    else:
        pixels = raster_layout(D, canvas)
    decays = [float(g) for g in rcfg["decays"]]
    q = feats = None
    if rcfg["quantizer"] != "learned":
        q = quantize(rec.counts, levels=rcfg["levels"], kind=rcfg["quantizer"]).astype(np.float32)
        z = retention_parallel_f32(q, decays)                         # (T, S, D)
        feats = shift_for_lag(z, cfg["lag_bins"]) if kind == "decoder" else z
    valid = np.ones(T, bool)
    nan_rows = 0
    if kind == "decoder":
        y = rec.behavior.astype(np.float64)
        finite = np.isfinite(y)
        nan_rows = int((~finite.all(axis=1)).sum())
        valid = finite.any(axis=1)
        ytr = y[:t1][valid[:t1]]
        if ytr.shape[0] == 0:
            raise DataError(where(rec.source, "every behaviour row in the training block is NaN"))
        mean = np.nanmean(ytr, axis=0)
        std = np.nanstd(ytr, axis=0)
        std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        target = ((y - mean) / std).astype(np.float32)
    else:
        mean = np.zeros(D)
        std = np.ones(D)
        target = np.zeros_like(rec.counts, dtype=np.float32)
        target[:-1] = rec.counts[1:]                                   # zeta up to bin k -> spikes of bin k+1
        valid[-1] = False
    return Prepared(rec=rec, split=split, canvas=canvas, pixels=np.asarray(pixels, np.int64), decays=decays,
                    q=q, feats=feats, target=target, valid=valid, out_mean=mean, out_std=std, nan_rows=nan_rows,
                    layout=layout)
