"""The `rt-decoder demo` pipeline (commands/demo.py is its command line): a session → a trained decoder
→ live replay over LSL → live plot → report.

Steps, each printed as it starts:
  1. data: the given recording (any format `convert` reads) or a simulated center-out session;
  2. decoder: `rt-decoder train` in a subprocess (rt_decoder never imports torch), bounded by a
     time limit; without torch, or with --decoder wiener|kalman, a baseline fitted here (numpy);
  3. live: the test block replayed over LSL (Player), the step model run on it by the real-time
     loop (Runtime) inside the latency budget, `rt-decoder plot` attached to the streams in its
     own process (a window with a display, else an offscreen screenshot);
  4. report: what a consumer received over LSL — predictions matched to ground truth by
     timestamp, R² online (vs offline, from metrics.json), latency p50/p99 and deadline misses —
     drawn to report.png and written to demo.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_json
from ..errors import RtDecoderError, where


@dataclass
class DemoOptions:
    out: Path = Path("runs/demo")
    data: Path | None = None
    minutes: float = 6.0  # simulated session length when no data is given
    channels: int = 96
    bin_ms: float = 20.0  # simulated sessions only
    decoder: str = "trained"  # trained | wiener | kalman
    model: Path | None = None  # use this step graph, skip training
    config: Path | None = None
    train_time_s: float = 180.0
    baselines: str = "wiener,kalman"  # references trained beside ours (the GRU & co. add a minute: bench accuracy has them)
    replay_s: float = 30.0
    speed: float = 1.0
    budget_ms: float = 5.0
    plot: str = "auto"  # auto | window | screenshot | none
    name: str | None = None
    seed: int = 0


def _say(log: Callable[[str], None], step: str, text: str) -> None:
    log(f"[{step}] {text}")


def load_data(opts: DemoOptions, log: Callable[[str], None]):
    """The recording to decode, and the path `rt-decoder train` should read it from."""
    from ..recording import save_npz

    if opts.data is not None:
        from ..runtime.player import load_for_replay

        rec, _ = load_for_replay(opts.data)  # binned as recorded (event files: the loader's default)
        if rec.behavior is None:
            raise RtDecoderError(where(opts.data, "has no behaviour to decode (need behavior/kinematics)"))
        _say(log, "data", f"{opts.data}: {rec.n_bins} bins x {rec.n_channels} channels at {rec.bin_s * 1000:g} ms, "
             f"outputs {', '.join(rec.behavior_names)}")
        return rec, opts.data
    from ..simulate import simulate_session

    rec = simulate_session(minutes=opts.minutes, channels=opts.channels, bin_s=opts.bin_ms / 1000.0, seed=opts.seed)
    path = save_npz(rec, opts.out / "session.npz")
    _say(log, "data", f"simulated {opts.minutes:g} min center-out session, {rec.n_channels} channels, "
         f"{opts.bin_ms:g} ms bins -> {path}")
    return rec, path


def train_model(opts: DemoOptions, data_path: Path, log: Callable[[str], None]) -> Path | None:
    """`rt-decoder train` in a subprocess; None when it cannot run (e.g. torch missing)."""
    from ..configs import resolve

    config = resolve(opts.config)   # shipped with the package: no silent fall-back to a baseline
    out = opts.out / "model"
    cmd = [sys.executable, "-m", "rt_decoder.cli", "train", "--config", str(config), "--data", str(data_path),
           "--out", str(out), "--time-limit", f"{opts.train_time_s:g}", "--seed", str(opts.seed)]
    cmd += ["--baselines", opts.baselines] if opts.baselines else ["--no-baselines"]
    _say(log, "train", f"training for at most {opts.train_time_s:g} s: {' '.join(cmd[2:])}")
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True)  # progress bar goes to our stderr
    if r.returncode != 0:
        _say(log, "train", f"training failed (exit {r.returncode}); falling back to a baseline")
        return None
    log(r.stdout.rstrip())
    return out / "model.onnx"


def fit_baseline(rec, kind: str, out: Path, log: Callable[[str], None]) -> Path:
    from ..baselines import fit_baselines
    from ..step_graph import save

    models = fit_baselines(rec)
    path = out / f"{kind}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    save(models[kind], path)
    _say(log, "decoder", f"fitted the {kind} baseline on the train block -> {path}")
    return path


def _plot_command(opts: DemoOptions, names: dict[str, str], duration: float) -> tuple[list[str], str] | None:
    mode = opts.plot
    if mode == "auto":
        has_display = not sys.platform.startswith("linux") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
        mode = "window" if has_display else "screenshot"
    if mode == "none":
        return None
    cmd = [sys.executable, "-m", "rt_decoder.cli", "plot", "--decoder", names["decoder"], "--truth", names["truth"],
           "--stats", names["stats"], "--zeta", names["zeta"], "--spikes", names["spikes"],
           "--duration", f"{duration:g}", "--fps"]
    if mode == "screenshot":
        cmd += ["--screenshot", str(opts.out / "live.png")]
    return cmd, mode


def match_by_time(ts_a: np.ndarray, ts_b: np.ndarray, bin_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ia, ib) of samples of a and b that stamp the same bin end (within a third of a bin)."""
    if len(ts_a) == 0 or len(ts_b) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    j = np.clip(np.searchsorted(ts_b, ts_a), 1, len(ts_b) - 1) if len(ts_b) > 1 else np.zeros(len(ts_a), int)
    if len(ts_b) > 1:
        j = np.where(np.abs(ts_b[j - 1] - ts_a) < np.abs(ts_b[j] - ts_a), j - 1, j)
    ok = np.abs(ts_b[j] - ts_a) < bin_s / 3
    return np.nonzero(ok)[0], j[ok]


