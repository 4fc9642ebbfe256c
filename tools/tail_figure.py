"""Where the Spike days' R² is decided: docs/figures/tail_surge.png.

Per day, population count per bin against cursor speed, training block beside test block, the
test bins beyond 8 training sd (rt_decoder.metrics.tail_bins) marked. On 07-24 and 08-07 the
whole array fires about twice its usual rate in those bins while the cursor moves > 1000 cm/s,
and bins that fast are 12-14x rarer in the training block than in the test block.

    python tools/tail_figure.py [--days 07-18 07-24 08-07] [--out docs/figures/tail_surge.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rt_decoder.atomic import atomic_path  # noqa: E402
from rt_decoder.loaders import load_recording  # noqa: E402
from rt_decoder.metrics import surge_ratio, tail_bins  # noqa: E402
from rt_decoder.recording import split_bounds  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "limblab_spike_wf"


def blocks(day: str, data: Path) -> dict:
    """Population count and cursor speed of the training and test blocks, and the test tail mask."""
    import numpy as np

    rec = load_recording(data / f"Spike_{day}-12_WF_001.mat")
    b = split_bounds(rec.n_bins)
    names = list(rec.behavior_names)
    vel = [names.index("vel_x"), names.index("vel_y")]
    out = {}
    for block in ("train", "test"):
        s = slice(*b[block])
        out[block] = (rec.counts[s].sum(axis=1), np.hypot(*rec.behavior[s][:, vel].T), rec.behavior[s])
    out["tail"] = tail_bins(out["test"][2], out["train"][2])
    out["population"] = surge_ratio(out["test"][0], out["tail"])
    out["bin_s"] = rec.bin_s
    return out


def draw(days: list[str], data: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, len(days), figsize=(4.6 * len(days), 7.6), squeeze=False)
    for j, day in enumerate(days):
        d = blocks(day, data)
        (ptr, vtr, _), (pte, vte, _), tail = d["train"], d["test"], d["tail"]
        ax = axes[0, j]
        ax.scatter(ptr, vtr + 1, s=2, c="0.6", alpha=0.4, label="training block", rasterized=True)
        ax.scatter(pte[~tail], vte[~tail] + 1, s=2, c="tab:blue", alpha=0.4, label="test block", rasterized=True)
        ax.scatter(pte[tail], vte[tail] + 1, s=6, c="tab:red", label="test bins beyond 8 training sd")
        ratio = d["population"] or float("nan")
        ax.set(yscale="log", xlabel="population count per bin", ylabel="cursor speed + 1 (cm/s)",
               title=f"Spike {day}: {tail.mean():.1%} tail bins, population x{ratio:.1f} in them")
        if j == 0:
            ax.legend(loc="lower right", fontsize=8, markerscale=3)
        ax = axes[1, j]
        k = max(1, round(1.0 / d["bin_s"]))                       # 1 s moving means: the episodes, not the bins
        smooth = np.ones(k) / k
        t = np.arange(len(pte)) * d["bin_s"] / 60
        ax.plot(t, np.convolve(pte, smooth, "same"), lw=0.8, c="tab:blue")
        ax.vlines(t[tail], 0, 0.06, transform=ax.get_xaxis_transform(), colors="tab:red", lw=0.6)
        ax.set(xlabel="minutes into the test block (red ticks: tail bins)", ylabel="population count per bin, 1 s mean")
        ax.yaxis.label.set_color("tab:blue")
        sp = ax.twinx()
        sp.plot(t, np.convolve(vte, smooth, "same") + 1, lw=0.8, c="tab:red", alpha=0.8)
        sp.set(yscale="log", ylabel="cursor speed + 1 (cm/s), 1 s mean")
        sp.yaxis.label.set_color("tab:red")
    fig.suptitle("Where R² is decided on the Spike days: a few test bins where the whole array surges and the cursor jumps")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", nargs="+", default=["07-18", "07-24", "08-07"], help="limblab_spike_wf days (MM-DD)")
    p.add_argument("--data", type=Path, default=DATA, help="folder holding Spike_MM-DD-12_WF_001.mat")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "tail_surge.png")
    a = p.parse_args(argv)
    missing = [day for day in a.days if not (a.data / f"Spike_{day}-12_WF_001.mat").exists()]
    if missing:
        print(f"{a.data}: no Spike_{missing[0]}-12_WF_001.mat (see ../shared/data/*/SOURCE.txt)", file=sys.stderr)
        return 2
    draw(a.days, a.data, a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
