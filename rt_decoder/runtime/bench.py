"""Latency and throughput of the streaming runtime, measured the way a user sees them.

Three processes, as deployed: `rt-decoder replay` publishes spikes, `rt-decoder run` decodes
them, and this process consumes the Kinematics stream. Latency = local_clock() at receipt minus
the sample's timestamp (the bin's end): bin close -> prediction in a consumer's hands, including
the replay's push, LSL transport both ways, binning, the step graph and the stats push.

Without --model a retention_linear step graph with random weights is built for the measurement
(same front-end as a trained model, a linear readout instead of the UNet): say so when you
report the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json

LATENCY_HELP = "end-to-end latency: bin close -> prediction received by an LSL consumer (replay + run + consumer)"
THROUGHPUT_HELP = "sustained bins/s of the runtime on one core: replay far faster than real time, count misses and backlog"


def _common(p: argparse.ArgumentParser, bins: int) -> None:
    p.add_argument("--arch-from", type=Path, metavar="MODEL",
                   help="time MODEL's network (e.g. a trained UNet) behind a front-end with --channels and --bin-ms "
                        "(same compute, weights not meaningful for the data)")
    p.add_argument("--model", type=Path, help="step graph to run; None: a retention_linear model built for the run")
    p.add_argument("--data", type=Path, help="replay this recording; None: random Poisson counts")
    p.add_argument("--bins", type=int, default=bins, help="bins to measure")
    p.add_argument("--bin-ms", type=float, default=20.0, help="bin width when building the model")
    p.add_argument("--channels", type=int, nargs="+", default=[96],
                   help="channels when building the model; several values (e.g. 96 256 1024) measure each and print "
                        "a table of latency, misses and step time per channel count")
    p.add_argument("--budget-ms", type=float, default=5.0, help="the runtime's latency budget")
    p.add_argument("--emit", choices=["asap", "fixed"], default="asap", help="the runtime's emission mode")
    p.add_argument("--format", choices=["counts", "events"], default="counts", help="replay SpikeCounts or SpikeEvents")
    p.add_argument("--source-rate", type=float, help="replay counts at this rate (e.g. 1000) for the re-binning path")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads in the runtime")
    p.add_argument("--priority", choices=["realtime", "normal"], default="realtime", help="scheduling of replay and runtime")
    p.add_argument("--spin-ms", type=float, default=1.0, help="the runtime's --spin-ms (poll around each expected bin; 0 = sleep)")
    p.add_argument("--no-keep-warm", action="store_true", help="pass --no-keep-warm to the runtime")
    p.add_argument("--json", type=Path, metavar="FILE",
                   help="also write every figure as JSON to FILE, for machines (the terminal gets the summary)")
    p.add_argument("--log", type=Path, help="keep the runtime's session log here (per-bin timings)")
    p.add_argument("--warmup-s", type=float, default=1.0, help="seconds of predictions before the measured window")


def add_latency_arguments(p: argparse.ArgumentParser) -> None:
    _common(p, bins=10000)
    p.add_argument("--floor", action="store_true",
                   help="measure the LSL floor instead: a bare pylsl echo process in place of the runtime")
    p.add_argument("--with-plot", action="store_true",
                   help="attach `rt-decoder plot` (offscreen) to the decoder, stats, truth and spike streams "
                        "during the run, to show the window does not slow the loop")


def add_throughput_arguments(p: argparse.ArgumentParser) -> None:
    _common(p, bins=20000)
    p.add_argument("--rate", type=float, default=2500.0, help="bins/s offered (replay speed = rate x bin width)")
    p.add_argument("--speed", type=float, help="replay speed instead of --rate")
    p.add_argument("--cpu", type=int, default=None, help="pin the runtime to this core (default: the last one)")


def _build_model(args: argparse.Namespace, work: Path) -> tuple[Path, Any, str]:
    """The step graph to measure (--arch-from, --model or the stand-in), its card and a label."""
    from ..model_card import read_card
    from .probe import linear_model

    if getattr(args, "arch_from", None) is not None:
        model = rewrap(args.arch_from, work / "arch.onnx", args.channels, args.bin_ms / 1000.0)
        card = read_card(model)
        label = (f"{args.arch_from.name}'s network ({card.model_type}, decays {card.decays}) behind a "
                 f"{card.n_channels} ch, {card.bin_s * 1000:g} ms front-end")
    elif args.model is not None:
        model = args.model
        card = read_card(model)
        label = f"{model} ({card.model_type}, {card.n_channels} ch, {card.bin_s * 1000:g} ms bins)"
    else:
        model = linear_model(work / "bench.onnx", n_channels=args.channels, n_outputs=4, bin_s=args.bin_ms / 1000.0)
        card = read_card(model)
        label = f"retention_linear stand-in ({card.n_channels} ch, {card.bin_s * 1000:g} ms bins, decays {card.decays}, random weights)"
    return model, card, label


def _setup(args: argparse.Namespace, work: Path, speed: float) -> tuple[Path, Path, Any]:
    from ..recording import save_npz
    from .player import load_for_replay
    from .probe import poisson_recording

    model, card, label = _build_model(args, work)
    if args.data is not None:
        rec, _ = load_for_replay(args.data, card.bin_s * 1000.0)
        data = args.data
    else:
        n = min(args.bins + int((10 + args.warmup_s) * speed / card.bin_s), 200000)
        rec = poisson_recording(n, card.n_channels, bin_s=card.bin_s, seed=0)
        data = save_npz(rec, work / "bench.npz")
    if rec.n_channels != card.n_channels:
        from ..errors import DataError

        raise DataError(f"{args.data}: {rec.n_channels} channels, the model expects {card.n_channels}")
    return model, data, (card, label, rec)


def rewrap(src: Path, dst: Path, n_channels: int, bin_s: float) -> Path:
    """The network of a retention step graph behind a new front-end (channels, bin width): the
    same per-bin compute at the geometry a benchmark asks for."""
    import onnx
    from onnx import numpy_helper
    from onnx.utils import Extractor

    from ..errors import ModelError
    from ..layout import raster_layout
    from ..model_card import StateSpec, read_card
    from ..step_graph import build_retention_model, retention_features_name, save

    card = read_card(src)
    proto = onnx.load(str(src))
    if card.model_type != "retention_unet" or card.quantizer == "learned":
        raise ModelError(f"{src}: --arch-from needs a retention_unet with a fixed quantizer, this is a "
                         f"{card.model_type} ({card.quantizer})")
    H, W = card.canvas
    if n_channels > H * W:
        raise ModelError(f"{src}: {n_channels} channels do not fit its {H}x{W} canvas")
    feat = retention_features_name(card.lag_bins)  # the network's input is an Identity of it
    net_in = next((n.output[0] for n in proto.graph.node if n.op_type == "Identity" and list(n.input) == [feat]), None)
    if net_in is None:
        raise ModelError(f"{src}: no network input found behind {feat!r}; was it exported by rt-decoder train?")
    net = Extractor(onnx.shape_inference.infer_shapes(proto)).extract_model([net_in], ["net_out"])
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    card.channel_names = [f"ch{i:03d}" for i in range(n_channels)]
    card.layout = {"kind": "raster", "pixels": raster_layout(n_channels, (H, W)).tolist()}
    card.bin_s = bin_s
    card.states = [StateSpec(s.name, s.shape) for s in card.states]
    save(build_retention_model(card, network=net, out_mean=inits["dn_mean"].ravel(), out_std=inits["dn_std"].ravel()), dst)
    return dst


def _measure(args: argparse.Namespace, speed: float, pin: int | None) -> dict[str, Any]:
    from tqdm import tqdm

    from .probe import Consumer, interrupt

    with tempfile.TemporaryDirectory(prefix="rt-bench-") as tmp:
        work = Path(tmp)
        model, data, (card, label, rec) = _setup(args, work, speed)
        name = "bench-" + uuid.uuid4().hex[:8]
        summary_path = work / "summary.json"
        run_cmd = [sys.executable, "-m", "rt_decoder.cli", "run", str(model), "--input", f"{name}-spikes",
                   "--output", f"{name}-dec", "--stats", f"{name}-stats", "--budget-ms", str(args.budget_ms),
                   "--emit", args.emit, "--threads", str(args.threads), "--json", str(summary_path), "--quiet",
                   "--resolve-timeout", "60", "--priority", args.priority, "--spin-ms", str(args.spin_ms)]
        if args.no_keep_warm:
            run_cmd.append("--no-keep-warm")
        if args.log:
            run_cmd += ["--log", str(args.log)]
        if getattr(args, "floor", False):  # the same plumbing with a bare pylsl echo instead of the runtime
            run_cmd = [sys.executable, "-m", "rt_decoder.runtime.bench", "echo", f"{name}-spikes", f"{name}-dec",
                       f"{name}-stats", str(card.n_outputs), str(summary_path), args.priority]
            label = "LSL floor: a bare pylsl echo (pull -> push, no binning, no model) in place of the runtime"
        warmup = int(round(args.warmup_s * speed / card.bin_s))
        need = args.bins + warmup
        seconds = need * card.bin_s / speed
        replay_cmd = [sys.executable, "-m", "rt_decoder.cli", "replay", str(data), "--name", name, "--format", args.format,
                      "--speed", str(speed), "--loop", "--duration", str(need * card.bin_s + 20 * speed),
                      "--priority", args.priority]
        if args.source_rate:
            replay_cmd += ["--source-rate", str(args.source_rate)]

        def pin_runtime() -> None:
            if pin is not None:
                os.sched_setaffinity(0, {pin})

        from .priority import normal_priority, raise_priority

        err_file = open(work / "runtime.err", "w+")  # a file, not a pipe: a full pipe would stall the runtime
        # the replay publishes first (the runtime looks for its input before it announces its
        # outputs) and pushes once the runtime and the consumers are up: no start-up backlog
        replay = subprocess.Popen(replay_cmd + ["--wait-start"], stdin=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, preexec_fn=normal_priority)
        runtime = subprocess.Popen(run_cmd, stderr=err_file, text=True, preexec_fn=pin_runtime)
        plot = None
        if getattr(args, "with_plot", False):
            plot_cmd = [sys.executable, "-m", "rt_decoder.cli", "plot", "--decoder", f"{name}-dec", "--stats", f"{name}-stats",
                        "--truth", f"{name}-behavior", "--spikes", f"{name}-spikes", "--screenshot", str(work / "plot.png"),
                        "--duration", str(seconds + 30), "--fps"]
            plot = subprocess.Popen(plot_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=normal_priority,
                                    env=os.environ | {"QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")})
            label += "; with `rt-decoder plot` attached"
        raise_priority(args.priority)  # the consumer must not be the one waiting for a core
        try:
            dec = Consumer(f"{name}-dec", timeout=60.0)
            stats = Consumer(f"{name}-stats", timeout=60.0)
            replay.stdin.write("go\n")
            replay.stdin.flush()
            with tqdm(total=need, unit="bin", desc=f"bench ({seconds:.0f} s)", file=sys.stderr, mininterval=1.0) as bar:
                deadline = time.monotonic() + seconds * 2 + 60
                while len(dec.stamps) < need and time.monotonic() < deadline:
                    if runtime.poll() is not None or (replay is not None and replay.poll() is not None):
                        break
                    time.sleep(0.5)
                    bar.update(min(len(dec.stamps), need) - bar.n)
        finally:
            if plot is not None:
                plot.kill()
                plot.wait(20)
            if replay.stdin is not None and not replay.stdin.closed:
                replay.stdin.close()  # a replay still waiting for its start line gives up
            interrupt([p for p in (runtime, replay) if p is not None], 20)  # the runtime first
        dec.stop()
        stats.stop()
        err_file.seek(0)
        err = err_file.read()
        err_file.close()
        if not summary_path.exists():
            from ..errors import RtDecoderError

            raise RtDecoderError(f"bench: the runtime did not finish cleanly: {err.strip().splitlines()[-1] if err.strip() else 'no output'}")
        summary = json.loads(summary_path.read_text())

    x, ts, lat = dec.data()
    s, sts, _ = stats.data()
    # the measured window: the `bins` predictions after the warm-up (start-up transients --
    # first connections, first pushes, page faults -- are reported, not hidden, as "warm-up")
    w = warmup
    ts, lat = ts[w:w + args.bins], lat[w:w + args.bins]
    n = len(lat)
    lat_ms = lat * 1000.0
    window = (sts >= ts[0]) & (sts <= ts[-1]) if n else np.zeros(len(sts), bool)
    sw = s[window]
    before = s[sts < ts[0]] if n else s
    base = before[-1] if len(before) else np.zeros(6)

    def total(col: int) -> int:
        return int(sw[-1, col] - base[col]) if len(sw) else 0

    out: dict[str, Any] = {
        "model": label, "bins_measured": int(n), "warmup_bins": int(w), "bin_ms": card.bin_s * 1000,
        "channels": card.n_channels, "format": args.format, "source_rate": args.source_rate, "budget_ms": args.budget_ms,
        "emit": args.emit, "spin_ms": args.spin_ms, "speed": speed, "threads": args.threads, "priority": summary.get("priority"),
        "providers": summary.get("providers"),
        "consumer_latency_ms": {q: float(np.percentile(lat_ms, p)) if n else float("nan") for q, p in
                                (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9))} | {"max": float(lat_ms.max()) if n else float("nan")},
        "window": {"bins": int(len(sw)), "misses": total(3), "skipped": total(4), "gap_bins": total(5),
                   "max_backlog": int(sw[:, 2].max()) if len(sw) else 0},
        "runtime_whole_run": {k: summary[k] for k in ("bins", "predictions", "skipped", "misses", "misses_input_late", "gap_bins", "max_backlog", "latency_ms")},
    }
    if n > 1:
        recv = ts + lat
        out["bins_per_s"] = float((n - 1) / (recv[-1] - recv[0])) if recv[-1] > recv[0] else float("nan")
    if len(sw):
        q = max(1, len(sw) // 4)
        out["backlog"] = {"first_quarter_max": int(sw[:q, 2].max()), "last_quarter_max": int(sw[-q:, 2].max())}
    return out


MIN_BINS_TO_JUDGE = 10000  # a p99 or a zero-miss claim over fewer bins says little: not judged


def judge(goals: list[tuple[str, bool]], bins: int, min_bins: int = MIN_BINS_TO_JUDGE) -> list[tuple[str, str]]:
    """(goal, verdict) with verdict "met", "NOT met", or "not judged: N bins < MIN" for a short run."""
    if bins < min_bins:
        return [(text, f"not judged: {bins} bins < {min_bins}") for text, _ in goals]
    return [(text, "met" if ok else "NOT met") for text, ok in goals]


def _print(title: str, r: dict[str, Any], goals: list[tuple[str, bool]]) -> None:
    lat = r["consumer_latency_ms"]
    rt = r["runtime_whole_run"]
    print(f"{title}")
    print(f"  model      {r['model']}; providers {', '.join(r['providers']) or '-'}, {r['threads']} thread(s), "
          f"{r['priority']} priority")
    rate = f" at {r['source_rate']:g} Hz" if r["source_rate"] else ""
    print(f"  input      {r['format']}{rate}, {r['channels']} ch, {r['bin_ms']:g} ms bins, speed {r['speed']:g}x, "
          f"budget {r['budget_ms']:g} ms, emit {r['emit']}, spin {r['spin_ms']:g} ms")
    win = r["window"]
    print(f"  latency    bin close -> consumer, {r['bins_measured']} bins after {r['warmup_bins']} warm-up: p50 {lat['p50']:.3f}  "
          f"p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}  p99.9 {lat['p99.9']:.3f}  max {lat['max']:.3f} ms")
    print(f"  window     {win['bins']} bins: {win['misses']} misses, {win['skipped']} skipped, {win['gap_bins']} gap bins, "
          f"max backlog {win['max_backlog']}")
    print(f"  whole run  {rt['bins']} bins, {rt['predictions']} predictions, {rt['skipped']} skipped, {rt['misses']} misses "
          f"({rt.get('misses_input_late', 0)} with the input already past its deadline on arrival), "
          f"max backlog {rt['max_backlog']} (warm-up included); runtime push latency p50 {rt['latency_ms']['p50']:.3f} "
          f"p99 {rt['latency_ms']['p99']:.3f} ms")
    if "bins_per_s" in r:
        b = r.get("backlog", {})
        print(f"  rate       {r['bins_per_s']:.0f} bins/s sustained; backlog max first/last quarter "
              f"{b.get('first_quarter_max', '-')}/{b.get('last_quarter_max', '-')}")
    for text, verdict in judge(goals, r["bins_measured"]):
        print(f"  goal       {text}: {verdict}")


def step_time_us(model: Path, n: int = 2000, threads: int = 1) -> dict[str, float]:
    """The step graph alone (no LSL): microseconds per step on random counts, p50 / p99."""
    from ..step_model import StepModel

    m = StepModel(model, threads=threads)
    x = np.random.default_rng(0).poisson(0.5, size=(n, m.n_channels)).astype(np.float32)
    for row in x[:100]:
        m.step(row)
    t = np.empty(n)
    for i, row in enumerate(x):
        t0 = time.perf_counter()
        m.step(row)
        t[i] = time.perf_counter() - t0
    return {"p50": float(np.median(t) * 1e6), "p99": float(np.percentile(t, 99) * 1e6)}


def run_scale(args: argparse.Namespace) -> int:
    """bench latency with several --channels: one measurement each, one table."""
    import copy

    rows = []
    for c in args.channels:
        a = copy.copy(args)
        a.channels, a.json = c, None
        with tempfile.TemporaryDirectory(prefix="rt-scale-") as tmp:
            model, card, label = _build_model(a, Path(tmp))
            step = step_time_us(model, threads=args.threads)
        r = _measure(a, speed=1.0, pin=None)
        r["step_us"] = step
        rows.append(r)
    print(f"rt-decoder bench latency: {rows[0]['model'].split(' (')[0]}, {args.bins} bins per row at 1x, budget "
          f"{args.budget_ms:g} ms, {args.emit}; latency = bin close -> consumer; step = the step graph alone")
    print(f"  {'channels':>8}  {'p50 ms':>7}  {'p99 ms':>7}  {'max ms':>7}  {'misses':>6}  {'skipped':>7}  "
          f"{'step p50 us':>11}  {'step p99 us':>11}")
    for r in rows:
        lat, w = r["consumer_latency_ms"], r["window"]
        print(f"  {r['channels']:>8}  {lat['p50']:7.3f}  {lat['p99']:7.3f}  {lat['max']:7.3f}  {w['misses']:>6}  "
              f"{w['skipped']:>7}  {r['step_us']['p50']:11.1f}  {r['step_us']['p99']:11.1f}")
    if args.json:
        write_json(args.json, {"rows": rows})
    return 0


def run_latency(args: argparse.Namespace) -> int:
    if len(args.channels) > 1:
        return run_scale(args)
    args.channels = args.channels[0]
    r = _measure(args, speed=1.0, pin=None)
    lat = r["consumer_latency_ms"]
    goals = [("p99 <= 2 ms", lat["p99"] <= 2.0),
             (f"zero deadline misses at {args.budget_ms:g} ms", r["window"]["misses"] == 0)]
    _print("rt-decoder bench latency", r, goals)
    if args.json:
        write_json(args.json, r | {"goals": dict(judge(goals, r["bins_measured"]))})
    return 0


def run_throughput(args: argparse.Namespace) -> int:
    if len(args.channels) > 1:
        from ..errors import RtDecoderError

        raise RtDecoderError("bench throughput: give one --channels value (several are for bench latency)")
    args.channels = args.channels[0]
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    speed = args.speed
    if speed is None:
        from ..model_card import read_card

        bin_s = read_card(args.model).bin_s if args.model is not None else args.bin_ms / 1000.0
        speed = args.rate * bin_s
    r = _measure(args, speed=speed, pin=cpu)
    r["cpu"] = cpu
    b = r.get("backlog", {})
    goals = [(">= 1000 bins/s", r.get("bins_per_s", 0) >= 1000),
             ("no misses or skipped bins", r["window"]["misses"] == 0 and r["window"]["skipped"] == 0),
             ("backlog not growing", b.get("last_quarter_max", 0) <= max(2, b.get("first_quarter_max", 0)))]
    _print(f"rt-decoder bench throughput (runtime pinned to core {cpu})", r, goals)
    if args.json:
        write_json(args.json, r | {"goals": dict(judge(goals, r["bins_measured"]))})
    return 0


def echo(inp: str, out: str, stats: str, k: int, summary_path: str, priority: str) -> None:
    """The floor: pull each sample and push K floats with its timestamp at once (what any LSL
    relay costs on this machine, with none of the runtime's work)."""
    import signal as _signal

    from . import lsl as L
    from .priority import quiet_gc, raise_priority

    raise_priority(priority)
    lsl = L.pylsl()
    o = L.make_outlet(out, "Kinematics", [f"y{i}" for i in range(k)], 0.0)
    so = L.make_outlet(stats, "DecoderStats", L.STATS_LABELS, 0.0, units=L.STATS_UNITS)
    info = lsl.resolve_byprop("name", inp, 1, 60.0)[0]
    inlet = lsl.StreamInlet(info, max_buflen=60, recover=False)
    inlet.open_stream(5.0)
    buf = np.empty((1024, info.channel_count()), np.int32)
    y = np.zeros(k, np.float32)
    stop: list[int] = []
    _signal.signal(_signal.SIGINT, lambda *_: stop.append(1))
    lat: list[float] = []
    quiet_gc()
    i = 0
    while not stop:
        try:
            _, ts = inlet.pull_chunk(timeout=0.05, max_samples=1024, dest_obj=buf, min_samples=1, as_numpy=True)
        except Exception:
            break
        for t in ts:
            o.push_sample(y, t)
            d = (lsl.local_clock() - t) * 1000.0
            lat.append(d)
            so.push_sample([i, d, 0, 0, 0, 0], t)
            i += 1
    a = np.asarray(lat) if lat else np.zeros(1)
    Path(summary_path).write_text(json.dumps({
        "bins": i, "predictions": i, "skipped": 0, "misses": 0, "misses_input_late": 0, "gap_bins": 0, "max_backlog": 0,
        "latency_ms": {"p50": float(np.median(a)), "p99": float(np.percentile(a, 99)), "max": float(a.max())},
        "priority": priority, "providers": []}))


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "echo":
    echo(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6], sys.argv[7])
