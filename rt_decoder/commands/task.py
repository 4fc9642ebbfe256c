"""Run a 2-D cursor task driven by a decoder's LSL output (DESIGN §9): the closed loop's screen.

Reads the decoder's Kinematics stream (--decoder, default rt-decoder): vel_x/vel_y -> velocity
control (cursor += gain * v * dt, clamped to the workspace), else pos_x/pos_y -> position control;
it prints which. Publishes <name>-state (TaskState: cursor_x, cursor_y, target_x, target_y,
target_radius, trial, state; one sample per update at --rate) and <name>-markers ("block_start",
"trial_start n", "target_on n x y r", "acquired n", "hold_broken n", "success n", "timeout n",
grid "wrong n", "block_end n"), so LabRecorder can record a session next to spikes and kinematics.
The window also publishes <name>-pointer (mouse in workspace cm) for `participant --intent mouse`.

Writes --out DIR/trials.csv (one row per trial) and DIR/summary.json (success rate, time to
target incl. hold, path efficiency, dial-in time, orbiting, Fitts ITR, bitrate, task update
latency p50/p99, settings).

  rt-decoder task --trials 16                                # center-out, window, decoder rt-decoder
  rt-decoder task --headless --task grid --grid 5 --trials 40 --out runs/grid
  rt-decoder task --mode observe --headless --trials 16      # cursor moves itself (calibration)
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ..closedloop import streams as S

HELP = "2-D cursor task (center-out, random, grid) driven by a decoder's LSL output; trials.csv + summary.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=["center-out", "random", "grid"], default="center-out",
                   help="center-out: 8 targets on a ring, each followed by a return to the centre (each a trial); "
                        "random: random targets one after another; grid: N x N cells, hold in a cell to select it "
                        "(for the achieved bitrate). Default center-out")
    p.add_argument("--mode", choices=["closed", "observe"], default="closed",
                   help="closed: the decoder drives the cursor; observe: the cursor moves to each target on its own "
                        "(minimum-jerk, --reach-s) for an open-loop calibration block. Default closed")
    p.add_argument("--decoder", metavar="NAME", default=S.DEFAULT_DECODER_NAME,
                   help=f"name of the decoder's Kinematics stream (default {S.DEFAULT_DECODER_NAME})")
    p.add_argument("--wait", metavar="S", type=float, default=10.0, help="seconds to wait for the decoder stream before giving up (default 10)")
    p.add_argument("--lead-s", metavar="S", type=float, default=1.0,
                   help="seconds of inter-trial state (cursor at the centre) before block_start, so recorders and the "
                        "participant connect first (default 1)")
    p.add_argument("--trials", metavar="N", type=int, help="end the block after N trials (exit 0)")
    p.add_argument("--duration", metavar="S", type=float, help="end the block after S seconds (a trial in progress is dropped)")
    p.add_argument("--workspace", metavar="CM", type=float, default=S.WORKSPACE_HALF_CM,
                   help=f"workspace half-width in cm: the square [-W, W]^2 (default {S.WORKSPACE_HALF_CM:g})")
    p.add_argument("--ring-radius", metavar="CM", type=float, default=S.RING_RADIUS_CM, help=f"center-out ring radius, cm (default {S.RING_RADIUS_CM:g})")
    p.add_argument("--target-radius", metavar="CM", type=float, default=S.TARGET_RADIUS_CM,
                   help=f"target radius in cm; the cursor is in when |cursor - target| <= radius (default {S.TARGET_RADIUS_CM:g})")
    p.add_argument("--hold-ms", metavar="MS", type=float, default=S.HOLD_S * 1000, help=f"hold time inside the target, ms (default {S.HOLD_S * 1000:g})")
    p.add_argument("--timeout-s", metavar="S", type=float, default=S.TIMEOUT_S, help=f"trial timeout, s (default {S.TIMEOUT_S:g})")
    p.add_argument("--iti-ms", metavar="MS", type=float, default=S.ITI_S * 1000, help=f"inter-trial interval, ms (default {S.ITI_S * 1000:g})")
    p.add_argument("--grid", metavar="N", type=int, default=5, help="grid task: N x N cells over the workspace; holding --hold-ms in any cell selects it (the cell the cursor is in at target on counts only after the cursor has left it) (default 5)")
    p.add_argument("--reach-s", metavar="S", type=float, default=1.0, help="observe mode: duration of each reach, s (default 1)")
    p.add_argument("--seed", metavar="N", type=int, default=0, help="seed of the target order (default 0)")
    p.add_argument("--gain", metavar="G", type=float, default=1.0, help="velocity control: cursor += gain * v * dt (default 1)")
    p.add_argument("--rate", metavar="HZ", type=float, default=S.TASK_RATE_HZ, help=f"task update rate, Hz (default {S.TASK_RATE_HZ:g})")
    p.add_argument("--name", metavar="NAME", default=S.DEFAULT_TASK_NAME, help=f"stream name prefix: NAME-state, NAME-markers, NAME-pointer (default {S.DEFAULT_TASK_NAME})")
    p.add_argument("--priority", choices=["realtime", "normal"], default="realtime",
                   help="realtime: SCHED_FIFO for the task loop's thread when permitted, so updates wake on time on a "
                        "busy machine (default realtime)")
    p.add_argument("--headless", action="store_true", help="no window (no NAME-pointer stream either)")
    p.add_argument("--out", metavar="DIR", type=Path, help="write trials.csv and summary.json into this directory")


def run(args: argparse.Namespace) -> int:
    from ..closedloop.task import RunnerSettings, TaskConfig, TaskRunner

    cfg = TaskConfig(task=args.task, mode=args.mode, workspace=args.workspace, ring_radius=args.ring_radius,
                     target_radius=args.target_radius, hold_s=args.hold_ms / 1000.0, timeout_s=args.timeout_s,
                     iti_s=args.iti_ms / 1000.0, grid=args.grid, seed=args.seed, reach_s=args.reach_s, n_trials=args.trials)
    settings = RunnerSettings(name=args.name, decoder=args.decoder, gain=args.gain, rate=args.rate, wait_s=args.wait, lead_s=args.lead_s, priority=args.priority,
                              duration_s=args.duration, out=args.out)
    runner = TaskRunner(cfg, settings)
    if args.headless:
        summary = _run_headless(runner)
    else:
        from ..closedloop.task_window import run_with_window

        summary = run_with_window(runner)
    _print_summary(summary, args.out)
    return 0


def _run_headless(runner) -> dict:
    old = {s: signal.signal(s, lambda *_: runner.stop()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return runner.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _fmt(v, unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
    return "–" if v is None or v != v else f"{v * scale:.{digits}f}{unit}"


def _print_summary(s: dict, out: Path | None) -> None:
    lat = s.get("update_latency", {})
    line = (f"{s['trials']} trials: success {_fmt(s['success_rate'], '%', 100, 0)}, time to target {_fmt(s['time_to_target_s'], ' s')}"
            f" (incl. hold), path efficiency {_fmt(s['path_efficiency'])}, dial-in {_fmt(s['dial_in_s'], ' s')}, "
            f"orbiting {_fmt(s['orbiting'])} entries, Fitts ITR {_fmt(s['fitts_itr_bps'], ' bit/s')}, "
            f"bitrate {_fmt(s['bitrate_bps'], ' bit/s')}")
    if lat.get("n"):
        line += f"; update latency p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms"
    print(f"rt-decoder task: {line}", file=sys.stderr)
    if out is not None:
        print(f"rt-decoder task: wrote {out / 'trials.csv'} and {out / 'summary.json'}", file=sys.stderr)
