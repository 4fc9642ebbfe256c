"""Decode a live LSL spike stream with an ONNX step model inside a fixed latency budget.

Input: a `SpikeCounts` stream (D channels at any rate that divides the model's bin: 1 kHz
threshold-crossing counts are re-binned to 20 ms) or a `SpikeEvents` stream (int32 channel
index per spike, binned by timestamp; a bin closes at its end + --grace-ms). The stream's
channel count, format and rate are checked against the model card before the first bin.

Input choice: the input is found before anything is published. Without --input, among several
spike streams the one that fits the model (channel count, rate; for SpikeEvents the declared
n_channels) is used; when none or several fit, one line lists them and how to choose. The wait
(--resolve-timeout, 10 s) is announced after half a second, with a countdown on a terminal.

Output: `Kinematics` (--output, K float32 channels with labels and units, timestamp = the bin's
end on the local LSL clock, so a consumer measures latency as local_clock() - timestamp) and
`DecoderStats` (--stats, default <output>-stats: bin_index, latency_ms, backlog, deadline_miss,
skipped, gap_bins; the last three are running totals); --zeta-stream defaults to <output>-zeta.
Every source_id ends with a run id (pid + start time), so two decoders never collide; a stream
already on the network under one of our names is warned about.

Budget: a bin's deadline is its end + --budget-ms. `--emit fixed` holds each prediction until
its deadline so latency is constant. When behind, every bin still updates the state (exact);
only stale predictions are skipped and counted. A lost source is waited for and reconnected
(same source_id); the gap is filled with empty bins and counted. Bad samples: NaN/negative -> 0,
above --max-count -> clipped; events on unknown channels are dropped; all are counted.

Ctrl-C / SIGTERM stop cleanly and print a summary (bins, predictions, skipped, gaps, latency
p50/p99/max, misses). --log FILE writes every bin (JSON lines; `rt-decoder evaluate MODEL --log
FILE` re-runs it offline). Its directory must exist. If the log's disk fills, a loud warning;
decoding and publishing go on, and the log (truncated) is known as such by every reader.

  rt-decoder replay data.npz --name replay &
  rt-decoder run model.onnx --input replay-spikes --budget-ms 5 --emit fixed --log session.jsonl --plot
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

HELP = "decode a live LSL spike stream with a step model inside a fixed latency budget"

DEFAULTS = {"input": None, "resolve_timeout": 10.0, "output": "rt-decoder", "stats": None,
            "budget_ms": 5.0, "emit": "asap", "threads": 1, "providers": "auto", "grace_ms": 3.0,
            "max_count": 1000.0, "zeta_stream": None, "reconnect_timeout": None, "status_every_s": 10.0,
            "spin_ms": 1.0, "priority": "realtime", "keep_warm": True, "adapt": None}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the ONNX step graph (with its model card)")
    p.add_argument("--input", help="input stream: NAME, name=X, type=X or source_id=X (default: the SpikeCounts/SpikeEvents "
                                   "stream that fits the model; when several fit, the error lists them)")
    p.add_argument("--resolve-timeout", type=float, help="seconds to wait for the input stream (default 10)")
    p.add_argument("--output", help="name of the Kinematics outlet; the stats and zeta outlets are named after it "
                                    "(default rt-decoder)")
    p.add_argument("--stats", help="name of the DecoderStats outlet (default <output>-stats; 'none' for no stats)")
    p.add_argument("--budget-ms", type=float, help="latency budget per bin in ms (default 5)")
    p.add_argument("--emit", choices=["asap", "fixed"], help="asap: push when ready; fixed: hold until bin end + budget (default asap)")
    p.add_argument("--log", type=Path, help="write every bin (counts, prediction, timings, flags) to this JSON-lines file")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--providers", choices=["auto", "cpu", "cuda"], help="onnxruntime providers (default auto: CUDA when usable)")
    p.add_argument("--grace-ms", type=float, help="SpikeEvents: close a bin this long after its end (default 3)")
    p.add_argument("--max-count", type=float, help="clip SpikeCounts samples above this (default 1000)")
    p.add_argument("--zeta-stream", nargs="?", const="{output}-zeta",
                   help="publish a ~10 Hz snapshot of the first zeta image (default name <output>-zeta)")
    p.add_argument("--reconnect-timeout", type=float, help="give up when a lost input is not back after S seconds (default: wait)")
    p.add_argument("--status-every", dest="status_every_s", type=float, help="status line every S seconds (default 10; 0 = never)")
    p.add_argument("--priority", choices=["realtime", "normal"],
                   help="realtime: SCHED_FIFO for the loop thread when permitted, else normal (default realtime)")
    p.add_argument("--spin-ms", type=float,
                   help="poll without sleeping from S ms before each expected bin until S ms after it, so the "
                        "bin meets a hot core: costs 2*S ms of CPU per bin (default 1; 0 = always sleep)")
    p.add_argument("--keep-warm", dest="keep_warm", action=argparse.BooleanOptionalAction, default=None,
                   help="with --spin-ms, run one throw-away step just before each bin is due so the model "
                        "meets a hot cache (default on)")
    p.add_argument("--adapt", nargs="?", type=float, const=120.0, metavar="TAU_S",
                   help="align the input statistics online to the training days' (models from multi-session "
                        "training or calibrate), updating causally with time constant TAU_S seconds (default 120); "
                        "its state is logged with --log, so `evaluate --log` re-runs exactly")
    p.add_argument("--duration", type=float, help="stop after S seconds")
    p.add_argument("--max-bins", type=int, help="stop after N bins")
    p.add_argument("--plot", action="store_true", help="also start `rt-decoder plot` on the outputs in a separate process")
    p.add_argument("--truth", help="with --plot: the ground-truth stream (default: <input>-behavior when the input is <x>-spikes)")
    p.add_argument("--config", type=Path, help="YAML with defaults for these flags: a file or a shipped name (see configs/runtime.yaml: --config runtime)")
    p.add_argument("--json", type=Path, help="write the final summary as JSON here")
    p.add_argument("--quiet", action="store_true", help="no status lines")


def resolve_options(args: argparse.Namespace) -> dict:
    """Flags win over --config, which wins over the built-in defaults."""
    from rt_decoder.errors import ConfigError

    conf: dict = {}
    if args.config is not None:
        import yaml

        from rt_decoder.configs import resolve

        args.config = resolve(args.config, training=False)   # a file, or a shipped name such as `runtime`
        try:
            conf = yaml.safe_load(args.config.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{args.config}: no such config file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{args.config}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(conf, dict):
            raise ConfigError(f"{args.config}: expected a mapping of option: value")
        unknown = sorted(set(conf) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"{args.config}: unknown option(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    opts = {}
    for key, default in DEFAULTS.items():
        v = getattr(args, key, None)
        opts[key] = v if v is not None else conf.get(key, default)
    if opts["stats"] is None:
        opts["stats"] = "{output}-stats"
    elif isinstance(opts["stats"], str) and opts["stats"].lower() == "none":
        opts["stats"] = None
    return opts


def _start_plot(rt, opts: dict, truth: str | None) -> subprocess.Popen | None:
    cmd = [sys.executable, "-m", "rt_decoder.cli", "plot", "--decoder", rt.output_name]
    cmd += ["--stats", rt.stats_name or ""]
    cmd += ["--zeta", rt.zeta_name if rt.zeta_out is not None else ""]
    name = rt.info.name() if rt.inlet is not None else ""
    if truth is None and name.endswith("-spikes"):
        truth = name[: -len("-spikes")] + "-behavior"
    if truth:
        cmd += ["--truth", truth]
    if name:
        cmd += ["--spikes", name]
    from rt_decoder.runtime.priority import normal_priority

    return subprocess.Popen(cmd, preexec_fn=normal_priority)


def run(args: argparse.Namespace) -> int:
    from rt_decoder.atomic import check_output, write_json
    from rt_decoder.runtime.loop import Runtime, format_summary

    opts = resolve_options(args)
    if args.json:
        check_output(args.json, "--json file")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="rt-decoder run: %(message)s", stream=sys.stderr)
    rt = Runtime(args.model, opts["input"], output=opts["output"], stats=opts["stats"], budget_ms=opts["budget_ms"],
                 emit=opts["emit"], log_path=args.log, threads=opts["threads"], providers=opts["providers"],
                 resolve_timeout=opts["resolve_timeout"], grace_ms=opts["grace_ms"], max_count=opts["max_count"],
                 zeta_stream=opts["zeta_stream"], status_every_s=0.0 if args.quiet else opts["status_every_s"],
                 reconnect_timeout=opts["reconnect_timeout"], priority=opts["priority"],
                 spin_ms=opts["spin_ms"], keep_warm=opts["keep_warm"], adapt_tau_s=opts["adapt"])
    plot: list[subprocess.Popen] = []

    def on_ready() -> None:
        rt.ready.wait()
        if not rt.stopped and rt.inlet is not None:
            plot.append(_start_plot(rt, opts, args.truth))

    if args.plot:
        threading.Thread(target=on_ready, daemon=True).start()
    old = {s: signal.signal(s, lambda *_: rt.stop()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = rt.run(max_bins=args.max_bins, duration_s=args.duration)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for p in plot:
            if p.poll() is None:
                p.terminate()
    print(f"rt-decoder run: {format_summary(summary)}", file=sys.stderr)
    if args.json:
        write_json(args.json, summary)
    return 0
