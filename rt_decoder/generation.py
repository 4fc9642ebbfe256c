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
RUNAWAY_FRACTION = 0.9     # a bin is saturated when at least this share of the channels fires
RUNAWAY_WINDOW = 50        # bins a runaway must last, at least
RUNAWAY_HOLD = 0.9         # share of saturated bins from the runaway's start to the end
RUNAWAY_RATE_HZ = 200.0    # ... or when the channels' mean rate in the bin reaches this (no population sustains it)
RUNAWAY_VS_REAL = 3.0      # ... or (given real data) this many times the busiest `window` bins of the real block


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


def active_fraction(counts: np.ndarray) -> np.ndarray:
    """(T,) fraction of channels with at least one spike in each bin."""
    return (np.asarray(counts) > 0).mean(axis=1)


def _tail_start(sat: np.ndarray, window: int, hold: float) -> int | None:
    """First step of a tail of `sat` (at least `window` bins, ending at the last bin) in which at
    least `hold` of the bins are True, measured from every later step too; None without one. The
    start is the first True bin of the first `window` bins in that tail that are themselves `hold`
    True (a lone busy bin does not move it)."""
    T = sat.size
    if T < window:
        return None
    last = T - window                                   # latest start that still leaves `window` bins
    suffix = np.cumsum(sat[::-1])[::-1] / np.arange(T, 0, -1)
    ok = suffix[:last + 1] >= hold
    if not ok[last]:
        return None
    bad = np.flatnonzero(~ok)
    s0 = int(bad[-1]) + 1 if bad.size else 0
    csum = np.concatenate([[0], np.cumsum(sat)])
    win = (csum[window:] - csum[:-window]) / window     # win[t] = saturated share of bins t..t+window-1
    start = s0 + int(np.argmax(win[s0:last + 1] >= hold)) if (win[s0:last + 1] >= hold).any() else s0
    return start + int(np.argmax(sat[start:]))          # its first saturated bin


def _window_means(x: np.ndarray, window: int) -> np.ndarray:
    """(T - window + 1, D) mean of each channel over bins t..t+window-1."""
    c = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    return (c[window:] - c[:-window]) / window


def runaway_neurons(counts: np.ndarray, real: np.ndarray, window: int = RUNAWAY_WINDOW, hold: float = RUNAWAY_HOLD,
                    vs_real: float = RUNAWAY_VS_REAL, floor: float = 0.0) -> dict:
    """Single channels that run away while the population does not: a channel whose mean count over
    `window` bins stays at or above `vs_real` times its own busiest `window` bins in the real block
    (at least one spike per window), and at or above `floor` (counts/bin), to the end of the sample
    (in at least `hold` of the windows from the start on). A lone neuron alternating between silence
    and hundreds of counts per bin moves neither the share of channels firing nor (with many
    channels) their mean rate. Returns {"channels": [...], "start_step": first start or None, "level": per-channel level}."""
    x = np.asarray(counts, np.float64)
    r = np.asarray(real, np.float64)
    out: dict = {"channels": [], "start_step": None}
    if x.shape[0] < window or r.shape[0] < window:
        return out
    busiest = np.maximum(_window_means(r, window).max(axis=0), 1.0 / window)
    level = np.maximum(vs_real * busiest, floor)
    above = _window_means(x, window) >= level                    # (T - window + 1, D): window t..t+window-1
    starts = {}
    for d in np.flatnonzero(above[-1]):                         # a runaway lasts to the end: its last window is above
        s = _tail_start(above[:, d], window, hold)
        if s is not None:                   # its first bin at its mean rate from there on, in that first window
            first = x[s:s + window, d] >= max(level[d], x[s:, d].mean())
            starts[int(d)] = s + int(np.argmax(first)) if first.any() else s
    if starts:
        out.update(channels=sorted(starts), start_step=min(starts.values()))
    return out


