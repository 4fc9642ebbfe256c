"""`rt-decoder bench sessions`: across days, FALCON-style (Karpowicz et al. 2024).

Held-in sessions train one multi-session model (their test blocks are scored with their own
read-ins). Each held-out session is recalibrated with `calibrate` on its first M minutes for every
--minutes M, and every method is scored on the same block: that day's last 20% (the default
split's test block, after every calibration slice), together with `full`: our default config
trained on that day's whole training block (the ceiling few-shot calibration is measured against).

Normalized latency (FALCON): compute time / data time, i.e. the wall time to step a decoder's
ONNX graph bin by bin over the evaluation block divided by the block's duration.

Every trained artefact is kept under --out and reused on the next run (--force retrains).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import date
from pathlib import Path

from rt_decoder.atomic import atomic_path, write_json

SESSIONS_HELP = "train on some sessions, calibrate to others: R2 vs calibration minutes and vs days, normalized latency"
METHODS = ("model", "unsupervised", "uncalibrated", "scratch", "wiener", "kalman", "gru")
FILES = {"model": "model.onnx", "unsupervised": "compare/unsupervised.onnx", "uncalibrated": "compare/uncalibrated.onnx",
         "scratch": "compare/scratch.onnx", "wiener": "compare/wiener.onnx", "kalman": "compare/kalman.onnx",
         "gru": "compare/gru.onnx"}


def add_sessions_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", nargs="+", required=True, metavar="FILE", help="held-in sessions (train the shared model)")
    p.add_argument("--test", nargs="+", required=True, metavar="FILE", help="held-out sessions (calibrate and score)")
    p.add_argument("--minutes", nargs="+", type=float, default=[1.0, 2.0, 5.0], help="calibration minutes to try")
    p.add_argument("--config", default="multisession", help="multi-session training config (a file or a shipped name)")
    p.add_argument("--out", default="runs/bench-sessions", help="where models and metrics are written (and reused)")
    p.add_argument("--time-limit", type=float, default=300.0, help="multi-session training time limit (s)")
    p.add_argument("--full-time-limit", type=float, default=150.0, help="time limit for `full` (default config, whole training block)")
    p.add_argument("--scratch-time-limit", type=float, default=60.0, help="time limit for `scratch` (default config, M minutes)")
    p.add_argument("--cal-time-limit", type=float, default=30.0, help="time limit for the read-in fit")
    p.add_argument("--figure", help="R2 vs days figure (PNG; default OUT/sessions.png)")
    p.add_argument("--json", help="also write all results to this JSON file")
    p.add_argument("--adapt-tau", type=float, default=120.0,
                   help="time constant (s) of the online aligner (`run --adapt`) run from the day's start")
    p.add_argument("--force", action="store_true", help="retrain everything instead of reusing OUT")


def session_date(path: str) -> date | None:
    """MM-DD-YY in a limblab file name (Spike_07-18-12_WF_001.mat), else None."""
    m = re.search(r"(\d{2})-(\d{2})-(\d{2})", Path(path).name)
    if not m:
        return None
    try:
        return date(2000 + int(m.group(3)), int(m.group(1)), int(m.group(2)))
    except ValueError:
        return None


def _mean(v) -> float:
    return float(sum(v) / len(v))


def _score(path: Path, rec, bounds: dict) -> dict:
    from rt_decoder.evaluation import evaluate_decoder

    return evaluate_decoder(path, rec, "test", split_bounds=bounds)["model"]


def online_adapt_r2(path: Path, rec, block, tau_s: float, out: Path) -> list[float]:
    """`run --adapt` offline: the uncalibrated model with the online aligner, run causally from the
    day's first bin (no labels, no calibration), scored on the block."""
    from rt_decoder.adaptation import write_adapted
    from rt_decoder.evaluation import evaluate_decoder
    from rt_decoder.metrics import r2

    ev = evaluate_decoder(write_adapted(path, tau_s, out), rec, "all", return_predictions=True)
    a, b = block
    return [float(v) for v in r2(ev["truth"][a:b], ev["predictions"][a:b])]


def normalized_latency(path: Path, counts, bin_s: float) -> float:
    """FALCON normalized latency: wall time to step the graph over `counts` / their duration."""
    from rt_decoder.step_model import StepModel

    sm = StepModel(path, threads=1, providers="cpu")
    t0 = time.perf_counter()
    sm.run(counts)
    return (time.perf_counter() - t0) / (counts.shape[0] * bin_s)


