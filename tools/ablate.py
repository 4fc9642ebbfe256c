"""Evidence for configs/default.yaml: one-factor-at-a-time ablations around the default config on
every shared recording (training/bench.py DATASETS), several seeds, a table and a figure.

Each run changes ONE thing of configs/default.yaml (SETTINGS below), trains with the same compute
budget (training.time_limit_s in CPU seconds per thread, training.max_epochs; the LR cosine ends
at whichever comes first, so every setting gets a whole schedule), exports the step graph and
scores it bin by bin on the test block (training/pipeline.run_training, no references). Rows go
to a JSON file as they finish; a rerun skips rows already there (same dataset, setting, seed and
budget), so a long sweep can be stopped and resumed.

    python tools/ablate.py --out runs/ablate --seeds 0                       # screen, 1 seed
    python tools/ablate.py --out runs/ablate --confirm 3 --seeds 0 1 2       # default + best 3, 3 seeds
    python tools/ablate.py --out runs/ablate --report                        # table + figure only

Writes OUT/ablate.json (rows), OUT/ablate.md (table) and OUT/ablate.png (ΔR² vs default heatmap).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:           # `python tools/ablate.py` from a checkout
    sys.path.insert(0, str(ROOT))

from rt_decoder.atomic import atomic_path, write_json  # noqa: E402
from training.bench import DATA, DATASETS  # noqa: E402

BASE = "default"
# name -> overrides of configs/default.yaml (dotted keys); one factor at a time
SETTINGS: dict[str, dict] = {
    "default": {},
    "canvas_fit": {"retention.canvas": "fit"},              # 95 channels on 8x12 instead of 16x16
    "unet2": {"model.widths": [8, 16]},
    "unet3": {"model.widths": [8, 16, 32]},
    "similarity": {"retention.layout": "similarity"},
    "levels4": {"retention.levels": 4},
    "levels8": {"retention.levels": 8},
    "binary": {"retention.quantizer": "binary", "retention.levels": 2},
    "head128": {"model.head_hidden": 128},
    "head512": {"model.head_hidden": 512},
    "decays4": {"retention.decays": [0.0, 0.5, 0.875, 0.96875]},
    "decays7": {"retention.decays": [0.0, 0.5, 0.75, 0.875, 0.9375, 0.96875, 0.984375]},   # + a 64-bin memory
    "decays8": {"retention.decays": [0.0, 0.5, 0.75, 0.875, 0.9375, 0.96875, 0.984375, 0.9921875]},
    "lag1": {"lag_bins": 1},
    "gru2": {"model.stack": "gru2"},                       # two GRU layers in the head's state (the reference's depth)
    "gru2_128": {"model.stack": "gru2", "model.stack_size": 128},   # two layers of 128: fewer weights than one of 256
    "keep_best": {"training.keep": "best"},          # early stopping on the validation block, as the references
    "best_full": {"training.keep": "best", "training.patience": 1000},   # the whole schedule, the best-validation weights
    "no_offset": {"training.input_offset": 0.0},     # no baseline-shift augmentation
    "window64": {"training.window": 64},             # the GRU reference's window length
    "offset04": {"training.input_offset": 0.4},      # twice the baseline-shift augmentation
    "no_gain": {"training.input_gain": 0.0},         # without the per-channel gain augmentation (adopted as gain02)
    "drop01": {"training.input_drop": 0.1},          # a tenth of the channels silenced per window
    "stack512": {"model.stack_size": 512},           # a wider GRU state in the head
    "epochs15": {"training.max_epochs": 15},         # a short schedule: the GRU reference stops within ~10 epochs
    "dropout05": {"model.dropout": 0.5},
    "wd01": {"training.weight_decay": 0.1},
    "huber1": {"training.huber": 1.0},               # Huber loss, linear beyond 1 output sd (the default: 2)
    "skip": {"model.linear_skip": True},             # a linear path from zeta to the output beside the network
    "huber3": {"training.huber": 3.0},               # linear beyond 3 output sds: between the default and MSE
    "no_huber": {"training.huber": 0.0},             # mean squared error (the default took huber 2.0 as huber2)
    "lr1e3": {"training.lr": 0.001},
    "lr4e3": {"training.lr": 0.004},
    "batch1024": {"training.batch_size": 1024, "training.lr": 0.004},    # lr x sqrt(4)
    "decays3": {"retention.decays": [0.5, 0.875, 0.96875]},
    "levels16": {"retention.levels": 16},
    "batch1024_lr8": {"training.batch_size": 1024, "training.lr": 0.008},  # lr x 4 (linear scaling)
    "auto": {"retention.layout": "auto"},                  # = similarity where no electrode map is known
    # combinations of the screen's winners, for the confirmation round
    "fit_decays4": {"retention.canvas": "fit", "retention.decays": [0.0, 0.5, 0.875, 0.96875]},
    "fit_head128": {"retention.canvas": "fit", "model.head_hidden": 128},
}
# what the sweep runs when --settings is not given ("auto" duplicates "similarity" without maps)
SCREEN = [s for s in SETTINGS if s != "auto" and not s.startswith("fit_")]


def config_for(setting: str, seed: int, time_limit: float, max_epochs: int, base: str = BASE) -> dict:
    """The base config with one setting's overrides, the seed and the compute budget; 1 torch
    thread so CPU seconds compare across runs on a shared machine."""
    from training.config import load_config, validate

    cfg = load_config(base)
    for key, value in SETTINGS[setting].items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        if last not in node:
            raise KeyError(f"setting {setting}: unknown config key {key}")
        node[last] = copy.deepcopy(value)
    t = cfg["training"]
    t.update(seed=seed, threads=1, time_limit_s=time_limit)
    if "training.max_epochs" not in SETTINGS[setting]:       # a setting may shorten the schedule itself
        t["max_epochs"] = max_epochs
    cfg["name"] = f"{Path(base).stem}+{setting}"
    return validate(cfg, f"tools/ablate.py setting {setting}")


# training keys added after rows were measured: at these values they change nothing, so they leave the id as it was
LATER_KEYS = {"training": {"input_gain": 0.0, "input_drop": 0.0, "huber": 0.0}, "model": {"linear_skip": False}}


def base_id(base: str = BASE) -> str:
    """8 hex digits naming the base config's content (what a row's "default" was), so rows measured
    around an earlier default.yaml are never mixed with rows around the current one."""
    import hashlib

    from training.config import load_config

    cfg = load_config(base)
    keep = {k: cfg[k] for k in ("kind", "lag_bins", "split", "retention", "model")}
    keep["training"] = {k: v for k, v in cfg["training"].items() if k not in ("seed", "threads", "time_limit_s", "max_epochs")}
    for section, later in LATER_KEYS.items():
        keep[section] = {k: v for k, v in keep[section].items() if not (k in later and v == later[k])}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:8]


def row_key(r: dict) -> tuple:
    return (r.get("base"), r["dataset"], r["setting"], r["seed"], r["time_limit_s"], r["max_epochs"])


def load_rows(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def run_one(dataset: str, setting: str, seed: int, data: Path, out: Path, time_limit: float, max_epochs: int,
            base: str = BASE) -> dict:
    """Train one (dataset, setting, seed); its figures as a row."""
    from training.pipeline import run_training

    cfg = config_for(setting, seed, time_limit, max_epochs, base)
    sink = io.StringIO()
    with contextlib.redirect_stderr(sink):          # the per-epoch bars of many runs would drown the sweep's bar
        m = run_training(cfg, str(data), out, baselines=False, log=lambda s: None)
    r2 = m["model"]["r2"]
    return {"base": base_id(base), "dataset": dataset, "setting": setting, "seed": seed, "time_limit_s": time_limit, "max_epochs": max_epochs,
            "r2": sum(r2) / len(r2), "r2_outputs": r2, "train_cpu_s": m["train_cpu_seconds"],
            "train_s": m["train_seconds"], "epochs": m["epochs"], "stopped": m["stopped"],
            "outputs": m["outputs"], "bin_s": m["bin_s"], "precision": m["precision"], "cpu": cpu_model()}


def cpu_model() -> str:
    """The CPU a row ran on: bf16 autocast (training.precision auto) takes different kernels on
    different CPUs, so the same seed can land elsewhere on another machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def confirm_settings(rows: list[dict], n: int) -> list[str]:
    """default plus the n settings with the best mean ΔR² (over datasets) in the rows so far."""
    s = summarize(rows)
    ranked = sorted((k for k in s["settings"] if k != "default"), key=lambda k: -s["settings"][k]["mean_delta"])
    return ["default"] + ranked[:n]