def detect_runaway(counts: np.ndarray, fraction: float = RUNAWAY_FRACTION, window: int = RUNAWAY_WINDOW,
                   hold: float = RUNAWAY_HOLD, bin_s: float | None = None, rate_hz: float = RUNAWAY_RATE_HZ,
                   real: np.ndarray | None = None, vs_real: float = RUNAWAY_VS_REAL) -> dict:
    """Does the sample end with the population firing in (nearly) every bin, and from which step?

    A bin is saturated when at least `fraction` of the channels fire in it, or (bin_s given) when
    the channels' mean count in it is at least rate_hz * bin_s: a Poisson model can explode in
    counts (or alternate between silence and its rate cap) with only part of the population
    active in each bin. Given `real` counts, the saturation level drops to `vs_real` times the
    active fraction of the real block's busiest `window` bins when that is lower (a sparse
    population stuck at 40% of channels per bin, 20 times its real level, has run away too), and
    single channels are judged too (runaway_neurons: a channel ending at >= `vs_real` times its
    busiest real stretch and, bin_s given, at >= rate_hz).
    The sample runs away
    from step s when, from s to the end (at least `window` bins), at least `hold` of the bins
    are saturated, and stays so measured from every later step; s is the first saturated bin of
    the first window in that tail that is itself `hold` saturated (a lone busy bin does not move it).
    Returns {"runaway", "start_step" (or None), "saturated_fraction_after", "bins", "fraction", "window", "hold",
    "channels" (the channels that ran away on their own)}.
    """
    level = fraction
    if real is not None and len(real) >= window:
        busiest = float(np.convolve(active_fraction(real), np.ones(window) / window, mode="valid").max())
        level = min(fraction, vs_real * busiest)
    sat = active_fraction(counts) >= level
    if bin_s is not None:
        sat |= np.asarray(counts, np.float64).mean(axis=1) >= rate_hz * bin_s
    T = sat.size
    out = {"runaway": False, "start_step": None, "saturated_fraction_after": 0.0, "bins": int(T),
           "fraction": float(fraction), "window": int(window), "hold": float(hold),
           "rate_hz": float(rate_hz) if bin_s is not None else None, "level": float(level), "population": False,
           "channels": [], "vs_real": float(vs_real)}
    start = _tail_start(sat, window, hold)
    if start is not None:
        out.update(runaway=True, population=True, start_step=int(start), saturated_fraction_after=float(sat[start:].mean()))
    if real is not None:
        lone = runaway_neurons(counts, real, window, hold, vs_real, rate_hz * bin_s if bin_s is not None else 0.0)
        if lone["channels"]:
            out["channels"] = lone["channels"]
            if start is None:                                   # the population's start is per bin: kept when it has one
                s = lone["start_step"]
                out.update(runaway=True, start_step=int(s), saturated_fraction_after=float(sat[s:].mean()))
    return out


def runaway_warning(runaway: dict, steps_offset: int = 0) -> str | None:
    """The one line printed when a sample runs away (None when it does not)."""
    if not runaway.get("runaway"):
        return None
    s = runaway["start_step"] + steps_offset
    what = []
    if runaway.get("population", True):
        rate = f" or a mean rate >= {runaway['rate_hz']:g} Hz" if runaway.get("rate_hz") else ""
        what.append(f"{100 * runaway['saturated_fraction_after']:.0f}% of bins have >= "
                    f"{100 * runaway.get('level', runaway['fraction']):.3g}% of the channels firing{rate}")
    ch = runaway.get("channels") or []
    if ch:
        listed = ", ".join(str(c) for c in ch[:5]) + (", ..." if len(ch) > 5 else "")
        floor = f" and >= {runaway['rate_hz']:g} Hz" if runaway.get("rate_hz") else ""
        what.append(f"{len(ch)} channel(s) (index {listed}) stay at >= {runaway.get('vs_real', RUNAWAY_VS_REAL):g}x "
                    f"their busiest real stretch{floor}")
    return (f"WARNING: runaway sampling: from step {s} of {runaway['bins'] + steps_offset} on, {'; '.join(what)} "
            f"(firing sustains itself; the sample after step {s} is not neural activity; "
            f"train with model.glm_base: true and model.self_gain_max: 0 (README), or model.self_gain_max: 0 and "
            f"model.saturation_penalty: 1, to keep firing from sustaining itself)")


