"""Train a retention + UNet decoder (or generative model) from a YAML config, export it to ONNX and
evaluate it against reference decoders trained on the same split: a GRU, the tcFNN of Willsey
et al. 2022, an MLP on 10 lagged bins (all early-stopped on the validation block), and the
Wiener and Kalman filters.

Writes DIR/model.onnx (the step graph with its model card), DIR/metrics.json (R2/RMSE/corr per
output for the model and every reference, from running each step graph bin by bin over the test
block; split and lag stated), DIR/<reference>.onnx and DIR/checkpoint.pt (resumable with
--resume). Generative configs write held-out log-likelihood and bits/spike, beside those of their
reference, a coupled Poisson GLM (Pillow et al. 2008; DIR/glm.onnx, metrics.json baselines.glm),
and a 10^4-step sample check of each (runaway: the population ending up firing in every bin). Every file is written
atomically and carries the data's sha256 and this run's id; files of an earlier run in DIR
(metrics.json, reference .onnx files) are replaced or removed. Several --data files (or globs)
train one multi-session model: a shared trunk and a read-in per session, each session exported as
an ordinary step graph in DIR/sessions/<name>/. For a corpus larger than memory, set
multisession.memmap (each session cached once in DIR/cache and memory-mapped); under torchrun,
multisession.shards N makes each rank load only its share of the sessions (`python -m
training.train --help` takes the same flags).

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

from rt_decoder.metrics import block_notes

HELP = "train a decoder from a YAML config, export model.onnx and metrics.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rt_decoder.configs import shipped

    parser.add_argument("--config", metavar="FILE|NAME",
                        help="YAML config file, or the name of a shipped one: " + ", ".join(shipped(training=True))
                        + " (default: default)")
    parser.add_argument("--data", nargs="+", metavar="FILE",
                        help="recording(s) to train on (overrides the config's 'data'); several files or globs "
                             "train one multi-session model (shared trunk, a read-in per session)")
    parser.add_argument("--out", default="runs/model", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument("--time-limit", type=float, metavar="S", help="stop training after S seconds of compute (CPU seconds per torch thread: wall time on an idle machine, not stretched by other jobs); the best weights so far are kept")
    parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    parser.add_argument("--no-baselines", action="store_true", help="skip every reference decoder (gru, tcfnn, mlp, wiener, kalman; "
                        "for a generative model, the coupled Poisson GLM)")
    parser.add_argument("--baselines", metavar="LIST",
                        help="comma-separated references to train beside the model, e.g. gru,wiener "
                             "(default: the config's baselines.which, all five; a generative model's reference is glm)")
    parser.add_argument("--seed", type=int, help="override training.seed")
    parser.add_argument("--targets", metavar="T",
                        help="what to decode: cursor (position, velocity), force, emg (limblab emgdatabin, "
                             "outputs named emg_<emgguide name>), all, or a comma list such as cursor,emg "
                             "(overrides the config's 'targets'; default cursor)")


def run(args: argparse.Namespace) -> int:
    from rt_decoder.atomic import check_output_dir
    from rt_decoder.errors import ConfigError, DataError, where

    config = importlib.import_module("training.config")
    cfg = config.load_config(args.config)
    if args.seed is not None:
        cfg["training"]["seed"] = args.seed
    if args.targets is not None:
        from rt_decoder.loaders.targets import parse_targets

        parse_targets(args.targets)
        cfg["targets"] = args.targets
    if args.time_limit is not None and args.time_limit <= 0:
        raise ConfigError(f"--time-limit must be positive, got {args.time_limit}")
    refs = None
    if args.baselines is not None:
        if args.no_baselines:
            raise ConfigError("--baselines and --no-baselines contradict each other; give one")
        refs = config.parse_references(args.baselines)
    if args.no_baselines:
        refs = False
    # the cheap checks before torch is imported (seconds) and training starts
    files = expand_data(args.data) if args.data else None
    given = (files if len(files) > 1 else files[0]) if files else None
    data = given or cfg["data"]
    for d in ([data] if isinstance(data, (str, Path)) else data or []):
        if not Path(d).exists():
            from_config = "" if args.data else f" (the 'data' of {cfg['_source']}; pass --data FILE)"
            raise DataError(where(d, f"no such file or folder{from_config}"))
    check_output_dir(args.out, "--out folder")
    from rt_decoder.interrupts import interrupt_on_sigterm

    from . import training_module

    interrupt_on_sigterm()  # a terminated run exports its best model, as after Ctrl-C
    pipeline = training_module("pipeline")
    try:
        m = pipeline.run_training(cfg, given, args.out, time_limit=args.time_limit, resume=args.resume,
                                  baselines=refs, log=lambda s: print(s, file=sys.stderr))
    except KeyboardInterrupt:
        if (Path(args.out) / "checkpoint.pt").exists():
            print(f"rt-decoder train: interrupted; continue with: {resume_command(args)}", file=sys.stderr)
        raise
    if m.get("multisession") and "sessions" not in m:
        return 0   # a DDP rank other than 0: rank 0 reports
    if m.get("multisession"):
        print(multi_summary(m))
        print(f"wrote {args.out}/sessions/<name>/model.onnx, {args.out}/metrics.json, {args.out}/multisession.pt")
        return 0
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
        cmd += ["--data", *map(str, args.data)]
    cmd += ["--out", str(args.out)]
    if args.time_limit is not None:
        cmd += ["--time-limit", f"{args.time_limit:g}"]
    if args.seed is not None:
        cmd += ["--seed", str(args.seed)]
    if args.no_baselines:
        cmd.append("--no-baselines")
    if args.baselines:
        cmd += ["--baselines", args.baselines]
    return shlex.join(cmd + ["--resume"])


def expand_data(patterns: list[str]) -> list[str]:
    """Each --data argument as given, or, when it holds a wildcard, the sorted files it matches."""
    import glob

    from rt_decoder.errors import DataError

    out: list[str] = []
    for p in patterns:
        if any(ch in p for ch in "*?["):
            hits = sorted(glob.glob(p))
            if not hits:
                raise DataError(f"{p}: no file matches this pattern")
            out += hits
        else:
            out.append(p)
    return out


def multi_summary(m: dict) -> str:
    """Test-block R2 per session (mean over outputs) for the shared model and the baselines."""
    names = list(next(iter(m["sessions"].values()))["baselines"]) if m["sessions"] else []
    rows = [f"{'session':<28} {'model R2':>9} " + " ".join(f"{b + ' R2':>10}" for b in names) + f"   (mean over {', '.join(m['outputs'])})"]
    for name, s in m["sessions"].items():
        rows.append(f"{name:<28} {sum(s['r2']) / len(s['r2']):9.4f} "
                    + " ".join(f"{sum(s['baselines'][b]) / len(s['baselines'][b]):10.4f}" for b in names))
    rows.append(f"train {m['train_seconds']:.0f} s, {m['epochs']} epochs ({m['stopped']}); trunk {m['trunk_parameters']} parameters")
    return "\n".join(rows)


def summary(m: dict) -> str:
    """A short table: our figure per output vs the baselines."""
    if m.get("kind") == "generative":
        rows = [f"{'held-out (test block)':<34} {'bits/spike':>10} {'LL/bin':>9}   10^4-step sample"]
        for name, g in [("model", m["model"]), *m["baselines"].items()]:
            label = "model" if name == "model" else f"{name} (coupled Poisson GLM)" if name == "glm" else name
            s = m.get("sample") if name == "model" else g.get("sample")
            run = "" if not s else (f"RUNAWAY from step {s['runaway']['start_step']}" if s["runaway"]["runaway"]
                                    else f"no runaway; rate {s['mean_rate_generated']:.3g} Hz (real {s['mean_rate_real']:.3g})")
            rows.append(f"{label:<34} {g['bits_per_spike']:10.4f} {g['log_likelihood_per_bin']:9.3f}   {run}")
        return "\n".join(rows)
    rows = [f"{'output':>10} {'model R2':>9} " + " ".join(f"{b + ' R2':>10}" for b in m["baselines"]) + f"   (lag_bins {m['lag_bins']})"]
    for i, name in enumerate(m["outputs"]):
        rows.append(f"{name:>10} {m['model']['r2'][i]:9.4f} " + " ".join(f"{v['r2'][i]:10.4f}" for v in m["baselines"].values()))
    mean = sum(m["model"]["r2"]) / len(m["model"]["r2"])
    rows.append(f"{'mean':>10} {mean:9.4f} " + " ".join(f"{sum(v['r2']) / len(v['r2']):10.4f}" for v in m["baselines"].values()))
    secs = " ".join(f"{k} {v['train_seconds']:.0f} s;" for k, v in m["baselines"].items() if "train_seconds" in v)
    rows.append(f"train {m['train_seconds']:.0f} s; {secs} split: {json.dumps(m['split'])}")
    rows += [f"WARNING: {note}" for note in block_notes(m["outputs"], m["model"])]
    return "\n".join(rows)