def _stats(v: list[float]) -> tuple[float, float]:
    import numpy as np

    a = np.asarray(v, float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarize(rows: list[dict]) -> dict:
    """Per setting and dataset: mean R² over seeds, its std, seeds, CPU s; per setting: ΔR² vs
    default per dataset (paired on the seeds both have, else all seeds), mean ΔR², wins, losses."""
    import math

    cell: dict = {}
    undefined = sorted({r["dataset"] for r in rows if not math.isfinite(r["r2"])})
    for r in rows:
        if r["dataset"] in undefined:
            continue
        cell.setdefault(r["setting"], {}).setdefault(r["dataset"], []).append(r)
    datasets = [d for d in DATASETS if any(d in v for v in cell.values())] + \
        sorted({d for v in cell.values() for d in v} - set(DATASETS))
    out: dict = {"datasets": datasets, "settings": {}, "undefined": undefined}
    ref = cell.get("default", {})
    for name in [s for s in SETTINGS if s in cell] + sorted(set(cell) - set(SETTINGS)):
        per = {}
        deltas = []
        for d, rs in cell[name].items():
            mean, sd = _stats([r["r2"] for r in rs])
            cpu, _ = _stats([r["train_cpu_s"] for r in rs])
            entry = {"r2": mean, "sd": sd, "seeds": sorted(r["seed"] for r in rs), "cpu_s": cpu,
                     "epochs": _stats([r["epochs"] for r in rs])[0]}
            if d in ref:
                mine = {r["seed"]: r["r2"] for r in rs}
                theirs = {r["seed"]: r["r2"] for r in ref[d]}
                both = sorted(set(mine) & set(theirs))
                if both:
                    delta = sum(mine[k] - theirs[k] for k in both) / len(both)
                else:
                    delta = mean - _stats(list(theirs.values()))[0]
                entry["delta"] = delta
                deltas.append(delta)
            per[d] = entry
        md = sum(deltas) / len(deltas) if deltas else float("nan")
        out["settings"][name] = {
            "per_dataset": per, "mean_delta": md, "n_datasets": len(deltas),
            "wins": sum(x > 0.002 for x in deltas), "losses": sum(x < -0.002 for x in deltas),
            "mean_r2": sum(e["r2"] for e in per.values()) / len(per),
            "mean_cpu_s": sum(e["cpu_s"] for e in per.values()) / len(per),
            "overrides": SETTINGS.get(name, {}),
        }
    return out


def markdown(s: dict, budget: str) -> str:
    ds = s["datasets"]
    head = "| setting | " + " | ".join(ds) + " | mean ΔR² | wins/losses | mean CPU s |"
    lines = [head, "|" + "---|" * (len(ds) + 4)]
    for name, v in s["settings"].items():
        cells = []
        for d in ds:
            e = v["per_dataset"].get(d)
            if e is None:
                cells.append("")
                continue
            txt = f"{e['r2']:.4f}"
            if len(e["seeds"]) > 1:
                txt += f" ± {e['sd']:.4f}"
            if "delta" in e and name != "default":
                txt += f" ({e['delta']:+.4f})"
            cells.append(txt)
        md = "" if name == "default" else f"{v['mean_delta']:+.4f}"
        wl = "" if name == "default" else f"{v['wins']}/{v['losses']}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {md} | {wl} | {v['mean_cpu_s']:.0f} |")
    lines.append("")
    lines.append(f"Mean test R² (last 20%, step graph run bin by bin) over seeds ± std over seeds (when > 1 seed); "
                 f"(ΔR²) = setting minus default on the same seeds; wins/losses = datasets where |ΔR²| > 0.002; "
                 f"CPU s = training CPU seconds (1 thread). Budget: {budget}.")
    if s["undefined"]:
        lines.append(f"Left out, R² undefined (constant behaviour in the test block): {', '.join(s['undefined'])}.")
    lines.append("Settings (each changes one thing of configs/default.yaml): " + "; ".join(
        f"{k}: " + ", ".join(f"{a}={b}" for a, b in v["overrides"].items()) for k, v in s["settings"].items() if v["overrides"]))
    return "\n".join(lines)


