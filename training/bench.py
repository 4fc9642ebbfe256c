"""Benchmarks owned by training (dispatched by `rt-decoder bench accuracy|generate`).

accuracy  trains ours and every reference (gru, tcfnn, mlp, wiener, kalman) on each shared
          recording and prints mean test R2, train seconds and step latency p50/p99 per model,
          plus a grouped bar chart (PNG).
generate  times autoregressive sampling of a generative step graph at 4096 neurons on a 64x64
          canvas, and reports fidelity of the trained ziv CA1 model against held-out data.

Cheap to import: torch is imported inside run_* only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rt_decoder.atomic import atomic_path, write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEFAULT_CONFIG = "default"
# name -> (data path under the data folder, the dataset's own shipped config, or None: the default config)
DATASETS = {
    "chestek": ("chestek_contdata95/contdata95.mat", "chestek_contdata95"),
    "nick_co_001": ("limblab_nick_co/Nick_CO_001-01-binned.mat", "limblab_nick_co"),
    "nick_co_002": ("limblab_nick_co/Nick_CO_002-01-binned.mat", "limblab_nick_co"),
    "mc_maze_small": ("mc_maze_small_nlb/mc_maze_small_full.h5", "mc_maze_small_nlb"),
    "spike_wf_0718": ("limblab_spike_wf/Spike_07-18-12_WF_001.mat", None),
    "spike_wf_0719": ("limblab_spike_wf/Spike_07-19-12_WF_001.mat", None),
    "spike_wf_0720": ("limblab_spike_wf/Spike_07-20-12_WF_001.mat", None),
    "spike_wf_0721": ("limblab_spike_wf/Spike_07-21-12_WF_001.mat", None),
    "spike_wf_0724": ("limblab_spike_wf/Spike_07-24-12_WF_001.mat", None),
    "spike_wf_0727": ("limblab_spike_wf/Spike_07-27-12_WF_001.mat", None),
    "spike_wf_0807": ("limblab_spike_wf/Spike_08-07-12_WF_001.mat", None),
    "nelpy_linear": ("nelpy_hippocampus/linear-track", None),
    "ziv_ca1": ("ziv_ca1_calcium_linear_track", "ziv_ca1_decoder"),
}
ALIASES = {"limblab": "nick_co_001"}
MODELS = ("ours", "gru", "tcfnn", "mlp", "wiener", "kalman")

ACCURACY_HELP = ("train ours and every reference (gru, tcfnn, mlp, wiener, kalman) on each shared recording: "
                 "mean test R2, train seconds, step latency p50/p99; a table and a bar chart")
GENERATE_HELP = "time 5000 autoregressive steps at 4096 neurons (64x64) and report fidelity on ziv CA1"


def add_accuracy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS) + list(ALIASES),
                   help="recordings to train on (limblab = nick_co_001)")
    p.add_argument("--configs", choices=("own", "default", "both"), default="own",
                   help="the dataset's own config (configs/default.yaml where it has none), configs/default.yaml unchanged, or both")
    p.add_argument("--config", default=None, metavar="NAME|FILE",
                   help="train ours with this config on every dataset instead (e.g. default_flat); overrides --configs")
    p.add_argument("--baselines", default=",".join(MODELS[1:]),
                   help="comma-separated references trained beside ours")
    p.add_argument("--seed", type=int, default=0, help="training seed for ours and the neural references")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                   help="several seeds (e.g. 0 1 2): each dataset is trained once per seed (OUT/<dataset>-<config>-s<S>) "
                        "and the table and chart show the mean and spread over them; overrides --seed")
    p.add_argument("--latency-steps", type=int, default=2000, help="steps timed per model for the latency columns")
    p.add_argument("--data-dir", default=str(DATA), help="folder holding the datasets")
    p.add_argument("--out", default="runs/bench", help="where models and metrics are written")
    p.add_argument("--time-limit", type=float, default=None,
                   help="compute limit per model: CPU seconds per torch thread (wall time on an idle machine)")
    p.add_argument("--json", metavar="FILE", help="also write all results as JSON to FILE, for machines")
    p.add_argument("--png", default=None, help="bar chart of mean R2 per dataset and model (None: OUT/accuracy.png)")


def _mean(v) -> float:
    return sum(v) / len(v)


def step_latency(path: str | Path, n: int) -> dict:
    """Median and 99th percentile of one ONNX step (1 thread, CPU), in ms."""
    import numpy as np

    from rt_decoder.step_model import StepModel

    t = StepModel(path, threads=1, providers="cpu").time_steps(n) * 1e3
    return {"p50_ms": float(np.median(t)), "p99_ms": float(np.percentile(t, 99))}


def run_accuracy(args: argparse.Namespace) -> int:
    from rt_decoder.errors import DataError
    from training.config import load_config, parse_references
    from training.pipeline import run_training

    refs = parse_references(args.baselines)
    names = list(dict.fromkeys(ALIASES.get(n, n) for n in args.datasets))
    seeds = list(dict.fromkeys(args.seeds if getattr(args, "seeds", None) else [args.seed]))
    results = []
    for name in names:
        rel, own = DATASETS[name]
        data = Path(args.data_dir) / rel
        if not data.exists():
            raise DataError(f"{data}: dataset not present (see ../shared/data/*/SOURCE.txt)")
        configs = {"own": [own or DEFAULT_CONFIG], "default": [DEFAULT_CONFIG],
                   "both": list(dict.fromkeys([own or DEFAULT_CONFIG, DEFAULT_CONFIG]))}[args.configs]
        if getattr(args, "config", None):
            configs = [args.config]
        for c in configs:
            for seed in seeds:
                cfg = load_config(c)
                cfg["training"]["seed"] = seed
                out = Path(args.out) / (f"{name}-{Path(c).stem}" + (f"-s{seed}" if len(seeds) > 1 else ""))
                t0 = time.perf_counter()
                m = run_training(cfg, str(data), out, time_limit=args.time_limit, baselines=refs,
                                 log=lambda s: print(s, file=sys.stderr))
                lat = {"ours": step_latency(out / "model.onnx", args.latency_steps)}
                for r in m["baselines"]:
                    lat[r] = step_latency(out / f"{r}.onnx", args.latency_steps)
                results.append({"dataset": name, "config": c, "seed": seed, "out": str(out),
                                "wall_s": round(time.perf_counter() - t0, 1), "latency": lat, **m})
                print(accuracy_table(results[-1:]), file=sys.stderr)
    print(accuracy_table(results))
    png = Path(args.png) if args.png else Path(args.out) / "accuracy.png"
    accuracy_chart(results, png)
    print(f"wrote {png}")
    if args.json:
        write_json(args.json, results)
    return 0


def rows(r: dict) -> list[dict]:
    """One row per model of a result: mean R2, train seconds, step latency."""
    nan = float("nan")

    def core(m: dict) -> float:        # R2 without the tail bins (rt_decoder.metrics.tail_metrics)
        return _mean(m["tail"]["r2_outside"]) if "tail" in m else nan

    out = [{"model": "ours", "r2": _mean(r["model"]["r2"]), "r2_core": core(r["model"]), "train_s": r["train_seconds"],
            "cpu_s": r.get("train_cpu_seconds", nan), **r["latency"]["ours"]}]
    for name, b in r["baselines"].items():
        out.append({"model": name, "r2": _mean(b["r2"]), "r2_core": core(b), "train_s": b.get("train_seconds", nan),
                    "cpu_s": b.get("train_cpu_seconds", nan), **r["latency"][name]})
    return out


def grouped(results: list[dict]) -> list[dict]:
    """Results of several seeds -> one entry per (dataset, config): per model the mean over seeds of
    each column, the R2 spread (standard deviation over seeds) and the seed count."""
    import numpy as np

    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["config"]), []).append(r)
    out = []
    for (dataset, config), rs in groups.items():
        per: dict[str, list[dict]] = {}
        for r in rs:
            for row in rows(r):
                per.setdefault(row["model"], []).append(row)
        models = []
        for model, rws in per.items():
            agg = {k: float(np.mean([w[k] for w in rws])) for k in ("r2", "r2_core", "train_s", "cpu_s", "p50_ms", "p99_ms")}
            agg.update(model=model, sd=float(np.std([w["r2"] for w in rws])), n=len(rws))
            models.append(agg)
        out.append({"dataset": dataset, "config": config, "lag_bins": rs[0]["lag_bins"], "rows": models})
    return out


def accuracy_table(results: list[dict]) -> str:
    """Mean R2 per dataset, config and model; over several seeds, their mean +- standard deviation."""
    lines = [f"{'dataset':<14} {'config':<32} {'lag':>3} {'model':<7} {'mean R2':>8} {'+- sd':>7} {'seeds':>5} {'vs ours':>8} "
             f"{'w/o tail':>8} {'train s':>8} {'cpu s':>7} {'p50 ms':>7} {'p99 ms':>7}"]
    for g in grouped(results):
        ours = g["rows"][0]["r2"]
        for row in g["rows"]:
            diff = "" if row["model"] == "ours" else f"{row['r2'] - ours:+.4f}"
            lines.append(f"{g['dataset']:<14} {g['config']:<32} {g['lag_bins']:>3} {row['model']:<7} {row['r2']:8.4f} "
                         f"{row['sd']:7.4f} {row['n']:5d} {diff:>8} {row['r2_core']:8.4f} "
                         f"{row['train_s']:8.1f} {row['cpu_s']:7.1f} "
                         f"{row['p50_ms']:7.3f} {row['p99_ms']:7.3f}")
    lines.append("mean R2 over outputs on the test block (last 20%), from the exported step graphs run bin by bin; "
                 "+- sd = its standard deviation over seeds (--seeds); vs ours = reference minus ours (positive: "
                 "the reference wins); w/o tail = mean R2 without the test bins whose behaviour lies beyond 8 training sd "
                 "(a few such bins can hold most of the variance: evaluate warns); train s = fit wall time, cpu s = its process CPU time (wall on a busy machine "
                 "is stretched by other jobs); p50/p99 = one ONNX step, 1 thread; lag = lag_bins.")
    return "\n".join(lines)


def accuracy_chart(results: list[dict], path: Path) -> None:
    """Grouped bars: mean test R2 per dataset (groups) and model (bars), whiskers = spread over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = grouped(results)
    labels = [g["dataset"] + ("" if g["config"] != DEFAULT_CONFIG or DATASETS[g["dataset"]][1] is None else "\n(default cfg)")
              for g in groups]
    models = list(dict.fromkeys(row["model"] for g in groups for row in g["rows"]))
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(groups) + 2), 4.2))
    x = np.arange(len(groups))
    for i, mdl in enumerate(models):
        got = [next((row for row in g["rows"] if row["model"] == mdl), None) for g in groups]
        vals = [np.nan if w is None else w["r2"] for w in got]
        err = [0.0 if w is None else w["sd"] for w in got]
        ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, yerr=err, capsize=2, label=mdl)
    seeds = max((row["n"] for g in groups for row in g["rows"]), default=1)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("mean test R2" + (f" (mean +- sd over {seeds} seeds)" if seeds > 1 else ""))
    lo = min((row["r2"] for g in groups for row in g["rows"] if np.isfinite(row["r2"])), default=0.0)   # NaN: undefined R2
    ax.set_ylim(max(0.0, lo - 0.05) if lo > 0 else lo - 0.05, 1.0)
    ax.legend(ncol=len(models), fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=5000, help="autoregressive steps to time")
    p.add_argument("--side", type=int, default=64, help="canvas side; neurons = side*side")
    p.add_argument("--model", help="a trained generative model.onnx to time instead of random weights at side x side")
    p.add_argument("--config", default="ziv_ca1_calcium_linear_track",
                   help="architecture (widths, decays) for the random-weight model")
    p.add_argument("--ziv-model", default="runs/ziv/model.onnx", help="trained ziv CA1 model for the fidelity figures")
    p.add_argument("--ziv-data", default=str(DATA / "ziv_ca1_calcium_linear_track"), help="ziv CA1 data folder")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE, for machines")


