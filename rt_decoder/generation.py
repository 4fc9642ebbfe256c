"""Autoregressive sampling from a generative step graph, and how its statistics compare to data.

A generative step graph (card.kind == "generative") maps this bin's counts to the next bin's
spike probability per channel (Bernoulli) or rate (Poisson). Sampling feeds each sample back as
the next input, so the retention state carries the model's own history, exactly as it would
carry a real recording's. The loop is lean: random numbers are drawn in blocks and the sample
is written into preallocated buffers, so the ONNX call dominates the cost of a step.

compare_statistics() asks the questions a neuroscientist asks of surrogate data: are the
per-neuron rates right, the pairwise correlations of binned counts, the count variability
(Fano factor in windows of a few bins)?
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .errors import ModelError, where
from .step_model import StepModel

BLOCK = 1024
MAX_POISSON_RATE = 1e3


def _check_generative(model: StepModel) -> str:
    if model.card.kind != "generative":
        raise ModelError(where(model.path, f"is a {model.card.kind} ({model.card.model_type}), not a generative model; "
                                           "generate needs a model trained with a generative head"))
    lik = model.card.likelihood or "bernoulli"
    if lik not in ("bernoulli", "poisson"):
        raise ModelError(where(model.path, f"unknown likelihood {lik!r} in the model card (bernoulli or poisson)"))
    return lik


def generate(model: StepModel | str | Path, steps: int, seed: int = 0, burn_in: int = 0,
             prime: np.ndarray | None = None, progress: bool = False) -> tuple[np.ndarray, dict]:
    """Sample `steps` bins -> (counts (steps, D) int32, info {"steps_per_s", "seconds", "likelihood"}).

    The model is reset, then fed `prime` (real counts, optional) or one empty bin; each following
    bin is drawn from the model's prediction and fed back. `burn_in` sampled bins are dropped
    first (the state starts empty, so early bins are a transient).
    """
    m = model if isinstance(model, StepModel) else StepModel(model)
    lik = _check_generative(m)
    steps, burn_in = int(steps), int(burn_in)
    if steps < 1 or burn_in < 0:
        raise ValueError(f"steps must be >= 1 and burn_in >= 0, got {steps}, {burn_in}")
    D = m.n_channels
    rng = np.random.default_rng(seed)
    m.reset()
    x = np.zeros(D, np.float32)
    if prime is not None:
        prime = np.asarray(prime, np.float32)
        if prime.ndim != 2 or prime.shape[1] != D or prime.shape[0] < 1:
            raise ValueError(f"prime must be (T, {D}) counts, got shape {prime.shape}")
        for row in prime[:-1]:
            m.step(row)
        x[:] = prime[-1]
    total = burn_in + steps
    out = np.empty((steps, D), np.int32)
    spike = np.empty(D, bool)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"sampling {m.path.name}", unit="bin", leave=False)
    step = m.step
    t0 = time.perf_counter()
    t = 0
    while t < total:
        n = min(BLOCK, total - t)
        if lik == "bernoulli":
            u = rng.random((n, D), dtype=np.float32)
            for i in range(n):
                p = step(x)
                np.less(u[i], p, out=spike)
                x[:] = spike
                if t + i >= burn_in:
                    out[t + i - burn_in] = spike
        else:
            for i in range(n):
                r = step(x)
                np.minimum(r, MAX_POISSON_RATE, out=r)
                x[:] = rng.poisson(r)
                if t + i >= burn_in:
                    out[t + i - burn_in] = x
        t += n
        if bar is not None:
            bar.update(n)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return out, {"steps_per_s": total / seconds if seconds > 0 else float("inf"), "seconds": seconds,
                 "likelihood": lik, "steps": steps, "burn_in": burn_in, "seed": seed}


def pairwise_correlations(counts: np.ndarray) -> np.ndarray:
    """(D, D) Pearson correlations of binned counts; NaN for silent or constant neurons."""
    x = np.asarray(counts, np.float64)
    xc = x - x.mean(axis=0)
    sd = np.sqrt((xc**2).mean(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = (xc.T @ xc / x.shape[0]) / np.outer(sd, sd)
    c[:, sd == 0] = np.nan
    c[sd == 0, :] = np.nan
    return c


def fano_factors(counts: np.ndarray, window: int = 10) -> np.ndarray:
    """Per-neuron variance / mean of spike counts summed in non-overlapping windows of `window` bins."""
    x = np.asarray(counts, np.float64)
    n = (x.shape[0] // window) * window
    if n < 2 * window:
        return np.full(x.shape[1], np.nan)
    s = x[:n].reshape(n // window, window, -1).sum(axis=1)
    mean = s.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, s.var(axis=0, ddof=1) / mean, np.nan)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.std(a[keep]) == 0 or np.std(b[keep]) == 0:
        return float("nan")
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


def _nanmedian(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else float("nan")


def compare_statistics(generated: np.ndarray, real: np.ndarray | None = None, bin_s: float = 1.0,
                       window: int = 10, binarize_real: bool = False) -> dict:
    """Per-neuron rates (Hz when bin_s is given), pairwise correlations, Fano factors, and summary numbers.

    binarize_real: compare with real counts clipped to 0/1 (a Bernoulli model can only emit 0/1,
    so its rates are P(spike in a bin)). Returns {"summary": {...floats...}, "per_neuron": {...arrays...}}.
    """
    g = np.asarray(generated, np.float64)
    stats: dict = {"per_neuron": {}, "summary": {}}
    sides = {"generated": g}
    if real is not None:
        r = np.asarray(real, np.float64)
        if r.ndim != 2 or r.shape[1] != g.shape[1]:
            raise ValueError(f"real counts {r.shape} do not have the generated data's {g.shape[1]} channels")
        sides["real"] = (r > 0).astype(np.float64) if binarize_real else r
    iu = np.triu_indices(g.shape[1], k=1)
    for name, x in sides.items():
        rates = x.mean(axis=0) / bin_s
        pc = pairwise_correlations(x)[iu]
        ff = fano_factors(x, window)
        stats["per_neuron"][f"rate_{name}"] = rates
        stats["per_neuron"][f"pairwise_corr_{name}"] = pc
        stats["per_neuron"][f"fano_{name}"] = ff
        stats["summary"][f"mean_rate_{name}"] = float(rates.mean())
        stats["summary"][f"mean_pairwise_corr_{name}"] = float(np.nanmean(pc)) if np.isfinite(pc).any() else float("nan")
        stats["summary"][f"median_fano_{name}"] = _nanmedian(ff)
        stats["summary"][f"n_bins_{name}"] = int(x.shape[0])
    if real is not None:
        pn = stats["per_neuron"]
        stats["summary"]["rate_corr"] = _corr(pn["rate_generated"], pn["rate_real"])
        stats["summary"]["pairwise_corr_corr"] = _corr(pn["pairwise_corr_generated"], pn["pairwise_corr_real"])
        stats["summary"]["fano_corr"] = _corr(pn["fano_generated"], pn["fano_real"])
    stats["summary"].update({"bin_s": float(bin_s), "fano_window_bins": int(window), "binarized_real": bool(binarize_real)})
    return stats


def report_png(stats: dict, path: str | Path, generated: np.ndarray, real: np.ndarray | None = None,
               title: str = "") -> Path:
    """A 2x2 figure: rates, pairwise correlations, Fano factors (generated vs real) and rasters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pn, s = stats["per_neuron"], stats["summary"]
    fig, ax = plt.subplots(2, 2, figsize=(10, 8))
    has_real = "rate_real" in pn
    unit = "Hz" if s.get("bin_s", 1.0) != 1.0 else "per bin"
    for a, key, label in ((ax[0, 0], "rate", f"rate ({unit})"), (ax[0, 1], "pairwise_corr", "pairwise correlation")):
        if has_real:
            a.scatter(pn[f"{key}_real"], pn[f"{key}_generated"], s=6, alpha=0.6)
            lo = np.nanmin([np.nanmin(pn[f"{key}_real"]), np.nanmin(pn[f"{key}_generated"])])
            hi = np.nanmax([np.nanmax(pn[f"{key}_real"]), np.nanmax(pn[f"{key}_generated"])])
            a.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            a.set_xlabel(f"real {label}")
            a.set_ylabel(f"generated {label}")
            r = s["rate_corr"] if key == "rate" else s["pairwise_corr_corr"]
            a.set_title(f"{label}: r = {r:.3f}")
        else:
            a.hist(pn[f"{key}_generated"][np.isfinite(pn[f"{key}_generated"])], bins=40)
            a.set_xlabel(f"generated {label}")
            a.set_title(label)
    a = ax[1, 0]
    for name in ("generated", "real") if has_real else ("generated",):
        ff = pn[f"fano_{name}"]
        a.hist(ff[np.isfinite(ff)], bins=30, alpha=0.6, label=f"{name} (median {s[f'median_fano_{name}']:.2f})")
    a.set_xlabel(f"Fano factor ({s['fano_window_bins']}-bin windows)")
    a.legend()
    a = ax[1, 1]
    n = min(200, generated.shape[0])
    img = generated[:n].T > 0
    if real is not None:
        m = min(n, real.shape[0])
        gap = np.zeros((2, n), bool)
        rr = np.zeros((real.shape[1], n), bool)
        rr[:, :m] = real[:m].T > 0
        img = np.vstack([img, gap, rr])
        a.set_title(f"first {n} bins: generated (top), real (bottom)")
    else:
        a.set_title(f"first {n} generated bins")
    a.imshow(img, aspect="auto", interpolation="nearest", cmap="Greys")
    a.set_xlabel("bin")
    a.set_ylabel("channel")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    from .atomic import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return path
