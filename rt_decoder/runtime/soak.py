"""Soak: a long session as deployed, checked bin by bin from the outside.

Three processes: `rt-decoder replay` (1 kHz SpikeCounts, re-binned by the runtime to 20 ms),
`rt-decoder run` with its session log on, and this process as an independent consumer of the
Kinematics and DecoderStats streams. The replay holds its first push until the runtime and the
consumers listen, so every bin is accounted for:

  lost        bins the replay pushed that reached the consumer neither as a prediction nor as a
              skipped-bin record, plus gap bins (samples the runtime never got)
  duplicated  predictions received more than once (same bin end)
  late        predictions received after bin end + budget (consumer clock)
  rss         the runtime's resident memory at start (after the warm-up) and end
  per minute  consumer latency p50/p99/max for each minute of the run

At --speed 1 the default 10^5 bins of 20 ms take ~33 min; --speed replays faster.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json

SOAK_HELP = "long session replay -> run (with its log) -> consumer: lost / duplicated / late bins, memory growth, latency per minute"


def add_soak_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bins", type=int, default=100_000, help="20 ms bins to replay (10^5 = ~33 min at speed 1)")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed factor (1 = real time)")
    p.add_argument("--channels", type=int, default=96, help="channels of the stand-in model and the random data")
    p.add_argument("--model", type=Path, help="step graph to run; none given: a retention_linear stand-in with random weights")
    p.add_argument("--source-rate", type=float, default=1000.0, help="replay counts at this rate (Hz)")
    p.add_argument("--budget-ms", type=float, default=5.0, help="the runtime's latency budget; later = late")
    p.add_argument("--priority", choices=["realtime", "normal"], default="realtime", help="scheduling of replay and runtime")
    p.add_argument("--log", type=Path, help="keep the runtime's session log here; none given: a temporary file")
    p.add_argument("--json", type=Path, help="write the figures here (keys bins, lost, duplicated, rss_growth_mb, p50_ms, p99_ms, ...)")


def rss_mb(pid: int) -> float:
    """Resident memory of a process (MB), from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def account(n_bins: int, bin_s: float, pred_ts: np.ndarray, lat_s: np.ndarray, stats: np.ndarray,
            stats_ts: np.ndarray, budget_ms: float) -> dict[str, int]:
    """Bins lost / duplicated / late, seen from the consumer. Bins are indexed on the source grid
    from the first stats sample (one per bin, in order)."""
    if not len(stats_ts):
        return {"lost": n_bins, "duplicated": 0, "late": 0, "skipped": 0, "received": 0}
    t0 = stats_ts[0]
    idx = np.round((pred_ts - t0) / bin_s).astype(np.int64)
    uniq, counts = np.unique(idx, return_counts=True)
    sidx = np.round((stats_ts - t0) / bin_s).astype(np.int64)
    skipped = set(sidx[np.isnan(stats[:, 1])].tolist()) if len(stats) else set()
    gap = int(stats[-1, 5] - stats[0, 5]) if len(stats) else 0
    covered = set(uniq[(uniq >= 0) & (uniq < n_bins)].tolist()) | {i for i in skipped if 0 <= i < n_bins}
    return {"lost": int(n_bins - len(covered) + gap), "duplicated": int((counts - 1).sum()),
            "late": int((lat_s * 1000.0 > budget_ms).sum()), "skipped": len(skipped), "received": int(len(pred_ts)),
            "gap_bins": gap}