def random_generative_model(side: int, config: str | Path, path: Path) -> Path:
    """Export a random-weight generative step graph with `side*side` neurons (one per pixel)."""
    import numpy as np
    import torch

    from rt_decoder.recording import Recording
    from training.config import load_config
    from training.data import prepare
    from training.export import export_step_graph
    from training.train import build_model

    cfg = load_config(config)
    cfg["retention"]["layout"] = "raster"
    cfg["retention"]["canvas"] = [side, side]
    rng = np.random.default_rng(0)
    rec = Recording(counts=(rng.random((400, side * side)) < 0.02).astype(np.int32), bin_s=0.05,
                    source="<random>").validate()
    prep = prepare(rec, cfg)
    torch.manual_seed(0)
    model = build_model(prep, cfg).eval()
    with torch.no_grad():
        model.net.head.bias.fill_(-4.0)            # about 2% spike probability per bin, like real data
    export_step_graph(model, prep, cfg, path)
    return path


def run_generate(args: argparse.Namespace) -> int:
    import tempfile

    import numpy as np

    from rt_decoder.generation import compare_statistics, generate
    from rt_decoder.step_model import StepModel

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.model) if args.model else random_generative_model(args.side, args.config, Path(tmp) / "g.onnx")
        sm = StepModel(path, threads=args.threads, providers="cpu")
        per_step = sm.time_steps(500)
        _, info = generate(sm, args.steps, seed=args.seed, progress=True)
        H, W = sm.card.canvas
        print(f"generation: {args.steps} steps, {sm.n_channels} neurons on {H}x{W} "
              f"({'trained ' + str(path) if args.model else 'random weights, ' + args.config}), "
              f"{args.threads} thread(s), {sm.providers[0]}")
        print(f"  total {info['seconds']:.2f} s = {info['steps_per_s']:.0f} steps/s (goal: 5000 steps <= 10 s)")
        print(f"  step alone: median {np.median(per_step) * 1e3:.3f} ms, p99 {np.percentile(per_step, 99) * 1e3:.3f} ms")
    figures = {"steps": args.steps, "neurons": sm.n_channels, "seconds": info["seconds"], "steps_per_s": info["steps_per_s"],
               "step_ms_p50": float(np.median(per_step) * 1e3), "step_ms_p99": float(np.percentile(per_step, 99) * 1e3)}
    if args.json:
        write_json(args.json, figures)
    ziv = Path(args.ziv_model)
    if not ziv.exists():
        print(f"fidelity: {ziv} not found; train it with rt-decoder train --config ziv_ca1_calcium_linear_track --out runs/ziv")
        return 0
    from rt_decoder.evaluation import evaluate_decoder
    from rt_decoder.loaders import load_recording

    rec = load_recording(args.ziv_data, None)
    m = StepModel(ziv, threads=args.threads, providers="cpu")
    ev = evaluate_decoder(m, rec, "test", split_bounds=m.card.extra.get("split"))["model"]
    a, b = (m.card.extra.get("split") or {}).get("test", [int(rec.n_bins * 0.8), rec.n_bins])
    real = rec.counts[a:b]
    gen, info = generate(m, b - a, seed=args.seed, burn_in=200, progress=True)
    s = compare_statistics(gen, real, bin_s=rec.bin_s, binarize_real=True)["summary"]
    print(f"fidelity of {ziv} (ziv CA1, {rec.n_channels} neurons) vs the held-out test block ({b - a} frames):")
    print("  held-out next-frame " + ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in ev.items()
                                            if isinstance(v, (int, float))))
    print(f"  {b - a} sampled frames ({info['steps_per_s']:.0f} steps/s): mean rate {s['mean_rate_generated']:.4f} Hz "
          f"vs real {s['mean_rate_real']:.4f} Hz; per-neuron rate corr {s['rate_corr']:.3f}; "
          f"pairwise-correlation corr {s['pairwise_corr_corr']:.3f}; Fano corr {s['fano_corr']:.3f}")
    if args.json:
        write_json(args.json, figures | {"held_out": ev, "fidelity": s}, default=float)
    return 0
