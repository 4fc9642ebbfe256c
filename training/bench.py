"""Benchmarks owned by training (dispatched by `rt-decoder bench accuracy|generate`).

accuracy  trains on the real datasets with their own config and with configs/default.yaml
          unchanged, and prints our R2 per output next to Wiener and Kalman (lag stated).
generate  times autoregressive sampling of a generative step graph at 4096 neurons on a 64x64
          canvas, and reports fidelity of the trained ziv CA1 model against held-out data.

Cheap to import: torch is imported inside run_* only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rt_decoder.atomic import write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DATASETS = {
    "chestek": ("chestek_contdata95/contdata95.mat", "chestek_contdata95"),
    "limblab": ("limblab_nick_co/Nick_CO_001-01-binned.mat", "limblab_nick_co"),
    "mc_maze_small": ("mc_maze_small_nlb/mc_maze_small_full.h5", "mc_maze_small_nlb"),
}

ACCURACY_HELP = "train on the real datasets (own config and configs/default.yaml) and compare R2 with Wiener/Kalman"
GENERATE_HELP = "time 5000 autoregressive steps at 4096 neurons (64x64) and report fidelity on ziv CA1"


def add_accuracy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS), help="datasets to train on")
    p.add_argument("--configs", choices=("own", "default", "both"), default="both",
                   help="the dataset's own config, configs/default.yaml unchanged, or both")
    p.add_argument("--data-dir", default=str(DATA), help="folder holding the datasets")
    p.add_argument("--out", default="runs/bench", help="where models and metrics are written")
    p.add_argument("--time-limit", type=float, default=None, help="training time limit per run (s)")
    p.add_argument("--json", metavar="FILE", help="also write all results as JSON to FILE, for machines")


def _mean(v) -> float:
    return sum(v) / len(v)


def run_accuracy(args: argparse.Namespace) -> int:
    from rt_decoder.errors import DataError
    from training.config import load_config
    from training.pipeline import run_training

    results = []
    for name in args.datasets:
        rel, own = DATASETS[name]
        data = Path(args.data_dir) / rel
        if not data.exists():
            raise DataError(f"{data}: dataset not present (see ../shared/data/*/SOURCE.txt)")
        configs = {"own": [own], "default": ["default"], "both": [own, "default"]}[args.configs]
        for c in configs:
            cfg = load_config(c)
            out = Path(args.out) / f"{name}-{c}"
            t0 = time.perf_counter()
            m = run_training(cfg, str(data), out, time_limit=args.time_limit, log=lambda s: print(s, file=sys.stderr))
            results.append({"dataset": name, "config": c, "out": str(out), "wall_s": time.perf_counter() - t0, **m})
    print(accuracy_table(results))
    if args.json:
        write_json(args.json, results)
    return 0


def accuracy_table(results: list[dict]) -> str:
    lines = [f"{'dataset':<14} {'config':<32} {'lag':>3} {'output':>8} {'ours':>7} {'wiener':>7} {'kalman':>7} {'train s':>8}"]
    for r in results:
        b = r["baselines"]
        for i, o in enumerate(r["outputs"] + ["mean"]):
            get = (lambda v, i=i: v[i]) if o != "mean" else _mean
            lines.append(f"{r['dataset']:<14} {r['config']:<32} {r['lag_bins']:>3} {o:>8} {get(r['model']['r2']):7.4f} "
                         f"{get(b['wiener']['r2']):7.4f} {get(b['kalman']['r2']):7.4f} "
                         f"{r['train_seconds'] if o == 'mean' else '':>8}")
    lines.append("R2 on the test block (last 20%), from the exported step graphs run bin by bin; "
                 "lag = lag_bins (0: zeta including bin k predicts y_k).")
    return "\n".join(lines)


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
        Path(args.json).write_text(json.dumps(figures, indent=2))
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
        Path(args.json).write_text(json.dumps(figures | {"held_out": ev, "fidelity": s}, indent=2, default=float))
    return 0