def per_minute(recv: np.ndarray, lat_s: np.ndarray) -> list[dict[str, float]]:
    if not len(recv):
        return []
    minute = ((recv - recv[0]) // 60).astype(int)
    out = []
    for m in range(int(minute.max()) + 1):
        x = lat_s[minute == m] * 1000.0
        if x.size:
            out.append({"minute": m, "bins": int(x.size), "p50_ms": float(np.median(x)),
                        "p99_ms": float(np.percentile(x, 99)), "max_ms": float(x.max())})
    return out


def soak(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from ..errors import RtDecoderError
    from ..model_card import read_card
    from ..recording import save_npz
    from .priority import normal_priority, raise_priority
    from .probe import Consumer, interrupt, linear_model, poisson_recording

    if args.bins < 10 or not args.speed > 0:
        raise RtDecoderError(f"soak: --bins must be >= 10 and --speed > 0, got {args.bins} and {args.speed}")
    with tempfile.TemporaryDirectory(prefix="rt-soak-") as tmp:
        work = Path(tmp)
        model = args.model or linear_model(work / "soak.onnx", n_channels=args.channels, n_outputs=4, bin_s=0.02)
        card = read_card(model)
        B = card.bin_s
        rec = poisson_recording(min(args.bins, 20_000), card.n_channels, bin_s=B, seed=0)  # looped
        data = save_npz(rec, work / "soak.npz")
        name = "soak-" + uuid.uuid4().hex[:8]
        log_path = args.log or work / "session.jsonl"
        summary_path = work / "summary.json"
        wall = args.bins * B / args.speed
        replay = subprocess.Popen(
            [sys.executable, "-m", "rt_decoder.cli", "replay", str(data), "--name", name, "--speed", str(args.speed),
             "--loop", "--duration", repr(args.bins * B), "--source-rate", str(args.source_rate), "--priority",
             args.priority, "--wait-start"], stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            preexec_fn=normal_priority)
        err_file = open(work / "runtime.err", "w+")
        runtime = subprocess.Popen(
            [sys.executable, "-m", "rt_decoder.cli", "run", str(model), "--input", f"{name}-spikes", "--output",
             f"{name}-dec", "--budget-ms", str(args.budget_ms), "--log", str(log_path), "--json", str(summary_path),
             "--quiet", "--resolve-timeout", "60", "--priority", args.priority], stderr=err_file, text=True)
        raise_priority(args.priority)
        rss: list[tuple[float, float]] = []
        dec = stats = None
        try:
            dec = Consumer(f"{name}-dec", timeout=60.0)
            stats = Consumer(f"{name}-dec-stats", timeout=60.0)  # named after --output
            replay.stdin.write("go\n")
            replay.stdin.flush()
            t_start = time.monotonic()
            warm = min(args.bins // 20, 500)
            next_rss = 0.0
            with tqdm(total=args.bins, unit="bin", desc=f"soak (~{wall / 60:.1f} min)", file=sys.stderr,
                      mininterval=1.0) as bar:
                quiet_since = time.monotonic()
                last = 0
                while True:
                    time.sleep(0.5)
                    n = len(stats.stamps)
                    bar.update(min(n, args.bins) - bar.n)
                    now = time.monotonic()
                    if n >= warm and now >= next_rss:
                        rss.append((now - t_start, rss_mb(runtime.pid)))
                        next_rss = now + 10.0
                    if n >= args.bins or runtime.poll() is not None:
                        break
                    if n != last:
                        last, quiet_since = n, now
                    elif replay.poll() is not None and now - quiet_since > 5.0:
                        break  # the replay is done and nothing more comes
                    if now - t_start > wall * 2 + 120:
                        break
            rss.append((time.monotonic() - t_start, rss_mb(runtime.pid)))
            time.sleep(0.5)  # the last predictions reach the consumer
        finally:
            if replay.stdin is not None and not replay.stdin.closed:
                replay.stdin.close()
            interrupt([runtime, replay], 30)  # the runtime first: no "lost" at the end
            for c in (dec, stats):
                if c is not None:
                    c.stop()
        err_file.seek(0)
        err = err_file.read().strip()
        if not summary_path.exists():
            raise RtDecoderError(f"soak: the runtime did not finish cleanly: {err.splitlines()[-1] if err else 'no output'}")
        summary = json.loads(summary_path.read_text())
        log_info = summary.get("log") or {}

    x, ts, lat = dec.data()
    s, sts, _ = stats.data()
    acc = account(args.bins, B / args.speed, ts, lat, s, sts, args.budget_ms)
    lat_ms = lat * 1000.0
    rss_start = rss[0][1] if rss else float("nan")
    rss_end = rss[-1][1] if rss else float("nan")
    return {
        "bins": args.bins, **acc, "speed": args.speed, "channels": card.n_channels, "bin_ms": B * 1000,
        "source_rate": args.source_rate, "budget_ms": args.budget_ms, "model": str(args.model or "retention_linear stand-in"),
        "rss_start_mb": rss_start, "rss_end_mb": rss_end, "rss_growth_mb": rss_end - rss_start,
        "rss_samples": [[round(t, 1), round(m, 2)] for t, m in rss],
        "p50_ms": float(np.median(lat_ms)) if lat_ms.size else float("nan"),
        "p99_ms": float(np.percentile(lat_ms, 99)) if lat_ms.size else float("nan"),
        "max_ms": float(lat_ms.max()) if lat_ms.size else float("nan"),
        "per_minute": per_minute(ts + lat, lat),
        "runtime": {k: summary.get(k) for k in ("bins", "predictions", "skipped", "misses", "misses_input_late",
                                                 "gap_bins", "max_backlog", "latency_ms", "priority")},
        "log": {"bins_logged": log_info.get("bins_logged"), "error": log_info.get("error")},
    }


def format_soak(r: dict[str, Any]) -> str:
    lines = [f"rt-decoder bench soak: {r['bins']} bins of {r['bin_ms']:g} ms, {r['channels']} ch from a "
             f"{r['source_rate']:g} Hz source, speed {r['speed']:g}x, {r['model']}",
             f"  bins       received {r['received']}, lost {r['lost']}, duplicated {r['duplicated']}, "
             f"late {r['late']} (> {r['budget_ms']:g} ms), skipped {r['skipped']}, gap bins {r['gap_bins']}",
             f"  latency    bin close -> consumer: p50 {r['p50_ms']:.3f}  p99 {r['p99_ms']:.3f}  max {r['max_ms']:.3f} ms",
             f"  memory     runtime RSS {r['rss_start_mb']:.1f} -> {r['rss_end_mb']:.1f} MB "
             f"(growth {r['rss_growth_mb']:+.2f} MB)",
             f"  log        {r['log']['bins_logged']} bins logged" + (f", FAILED: {r['log']['error']}" if r["log"]["error"] else ""),
             "  minute      bins    p50 ms    p99 ms    max ms"]
    for m in r["per_minute"]:
        lines.append(f"  {m['minute']:>6}  {m['bins']:>8}  {m['p50_ms']:8.3f}  {m['p99_ms']:8.3f}  {m['max_ms']:8.3f}")
    return "\n".join(lines)


def run_soak(args: argparse.Namespace) -> int:
    r = soak(args)
    print(format_soak(r))
    if args.json:
        write_json(args.json, r)
    return 0
