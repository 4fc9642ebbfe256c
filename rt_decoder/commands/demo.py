"""The whole pipeline in one command, on simulated data or a recording of yours.

1. data: --data FILE (any format `rt-decoder convert` reads, with behaviour), else a simulated
   center-out session (--minutes, 96 channels, 20 ms bins) written to OUT/session.npz;
2. decoder: `rt-decoder train` with the shipped default config for at most --train-time seconds
   (needs torch), reporting R² against the Wiener and Kalman baselines; without torch, or with
   --decoder wiener|kalman, that baseline is fitted instead (numpy only). --model skips this;
3. live: the held-out test block is replayed over LSL in real time, decoded by the real-time
   loop inside --budget-ms, and shown by `rt-decoder plot` (a window when there is a display,
   else OUT/live.png rendered offscreen);
4. report: predictions as a consumer received them over LSL, matched to ground truth by
   timestamp: R² online vs offline, latency p50/p99, deadline misses -> OUT/report.png and
   OUT/demo.json.

Examples:
  rt-decoder demo                                    # simulated session, ~5 min on a laptop CPU
  rt-decoder demo --data ../shared/data/x.mat --replay-s 60
  rt-decoder demo --decoder wiener --plot none       # no torch, no GUI
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import RtDecoderError

HELP = "end to end: data -> trained decoder -> live LSL replay + decoding + plot -> report.png"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, metavar="FILE", help="recording with behaviour (default: simulate one)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), metavar="DIR", help="output folder (default: runs/demo)")
    p.add_argument("--minutes", type=float, default=6.0, metavar="M", help="length of the simulated session (default: 6)")
    p.add_argument("--decoder", choices=("trained", "wiener", "kalman"), default="trained",
                   help="train ours (default; falls back to wiener without torch) or fit a baseline")
    p.add_argument("--model", type=Path, metavar="ONNX", help="use this step graph instead of training one")
    p.add_argument("--config", metavar="YAML|NAME", help="training config file or shipped config name (default: default)")
    p.add_argument("--train-time", type=float, default=180.0, metavar="S", help="training time limit (default: 180 s)")
    p.add_argument("--baselines", default="wiener,kalman", metavar="LIST",
                   help="references trained beside ours and shown in the report: any of gru,tcfnn,mlp,wiener,kalman, "
                        "or '' for none (default: wiener,kalman; the others add about a minute)")
    p.add_argument("--replay-s", type=float, default=30.0, metavar="S",
                   help="seconds of the test block to replay live (default: 30)")
    p.add_argument("--speed", type=float, default=1.0, metavar="X", help="replay speed factor (default: 1 = real time)")
    p.add_argument("--budget-ms", type=float, default=5.0, metavar="B", help="latency budget per bin (default: 5)")
    p.add_argument("--plot", choices=("auto", "window", "screenshot", "none"), default="auto",
                   help="live plot: a window with a display, else a screenshot (default: auto)")
    p.add_argument("--name", metavar="N", help="LSL stream name prefix (default: demo<pid>, unique)")
    p.add_argument("--seed", type=int, default=0, help="simulation and training seed (default: 0)")


def run(args: argparse.Namespace) -> int:
    from .demo_pipeline import DemoOptions, format_result, run_demo

    for flag, v in (("--minutes", args.minutes), ("--train-time", args.train_time), ("--replay-s", args.replay_s),
                    ("--speed", args.speed), ("--budget-ms", args.budget_ms)):
        if not v > 0:
            raise RtDecoderError(f"{flag}: must be > 0, got {v}")
    from ..atomic import check_output_dir
    from ..configs import resolve

    for flag, path in (("--data", args.data), ("--model", args.model)):
        if path is not None and not path.exists():
            raise RtDecoderError(f"{path}: {flag} file does not exist")
    check_output_dir(args.out, "--out folder")
    opts = DemoOptions(out=args.out, data=args.data, minutes=args.minutes, decoder=args.decoder, model=args.model,
                       config=resolve(args.config), train_time_s=args.train_time, baselines=args.baselines,
                       replay_s=args.replay_s, speed=args.speed,
                       budget_ms=args.budget_ms, plot=args.plot, name=args.name, seed=args.seed)
    result = run_demo(opts)
    print(format_result(result))
    return 0