def _all_received(watchers: dict, n_bins: int) -> bool:
    """Every bin's stats sample is in, and a prediction for each bin not skipped."""
    st, dec = watchers["stats"], watchers["decoder"]
    if st.buffer is None or dec.buffer is None or st.buffer.total < n_bins:
        return False
    c = st.meta.column("skipped")
    skipped = int(st.buffer.last(1)[1][0, c]) if c is not None else 0
    return dec.buffer.total + skipped >= n_bins


def run_live(opts: DemoOptions, rec, model_path: Path, log: Callable[[str], None]) -> dict:
    """Replay the test block, decode it live with `rt-decoder run` (its own process, as deployed),
    plot it with `rt-decoder plot`, and record every stream like any consumer would."""
    from tqdm import tqdm

    from ..plot.streams import StreamWatcher
    from ..recording import split_bounds
    from ..runtime.player import Player

    name = opts.name or f"demo{os.getpid()}"
    names = {"decoder": f"{name}-decoder", "stats": f"{name}-decoder-stats", "zeta": f"{name}-decoder-zeta",
             "truth": f"{name}-behavior", "spikes": f"{name}-spikes"}
    test0 = split_bounds(rec.n_bins)["test"][0]
    n_bins = min(int(round(opts.replay_s / rec.bin_s)), rec.n_bins - test0)
    wall_s = n_bins * rec.bin_s / opts.speed
    player = Player(rec, name=name, speed=opts.speed, start_bin=test0, duration_s=n_bins * rec.bin_s, seed=opts.seed)
    keep = wall_s + 30.0
    watchers = {k: StreamWatcher(names[k], window_s=keep, silence_s=keep).start() for k in ("decoder", "truth", "stats")}
    run_json = opts.out / "run.json"
    run_cmd = [sys.executable, "-m", "rt_decoder.cli", "run", str(model_path), "--input", names["spikes"],
               "--output", names["decoder"], "--stats", names["stats"], "--zeta-stream", names["zeta"],
               "--budget-ms", f"{opts.budget_ms:g}", "--json", str(run_json),
               "--resolve-timeout", "30", "--status-every", "0", "--log", str(opts.out / "session.jsonl")]
    _say(log, "live", " ".join(["rt-decoder", *run_cmd[3:]]))
    runner = subprocess.Popen(run_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the plot starts ~2 s before the first bin (Qt start-up ~1 s): shoot just before the last bin
    plot = _plot_command(opts, names, max(3.0, wall_s + 0.5))
    proc = None
    try:
        t_wait = time.monotonic()
        while not all(w.state == "connected" for w in watchers.values()):
            for w in watchers.values():
                w.poll()
            if runner.poll() is not None:
                raise RtDecoderError(f"demo: rt-decoder run exited early: {runner.stderr.read().strip()[-400:]}")
            if time.monotonic() - t_wait > 60:
                raise RtDecoderError(f"demo: the decoder's outlet {names['decoder']} did not appear within 60 s")
            time.sleep(0.05)
        if plot is not None:
            proc = subprocess.Popen(plot[0], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            _say(log, "live", f"plot ({plot[1]}): rt-decoder {' '.join(plot[0][3:])}")
            time.sleep(2.0)  # let the plot attach before the first bin
        _say(log, "live", f"replaying {n_bins * rec.bin_s:g} s of the test block (from bin {test0}) at "
             f"{opts.speed:g}x as {names['spikes']}")
        player.start()
        with tqdm(total=round(wall_s), unit="s", desc="live", file=sys.stderr, leave=False, mininterval=1.0) as bar:
            t0 = time.monotonic()
            # stop the decoder only once every bin's prediction (or skip) and stats sample arrived:
            # liblsl drops what an inlet still buffers once its outlet is gone
            while runner.poll() is None and time.monotonic() - t0 < wall_s + 15:
                for w in watchers.values():
                    w.poll()
                bar.update(min(round(time.monotonic() - t0), round(wall_s)) - bar.n)
                if _all_received(watchers, n_bins):
                    break
                time.sleep(0.2)  # the buffers hold the whole replay: no need to poll often
        if runner.poll() is None:
            runner.terminate()  # SIGTERM: `rt-decoder run` stops cleanly and writes its summary
        _, err = runner.communicate(timeout=15)
        time.sleep(0.3)
        for w in watchers.values():
            w.poll()
    finally:
        player.stop()
        if runner.poll() is None:
            runner.kill()
    if not run_json.is_file():
        raise RtDecoderError(f"demo: rt-decoder run wrote no summary (exit {runner.returncode}): {err.strip()[-400:]}")
    summary = json.loads(run_json.read_text())
    fps = None
    if proc is not None:
        try:
            out, perr = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, perr = proc.communicate()
        for line in out.splitlines():
            if line.startswith("fps:"):
                fps = float(line.split()[1])
        if proc.returncode != 0:
            _say(log, "live", f"plot exited with {proc.returncode}: {(perr.strip().splitlines() or [''])[-1]}")
    got = {k: (w.buffer.last() if w.buffer is not None else (np.zeros(0), np.zeros((0, 0)))) for k, w in watchers.items()}
    labels = {k: (w.meta.labels if w.meta is not None else []) for k, w in watchers.items()}
    for w in watchers.values():
        w.stop()
    return {"names": names, "data": got, "labels": labels, "summary": summary, "fps": fps,
            "plot_mode": None if plot is None else plot[1], "test0": test0}


def run_demo(opts: DemoOptions, log: Callable[[str], None] = print) -> dict:
    """Run every step; returns (and writes to OUT/demo.json) the figures."""
    from ..metrics import r2
    from ..plot.report import write_report
    from ..plot.stats import latency_values
    from ..plot.streams import StreamMeta
    from ..step_model import StepModel

    opts.out.mkdir(parents=True, exist_ok=True)
    rec, data_path = load_data(opts, log)
    model_path = opts.model
    if model_path is None and opts.decoder == "trained":
        model_path = train_model(opts, Path(data_path), log)
    if model_path is None:
        model_path = fit_baseline(rec, "wiener" if opts.decoder == "trained" else opts.decoder, opts.out / "model", log)
    step = StepModel(model_path)
    card = step.card
    kind = card.model_type
    metrics_path = Path(model_path).parent / "metrics.json"
    offline_metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None

    live = run_live(opts, rec, Path(model_path), log)
    ts_p, pred = live["data"]["decoder"]
    ts_t, truth_all = live["data"]["truth"]
    ts_p, ts_t = np.asarray(ts_p), np.asarray(ts_t)
    outputs = live["labels"]["decoder"] or list(card.outputs)
    truth_labels = live["labels"]["truth"]
    cols = [truth_labels.index(o) if o in truth_labels else None for o in outputs]
    bs = rec.bin_s / opts.speed
    ip, it = match_by_time(ts_p, ts_t, bs)
    if len(ip) < 2 or any(c is None for c in cols):
        raise RtDecoderError(f"demo: received {len(ts_p)} predictions and {len(ts_t)} truth samples but could not "
                             "match them by timestamp and label; is another stream using the same names?")
    y = np.asarray(truth_all)[it][:, cols]
    yhat = np.asarray(pred)[ip]
    bins = live["test0"] + np.round((ts_t[it] - ts_t[0]) / bs).astype(int)  # recording bin of each match
    t = bins * rec.bin_s + rec.bin_s  # bin ends, seconds into the recording

    # the same bins through the same step graph offline, from the same zero state
    step.reset()
    offline_pred = step.run(rec.counts[live["test0"]: bins.max() + 1])[bins - live["test0"]]
    ok = np.all(np.isfinite(yhat), axis=1)
    max_diff = float(np.abs(offline_pred[ok] - yhat[ok]).max()) if ok.any() else float("nan")

    _, stats_rows = live["data"]["stats"]
    stats_meta = StreamMeta(name="", type="", channel_count=len(live["labels"]["stats"]), nominal_srate=0, source_id="",
                            uid="", hostname="", labels=live["labels"]["stats"], units=[])
    lat = latency_values(stats_meta, np.asarray(stats_rows)) if len(stats_rows) else None
    s = live["summary"]
    if lat is None or not len(lat):
        lat = np.zeros(0)
    online_r2 = [float(v) for v in r2(y, yhat)]
    offline_r2 = [float(v) for v in r2(y, offline_pred)]
    title = (f"rt-decoder demo · {kind} ({Path(model_path).name}) · {Path(data_path).name}, "
             f"{len(ip) * rec.bin_s:.0f} s of the test block replayed live · lag_bins {card.lag_bins} · "
             f"online R² mean {np.nanmean(online_r2):.3f}")
    units = [u for u in card.units] if card.units and any(card.units) else None
    report = write_report(opts.out / "report.png", t, y, yhat, outputs, lat, title, budget_ms=opts.budget_ms,
                          misses=int(s.get("misses", 0)), units=units)
    result = {
        "model": str(model_path), "model_type": kind, "data": str(data_path), "lag_bins": card.lag_bins,
        "outputs": outputs,
        "online": {"r2": online_r2, "matched_bins": int(len(ip)), "replayed_bins": [int(bins.min()), int(bins.max()) + 1]},
        "offline_same_bins": {"r2": offline_r2, "max_abs_diff_vs_online": max_diff},
        "offline_test_block": offline_metrics["model"] if offline_metrics else None,
        "baselines_test_block": ({k: v["r2"] for k, v in offline_metrics.get("baselines", {}).items()}
                                 if offline_metrics else None),
        "latency_ms": {"p50": s["latency_ms"]["p50"], "p99": s["latency_ms"]["p99"], "max": s["latency_ms"]["max"]},
        "bins": s["bins"], "predictions": s["predictions"], "misses": s["misses"], "skipped": s["skipped"],
        "gap_bins": s["gap_bins"], "budget_ms": opts.budget_ms, "plot": live["plot_mode"], "plot_fps": live["fps"],
        "streams": live["names"], "report": str(report),
        "live_png": str(opts.out / "live.png") if live["plot_mode"] == "screenshot" else None,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
    }
    write_json(opts.out / "demo.json", result)
    return result


def format_result(r: dict) -> str:
    """The demo's figures as a short table."""
    test = r["offline_test_block"]
    base = r["baselines_test_block"] or {}
    head = f"{'output':>10} {'online R2':>10} {'offline R2':>11}"
    if test:
        head += f" {'test-block R2':>14}" + "".join(f" {k + ' R2':>10}" for k in base)
    rows = [head + "   (online: received over LSL; offline: same bins, same step graph)"]
    for i, o in enumerate(r["outputs"]):
        row = f"{o:>10} {r['online']['r2'][i]:10.4f} {r['offline_same_bins']['r2'][i]:11.4f}"
        if test:
            row += f" {test['r2'][i]:14.4f}" + "".join(f" {v[i]:10.4f}" for v in base.values())
        rows.append(row)
    lat = r["latency_ms"]
    rows.append(f"online vs offline predictions: max |diff| {r['offline_same_bins']['max_abs_diff_vs_online']:.2g} "
                f"over {r['online']['matched_bins']} bins")
    rows.append(f"live: {r['bins']} bins, {r['predictions']} predictions, {r['misses']} deadline misses at "
                f"{r['budget_ms']:g} ms, {r['skipped']} skipped, {r['gap_bins']} gap bins; latency p50 "
                f"{lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms (lag_bins {r['lag_bins']})")
    if r["plot_fps"] is not None:
        rows.append(f"plot: {r['plot']} at {r['plot_fps']:.1f} fps")
    rows.append(f"wrote {r['report']}" + (f", {r['live_png']}" if r["live_png"] else "") +
                f", {Path(r['report']).parent / 'demo.json'}")
    return "\n".join(rows)
