"""Few-shot recalibration of a multi-session model to a new day (DESIGN §10).

The first M minutes of the new day calibrate, a validation slice right after them picks the
stopping point, and the contiguous rest of the recording is the evaluation block. Only the new
day's read-in (and its output gain/offset) is fitted; the trunk stays frozen unless `fit` asks
for more ("head": also the last FC layer; "auto": the head only when it lowers the validation
loss). Unsupervised calibration uses no behaviour at all: it aligns the new day's input
statistics to the training days' (rt_decoder.adaptation.align) and folds that into the read-in.

On the same evaluation block metrics.json reports `model` next to `uncalibrated` (the read-in
averaged over the training days, matched by channel name), `unsupervised` (the label-free
alignment), `scratch` (configs/default.yaml trained on the same M minutes), `wiener` and
`kalman` and `gru` (training/gru.py), fit on the same M minutes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from rt_decoder.atomic import write_json
from rt_decoder.errors import DataError, where
from rt_decoder.recording import Recording

from .config import torch_threads
from .multisession import (
    OutAffine,
    ReadIn,
    Session,
    SessionData,
    export_session,
    load_multi,
    ones_feats,
    optimise,
    readin_arrays,
)

NEW = "new_day"
MIN_EVAL_BINS = 200
FIT_CHOICES = ("readin", "head", "auto")
CAL_TRAINING = {"lr": 0.005, "batch_size": 256, "warmup_epochs": 1, "input_noise": 0.0}
CAL_EPOCHS, CAL_PATIENCE = 80, 10


def calibration_split(n_bins: int, bin_s: float, minutes: float, val_fraction: float, source: str) -> dict[str, tuple[int, int]]:
    """{"train": the first M minutes, "val": the slice after them, "test": the contiguous rest}."""
    if not (minutes > 0):
        raise DataError(where(source, f"--minutes must be positive, got {minutes}"))
    n_cal = int(round(minutes * 60.0 / bin_s))
    n_val = max(20, int(round(val_fraction * n_cal)))
    if n_bins - n_cal - n_val < MIN_EVAL_BINS:
        raise DataError(where(source, f"{n_bins * bin_s / 60:.1f} min is too short to calibrate on {minutes:g} min: "
                                      f"{n_cal} calibration + {n_val} validation bins leave {n_bins - n_cal - n_val} "
                                      f"to evaluate (need >= {MIN_EVAL_BINS})"))
    return {"train": (0, n_cal), "val": (n_cal, n_cal + n_val), "test": (n_cal + n_val, n_bins)}


def check_new_day(rec: Recording, ck: dict, model_dir: str, need_behavior: bool) -> Recording:
    """Same bin width as the model; behaviour columns named as the model's outputs, in its order."""
    bin_s = ck["bin_s"]
    if abs(rec.bin_s - bin_s) > 1e-9 * max(1.0, bin_s):
        ratio = bin_s / rec.bin_s
        hint = f" (re-bin with --bin-ms {bin_s * 1000:g})" if ratio > 1 and abs(ratio - round(ratio)) < 1e-6 else ""
        raise DataError(where(rec.source, f"has {rec.bin_s * 1000:g} ms bins, the model {model_dir} was trained on "
                                          f"{bin_s * 1000:g} ms bins{hint}"))
    outputs = list(ck["outputs"])
    if rec.behavior is None:
        if need_behavior:
            raise DataError(where(rec.source, f"has no behaviour to calibrate on (the model predicts {', '.join(outputs)}); "
                                              "use --unsupervised for a day without labels"))
        return rec
    names = list(rec.behavior_names)
    missing = [o for o in outputs if o not in names]
    if missing:
        raise DataError(where(rec.source, f"has behaviour {', '.join(names)}; the model {model_dir} predicts "
                                          f"{', '.join(outputs)} (missing {', '.join(missing)})"))
    cols = [names.index(o) for o in outputs]
    rec.behavior, rec.behavior_names = rec.behavior[:, cols], outputs
    return rec


