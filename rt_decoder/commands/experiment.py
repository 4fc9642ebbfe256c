"""Run a whole closed-loop session the way labs do (DESIGN §9), headless or with the task window:

  (a) observation block: the cursor moves to the targets on its own, the participant intends it
  (b) train the decoder on that block (ours via `rt-decoder train`; Wiener / Kalman as `train` fits them)
  (c) closed-loop block: participant -> `rt-decoder run` -> task
  (d) ReFIT recalibration on (c): decoded velocity rotated toward the target, zero in the target
      (Gilja et al. 2012); the decoder refit on (a) + those labels (--refit-data), ours fine-tuned
      from (b) (--refit-from-scratch to not), label speed per --refit-speed, gain per --refit-gain
  (e) closed-loop block with the recalibrated decoder

Each block's recording (block.npz, streams.npz), model, trials.csv, summary.json and logs go to
OUT/<n>-<block>/; OUT/figure.png shows the cursor paths per block and the metrics; OUT/summary.json
the whole session.

  rt-decoder experiment --decoder wiener --out runs/session --trials 40
  rt-decoder experiment --decoder ours --participant "--encoding fit:../shared/data/chestek_contdata95/contdata95.mat" --out runs/s2
  rt-decoder experiment --decoder ours --spikes array-spikes --out runs/day1     (a real array, task window shown)
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

HELP = "run a closed-loop session: observe -> train -> closed loop -> ReFIT -> closed loop"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--decoder", required=True, choices=["ours", "wiener", "kalman"], help="the decoder to calibrate")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="session folder (blocks, models, figure, summary)")
    p.add_argument("--participant", default="", metavar="FLAGS",
                   help='extra flags for `rt-decoder participant`, quoted, e.g. "--encoding fit:FILE --channels 64"')
    p.add_argument("--spikes", metavar="NAME",
                   help="decode this existing LSL spike stream (a real array: SpikeCounts or SpikeEvents) instead of "
                        "starting a simulated participant; run the task with its window so the person sees the cursor")
    p.add_argument("--name", metavar="PREFIX",
                   help="stream name prefix: the task publishes PREFIX-task-state/-markers, the decoder PREFIX-<block>-dec "
                        "(default: a unique cl<hex>, so sessions on one network never collide)")
    p.add_argument("--task", default="", metavar="FLAGS", help='extra flags for `rt-decoder task`, quoted, e.g. "--task random"')
    p.add_argument("--headless", action="store_true", help="no task window (default: show it)")
    p.add_argument("--observe-s", type=float, default=60.0, help="length of the observation block in seconds (default 60)")
    p.add_argument("--trials", type=int, default=40, help="trials per closed-loop block (default 40)")
    p.add_argument("--seed", type=int, default=0, help="participant, task and training seed (default 0)")
    p.add_argument("--budget-ms", type=float, default=5.0, help="the runtime's latency budget (default 5)")
    p.add_argument("--config", type=Path, help="training config for --decoder ours (default configs/closedloop.yaml)")
    p.add_argument("--time-limit", type=float, help="stop training ours after S seconds (default: the config's)")
    from rt_decoder.closedloop.experiment import add_refit_arguments

    add_refit_arguments(p)


def run(args: argparse.Namespace) -> int:
    from rt_decoder.closedloop.experiment import Session, refit_kwargs, session_main
    from rt_decoder.closedloop.procs import ExperimentError

    if args.trials < 1 or args.observe_s <= 0:
        raise ExperimentError(f"--trials must be >= 1 and --observe-s > 0, got {args.trials} and {args.observe_s}")
    s = Session(decoder=args.decoder, out=args.out, participant_args=shlex.split(args.participant),
                task_args=shlex.split(args.task), headless=args.headless, observe_s=args.observe_s,
                trials=args.trials, seed=args.seed, budget_ms=args.budget_ms, config=args.config,
                time_limit_s=args.time_limit, spikes=args.spikes, **refit_kwargs(args), **({"prefix": args.name} if args.name else {}), log=lambda line: print(f"rt-decoder experiment: {line}", flush=True))
    return session_main(s)
