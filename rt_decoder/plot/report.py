"""A static PNG report of a decoding session (matplotlib, no Qt): what the demo leaves behind.

One figure: predicted vs true traces per output (with R² over the whole session), the 2-D
position paths, and the latency histogram, with p50/p99 and deadline misses in the title. It
uses the Agg canvas directly (no pyplot), so it works headless and leaves no global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..metrics import r2
from .outputs import pick_position_columns

PRED_COLOR = "#ff8c00"
TRUTH_COLOR = "#555555"


def latency_title(latency_ms: np.ndarray, budget_ms: float | None = None, misses: int | None = None) -> str:
    """"latency p50 … ms · p99 … ms · misses m of n" (misses counted against budget_ms if not given)."""
    lat = np.asarray(latency_ms, dtype=np.float64).reshape(-1)
    ok = lat[np.isfinite(lat)]
    if misses is None and budget_ms is not None:
        misses = int((ok > budget_ms).sum())
    if len(ok) == 0:
        text = "latency: no data"
    else:
        p50, p99 = np.percentile(ok, [50, 99])
        text = f"latency p50 {p50:.2f} ms · p99 {p99:.2f} ms"
    if misses is not None:
        text += f" · misses {misses} of {len(lat)}"
        if budget_ms is not None:
            text += f" (budget {budget_ms:g} ms)"
    return text


def write_report(
    path: str | Path,
    t: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    names: Sequence[str],
    latency_ms: np.ndarray,
    title: str,
    *,
    budget_ms: float | None = None,
    misses: int | None = None,
    units: Sequence[str] | None = None,
    trace_s: float | None = 30.0,
    dpi: int = 110,
) -> Path:
    """Write the report PNG and return its path.

    t (T,) seconds; truth and pred (T, K) in physical units (NaN rows, e.g. skipped bins, are
    left out of R²); names (K,); latency_ms (N,) per bin. The traces show the last `trace_s`
    seconds (None: all) so they stay readable; R² and the paths use the whole session.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = np.asarray(t, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if truth.ndim == 1:
        truth, pred = truth[:, None], pred[:, None]
    if truth.shape != pred.shape or truth.shape[0] != t.shape[0] or truth.ndim != 2:
        raise ValueError(f"t {t.shape}, truth {truth.shape} and pred {pred.shape} must be (T,), (T, K), (T, K)")
    k = truth.shape[1]
    if len(names) != k:
        raise ValueError(f"{len(names)} names for {k} outputs")
    units = list(units) if units is not None else [""] * k

    scores = r2(truth, pred) if len(t) > 1 else np.full(k, np.nan)
    shown = np.ones(len(t), dtype=bool)
    if trace_s is not None and len(t):
        shown = t >= t[-1] - trace_s

    rows = max(k, 3)
    fig = Figure(figsize=(14, max(7.0, 1.9 * rows + 1.2)), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(rows, 2, width_ratios=(1.7, 1.0))
    for i, name in enumerate(names):
        ax = fig.add_subplot(gs[i, 0])
        ax.plot(t[shown], truth[shown, i], color=TRUTH_COLOR, lw=1.4, label="true")
        ax.plot(t[shown], pred[shown, i], color=PRED_COLOR, lw=1.0, label="predicted")
        ax.set_ylabel(f"{name} ({units[i]})" if units[i] else name)
        ax.set_title(f"{name}   R² {scores[i]:.3f}", fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(loc="upper right", fontsize=8)
        if i == k - 1:
            ax.set_xlabel("time (s)")

    top = max(1, rows // 2)
    ax = fig.add_subplot(gs[:top, 1])
    cols = pick_position_columns(list(names))
    if cols is not None:
        a, b = cols
        ax.plot(truth[shown, a], truth[shown, b], color=TRUTH_COLOR, lw=1.2, label="true")
        ax.plot(pred[shown, a], pred[shown, b], color=PRED_COLOR, lw=0.8, alpha=0.8, label="predicted")
        ax.set_xlabel(f"{names[a]} ({units[a]})" if units[a] else names[a])
        ax.set_ylabel(f"{names[b]} ({units[b]})" if units[b] else names[b])
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(loc="upper right", fontsize=8)
        span = t[shown][-1] - t[shown][0] if shown.any() else 0.0
        ax.set_title(f"2-D path, last {span:.0f} s", fontsize=10, loc="left")
    else:
        ax.plot(t, truth[:, 0], color=TRUTH_COLOR)
        ax.plot(t, pred[:, 0], color=PRED_COLOR)
        ax.set_title(f"{names[0]} over the session", fontsize=10, loc="left")
        ax.set_ylabel(f"{names[0]} ({units[0]})" if units[0] else names[0])
    ax.grid(alpha=0.3)

    ax = fig.add_subplot(gs[top:, 1])
    lat = np.asarray(latency_ms, dtype=np.float64).reshape(-1)
    ok = lat[np.isfinite(lat)]
    if len(ok):
        ax.hist(ok, bins=50, color="#4a7fd0")
        p50, p99 = np.percentile(ok, [50, 99])
        ax.axvline(p50, color="k", ls="--", lw=1, label=f"p50 {p50:.2f} ms")
        ax.axvline(p99, color="r", ls="--", lw=1, label=f"p99 {p99:.2f} ms")
        if budget_ms is not None:
            ax.axvline(budget_ms, color="r", lw=1.5, label=f"budget {budget_ms:g} ms")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no latency data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("bins")
    ax.set_title(f"latency per bin (n = {len(ok)})", fontsize=10, loc="left")
    ax.grid(alpha=0.3)

    fig.suptitle(f"{title}\n{latency_title(lat, budget_ms, misses)}", fontsize=12)
    from ..atomic import atomic_path

    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp)
    return out
