"""Decoding metrics, per output column. One home: training, evaluate and the demo call these."""

from __future__ import annotations

import numpy as np


def _valid(y: np.ndarray, yhat: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """y and yhat as (n, K) float64 without the rows where either is not finite; `rows` (aligned
    with y, e.g. the block's counts) loses the same rows and comes back third."""
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    if y.ndim == 1:
        y, yhat = y[:, None], yhat[:, None]
    if y.shape != yhat.shape:
        raise ValueError(f"truth {y.shape} and prediction {yhat.shape} differ in shape")
    keep = np.all(np.isfinite(y), axis=1) & np.all(np.isfinite(yhat), axis=1)
    if rows is None:
        return y[keep], yhat[keep]
    if len(rows) != len(y):
        raise ValueError(f"{len(rows)} rows of counts for {len(y)} rows of truth")
    return y[keep], yhat[keep], np.asarray(rows)[keep]


IDLE_FRACTION = 0.01   # a block whose output varies by less than this fraction of its training sd: R2 undefined
TAIL_SD = 8.0          # a bin whose behaviour lies this many training sds from the training mean is a tail bin
TAIL_SHARE = 0.5       # tail bins holding at least this share of an output's variance get a WARNING
SURGE = 1.5            # tail bins whose population count is this many times the rest's: the WARNING says so


def r2(y: np.ndarray, yhat: np.ndarray, min_sd: np.ndarray | None = None) -> np.ndarray:
    """Coefficient of determination per column: 1 - SS_res / SS_tot (rows with NaN dropped).

    NaN where the truth does not vary, or varies by less than `min_sd` (per column): there SS_tot
    is rounding noise and R2 runs to -1e3 for any decoder (an idle cursor), which says nothing."""
    y, yhat = _valid(y, yhat)
    ss_res = ((y - yhat) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    ok = ss_tot > 0
    if min_sd is not None:
        ok &= ~(y.std(axis=0) < np.asarray(min_sd, dtype=np.float64))
    return 1.0 - ss_res / np.where(ok, ss_tot, np.nan)


def _finite_rows(y: np.ndarray) -> np.ndarray:
    """The rows of y (T,) or (T, K) with every value finite, as (n, K) float64."""
    y = np.asarray(y, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    return y[np.all(np.isfinite(y), axis=1)]


def idle_floor(train_y: np.ndarray) -> np.ndarray | None:
    """Per-column sd below which a scored block counts as idle: IDLE_FRACTION of the training
    block's sd (None without at least two finite training rows)."""
    y = _finite_rows(train_y)
    return IDLE_FRACTION * y.std(axis=0) if len(y) >= 2 else None


def rmse(y: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    y, yhat = _valid(y, yhat)
    return np.sqrt(((y - yhat) ** 2).mean(axis=0))


def corr(y: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    """Pearson correlation per column."""
    y, yhat = _valid(y, yhat)
    yc, pc = y - y.mean(axis=0), yhat - yhat.mean(axis=0)
    den = np.sqrt((yc**2).sum(axis=0) * (pc**2).sum(axis=0))
    return (yc * pc).sum(axis=0) / np.where(den > 0, den, np.nan)


def all_metrics(y: np.ndarray, yhat: np.ndarray, min_sd: np.ndarray | None = None) -> dict[str, list[float]]:
    """{"r2": [...], "rmse": [...], "corr": [...]} as plain floats for JSON (min_sd: see r2)."""
    return {
        "r2": [float(v) for v in r2(y, yhat, min_sd)],
        "rmse": [float(v) for v in rmse(y, yhat)],
        "corr": [float(v) for v in corr(y, yhat)],
    }


def undefined_note(outputs: list[str], r2s: list[float], block: str = "test") -> str | None:
    """One line naming the outputs whose R2 is undefined (NaN), and why; None if there are none."""
    bad = [o for o, v in zip(outputs, r2s) if not np.isfinite(v)]
    if not bad:
        return None
    return (f"R2 undefined for {', '.join(bad)}: the {block} block's behaviour does not vary there (sd under "
            f"{IDLE_FRACTION:.0%} of the training block's: an idle cursor or a still animal); score a block with movement")


def tail_bins(y: np.ndarray, train_y: np.ndarray) -> np.ndarray:
    """Rows of y with any output beyond TAIL_SD training sds of the training mean (bool mask)."""
    ref = _finite_rows(train_y)
    if len(ref) < 2:
        return np.zeros(len(y), bool)
    sd = ref.std(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.any((np.abs(y - ref.mean(axis=0)) / sd > TAIL_SD) & (sd > 0), axis=1)


def tail_metrics(y: np.ndarray, yhat: np.ndarray, train_y: np.ndarray, counts: np.ndarray | None = None) -> dict:
    """Where a block's R2 comes from: the bins whose behaviour lies beyond TAIL_SD training sds of
    the training mean (fast or out-of-range movements), the share of each output's variance they
    hold, and R2 without them. A few such bins can decide R2 (a 50 ms cursor that jumps 30 cm), and
    two decoders can rank one way on them and the other way on the rest. With the block's counts
    (rows aligned with y), "population" is the tail bins' mean population count over the other
    bins': on the Spike days the whole array fires about twice as much in them."""
    y, yhat, *aligned = _valid(y, yhat, counts)
    tail = tail_bins(y, train_y)
    ss = (y - y.mean(axis=0)) ** 2
    total = ss.sum(axis=0)
    share = np.where(total > 0, ss[tail].sum(axis=0) / np.where(total > 0, total, 1.0), 0.0)
    outside = r2(y[~tail], yhat[~tail]) if (~tail).sum() >= 2 else np.full(y.shape[1], np.nan)
    out = {"sd": TAIL_SD, "bins": int(tail.sum()), "fraction": float(tail.mean()) if len(y) else 0.0,
           "share": [float(v) for v in share], "r2_outside": [float(v) for v in outside]}
    if aligned:
        out["population"] = surge_ratio(aligned[0].sum(axis=1), tail)
    return out


def surge_ratio(population: np.ndarray, tail: np.ndarray) -> float | None:
    """Mean population count per bin in the tail bins over that in the other bins; None when
    either side is empty or the other bins are silent."""
    pop = np.asarray(population, dtype=np.float64)
    if not tail.any() or tail.all():
        return None
    rest = pop[~tail].mean()
    return float(pop[tail].mean() / rest) if rest > 0 else None


def tail_note(outputs: list[str], tail: dict | None, block: str = "test") -> str | None:
    """One line when a few tail bins hold most of an output's variance (see tail_metrics); None otherwise."""
    if not tail or not tail["bins"]:
        return None
    heavy = [(o, v) for o, v in zip(outputs, tail["share"]) if v >= TAIL_SHARE]
    if not heavy:
        return None
    names = ", ".join(f"{o} {v:.0%}" for o, v in heavy)
    outside = ", ".join(f"{o} {v:.3f}" for o, v in zip(outputs, tail["r2_outside"]))
    outside += f" (mean {float(np.mean(tail['r2_outside'])):.3f})"
    surge = tail.get("population")
    surge = (f" In them the population fires {surge:.1f}x its rate in the other bins (a surge of the whole array)."
             if surge and surge >= SURGE else "")
    return (f"{tail['fraction']:.1%} of the {block} bins ({tail['bins']}) lie beyond {tail['sd']:g} training sd and hold "
            f"this share of the variance: {names}; R2 there rests on those bins. R2 without them: {outside}.{surge}")


def block_notes(outputs: list[str], metrics: dict, block: str = "test") -> list[str]:
    """The WARNING lines a decoder's scored block calls for (undefined R2, R2 resting on tail bins)."""
    notes = (undefined_note(outputs, metrics["r2"], block), tail_note(outputs, metrics.get("tail"), block))
    return [n for n in notes if n]
