"""Replay a recorded session as live LSL streams, in real time or faster.

Publishes <name>-spikes (SpikeCounts, or SpikeEvents with --format events), <name>-behavior
(the recorded kinematics, labelled from behavior_names) and <name>-markers (trial starts, loop
and end markers). Timestamps are bin ends (events: spike times). Chunks are pushed against a
drift-free target clock: push n is due at start + n * bin / speed, computed from the start, not
from the last wake-up, so lateness never accumulates.

Events come from the recording's real spike times when it has them (event .npz), else each
bin's counts are spread at random times inside the bin. --source-rate 1000 splits each bin over
1 kHz sub-bins (the runtime re-bins them to the model's bin).

  rt-decoder replay session.npz --split test --speed 1
  rt-decoder replay session.npz --format events --loop
  rt-decoder replay session.npz --source-rate 1000 --name rig
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

HELP = "publish a recorded session on LSL (spikes, behaviour, trial markers) in real time"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="a recording: canonical .npz or any format `rt-decoder convert` reads")
    p.add_argument("--name", default="replay", help="stream name prefix (default replay)")
    p.add_argument("--format", choices=["counts", "events"], default="counts", help="SpikeCounts or SpikeEvents (default counts)")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed factor (default 1 = real time)")
    p.add_argument("--loop", action="store_true", help="start over at the end (until stopped or --duration)")
    p.add_argument("--duration", type=float, help="stop after S seconds of recording")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--start-s", type=float, help="start S seconds into the recording")
    where.add_argument("--split", choices=["train", "val", "test"], help="start at this split (test = last 20%%)")
    p.add_argument("--source-rate", type=float, help="publish counts at this rate (Hz), splitting each bin (e.g. 1000)")
    p.add_argument("--bin-ms", type=float, help="re-bin the recording to this width first")
    p.add_argument("--seed", type=int, default=0, help="seed for spreading counts into events / sub-bins")
    p.add_argument("--priority", choices=["realtime", "normal"], default="realtime",
                   help="realtime: SCHED_FIFO for the pushing thread when permitted (default realtime)")
    p.add_argument("--spin-ms", type=float, default=1.0,
                   help="with realtime priority, poll the clock the last S ms before each push (default 1; 0 = sleep)")
    p.add_argument("--source-id", help="LSL source_id prefix (default rt-decoder-replay:<name>; keep it to let runtimes reconnect)")
    p.add_argument("--wait-start", action="store_true",
                   help="publish the streams, then start pushing only when a line arrives on stdin (lets a harness "
                        "start `rt-decoder run` and its consumers first: nothing is pushed before they listen)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rt_decoder.runtime.player import Player, load_for_replay, start_bin_for
    from rt_decoder.runtime.priority import raise_priority

    raise_priority(args.priority)  # before the outlets exist, so liblsl's threads inherit it
    rec, spikes = load_for_replay(args.file, args.bin_ms)
    start = start_bin_for(rec, args.start_s, args.split)
    player = Player(rec, name=args.name, fmt=args.format, speed=args.speed, loop=args.loop, duration_s=args.duration,
                    start_bin=start, source_rate=args.source_rate, seed=args.seed, spikes=spikes, source_id=args.source_id,
                    priority=args.priority, spin_ms=args.spin_ms)
    streams = [f"{args.name}-spikes ({'SpikeEvents' if args.format == 'events' else 'SpikeCounts'})",
               *([f"{args.name}-behavior"] if rec.behavior is not None else []), f"{args.name}-markers"]
    print(f"rt-decoder replay: {args.file}: {rec.n_bins - start} bins of {rec.bin_s * 1000:g} ms, {rec.n_channels} channels"
          f"{' (real spike times)' if spikes is not None and args.format == 'events' else ''} at {args.speed:g}x"
          f" -> {', '.join(streams)}; Ctrl-C to stop", file=sys.stderr)
    stop: list[int] = []  # the handler only records the request; the loop below acts on it
    old = {s: signal.signal(s, lambda *_: stop.append(1)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.wait_start and not sys.stdin.readline():
            stop.append(1)  # stdin closed without a start line: the harness gave up
        if not stop:
            player.start()
        with tqdm(total=player.n_total, unit="bin", desc="replay", file=sys.stderr, mininterval=0.5) as bar:
            while not player.wait(0.25) and not stop:
                bar.update(player.n_pushed - bar.n)
            bar.update(player.n_pushed - bar.n)
    finally:
        player.stop()
        for s, h in old.items():
            signal.signal(s, h)
    t = player.timing()
    if t.get("pushes"):
        print(f"rt-decoder replay: {player.n_pushed} bins pushed; push lateness vs target clock: mean {t['late_ms_mean']:.3f} ms, "
              f"p99 {t['late_ms_p99']:.3f} ms, max {t['late_ms_max']:.3f} ms (no accumulation: targets come from the start time)",
              file=sys.stderr)
    return 0
