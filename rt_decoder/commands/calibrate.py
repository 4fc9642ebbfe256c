"""Recalibrate a multi-session model to a new day in seconds (DESIGN §10).

The first --minutes of NEW calibrate, a validation slice right after them (--val-fraction of
the calibration length) picks the stopping point, and the contiguous rest of the recording is
the evaluation block. Only the new day's read-in (and output gain/offset) is fitted; the shared
trunk is frozen unless --fit head (also the head's last layer) or --fit auto (the head only when
it lowers the validation loss). --unsupervised uses no behaviour: the new day's input statistics
are aligned to the training days' (robust per-channel mean/std; near-silent channels held at
their training average).

Writes DIR/model.onnx (an ordinary step graph for `rt-decoder run`) and DIR/metrics.json: R2 per
output on the evaluation block for `model`, `uncalibrated`, `unsupervised`, `scratch` (our
default config trained on the same minutes), `wiener` and `kalman` (fit on the same minutes).

  rt-decoder train --config configs/multisession.yaml --data day1.mat day2.mat day3.mat --out runs/multi
  rt-decoder calibrate runs/multi --data day9.mat --minutes 2 --out runs/day9
"""

from __future__ import annotations

import argparse
import sys

HELP = "fit a multi-session model's read-in to a new day from its first minutes (or without labels)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="folder written by multi-session `rt-decoder train`")
    parser.add_argument("--data", required=True, metavar="NEW", help="the new day's recording (any supported format)")
    parser.add_argument("--minutes", type=float, default=2.0, help="minutes at the start used to calibrate (default %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="validation slice after the calibration minutes, as a fraction of them (default %(default)s)")
    parser.add_argument("--unsupervised", action="store_true", help="use no behaviour: align input statistics only")
    parser.add_argument("--fit", choices=("readin", "head", "auto"), default="readin",
                        help="readin: read-in + output gain/offset only; head: also the head's last layer; "
                             "auto: the head only if it lowers the validation loss by 2%% (default %(default)s)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for model.onnx and metrics.json")
    parser.add_argument("--bin-ms", type=float, help="re-bin the new day to this width first")
    parser.add_argument("--no-baselines", action="store_true", help="skip scratch/Wiener/Kalman on the same minutes")
    parser.add_argument("--scratch-config", metavar="FILE", help="config for the scratch reference (default configs/default.yaml)")
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds allowed for the fit (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    from rt_decoder.errors import ConfigError

    from . import training_module

    cal = training_module("calibrate")
    if not 0 < args.val_fraction <= 1:
        raise ConfigError(f"--val-fraction must be in (0, 1], got {args.val_fraction}")
    if args.time_limit <= 0:
        raise ConfigError(f"--time-limit must be positive, got {args.time_limit}")
    m = cal.calibrate(args.model_dir, args.data, args.minutes, args.out, unsupervised=args.unsupervised, fit=args.fit,
                      val_fraction=args.val_fraction, bin_ms=args.bin_ms, baselines=not args.no_baselines,
                      scratch_config=args.scratch_config, time_limit=args.time_limit, seed=args.seed,
                      log=lambda s: print(s, file=sys.stderr))
    print(summary(m))
    print(f"wrote {args.out}/model.onnx, {args.out}/metrics.json")
    return 0


KEYS = ("model", "uncalibrated", "unsupervised", "scratch", "wiener", "kalman", "gru")


def summary(m: dict) -> str:
    """Mean R2 on the evaluation block per method."""
    head = (f"calibrated on {m['minutes']:g} min ({'unsupervised' if m['mode'] == 'unsupervised' else 'fitted ' + ', '.join(m['fitted'])}) "
            f"in {m['calibrate_seconds']:.1f} s; evaluation block bins {m['split']['test']}")
    if "model" not in m:
        return head + " (the new day has no behaviour: nothing scored)"
    rows = [head, f"{'method':<14} " + " ".join(f"{o:>8}" for o in m["outputs"]) + f" {'mean':>8}"]
    for k in KEYS:
        if k in m:
            r2 = m[k]["r2"]
            rows.append(f"{k:<14} " + " ".join(f"{v:8.4f}" for v in r2) + f" {sum(r2) / len(r2):8.4f}")
    return "\n".join(rows)
