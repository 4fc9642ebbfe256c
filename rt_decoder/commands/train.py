"""Train a retention + UNet decoder (or generative model) from a YAML config, export it to ONNX and
evaluate it against Wiener and Kalman baselines on the held-out test block.

Writes DIR/model.onnx (the step graph with its model card), DIR/metrics.json (R2/RMSE/corr per
output for the model and the baselines, from running each step graph bin by bin over the test
block; split and lag stated), DIR/wiener.onnx, DIR/kalman.onnx and DIR/checkpoint.pt
(resumable with --resume). Generative configs write held-out log-likelihood and bits/spike.
Every file is written atomically and carries the data's sha256 and this run's id; files of an
earlier run in DIR (metrics.json, wiener.onnx, kalman.onnx) are replaced or removed.

--config takes a file or a shipped config's name (`--config chestek_contdata95`); without it
the shipped default config is used. --resume refuses a checkpoint made from other data or
another model/retention config.

Ctrl-C during training stops it, exports the best model so far (metrics.json and the card say
"partial": true; no baselines) and prints the --resume command that continues it.

Needs the `train` extra (torch): pip install 'rt-decoder[train]'.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
from pathlib import Path

HELP = "train a decoder from a YAML config, export model.onnx and metrics.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rt_decoder.configs import shipped

    parser.add_argument("--config", metavar="FILE|NAME",
                        help="YAML config file, or the name of a shipped one: " + ", ".join(shipped(training=True))
                        + " (default: default)")
    parser.add_argument("--data", metavar="FILE", help="recording to train on (overrides the config's 'data')")
    parser.add_argument("--out", default="runs/model", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument("--time-limit", type=float, metavar="S", help="stop training after S seconds (best weights so far are kept)")
    parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    parser.add_argument("--no-baselines", action="store_true", help="skip fitting the Wiener and Kalman baselines")
    parser.add_argument("--seed", type=int, help="override training.seed")


def run(args: argparse.Namespace) -> int:
    from rt_decoder.atomic import check_output_dir
    from rt_decoder.errors import ConfigError, DataError, where

    config = importlib.import_module("training.config")
    cfg = config.load_config(args.config)
    if args.seed is not None:
        cfg["training"]["seed"] = args.seed
    if args.time_limit is not None and args.time_limit <= 0:
        raise ConfigError(f"--time-limit must be positive, got {args.time_limit}")
    # the cheap checks before torch is imported (seconds) and training starts
    data = args.data or cfg["data"]
    if data and not Path(data).exists():
        from_config = "" if args.data else f" (the 'data' of {cfg['_source']}; pass --data FILE)"
        raise DataError(where(data, f"no such file or folder{from_config}"))
    check_output_dir(args.out, "--out folder")
    try:
        pipeline = importlib.import_module("training.pipeline")
    except ModuleNotFoundError as e:
        if e.name == "torch":
            raise ConfigError("torch is not installed: pip install 'rt-decoder[train]'") from None
        raise
    try:
        m = pipeline.run_training(cfg, args.data, args.out, time_limit=args.time_limit, resume=args.resume,
                                  baselines=False if args.no_baselines else None,
                                  log=lambda s: print(s, file=sys.stderr))
    except KeyboardInterrupt:
        if (Path(args.out) / "checkpoint.pt").exists():
            print(f"rt-decoder train: interrupted; continue with: {resume_command(args)}", file=sys.stderr)
        raise
    print(summary(m))
    print(f"wrote {args.out}/model.onnx, {args.out}/metrics.json")
    if m.get("partial"):
        print(f"rt-decoder train: interrupted after {m['epochs']} epochs: the exported model is the best so far "
              f"(marked partial); continue with: {resume_command(args)}", file=sys.stderr)
        return 130
    return 0


def resume_command(args: argparse.Namespace) -> str:
    """The command line that continues this run from DIR/checkpoint.pt."""
    cmd = ["rt-decoder", "train"]
    if args.config:
        cmd += ["--config", str(args.config)]
    if args.data:
        cmd += ["--data", str(args.data)]
    cmd += ["--out", str(args.out)]
    if args.time_limit is not None:
        cmd += ["--time-limit", f"{args.time_limit:g}"]
    if args.seed is not None:
        cmd += ["--seed", str(args.seed)]
    if args.no_baselines:
        cmd.append("--no-baselines")
    return shlex.join(cmd + ["--resume"])


def summary(m: dict) -> str:
    """A short table: our figure per output vs the baselines."""
    if m.get("kind") == "generative":
        g = m["model"]
        return f"held-out: {g['bits_per_spike']:.4f} bits/spike, log-likelihood {g['log_likelihood_per_bin']:.3f} per bin"
    rows = [f"{'output':>10} {'model R2':>9} " + " ".join(f"{b + ' R2':>10}" for b in m["baselines"]) + f"   (lag_bins {m['lag_bins']})"]
    for i, name in enumerate(m["outputs"]):
        rows.append(f"{name:>10} {m['model']['r2'][i]:9.4f} " + " ".join(f"{v['r2'][i]:10.4f}" for v in m["baselines"].values()))
    mean = sum(m["model"]["r2"]) / len(m["model"]["r2"])
    rows.append(f"{'mean':>10} {mean:9.4f} " + " ".join(f"{sum(v['r2']) / len(v['r2']):10.4f}" for v in m["baselines"].values()))
    rows.append(f"train {m['train_seconds']:.0f} s; details: {json.dumps(m['split'])}")
    return "\n".join(rows)
