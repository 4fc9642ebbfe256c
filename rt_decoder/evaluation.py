"""Offline evaluation of an exported step graph: the numbers a streaming user will see.

Stable entry point (the trainer calls it to write metrics.json, DESIGN §7):

    evaluate_decoder(model, rec, split="test", split_bounds=None, ...) -> dict

The ONNX graph is run bin by bin through `StepModel` over the chosen block only, starting
from the reset state at the block's first bin: that is what a user who starts streaming at
that point sees (warm-up transient included; nothing leaks from the training block into the
state). Decoders are scored per output (R2, RMSE, Pearson r) against the recording's
behaviour columns matched *by name*; generative models by held-out log-likelihood and bits
per spike (Neural Latents Benchmark definition).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import DataError, where
from .metrics import all_metrics, idle_floor, tail_metrics
from .recording import Recording
from .recording import split_bounds as default_split
from .step_model import StepModel

SPLITS = ("train", "val", "test", "all")
P_CLIP = 1e-6


def resolve_bounds(n_bins: int, split_bounds: dict | None = None, val: float = 0.1, test: float = 0.2,
                   source: str = "<recording>") -> dict[str, list[int]]:
    """{"train": [a, b], "val": [b, c], "test": [c, T]} as lists (JSON), defaults from recording.split_bounds."""
    b = default_split(n_bins, val=val, test=test) if split_bounds is None else split_bounds
    out = {k: [int(v[0]), int(v[1])] for k, v in dict(b).items()}
    for k, (lo, hi) in out.items():
        if not (0 <= lo <= hi <= n_bins):
            raise DataError(where(source, f"split block {k!r} = [{lo}, {hi}) is outside the recording's {n_bins} bins"))
    return out


def card_split(card, rec: Recording) -> dict[str, list[int]] | None:
    """The split the model was trained with, when `rec` is the very recording it was trained on
    (same fingerprint): evaluating on it then scores exactly the held-out block of metrics.json."""
    split = (card.extra or {}).get("split")
    if not split or not card.data_sha256 or card.data_sha256 != rec.fingerprint():
        return None
    try:
        return resolve_bounds(rec.n_bins, split, source=rec.source)
    except (DataError, TypeError, ValueError, IndexError):
        return None


def check_compatible(model: StepModel, rec: Recording) -> None:
    """Channel count and bin width must match the model card (DataError naming both files)."""
    card = model.card
    if rec.n_channels != card.n_channels:
        raise DataError(where(rec.source, f"has {rec.n_channels} channels, the model {model.path.name} expects {card.n_channels}"))
    if abs(rec.bin_s - card.bin_s) > 1e-9 * max(1.0, card.bin_s):
        hint = ""
        ratio = card.bin_s / rec.bin_s
        if ratio > 1 and abs(ratio - round(ratio)) < 1e-6:
            hint = f" (re-bin with --bin-ms {card.bin_s * 1000:g})"
        raise DataError(where(rec.source, f"has {rec.bin_s * 1000:g} ms bins, the model {model.path.name} "
                                          f"was trained on {card.bin_s * 1000:g} ms bins{hint}"))


def _block_header(m: StepModel, bounds: dict, split: str, lo: int, hi: int) -> dict:
    """What every evaluation states: outputs, bin width, lag, and which bins were scored."""
    return {"outputs": list(m.card.outputs), "bin_s": float(m.card.bin_s), "lag_bins": int(m.card.lag_bins),
            "split": bounds, "block": split, "range": [lo, hi], "n_bins": int(hi - lo),
            "model_type": m.card.model_type}


def _open(model: StepModel | str | Path) -> StepModel:
    return model if isinstance(model, StepModel) else StepModel(model)


def evaluate_decoder(
    model: StepModel | str | Path,
    rec: Recording,
    split: str = "test",
    split_bounds: dict | None = None,
    return_predictions: bool = False,
    progress: bool = False,
) -> dict:
    """Run `model` bin by bin over one block of `rec` (reset at the block start) and score it.

    split: "train", "val", "test" or "all"; split_bounds: {"train": (a, b), "val": ..., "test": ...}
    (default: recording.split_bounds, test = last 20%). Returns
        {"outputs", "bin_s", "lag_bins", "split": {bounds}, "block", "range", "n_bins",
         "nan_rows_excluded", "model": {"r2": [...], "rmse": [...], "corr": [...], "tail": {...}}}
    ("tail": metrics.tail_metrics, the bins far outside the training block's behaviour).
    For a generative model "model" holds log-likelihoods and bits per spike instead (see
    `evaluate_generative`). return_predictions adds "predictions" (and "truth") arrays.
    """
    m = _open(model)
    if split not in SPLITS:
        raise DataError(where(rec.source, f"unknown split {split!r}; choose from {', '.join(SPLITS)}"))
    check_compatible(m, rec)
    bounds = resolve_bounds(rec.n_bins, split_bounds, source=rec.source)
    lo, hi = (0, rec.n_bins) if split == "all" else bounds[split]
    if hi - lo < 2:
        raise DataError(where(rec.source, f"the {split} block [{lo}, {hi}) has fewer than 2 bins"))
    if m.card.kind == "generative":
        return evaluate_generative(m, rec, split, bounds, (lo, hi), return_predictions, progress)
    if rec.behavior is None:
        raise DataError(where(rec.source, "has no behaviour to score the decoder against"))
    names = list(rec.behavior_names)
    missing = [o for o in m.card.outputs if o not in names]
    if missing:
        raise DataError(where(rec.source, f"has no behaviour column(s) {', '.join(missing)} that the model "
                                          f"{m.path.name} predicts (it has {', '.join(names)})"))
    cols = [names.index(o) for o in m.card.outputs]
    y = rec.behavior[lo:hi][:, cols]
    m.reset()
    pred = m.run(rec.counts[lo:hi], progress=progress)
    bad = ~np.all(np.isfinite(y), axis=1)
    if bad.all():
        raise DataError(where(rec.source, f"every behaviour row of the {split} block is NaN"))
    train_y = rec.behavior[slice(*bounds["train"])][:, cols]
    out = _block_header(m, bounds, split, lo, hi) | {
        "units": list(m.card.units),
        "nan_rows_excluded": int(bad.sum()),
        "model": all_metrics(y[~bad], pred[~bad], idle_floor(train_y)) | {"tail": tail_metrics(y[~bad], pred[~bad], train_y, rec.counts[lo:hi][~bad])},
    }
    if return_predictions:
        out["predictions"] = pred
        out["truth"] = y
    return out


def evaluate_baselines(rec: Recording, bounds: dict, lag_bins: int, folder: str | Path, split: str = "test",
                       taps: int = 10, progress: bool = False, run_id: str = "",
                       names: tuple[str, ...] = ("wiener", "kalman")) -> dict[str, dict]:
    """Fit Wiener and Kalman (or the subset `names`) on rec's train/val blocks, save
    FOLDER/<name>.onnx, and score each step graph on `split` exactly as a trained model is
    scored: {name: evaluate_decoder result}. run_id: the training run these baselines belong
    to (stored in their cards)."""
    from .baselines import fit_baselines
    from .step_graph import save

    out = {}
    for name, m in fit_baselines(rec, bounds, lag_bins=lag_bins, taps=taps, run_id=run_id, names=names).items():
        path = Path(folder) / f"{name}.onnx"
        save(m, path)
        out[name] = evaluate_decoder(path, rec, split, bounds, progress=progress)
    return out


def log_likelihood(counts: np.ndarray, pred: np.ndarray, likelihood: str) -> np.ndarray:
    """Per-entry log-likelihood of counts under predicted probabilities (Bernoulli on x > 0) or rates (Poisson)."""
    x = np.asarray(counts, np.float64)
    p = np.asarray(pred, np.float64)
    if likelihood == "poisson":
        from scipy.special import gammaln

        r = np.maximum(p, P_CLIP)
        return x * np.log(r) - r - gammaln(x + 1)
    s = (x > 0).astype(np.float64)
    p = np.clip(p, P_CLIP, 1 - P_CLIP)
    return s * np.log(p) + (1 - s) * np.log1p(-p)


def constant_rate(train_counts: np.ndarray, likelihood: str) -> np.ndarray:
    """The per-neuron constant model fit on the training block: P(spike) or mean count."""
    x = np.asarray(train_counts, np.float64)
    return (x > 0).mean(axis=0) if likelihood != "poisson" else x.mean(axis=0)


def bits_per_spike(ll_model: float, ll_const: float, n_spikes: float) -> float:
    """NLB: (LL_model - LL_const) / (n_spikes * ln 2); 0 for the constant-rate model itself."""
    return float((ll_model - ll_const) / (n_spikes * math.log(2))) if n_spikes > 0 else float("nan")


def evaluate_generative(m: StepModel, rec: Recording, split: str, bounds: dict, rng: tuple[int, int],
                        return_predictions: bool = False, progress: bool = False) -> dict:
    """Held-out next-bin log-likelihood and bits per spike of a generative step graph.

    The prediction after bin k is the distribution of bin k+1, so bins lo+1 .. hi-1 are scored.
    Bernoulli models score binarized counts (and count a bin with spikes as one spike); Poisson
    models score counts. The reference is a constant rate per neuron from the training block.
    """
    lo, hi = rng
    lik = m.card.likelihood or "bernoulli"
    m.reset()
    pred = m.run(rec.counts[lo:hi], progress=progress)
    x = rec.counts[lo + 1:hi]
    p = pred[:-1]
    tlo, thi = bounds.get("train", [0, rec.n_bins])
    if thi - tlo < 1:
        raise DataError(where(rec.source, "the training block is empty; cannot fit the constant-rate reference"))
    const = constant_rate(rec.counts[tlo:thi], lik)
    ll_model = float(log_likelihood(x, p, lik).sum())
    ll_const = float(log_likelihood(x, np.broadcast_to(const, x.shape), lik).sum())
    n_spikes = float((x > 0).sum() if lik != "poisson" else x.sum())
    n = x.shape[0]
    out = _block_header(m, bounds, split, lo, hi) | {
        "likelihood": lik,
        "model": {
            "log_likelihood_per_bin": ll_model / n,
            "const_log_likelihood_per_bin": ll_const / n,
            "bits_per_spike": bits_per_spike(ll_model, ll_const, n_spikes),
            "n_spikes": n_spikes,
            "scored_bins": int(n),
        },
    }
    if return_predictions:
        out["predictions"] = pred
    return out

