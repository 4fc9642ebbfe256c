"""A simulated participant for closed-loop sessions: sees the task, intends, and spikes on LSL.

Reads <task>-state (cursor, target, state) and looks at it through a visual delay; forms an
intended velocity with a feedback controller toward the target (speed-limited, zero between trials
and while the seen cursor is inside the target) plus Ornstein-Uhlenbeck motor noise, or, with
--intent mouse, steers toward the mouse pointer the task window publishes (<task>-pointer). An
encoding model turns the intention into firing rates, and Poisson spikes go out as <name>-spikes
(SpikeCounts at --source-rate, timestamp = bin end; or SpikeEvents, timestamp = spike time) on a
drift-free clock; the intention itself goes out as <name>-intent (intent_vx, intent_vy, cm/s).

Encodings:
  cosine      96 cosine-tuned channels (baseline 0-20 Hz, peak <= 100 Hz at --max-speed), uniform
              preferred directions, as in Cunningham et al. 2011 and BRAND's sim2D
  fit:FILE    a Poisson GLM per channel of a real recording (any format rt-decoder reads, with
              kinematics), plus its slow shared gain and over-dispersion; the intention is mapped
              onto the recording's speed range (--max-speed -> its 95th-percentile speed)

Spikes flow from the start (intention 0 until the task is seen), so the decoder can connect first;
the task's state stream must appear within --wait seconds. Every parameter goes into the spikes
stream's desc and into --log FILE (JSON; header at start, full log at the end). Same --seed and
the same task states -> the same spikes; --array-seed fixes the neurons (tuning, drift), so
keep it across the blocks of an experiment and vary --seed.

Example (three terminals, or the experiment command):
  rt-decoder participant --encoding cosine --seed 1
  rt-decoder run model.onnx --input participant-spikes --output rt-decoder
  rt-decoder task --task center-out --decoder rt-decoder
"""

from __future__ import annotations

import argparse
import signal
import sys