def run_sessions(args: argparse.Namespace) -> int:
    from rt_decoder.errors import DataError
    from rt_decoder.loaders import load_recording
    from rt_decoder.recording import split_bounds

    from .calibrate import calibrate
    from .config import load_config
    from .pipeline import run_training

    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    out = Path(args.out)
    multi = out / "multi"
    t0 = time.perf_counter()
    if args.force or not (multi / "multisession.pt").exists():
        cfg = load_config(args.config)
        cfg["multisession"]["enabled"] = True
        run_training(cfg, list(args.train), multi, time_limit=args.time_limit, log=log)
    held = json.loads((multi / "metrics.json").read_text())
    train_dates = [session_date(p) for p in args.train]
    last = max((d for d in train_dates if d), default=None)
    results: dict = {"train": list(args.train), "minutes": list(args.minutes), "held_in": {}, "held_out": {},
                     "multi_train_seconds": held["train_seconds"], "outputs": held["outputs"]}
    for name, s in held["sessions"].items():
        results["held_in"][name] = {"model": s["r2"], **s["baselines"]}
    latency: dict = {}
    for day in args.test:
        rec = load_recording(day)
        name = Path(day).stem
        block = split_bounds(rec.n_bins)["test"]
        d = session_date(day)
        entry: dict = {"data": day, "days_since_training": (d - last).days if d and last else None,
                       "block": list(block), "by_minutes": {}}
        full_dir = out / name / "full"
        if args.force or not (full_dir / "model.onnx").exists():
            run_training(load_config("default"), day, full_dir, time_limit=args.full_time_limit,
                         baselines=False, log=log)
        bounds = {"train": (0, block[0]), "val": (0, block[0]), "test": tuple(block)}
        entry["full"] = _score(full_dir / "model.onnx", rec, bounds)["r2"]
        for M in args.minutes:
            cal_dir = out / name / f"m{M:g}"
            if args.force or not (cal_dir / "metrics.json").exists():
                calibrate(multi, day, M, cal_dir, time_limit=args.cal_time_limit, test_block=tuple(block),
                          scratch_time_limit=args.scratch_time_limit, log=log)
            cm = json.loads((cal_dir / "metrics.json").read_text())
            if cm["split"]["val"][1] > block[0]:
                raise DataError(f"{day}: {M:g} min of calibration reach into the last-20% evaluation block")
            row = {"calibrate_seconds": cm["calibrate_seconds"], "reference_seconds": cm.get("reference_seconds", {})}
            for method in METHODS:
                if method in cm:   # calibrate scored every method on this block (test_block)
                    row[method] = cm[method]["r2"]
                elif (cal_dir / FILES[method]).exists():
                    row[method] = _score(cal_dir / FILES[method], rec, bounds)["r2"]
            entry["by_minutes"][f"{M:g}"] = row
            if "online_adapt" not in entry and (cal_dir / FILES["uncalibrated"]).exists():
                entry["online_adapt"] = online_adapt_r2(cal_dir / FILES["uncalibrated"], rec, block, args.adapt_tau,
                                                        cal_dir / "compare" / "adapt.onnx")
            if not latency:
                counts = rec.counts[block[0]:block[1]]
                for method in METHODS:
                    if (cal_dir / FILES[method]).exists():
                        latency[method] = normalized_latency(cal_dir / FILES[method], counts, rec.bin_s)
                latency["full"] = latency.get("scratch")
        results["held_out"][name] = entry
    results["normalized_latency"] = latency
    results["adapt_tau"] = args.adapt_tau
    results["wall_seconds"] = round(time.perf_counter() - t0, 1)
    print(sessions_table(results))
    fig = Path(args.figure) if args.figure else out / "sessions.png"
    sessions_figure(results, fig)
    print(f"figure: {fig}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, results)
    return 0


def sessions_table(r: dict) -> str:
    """Held-in and held-out R2 (mean over outputs), per calibration minutes, and normalized latency."""
    outs = ", ".join(r["outputs"])
    lines = [f"held-in sessions (shared model, each day's own read-in; test block = last 20%; mean R2 over {outs})",
             f"  {'session':<26} {'model':>7} {'wiener':>7} {'kalman':>7}"]
    for name, h in r["held_in"].items():
        lines.append(f"  {name:<26} {_mean(h['model']):7.3f} " + " ".join(f"{_mean(h[b]):7.3f}" for b in ("wiener", "kalman") if b in h))
    methods = [m for m in METHODS if any(m in row for e in r["held_out"].values() for row in e["by_minutes"].values())]
    lines.append(f"held-out sessions (calibrated on the first M minutes; scored on the day's last 20%; mean R2 over {outs})")
    lines.append(f"  {'session':<26} {'days':>4} {'M':>4} " + " ".join(f"{m[:12]:>12}" for m in methods) + f" {'full':>7} {'cal s':>6}")
    for name, e in r["held_out"].items():
        for M, row in e["by_minutes"].items():
            lines.append(f"  {name:<26} {e['days_since_training'] if e['days_since_training'] is not None else '?':>4} {M:>4} "
                         + " ".join(f"{_mean(row[m]):12.3f}" if m in row else f"{'-':>12}" for m in methods)
                         + f" {_mean(e['full']):7.3f} {row['calibrate_seconds']:6.1f}")
        if "online_adapt" in e:
            lines.append(f"  {name:<26} online aligner (run --adapt, tau {r.get('adapt_tau', 0):g} s, from the day's start, "
                         f"no labels): {_mean(e['online_adapt']):.3f}")
    if r["held_out"]:
        lines.append("  model / full (the goal: >= 0.90 at 2 min): " + ", ".join(
            f"{n} M={M}: {_mean(row['model']) / _mean(e['full']):.2f}" for n, e in r["held_out"].items()
            for M, row in e["by_minutes"].items() if _mean(e["full"]) > 0))
    lines.append("normalized latency (compute time / data time, one thread, bin by bin): " + ", ".join(
        f"{k} {v:.4f}" for k, v in r["normalized_latency"].items() if v is not None))
    lines.append(f"multi-session training {r['multi_train_seconds']:.0f} s; bench wall time {r['wall_seconds']:.0f} s")
    return "\n".join(lines)


def sessions_figure(r: dict, path: Path) -> None:
    """Left: R2 vs days since the last training day: held-in days (own read-in) at <= 0, one line
    per method over the held-out days at the middle M. Right: R2 vs calibration minutes (mean over
    held-out days). R2 below -0.5 is drawn at -0.5 (a block where the behaviour barely moves)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held = r["held_out"]
    if not held:
        return
    Ms = [f"{m:g}" for m in r["minutes"]]
    mid = Ms[len(Ms) // 2]
    entries = sorted(held.values(), key=lambda e: e["days_since_training"] if e["days_since_training"] is not None else 0)
    days = [e["days_since_training"] if e["days_since_training"] is not None else i + 1 for i, e in enumerate(entries)]
    floor = -0.5
    clip = lambda v: max(floor, v)  # noqa: E731
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    methods = [m for m in METHODS if all(m in e["by_minutes"][mid] for e in entries)]
    last = max((d for d in (session_date(p) for p in r["train"]) if d), default=None)
    xs = [(d - last).days if d and last else i - len(r["train"]) + 1 for i, d in enumerate(session_date(p) for p in r["train"])]
    a.plot(xs, [clip(_mean(h["model"])) for h in r["held_in"].values()], "D", color="gray", label="held-in (own read-in)")
    for m in methods:
        a.plot(days, [clip(_mean(e["by_minutes"][mid][m])) for e in entries], marker="o",
               label=m if m != "model" else f"calibrated ({mid} min)")
        b.plot([float(x) for x in Ms], [sum(_mean(e["by_minutes"][M][m]) for e in entries) / len(entries) for M in Ms],
               marker="o", label=m if m != "model" else "calibrated")
    a.plot(days, [clip(_mean(e["full"])) for e in entries], "k--", marker="s", label="full day (default)")
    b.axhline(sum(_mean(e["full"]) for e in entries) / len(entries), color="k", ls="--", label="full day (default)")
    a.set_ylim(floor - 0.05, 1.0)
    b.set_ylim(max(floor - 0.05, b.get_ylim()[0]), 1.0)
    a.set_xlabel("days since the last training day")
    a.set_ylabel("mean R2 (last 20% of the day)")
    a.set_title("across days")
    b.set_xlabel("calibration minutes")
    b.set_title("held-out days, mean")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