def seed_label(setting: dict) -> str:
    """'3 seeds', or '1-3 seeds' when its recordings were run with different numbers of seeds (a
    row screened on seed 0 and confirmed on some recordings): the largest alone would overstate it."""
    k = sorted({len(e["seeds"]) for e in setting["per_dataset"].values()})
    n = str(k[0]) if len(k) == 1 else f"{k[0]}-{k[-1]}"
    return f"{n} seed{'s' if k[-1] > 1 else ''}"


def figure(s: dict, path: Path) -> None:
    """Heatmap of ΔR² vs default: settings (rows) x datasets (columns), plus the mean over datasets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [n for n in s["settings"] if n != "default"]
    ds = s["datasets"]
    M = np.full((len(names), len(ds) + 1), np.nan)
    for i, n in enumerate(names):
        for j, d in enumerate(ds):
            M[i, j] = s["settings"][n]["per_dataset"].get(d, {}).get("delta", np.nan)
        M[i, -1] = s["settings"][n]["mean_delta"]
    lim = max(0.01, float(np.nanpercentile(np.abs(M), 95))) if np.isfinite(M).any() else 0.05
    fig, ax = plt.subplots(figsize=(1.0 * (len(ds) + 1) + 3, 0.42 * len(names) + 2))
    im = ax.imshow(M, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            if np.isfinite(M[i, j]):
                ax.text(j, i, f"{M[i, j]:+.3f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(M[i, j]) > 0.6 * lim else "black")
    ax.set_xticks(range(len(ds) + 1), ds + ["MEAN"], rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), [f"{n} ({seed_label(s['settings'][n])})" for n in names], fontsize=8)
    ax.axvline(len(ds) - 0.5, color="k", lw=1)
    ax.set_title(f"ΔR² vs the base config {s.get('base') or ''} (mean test R² over seeds; blue = better)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8, label="ΔR²")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def pick_base(rows: list[dict], wanted: str | None = None) -> str | None:
    """The base whose rows a report shows: `wanted`, else the current default.yaml's if rows have
    it, else the most frequent."""
    from collections import Counter

    have = Counter(r.get("base") for r in rows)
    if wanted:
        return wanted
    cur = base_id()
    return cur if cur in have else (have.most_common(1)[0][0] if have else None)


def report(rows: list[dict], out: Path, base: str | None = None) -> str:
    """Write OUT/ablate.md, ablate_summary.json and ablate.png from the rows of one base; the markdown."""
    base = pick_base(rows, base)
    rows = [r for r in rows if r.get("base") == base]
    s = summarize(rows)
    s["base"] = base
    pairs = sorted({(r["time_limit_s"], r["max_epochs"]) for r in rows})
    budget = "; ".join(f"time_limit_s {t:g} CPU s, max_epochs {e}" for t, e in pairs) or "none"
    md = markdown(s, budget) + f"\nBase (default) config id {base}" + (
        " (the current configs/default.yaml)." if base == base_id() else " (an earlier configs/default.yaml).")
    with atomic_path(out / "ablate.md") as tmp:
        tmp.write_text(md + "\n")
    write_json(out / "ablate_summary.json", s)
    figure(s, out / "ablate.png")
    return md


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                   help=f"recordings (training/bench.py keys: {', '.join(DATASETS)}); default: all, or none with --data")
    p.add_argument("--settings", nargs="+", default=None, metavar="NAME",
                   help=f"settings to run ({', '.join(SETTINGS)}); default: all but auto, which equals "
                        "similarity where no electrode map is known")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds per (dataset, setting)")
    p.add_argument("--confirm", type=int, metavar="N", default=None,
                   help="instead of --settings: default plus the N settings with the best mean ΔR² in OUT/ablate.json")
    p.add_argument("--time-limit", type=float, default=45.0,
                   help="training compute limit per run in CPU seconds (1 thread); the LR cosine ends there")
    p.add_argument("--max-epochs", type=int, default=40, help="training.max_epochs per run (early stopping may end sooner)")
    p.add_argument("--data-dir", default=str(DATA), help="folder holding the shared datasets")
    p.add_argument("--data", action="append", default=[], metavar="NAME=PATH",
                   help="an extra recording (any loader's format) under NAME; repeatable (tests use a synthetic file)")
    p.add_argument("--out", default="runs/ablate", help="folder for ablate.json/.md/.png and each run's model")
    p.add_argument("--report", action="store_true", help="only rewrite the table and figure from OUT/ablate.json")
    p.add_argument("--base", default=BASE, metavar="CONFIG",
                   help="the config the settings change one thing of (a shipped name or a YAML file; default: default)")
    p.add_argument("--base-id", default=None, metavar="ID",
                   help="report rows measured around this base config id (default: the current default.yaml's, "
                        "else the most frequent in the rows)")
    p.add_argument("--include", nargs="+", default=[], metavar="JSON",
                   help="rows of other sweeps (their ablate.json) added to the table and figure, e.g. a second "
                        "process's --out; this sweep's own rows stay in OUT/ablate.json")
    p.add_argument("--keep-models", action="store_true", help="keep each run's model.onnx and checkpoint (default: deleted)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from rt_decoder.errors import RtDecoderError

    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ablate.json"
    rows = load_rows(path)
    others = [r for f in args.include for r in load_rows(Path(f))]
    if args.report:
        print(report(rows + others, out, args.base_id))
        return 0
    if any("=" not in x for x in args.data):
        print("--data: give NAME=PATH", file=sys.stderr)
        return 2
    extra = {n: Path(p) for n, p in (x.split("=", 1) for x in args.data)}
    names = args.datasets if args.datasets is not None else ([] if extra else list(DATASETS))
    bad = [d for d in names if d not in DATASETS]
    if bad:
        print(f"--datasets: unknown {', '.join(bad)}; choose from {', '.join(DATASETS)}", file=sys.stderr)
        return 2
    datasets = {d: Path(args.data_dir) / DATASETS[d][0] for d in names} | extra
    settings = confirm_settings(rows, args.confirm) if args.confirm is not None else (args.settings or SCREEN)
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        print(f"--settings: unknown {', '.join(unknown)}; choose from {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    missing = [str(p) for p in datasets.values() if not p.exists()]
    if missing:
        print(f"{missing[0]}: dataset not present (see ../shared/data/*/SOURCE.txt)", file=sys.stderr)
        return 2
    done = {row_key(r) for r in rows}
    base = base_id(args.base)
    # seed-major, then settings, then datasets: a stopped sweep has the whole screen of seed 0 first
    todo = [(d, s, k) for k in args.seeds for s in settings for d in datasets
            if (base, d, s, k, args.time_limit, args.max_epochs) not in done]
    print(f"{len(todo)} runs to do ({len(rows)} rows already in {path}); settings {', '.join(settings)}", file=sys.stderr)
    bar = tqdm(todo, unit="run", file=sys.stderr, dynamic_ncols=True)
    t0 = time.perf_counter()
    for d, s, k in bar:
        bar.set_description(f"{d} {s} seed {k}")
        run_dir = out / "models" / f"{d}-{s}-s{k}"
        try:
            row = run_one(d, s, k, datasets[d], run_dir, args.time_limit, args.max_epochs, args.base)
        except RtDecoderError as e:
            print(f"{d} {s} seed {k}: {e}", file=sys.stderr)
            continue
        if not args.keep_models:
            for f in run_dir.glob("*"):
                f.unlink()
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        rows.append(row)
        write_json(path, rows)
        bar.write(f"{d:<14} {s:<14} seed {k}: R2 {row['r2']:.4f}  {row['train_cpu_s']:6.1f} CPU s  "
                  f"{row['epochs']} epochs ({row['stopped']})", file=sys.stderr)
    bar.close()
    print(report(rows + others, out, args.base_id))
    print(f"wrote {path}, {out / 'ablate.md'}, {out / 'ablate.png'} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