HELP = "simulated participant: task state -> intention -> spikes on LSL (closed-loop sessions)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoding", default="cosine", metavar="cosine|fit:FILE",
                   help="encoding model: cosine (default), or fit:FILE = per-channel tuning fit on a real recording "
                        "(e.g. fit:../shared/data/chestek_contdata95/contdata95.mat)")
    p.add_argument("--intent", choices=["auto", "mouse"], default="auto",
                   help="auto: feedback controller toward the target (default); mouse: steer toward the task "
                        "window's mouse pointer (<task>-pointer)")
    p.add_argument("--task", default="task", help="the task's stream prefix: reads <task>-state (default task)")
    p.add_argument("--name", default="participant", help="publish <name>-spikes and <name>-intent (default participant)")
    p.add_argument("--channels", type=int, help="channel count (default 96 for cosine; fit: the recording's, or its first N)")
    p.add_argument("--source-rate", type=float, default=1000.0,
                   help="spike source rate, Hz: one SpikeCounts sample per 1/rate s (default 1000)")
    p.add_argument("--control-rate", type=float, default=100.0,
                   help="intention updates per second; the source rate must be a multiple (default 100)")
    p.add_argument("--format", choices=["counts", "events"], default="counts",
                   help="SpikeCounts (default) or SpikeEvents (one sample per spike, timestamp = spike time)")
    p.add_argument("--visual-delay-ms", type=float, default=100.0,
                   help="the participant sees the task state this long after it happened (default 100)")
    p.add_argument("--max-speed", type=float, default=20.0, help="speed limit of the intention, cm/s (default 20)")
    p.add_argument("--gain", type=float, default=4.0,
                   help="controller gain, 1/s: intended velocity = gain x distance to the target (default 4)")
    p.add_argument("--noise", type=float, default=1.5,
                   help="motor noise: s.d. per axis of an Ornstein-Uhlenbeck velocity noise, cm/s (default 1.5; 0 = none)")
    p.add_argument("--noise-tau", type=float, default=0.2, help="motor noise time constant, s (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of this session's motor noise and spikes (default 0)")
    p.add_argument("--array-seed", type=int, default=0,
                   help="seed of the array: cosine tuning and drift; keep it across the blocks of an experiment (default 0)")
    d = p.add_argument_group("non-stationarity (default: none)")
    d.add_argument("--pd-drift", type=float, default=0.0, metavar="DEG_PER_MIN",
                   help="preferred directions rotate, each at a random rate in [-x, x] deg/min")
    d.add_argument("--baseline-drift", type=float, default=0.0, metavar="HZ_PER_MIN",
                   help="baselines move linearly, each at a rate ~ N(0, x) Hz/min")
    d.add_argument("--units-lost", type=float, default=0.0, metavar="PER_MIN",
                   help="expected number of units that go silent per minute, across the array")
    d.add_argument("--units-gained", type=float, default=0.0, metavar="PER_MIN",
                   help="expected number of new units per minute (on silent channels, with new tuning)")
    p.add_argument("--duration", type=float, help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--until-done", action="store_true", help="stop when the task's block ends (state done)")
    p.add_argument("--log", help="write the session log (JSON: every parameter, counts, timing) to FILE")
    p.add_argument("--wait", type=float, default=10.0, help="how long to wait for <task>-state, s (default 10)")
    p.add_argument("--priority", choices=["realtime", "normal"], default="realtime",
                   help="realtime: SCHED_FIFO for the pushing thread when permitted, as for replay (default realtime)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rt_decoder.closedloop.encoding import Drift
    from rt_decoder.closedloop.participant import Participant, ParticipantConfig
    from rt_decoder.runtime.priority import raise_priority

    say = lambda s: print(f"rt-decoder participant: {s}", file=sys.stderr, flush=True)  # noqa: E731
    cfg = ParticipantConfig(
        task=args.task, name=args.name, encoding=args.encoding, intent=args.intent, channels=args.channels,
        source_rate=args.source_rate, control_rate=args.control_rate, fmt=args.format,
        visual_delay_s=args.visual_delay_ms / 1000.0, max_speed=args.max_speed, gain=args.gain, noise=args.noise,
        noise_tau_s=args.noise_tau, seed=args.seed, array_seed=args.array_seed,
        drift=Drift(args.pd_drift, args.baseline_drift, args.units_lost, args.units_gained),
        duration_s=args.duration, wait_s=args.wait, until_done=args.until_done, log=args.log, priority=args.priority).check()
    raise_priority(args.priority)  # before the outlets exist, so liblsl's threads inherit it
    p = Participant(cfg, log=say)
    enc = p.encoder
    say(enc.summary() if hasattr(enc, "summary") else f"{enc.kind} encoding, {enc.n_channels} channels, array seed {cfg.array_seed}")
    kind = "SpikeCounts" if cfg.fmt == "counts" else "SpikeEvents"
    say(f"publishing {cfg.name}-spikes ({kind}, {enc.n_channels} ch, {cfg.source_rate:g} Hz) and {cfg.name}-intent; "
        f"waiting up to {cfg.wait_s:g} s for {cfg.task}-state; intent {cfg.intent}, visual delay {args.visual_delay_ms:g} ms"
        + ("" if cfg.duration_s or cfg.until_done else "; Ctrl-C to stop"))
    stop: list[int] = []
    old = {s: signal.signal(s, lambda *_: stop.append(1)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        p.start()
        total = None if cfg.duration_s is None else round(cfg.duration_s, 1)
        with tqdm(total=total, unit="s", desc="participant", file=sys.stderr, mininterval=0.5,
                  bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} s" if total else "{desc}: {n:.1f} s") as bar:
            while not p.wait(0.25) and not stop:
                bar.update(round(p.n_pushed / cfg.source_rate, 1) - bar.n)
            bar.update(round(p.n_pushed / cfg.source_rate, 1) - bar.n)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        summary = p.close()  # raises the loop's error (e.g. no task state stream) as one line
    t = summary["timing"]
    say(f"{summary['seconds']:.1f} s, {summary['spikes']} spikes ({summary['mean_rate_hz']:.1f} Hz/channel), "
        f"{summary['state_samples']} task states, {summary['trials_seen']} trials seen; "
        f"push lateness p99 {t.get('late_ms_p99', float('nan')):.2f} ms"
        + (f"; log {cfg.log}" if cfg.log else ""))
    return 0