def _window_counts(x: np.ndarray, window: int) -> np.ndarray:
    n = (x.shape[0] // window) * window
    return x[:n].reshape(n // window, window, -1).sum(axis=1) if n else np.zeros((0, x.shape[1]))


def _hist(values: np.ndarray, top: int) -> np.ndarray:
    """Probability of each integer 0..top (the last entry collects everything above)."""
    v = np.minimum(np.asarray(values, np.int64).ravel(), top)
    h = np.bincount(v, minlength=top + 1).astype(np.float64)
    return h / max(1.0, h.sum())


def _tv(p: np.ndarray, q: np.ndarray) -> float:
    """Total-variation distance between two distributions on the same support (0: equal, 1: disjoint)."""
    return float(0.5 * np.abs(p - q).sum())


def compare_statistics(generated: np.ndarray, real: np.ndarray | None = None, bin_s: float = 1.0,
                       window: int = 10, binarize_real: bool = False) -> dict:
    """Statistics of the whole sample (and of the real block), side by side.

    Per neuron: rates (Hz when bin_s is given), pairwise correlations of binned counts, Fano
    factors in `window`-bin windows. Distributions: spike counts per neuron in `window`-bin
    windows and population synchrony (how many channels fire in a bin), with total-variation
    distances between generated and real. The population's active fraction over time and runaway
    detection (detect_runaway) describe the sample from its first bin to its last.
    binarize_real: compare with real counts clipped to 0/1 (a Bernoulli model can only emit 0/1,
    so its rates are P(spike in a bin)). Returns {"summary": {floats}, "per_neuron": {arrays},
    "distributions": {arrays}, "runaway": {...}}.
    """
    g = np.asarray(generated, np.float64)
    stats: dict = {"per_neuron": {}, "summary": {}, "distributions": {}}
    sides = {"generated": g}
    if real is not None:
        r = np.asarray(real, np.float64)
        if r.ndim != 2 or r.shape[1] != g.shape[1]:
            raise ValueError(f"real counts {r.shape} do not have the generated data's {g.shape[1]} channels")
        sides["real"] = (r > 0).astype(np.float64) if binarize_real else r
    iu = np.triu_indices(g.shape[1], k=1)
    n_active = {name: (x > 0).sum(axis=1) for name, x in sides.items()}
    wcounts = {name: _window_counts(x, window) for name, x in sides.items()}
    top_sync = int(max(v.max(initial=0) for v in n_active.values()))
    top_count = int(max(v.max(initial=0) for v in wcounts.values()))
    for name, x in sides.items():
        rates = x.mean(axis=0) / bin_s
        pc = pairwise_correlations(x)[iu]
        ff = fano_factors(x, window)
        stats["per_neuron"][f"rate_{name}"] = rates
        stats["per_neuron"][f"pairwise_corr_{name}"] = pc
        stats["per_neuron"][f"fano_{name}"] = ff
        stats["distributions"][f"synchrony_{name}"] = _hist(n_active[name], top_sync)
        stats["distributions"][f"window_counts_{name}"] = _hist(wcounts[name], top_count)
        stats["distributions"][f"active_fraction_{name}"] = active_fraction(x)
        s = stats["summary"]
        s[f"mean_rate_{name}"] = float(rates.mean())
        s[f"mean_pairwise_corr_{name}"] = float(np.nanmean(pc)) if np.isfinite(pc).any() else float("nan")
        s[f"median_fano_{name}"] = _nanmedian(ff)
        s[f"n_bins_{name}"] = int(x.shape[0])
        s[f"mean_active_channels_{name}"] = float(n_active[name].mean())
        s[f"sd_active_channels_{name}"] = float(n_active[name].std())
        s[f"p_silent_bin_{name}"] = float((n_active[name] == 0).mean())
        s[f"max_active_channels_{name}"] = int(n_active[name].max(initial=0))
        s[f"mean_window_count_{name}"] = float(wcounts[name].mean()) if wcounts[name].size else float("nan")
        tenth = max(1, x.shape[0] // 10)
        s[f"active_fraction_first_tenth_{name}"] = float(active_fraction(x[:tenth]).mean())
        s[f"active_fraction_last_tenth_{name}"] = float(active_fraction(x[-tenth:]).mean())
    if real is not None:
        pn, dist, s = stats["per_neuron"], stats["distributions"], stats["summary"]
        s["rate_corr"] = _corr(pn["rate_generated"], pn["rate_real"])
        s["pairwise_corr_corr"] = _corr(pn["pairwise_corr_generated"], pn["pairwise_corr_real"])
        s["fano_corr"] = _corr(pn["fano_generated"], pn["fano_real"])
        s["synchrony_tv"] = _tv(dist["synchrony_generated"], dist["synchrony_real"])
        s["window_count_tv"] = _tv(dist["window_counts_generated"], dist["window_counts_real"])
    stats["runaway"] = detect_runaway(g, bin_s=bin_s if bin_s != 1.0 else None, real=sides.get("real"))
    stats["summary"].update({"bin_s": float(bin_s), "fano_window_bins": int(window), "binarized_real": bool(binarize_real),
                             "runaway": bool(stats["runaway"]["runaway"]),
                             "runaway_start_step": stats["runaway"]["start_step"]})
    return stats


def _pooled_raster(x: np.ndarray, columns: int = 1500) -> tuple[np.ndarray, int]:
    """(channels, <= columns) share of bins with a spike in each group of bins: the whole sample in one image."""
    T = x.shape[0]
    k = max(1, int(np.ceil(T / columns)))
    n = (T // k) * k
    img = (x[:n] > 0).reshape(n // k, k, -1).mean(axis=1).T if n else np.zeros((x.shape[1], 0))
    return img, k


def report_png(stats: dict, path: str | Path, generated: np.ndarray, real: np.ndarray | None = None,
               title: str = "", note: str = "") -> Path:
    """The generation report over the WHOLE sample: rates, pairwise correlations, Fano factors,
    count and synchrony distributions, the population's active fraction over time (runaway start
    marked) and pooled rasters of the whole sample and of the real block. `note`: a line under
    the title (e.g. held-out bits/spike of the model and its GLM reference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pn, s, dist, run = stats["per_neuron"], stats["summary"], stats["distributions"], stats["runaway"]
    has_real = "rate_real" in pn
    names = ("generated", "real") if has_real else ("generated",)
    fig = plt.figure(figsize=(15, 15))
    grid = fig.add_gridspec(4, 3, height_ratios=[1, 1, 0.8, 0.8])
    unit = "Hz" if s.get("bin_s", 1.0) != 1.0 else "per bin"
    for col, key, label in ((0, "rate", f"rate ({unit})"), (1, "pairwise_corr", "pairwise correlation")):
        a = fig.add_subplot(grid[0, col])
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
    a = fig.add_subplot(grid[0, 2])
    for name in names:
        ff = pn[f"fano_{name}"]
        a.hist(ff[np.isfinite(ff)], bins=30, alpha=0.6, label=f"{name} (median {s[f'median_fano_{name}']:.2f})")
    a.set_xlabel(f"Fano factor ({s['fano_window_bins']}-bin windows)")
    a.legend()
    for col, key, label, tv in ((0, "window_counts", f"spikes per neuron in {s['fano_window_bins']}-bin windows", "window_count_tv"),
                                (1, "synchrony", "channels firing in a bin (synchrony)", "synchrony_tv")):
        a = fig.add_subplot(grid[1, col])
        for name, style in zip(names, ("o-", "s--")):
            p = dist[f"{key}_{name}"]
            a.semilogy(np.arange(p.size), np.where(p > 0, p, np.nan), style, ms=3, label=name)
        a.set_xlabel(label)
        a.set_ylabel("probability")
        a.set_title(f"{label.split(' (')[0]}" + (f": TV distance {s[tv]:.3f}" if has_real else ""))
        a.legend()
    a = fig.add_subplot(grid[1, 2])
    for name in names:
        af = dist[f"active_fraction_{name}"]
        w = max(1, af.size // 500)
        smooth = np.convolve(af, np.ones(w) / w, mode="valid") if af.size >= w else af
        a.plot(np.arange(smooth.size) + w // 2, smooth, lw=0.8, label=name)
    if run["runaway"]:
        a.axvline(run["start_step"], color="r", lw=1.5, label=f"runaway from step {run['start_step']}")
    a.set_xlabel("bin")
    a.set_ylabel("fraction of channels firing")
    a.set_title("population activity over the whole sample" + (" - RUNAWAY" if run["runaway"] else ""),
                color="r" if run["runaway"] else "k")
    a.legend(fontsize=8)
    rows = [("generated", generated)] + ([("real", real)] if has_real and real is not None else [])
    for i, (name, x) in enumerate(rows):
        a = fig.add_subplot(grid[2 + i, :])
        img, k = _pooled_raster(np.asarray(x))
        a.imshow(img, aspect="auto", interpolation="nearest", cmap="Greys", vmin=0, vmax=max(1e-9, float(img.max())),
                 extent=(0, img.shape[1] * k, x.shape[1], 0))
        if name == "generated" and run["runaway"]:
            a.axvline(run["start_step"], color="r", lw=1.5)
        a.set_ylabel("channel")
        a.set_xlabel("bin")
        a.set_title(f"{name}: all {x.shape[0]} bins ({k} bin(s) per column, shade = share of bins with a spike)")
    if title or note:
        fig.suptitle("\n".join(t for t in (title, note) if t))
    fig.tight_layout()
    from .atomic import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)
    return path
