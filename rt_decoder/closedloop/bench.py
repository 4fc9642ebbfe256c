"""`rt-decoder bench closed-loop`: ours, Wiener and Kalman calibrated the same way on the same
simulated participant, side by side, before and after ReFIT (DESIGN §9).

One observation block (same participant, same seed) is shared by every decoder; then for each:
train on it -> closed-loop block -> ReFIT -> closed-loop block, in real time over LSL. Prints one
table (rows ours, ours+refit, wiener, ...; columns trials, success_rate, time_to_target_s,
path_efficiency, bitrate_bps, latency_p99_ms), writes the figure and, with --json, the figures as
{"decoders": {"ours": {...}, "ours+refit": {...}, ...}, "participant": {...}}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from ..atomic import write_json

CLOSED_LOOP_HELP = ("closed-loop calibration of ours, Wiener and Kalman on one simulated participant: "
                    "observe -> train -> closed loop -> ReFIT -> closed loop, side by side")
COLUMNS = ("trials", "success_rate", "time_to_target_s", "path_efficiency", "bitrate_bps", "latency_p99_ms")


def add_closed_loop_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=int, default=40, help="trials per closed-loop block")
    p.add_argument("--observe-s", type=float, default=90.0, help="length of the shared observation block (s)")
    p.add_argument("--encoding", default="cosine", help="the participant's encoding: cosine or fit:FILE")
    p.add_argument("--participant", default="", metavar="FLAGS", help="more flags for `rt-decoder participant`, quoted")
    p.add_argument("--task", default="", metavar="FLAGS", help="more flags for `rt-decoder task`, quoted")
    p.add_argument("--decoders", default="ours,wiener,kalman", help="comma-separated subset of ours,wiener,kalman")
    p.add_argument("--seed", type=int, default=0, help="participant, task and training seed")
    p.add_argument("--budget-ms", type=float, default=5.0, help="the runtime's latency budget")
    p.add_argument("--config", type=Path, help="training config for ours (default configs/closedloop.yaml)")
    p.add_argument("--time-limit", type=float, help="training time limit for ours (s; default: the config's)")
    p.add_argument("--out", type=Path, default=Path("runs/bench-closed-loop"), help="folder for every block, model and the figure")
    p.add_argument("--json", type=Path, help="write the figures here")
    from .experiment import add_refit_arguments

    add_refit_arguments(p)


def table(rows: dict[str, dict]) -> str:
    head = f"{'decoder':<14}" + "".join(f"{c:>18}" for c in COLUMNS)
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        cells = []
        for c in COLUMNS:
            v = r.get(c)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append(f"{'-':>18}")
            elif c == "trials":
                cells.append(f"{int(v):>18d}")
            elif c == "success_rate":
                cells.append(f"{v:>18.1%}")
            else:
                cells.append(f"{v:>18.3f}")
        lines.append(f"{name:<14}" + "".join(cells))
    return "\n".join(lines)


def row(summary: dict) -> dict:
    out = {c: summary.get(c) for c in COLUMNS}
    out |= {k: summary[k] for k in ("decode_latency_ms", "deadline_misses", "task_update_latency_ms", "intent_tracking", "task_gain") if k in summary}
    return out


def run_closed_loop(args: argparse.Namespace) -> int:
    import shlex

    from ..interrupts import interrupt_on_sigterm
    from .experiment import Session, refit_kwargs
    from .figure import bench_figure
    from .procs import ExperimentError

    decoders = [d.strip() for d in args.decoders.split(",") if d.strip()]
    bad = [d for d in decoders if d not in ("ours", "wiener", "kalman")]
    if bad or not decoders:
        raise ExperimentError(f"--decoders: unknown {', '.join(bad) or '(none given)'}; choose from ours, wiener, kalman")
    if args.trials < 1:
        raise ExperimentError(f"--trials must be >= 1, got {args.trials}")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    interrupt_on_sigterm()
    p_args = ["--encoding", args.encoding, *shlex.split(args.participant)]

    def log(line: str) -> None:
        print(f"bench closed-loop: {line}", file=sys.stderr, flush=True)

    common = dict(participant_args=p_args, task_args=shlex.split(args.task), headless=True, observe_s=args.observe_s,
                  trials=args.trials, seed=args.seed, budget_ms=args.budget_ms, config=args.config,
                  time_limit_s=args.time_limit, log=log, **refit_kwargs(args))
    t0 = time.monotonic()
    load0 = os.getloadavg()
    log(f"observation block ({args.observe_s:g} s, encoding {args.encoding}, seed {args.seed})")
    obs = Session(decoder=decoders[0], out=out, **common).observe(out / "observe")
    rows: dict[str, dict] = {}
    recs: dict[str, object] = {}
    for d in decoders:
        log(f"{d}: train -> closed loop -> ReFIT -> closed loop")
        s = Session(decoder=d, out=out / d, **common)
        s.run(observation=obs)
        for label, block in ((d, "3-closed"), (f"{d}+refit", "5-closed-refit")):
            summ = json.loads((out / d / block / "summary.json").read_text())
            rows[label] = row(summ)
            from ..recording import load_npz

            recs[label] = _load_block(out / d / block / "block.npz", load_npz)
    load1 = os.getloadavg()
    print(table(rows))
    fig = bench_figure(recs, rows, out / "figure.png",
                       title=f"closed loop, {args.encoding} participant, {args.trials} trials per block")
    participant = json.loads((out / decoders[0] / "summary.json").read_text()).get("participant", {})
    participant |= {"encoding": args.encoding, "seed": args.seed, "flags": p_args}
    result = {"decoders": rows, "participant": participant, "observation": obs.summary,
              "refit": refit_kwargs(args), "trials": args.trials, "observe_s": args.observe_s, "figure": str(fig),
              "wall_s": round(time.monotonic() - t0, 1), "load_avg_1min": [load0[0], load1[0]], "cpus": os.cpu_count()}
    print(f"figure: {fig}; load average {load0[0]:.1f} -> {load1[0]:.1f} on {os.cpu_count()} cores", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, result, default=float)
    return 0


def _load_block(path: Path, load_npz):
    """A block.npz with its extra arrays (target, state, trial) for the figure."""
    import numpy as np

    rec = load_npz(path)
    with np.load(path, allow_pickle=False) as z:
        rec.extra = {k: z[k] for k in ("target_x", "target_y", "target_radius", "trial", "task_state") if k in z.files}
    return rec
