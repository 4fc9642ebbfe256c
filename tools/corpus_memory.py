"""Does a corpus larger than memory train? The memory of memory-mapped multi-session training.

`build` writes N sessions (a short simulated session tiled to --minutes, --channels channels)
and their on-disk caches (multisession.memmap, training/corpus.py), one session in memory at a
time. `measure` then opens the caches and trains in a fresh process, sampling every 5 ms its
anonymous resident memory (RssAnon: what the process itself holds; the mapped file pages it
reads are page cache, which the kernel drops under pressure instead of failing). It prints one
JSON line: the cache's bytes, the RssAnon before loading and its peak growth while loading and training,
the peak total RSS (VmHWM, file pages included) and the seconds.

    python tools/corpus_memory.py build --dir /tmp/corpus --sessions 4 --minutes 400 --channels 128
    python tools/corpus_memory.py measure --dir /tmp/corpus --epochs 1
    python tools/corpus_memory.py measure --dir /tmp/corpus --in-memory     # the contrast
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

CONFIG = {
    "retention": {"decays": [0.0, 0.5, 0.875, 0.96875], "quantizer": "levels", "levels": 4},
    "model": {"widths": [8], "head_hidden": 32, "dropout": 0.0},
    "training": {"batch_size": 256, "lr": 0.003, "max_epochs": 1, "patience": 5, "seed": 0, "threads": 1},
    "multisession": {"enabled": True, "memmap": True},
}


def config(folder: Path, epochs: int = 1, batch_size: int = 256) -> dict:
    import yaml

    from training.config import load_config

    cfg = json.loads(json.dumps(CONFIG))
    cfg["name"] = "corpus-memory"
    cfg["training"]["max_epochs"] = epochs
    cfg["training"]["batch_size"] = batch_size
    cfg["multisession"]["cache_dir"] = str(folder / "cache")
    path = folder / "corpus.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(str(path))


def build(folder: Path, sessions: int, minutes: float, channels: int) -> list[str]:
    """Simulated sessions (2 simulated minutes tiled to `minutes`) and their caches."""
    from rt_decoder.recording import save_npz
    from rt_decoder.simulate import simulate_session
    from training.multisession import load_sessions

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(sessions):
        rec = simulate_session(minutes=2.0, channels=channels, bin_s=0.05, seed=i, drift=0.2 * i)
        reps = max(1, int(np.ceil(minutes / 2.0)))
        rec.counts = np.tile(rec.counts, (reps, 1))
        rec.behavior = np.tile(rec.behavior, (reps, 1))
        rec.trial_starts = None
        path = folder / f"day{i}.npz"
        save_npz(rec.validate(), path)
        paths.append(str(path))
        del rec
    load_sessions(paths, config(folder), log=lambda s: None, cache_dir=folder / "cache")
    return paths


def status(key: str) -> int:
    """A /proc/self/status figure in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def measure(folder: Path, epochs: int = 1, batch_size: int = 256, sessions: int | None = None,
            memmap: bool = True) -> dict:
    """Load and train on the first `sessions` sessions (memory-mapped caches, or in memory with
    memmap False): peak RssAnon growth over the level before loading them."""
    import torch  # noqa: F401  (imported before the baseline: its own memory is not the corpus's)

    from training.multisession import fit_multi, load_sessions

    cfg = config(folder, epochs, batch_size)
    cfg["multisession"]["memmap"] = memmap
    paths = sorted(str(p) for p in folder.glob("day*.npz"))[:sessions]
    base = status("RssAnon")
    peak = {"anon": base}
    done = threading.Event()

    def sample():
        while not done.wait(0.005):
            peak["anon"] = max(peak["anon"], status("RssAnon"))

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    loaded = load_sessions(paths, cfg, log=lambda s: None, cache_dir=folder / "cache" if memmap else None)
    if memmap and any(type(s.prep.feats) is not np.memmap for s in loaded):
        raise SystemExit("the caches were not built: run `build` first")
    res = fit_multi(loaded, cfg)
    seconds = time.perf_counter() - t0
    done.set()
    th.join()
    peak["anon"] = max(peak["anon"], status("RssAnon"))
    names = {Path(p).stem for p in paths}
    cache_bytes = sum(f.stat().st_size for f in (folder / "cache").rglob("*.npy") if f.parent.name.split("-")[0] in names)
    return {"sessions": len(loaded), "memmap": memmap, "bins": int(sum(s.rec.n_bins for s in loaded)),
            "cache_bytes": cache_bytes, "rss_anon_before": base, "rss_anon_growth": peak["anon"] - base,
            "vm_hwm": status("VmHWM"), "seconds": round(seconds, 2), "epochs": res.epochs, "best_val": res.best_val}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write simulated sessions and their memory-mapped caches")
    b.add_argument("--dir", required=True, type=Path, help="folder for the sessions and cache/")
    b.add_argument("--sessions", type=int, default=2, help="number of sessions (default: %(default)s)")
    b.add_argument("--minutes", type=float, default=40.0, help="minutes of 50 ms bins per session (default: %(default)s)")
    b.add_argument("--channels", type=int, default=128, help="channels per session (default: %(default)s)")
    m = sub.add_parser("measure", help="train on the caches in this process and print its memory as JSON")
    m.add_argument("--dir", required=True, type=Path, help="the folder given to build")
    m.add_argument("--epochs", type=int, default=1, help="epochs to train (default: %(default)s)")
    m.add_argument("--batch-size", type=int, default=256, help="training batch (default: %(default)s)")
    m.add_argument("--sessions", type=int, help="train on the first N sessions only (default: all)")
    m.add_argument("--in-memory", action="store_true", help="load the recordings into memory instead (the contrast)")
    args = p.parse_args(argv)
    if args.cmd == "build":
        build(args.dir, args.sessions, args.minutes, args.channels)
        print(json.dumps({"cache_bytes": sum(f.stat().st_size for f in (args.dir / "cache").rglob("*.npy"))}))
    else:
        print(json.dumps(measure(args.dir, args.epochs, args.batch_size, args.sessions, not args.in_memory)))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
