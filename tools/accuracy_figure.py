"""The README's default-vs-GRU bar chart (docs/figures/accuracy.png) from docs/accuracy.json.

The JSON holds, per recording, mean test R² and its sd over seeds 0-2 for the default and the GRU
reference, as the README's accuracy table shows them (the default's from the ablation rows of
docs/ablate_huber.json (setting huber2), the GRU's from `rt-decoder bench accuracy --config default --baselines gru
--seeds 0 1 2`), so the figure is redrawn from committed numbers:

    python tools/accuracy_figure.py [--json docs/accuracy.json] [--out docs/figures/accuracy.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rt_decoder.atomic import atomic_path  # noqa: E402


def draw(table: dict, out: Path) -> None:
    """Paired bars per recording, whiskers = sd over seeds, the difference printed above each pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(table)
    ours = np.array([table[n]["default"] for n in names])
    gru = np.array([table[n]["gru"] for n in names])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(12, 4.6))
    ax.bar(x - 0.19, ours[:, 0], 0.38, yerr=ours[:, 1], capsize=3, label="default (retention + UNet + FC + GRU state)")
    ax.bar(x + 0.19, gru[:, 0], 0.38, yerr=gru[:, 1], capsize=3, label="GRU reference (2 x 256)")
    for i, (a, b) in enumerate(zip(ours[:, 0], gru[:, 0])):
        ax.text(i, max(a, b) + 0.03, f"{a - b:+.3f}", ha="center", fontsize=9, color="green" if a > b else "red")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("mean test R2 (mean +- sd over seeds 0-2)")
    ax.set_ylim(0, 1.08)
    ax.set_title("test block (last 20%), step graph run bin by bin; numbers: default minus GRU", fontsize=9)
    ax.legend(ncol=2, fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=str(ROOT / "docs" / "accuracy.json"), help="per recording {default: [mean, sd], gru: [mean, sd]}")
    p.add_argument("--out", default=str(ROOT / "docs" / "figures" / "accuracy.png"), help="PNG to write")
    args = p.parse_args(argv)
    draw(json.loads(Path(args.json).read_text()), Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
