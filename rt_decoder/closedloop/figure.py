"""Figures of closed-loop blocks as papers show them: center-out cursor paths coloured by target,
and the block metrics side by side (matplotlib, written as PNG)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from . import streams as S

METRICS = (("success_rate", "success rate"), ("time_to_target_s", "time to target (s)"),
           ("path_efficiency", "path efficiency"), ("bitrate_bps", "bitrate (bit/s)"))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def trajectories(ax, rec, title: str = "", half: float = S.WORKSPACE_HALF_CM) -> None:
    """Cursor path of every trial (target shown until success/timeout), coloured by target
    direction; returns to the centre in light grey; target circles outlined."""
    import matplotlib.patches as mpatches
    from matplotlib import colormaps

    ex = rec.extra
    names = list(rec.behavior_names)
    xy = rec.behavior[:, [names.index("pos_x"), names.index("pos_y")]]
    trial, state = np.asarray(ex["trial"]), np.asarray(ex["task_state"])
    tx, ty, tr = (np.asarray(ex[k], np.float64) for k in ("target_x", "target_y", "target_radius"))
    active = (state == S.STATE_REACH) | (state == S.STATE_HOLD)
    cmap = colormaps["hsv"]
    seen: set[tuple[float, float, float]] = set()
    for n in np.unique(trial[active]):
        m = active & (trial == n)
        i = np.flatnonzero(m)
        g = (float(tx[i[0]]), float(ty[i[0]]), float(tr[i[0]]))
        if not all(math.isfinite(v) for v in g):
            continue
        centre = math.hypot(g[0], g[1]) < 1e-6
        colour = (0.75, 0.75, 0.75) if centre else cmap((math.atan2(g[1], g[0]) % (2 * math.pi)) / (2 * math.pi))
        ax.plot(xy[i, 0], xy[i, 1], color=colour, lw=0.6 if centre else 1.0, alpha=0.6 if centre else 0.9)
        if g not in seen:
            seen.add(g)
            ax.add_patch(mpatches.Circle(g[:2], g[2], fill=False, ec=(0.3, 0.3, 0.3) if centre else colour, lw=1.2))
    ax.set_xlim(-half, half)
    ax.set_ylim(-half, half)
    ax.set_aspect("equal")
    ax.set_xticks([-half, 0, half])
    ax.set_yticks([-half, 0, half])
    ax.set_title(title, fontsize=9)


def metric_bars(axes, labels: list[str], summaries: list[dict], colours=None) -> None:
    for ax, (key, name) in zip(axes, METRICS):
        vals = [s.get(key) for s in summaries]
        vals = [float("nan") if v is None else float(v) for v in vals]
        ax.bar(range(len(vals)), np.nan_to_num(vals), color=colours)
        for j, v in enumerate(vals):
            ax.text(j, 0 if math.isnan(v) else v, "-" if math.isnan(v) else f"{v:.2f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)


def session_figure(blocks, path: str | Path, title: str = "") -> Path:
    """One row of trajectories (one panel per block), one row of metrics per block."""
    plt = _plt()
    n = len(blocks)
    fig = plt.figure(figsize=(max(3.2 * n, 10), 6.8))
    gs = fig.add_gridspec(2, max(n, len(METRICS)), height_ratios=[1.3, 1])
    for j, b in enumerate(blocks):
        s = b.summary
        sub = f"{b.label}\n{_short(s)}"
        trajectories(fig.add_subplot(gs[0, j]), b.recording, sub)
    closed = [b for b in blocks if b.summary.get("mode") == "closed"] or blocks
    axes = [fig.add_subplot(gs[1, j]) for j in range(len(METRICS))]
    metric_bars(axes, [b.label for b in closed], [b.summary for b in closed])
    return _save(plt, fig, title, path)


def bench_figure(rows: dict[str, object], summaries: dict[str, dict], path: str | Path, title: str = "") -> Path:
    """rows: label -> recording of the block (e.g. 'ours', 'ours+refit', ...), in table order;
    trajectories on a grid (one pair of panels per decoder), metrics below."""
    plt = _plt()
    labels = list(rows)
    n = len(labels)
    cols = max(n, len(METRICS))
    fig = plt.figure(figsize=(2.6 * cols, 6.4))
    gs = fig.add_gridspec(2, cols, height_ratios=[1.2, 1])
    for j, label in enumerate(labels):
        trajectories(fig.add_subplot(gs[0, j]), rows[label], f"{label}\n{_short(summaries[label])}")
    span = cols // len(METRICS)
    axes = [fig.add_subplot(gs[1, k * span:(k + 1) * span]) for k in range(len(METRICS))]
    from matplotlib import colormaps

    tab = colormaps["tab20"]
    colours = [tab(j) for j in range(n)]
    metric_bars(axes, labels, [summaries[k] for k in labels], colours)
    return _save(plt, fig, title, path)


def _short(s: dict) -> str:
    sr, bps = s.get("success_rate"), s.get("bitrate_bps")
    parts = []
    if sr is not None:
        parts.append(f"{sr:.0%} success")
    if bps is not None:
        parts.append(f"{bps:.2f} bit/s")
    return ", ".join(parts)


def _save(plt, fig, title: str, path: str | Path) -> Path:
    """Title, layout, an atomic write (no half-written PNG), and the figure's memory freed."""
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path