def start_readin(ck: dict, model, channels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The uncalibrated read-in: each channel's row averaged over the training days that recorded a
    channel of that name (a channel never seen starts at zero); the offset averaged likewise."""
    rows = {}
    cs = []
    for name, s in ck["sessions"].items():
        A, c = readin_arrays(model, name)
        cs.append(c)
        for i, ch in enumerate(s["channel_names"]):
            rows.setdefault(ch, []).append(A[i])
    P = len(model.virtual)
    A0 = np.stack([np.mean(rows[ch], axis=0) if ch in rows else np.zeros(P) for ch in channels])
    return A0, np.mean(cs, axis=0)


def start_outputs(ck: dict, model) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) in physical units averaged over the training days: pred = y * scale + offset."""
    scale, offset = [], []
    for name, s in ck["sessions"].items():
        o = model.outs[name]
        g, b = o.gain.detach().numpy(), o.bias.detach().numpy()
        std, mean = s["out_std"].numpy(), s["out_mean"].numpy()
        scale.append(g * std)
        offset.append(b * std + mean)
    return np.mean(scale, axis=0), np.mean(offset, axis=0)


def _evaluate(path: Path, rec: Recording, split: dict) -> dict:
    from rt_decoder.evaluation import evaluate_decoder

    return evaluate_decoder(path, rec, "test", split_bounds=split)["model"]


def _set_outputs(model, scale: np.ndarray, offset: np.ndarray, out_mean: np.ndarray, out_std: np.ndarray) -> None:
    """Output affine such that (y g + b) * out_std + out_mean = y * scale + offset."""
    o = model.outs[NEW]
    with torch.no_grad():
        o.gain.copy_(torch.as_tensor(scale / out_std, dtype=torch.float32))
        o.bias.copy_(torch.as_tensor((offset - out_mean) / out_std, dtype=torch.float32))


def calibrate(model_dir: str | Path, data: str | Path, minutes: float, out: str | Path, *, unsupervised: bool = False,
              fit: str = "readin", val_fraction: float = 0.2, bin_ms: float | None = None, baselines: bool = True,
              scratch_config: str | Path | None = None, time_limit: float = 30.0, seed: int = 0,
              scratch_time_limit: float | None = None, readin: str | None = None, l2: float | None = None,
              fit_outputs: bool = True, test_block: tuple[int, int] | None = None, log=print) -> dict:
    """Calibrate the multi-session model in model_dir to the recording `data`; writes
    OUT/model.onnx and OUT/metrics.json and returns the metrics. test_block: score on these bins
    instead of the whole rest (the bench's common block); it must start after the validation slice."""
    from rt_decoder.adaptation import align
    from rt_decoder.loaders import load_recording

    from .data import prepare

    if fit not in FIT_CHOICES:
        raise DataError(f"--fit must be one of {', '.join(FIT_CHOICES)}, got {fit!r}")
    t_start = time.perf_counter()
    out = Path(out)
    model, ck = load_multi(model_dir)
    cfg = ck["config"]
    rec = check_new_day(load_recording(data, bin_ms), ck, str(model_dir), need_behavior=not unsupervised)
    split = calibration_split(rec.n_bins, rec.bin_s, minutes, val_fraction, rec.source)
    if test_block is not None:
        if test_block[0] < split["val"][1] or test_block[1] > rec.n_bins:
            raise DataError(where(rec.source, f"evaluation block {list(test_block)} overlaps the calibration and "
                                              f"validation bins [0, {split['val'][1]}) or runs past the end"))
        split["test"] = (int(test_block[0]), int(test_block[1]))
    scored = rec.behavior is not None
    torch.set_num_threads(torch_threads(cfg["training"]["threads"]))
    torch.manual_seed(seed)
    scfg = json.loads(json.dumps(cfg))
    scfg["retention"]["layout"], scfg["retention"]["canvas"] = "raster", None
    if scored:
        prep = prepare(rec, scfg, split=split)
    else:   # features only: a stand-in behaviour keeps prepare's shapes, never used
        dummy = Recording(counts=rec.counts, bin_s=rec.bin_s, behavior=np.zeros((rec.n_bins, len(ck["outputs"]))),
                          behavior_names=list(ck["outputs"]), channel_names=rec.channel_names, source=rec.source)
        prep = prepare(dummy, scfg, split=split)
    session = Session(NEW, str(data), prep, ones_feats(rec.n_bins, prep.decays, cfg["lag_bins"]))
    ms = cfg["multisession"]
    A0, c0 = start_readin(ck, model, rec.channel_names)
    model.readins[NEW] = ReadIn(A0, readin or ms["readin"])
    with torch.no_grad():
        model.readins[NEW].c.copy_(torch.as_tensor(c0, dtype=torch.float32))
    model.outs[NEW] = OutAffine(len(ck["outputs"]), True)
    scale0, offset0 = start_outputs(ck, model)
    ref = (ck["ref_mean"].numpy(), ck["ref_std"].numpy())
    info = {"base_model": str(model_dir), "minutes": float(minutes), "split": {k: list(v) for k, v in split.items()}}
    out.mkdir(parents=True, exist_ok=True)

    K = len(ck["outputs"])
    physical = (np.zeros(K), np.ones(K))         # the output affine holds physical units directly

    def export(path: Path, how: dict, stats: tuple[np.ndarray, np.ndarray] = physical) -> Path:
        export_session(model, NEW, prep, cfg, path, ref, stats[0], stats[1],
                       extra={"calibration": info | how, "data_sha256_new_day": rec.fingerprint()})
        return path

    # uncalibrated and unsupervised: closed form, the output affine holds physical units directly
    model.outs[NEW].gain.data.copy_(torch.as_tensor(scale0, dtype=torch.float32))
    model.outs[NEW].bias.data.copy_(torch.as_tensor(offset0, dtype=torch.float32))
    results: dict = {}
    tmp = out / "compare"
    tmp.mkdir(exist_ok=True)
    if scored:
        results["uncalibrated"] = _evaluate(export(tmp / "uncalibrated.onnx", {"fitted": []}), rec, split)
    a, b = split["train"]
    t0 = time.perf_counter()
    u = prep.q[a:b].astype(np.float64) @ A0 + c0
    gain, offset = align(u.mean(0), u.std(0), *ref)
    model.readins[NEW].set(A0 * gain[None, :], c0 * gain + offset)
    align_s = time.perf_counter() - t0
    if unsupervised:
        fitted, how = ["readin (unsupervised alignment)"], {"fitted": ["readin"], "unsupervised": True}
        cal_s = align_s
        path = export(out / "model.onnx", how)
    else:
        if scored:
            results["unsupervised"] = _evaluate(export(tmp / "unsupervised.onnx", {"fitted": ["readin"], "unsupervised": True}),
                                                rec, split)
        model.readins[NEW].set(A0, c0)
        _set_outputs(model, scale0, offset0, prep.out_mean, prep.out_std)
        t0 = time.perf_counter()
        fitted = fit_new_day(model, session, cfg, fit, time_limit, seed, log,
                             ms["readin_l2"] if l2 is None else l2, fit_outputs)
        cal_s = time.perf_counter() - t0
        how = {"fitted": fitted, "unsupervised": False}
        path = export(out / "model.onnx", how, (prep.out_mean, prep.out_std))
    metrics: dict = {"outputs": list(ck["outputs"]), "bin_s": float(rec.bin_s), "lag_bins": int(cfg["lag_bins"]),
                     "minutes": float(minutes), "split": {k: [int(x), int(y)] for k, (x, y) in split.items()},
                     "mode": "unsupervised" if unsupervised else "supervised", "fitted": fitted, "calibrate_seconds": round(cal_s, 2),
                     "base_model": str(model_dir), "data": str(data), "data_sha256": rec.fingerprint()}
    if scored:
        metrics["model"] = _evaluate(path, rec, split)
        metrics |= results
        if baselines:
            metrics |= compare_baselines(rec, split, cfg, out, scratch_config, seed, log, scratch_time_limit)
    metrics["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(out / "metrics.json", metrics)
    return metrics


def fit_new_day(model, session: Session, cfg: dict, fit: str, time_limit: float, seed: int, log,
                l2: float, fit_outputs: bool = True) -> list[str]:
    """Fit the read-in and output affine (trunk frozen); with fit head/auto also the last FC layer."""
    for p in model.parameters():
        p.requires_grad_(False)
    per = list(model.readins[NEW].parameters()) + (list(model.outs[NEW].parameters()) if fit_outputs else [])
    for p in per:
        p.requires_grad_(True)
    data = [SessionData(session)]
    t = cfg["training"] | CAL_TRAINING
    gen = torch.Generator().manual_seed(seed)
    res = optimise(model, data, [{"params": per, "weight_decay": 0.0}], t, l2, CAL_EPOCHS, CAL_PATIENCE,
                   time_limit, "calibrate read-in", gen)
    fitted = ["readin"] + (["output_affine"] if fit_outputs else [])
    log(f"read-in fitted in {res.seconds:.1f} s ({res.epochs} epochs, {res.stopped}); validation loss {res.best_val:.4f}")
    if fit in ("head", "auto"):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        last = model.trunk.net.head.fc[-1] if isinstance(model.trunk.net.head.fc, torch.nn.Sequential) else model.trunk.net.head.fc
        head = list(last.parameters())
        for p in head:
            p.requires_grad_(True)
        res2 = optimise(model, data, [{"params": per + head, "weight_decay": 0.0}], t | {"lr": t["lr"] / 5}, l2,
                        CAL_EPOCHS, CAL_PATIENCE, time_limit, "calibrate read-in + head", gen)
        if fit == "head" or res2.best_val < 0.98 * res.best_val:
            fitted.append("head_last_layer")
            log(f"head's last layer also fitted: validation loss {res.best_val:.4f} -> {res2.best_val:.4f}")
        else:
            model.load_state_dict(before)
            log(f"head left as trained: fitting it reached {res2.best_val:.4f}, not 2% below {res.best_val:.4f}")
    for p in model.parameters():
        p.requires_grad_(False)
    return fitted


def compare_baselines(rec: Recording, split: dict, cfg: dict, out: Path, scratch_config, seed: int, log,
                      scratch_time_limit: float | None = None) -> dict:
    """scratch (our default config on the calibration minutes), Wiener, Kalman and the GRU
    reference, each fit on the same minutes and scored on the same block."""
    from rt_decoder.evaluation import evaluate_baselines

    from .config import load_config
    from .data import prepare, resolve_levels
    from .export import export_step_graph
    from .train import fit as fit_model

    res: dict = {}
    seconds: dict = {}
    folder = out / "compare"
    lag = cfg["baselines"]["lag_bins"]
    lag = cfg["lag_bins"] if lag is None else lag
    t0 = time.perf_counter()
    for name, r in evaluate_baselines(rec, split, lag, folder).items():
        res[name] = r["model"] | {"lag_bins": lag}
    seconds["wiener+kalman"] = round(time.perf_counter() - t0, 2)
    scfg = load_config(scratch_config or "default")
    scfg["training"]["seed"] = seed
    if scratch_time_limit is not None:
        scfg["training"]["time_limit_s"] = scratch_time_limit
    scfg = resolve_levels(scfg, rec, split=split)
    t0 = time.perf_counter()
    prep = prepare(rec, scfg, split=split)
    fitted = fit_model(prep, scfg, folder / "scratch.pt", log=lambda s: None)
    export_step_graph(fitted.model, prep, scfg, folder / "scratch.onnx")
    seconds["scratch"] = round(time.perf_counter() - t0, 2)
    res["scratch"] = _evaluate(folder / "scratch.onnx", rec, split)
    res["gru"], seconds["gru"] = _gru_reference(rec, split, lag, folder, seed, scratch_time_limit)
    log(f"references fitted on the same minutes in {sum(seconds.values()):.1f} s")
    return res | {"reference_seconds": seconds}


def _gru_reference(rec, split, lag, folder: Path, seed: int, time_limit: float | None = None):
    """The GRU reference (training/gru.py) fit on the same minutes: (metrics, seconds)."""
    from .reference import train_reference

    t0 = time.perf_counter()
    r = train_reference("gru", rec, split, lag, folder / "gru.onnx", seed=seed, time_limit=time_limit, progress=False)
    return _evaluate(r.path, rec, split), round(time.perf_counter() - t0, 2)
