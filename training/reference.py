"""What the neural references (gru, tcfnn, mlp) share: normalized data on the same contiguous
split as our decoder, a training loop that early-stops on the validation block, and export as
an ONNX step graph with a model card, so `run`, `evaluate` and the benchmarks run them exactly
like our decoder and the Wiener/Kalman baselines.

Each reference module (training/gru.py, tcfnn.py, mlp.py) defines its network, how to draw
training batches, how to score the validation block, and a torch `step` module whose forward is
(counts [1, D], *states) -> (prediction [1, K] in physical units, *next states): input
z-scoring and output de-normalization live inside the graph.

Entry point: train_reference(name, rec, split, lag_bins, path, overrides) -> ReferenceResult.
"""

from __future__ import annotations

import copy
import importlib
import io
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from tqdm import tqdm

from rt_decoder.errors import ConfigError, DataError, where
from rt_decoder.model_card import ModelCard, StateSpec, attach
from rt_decoder.recording import Recording
from rt_decoder.step_graph import IR_VERSION, OPSET, save

from .train import compute_seconds

NEURAL = ("gru", "tcfnn", "mlp")


@dataclass
class RefData:
    """Counts z-scored and behaviour normalized with training-block statistics (as float32 torch)."""

    rec: Recording
    split: dict[str, tuple[int, int]]
    lag_bins: int
    x: torch.Tensor          # (T, D) (counts - mu) / sd
    y: torch.Tensor          # (T, K) (behaviour - out_mean) / out_std, NaN kept
    mu: np.ndarray
    sd: np.ndarray
    out_mean: np.ndarray
    out_std: np.ndarray

    @property
    def n_channels(self) -> int:
        return int(self.x.shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.y.shape[1])

    def rows(self, block: str) -> torch.Tensor:
        """Bins of a block whose behaviour has at least one finite value."""
        a, b = self.split[block]
        ok = torch.isfinite(self.y[a:b]).any(dim=1)
        return torch.nonzero(ok).flatten() + a


def prepare_reference(rec: Recording, split: dict, lag_bins: int) -> RefData:
    if rec.behavior is None:
        raise DataError(where(rec.source, "has no behaviour to decode (the references need kinematics)"))
    split = {k: (int(v[0]), int(v[1])) for k, v in dict(split).items()}
    a, b = split["train"]
    counts = np.asarray(rec.counts, np.float64)
    mu = counts[a:b].mean(axis=0)
    sd = counts[a:b].std(axis=0)
    sd = np.where(sd > 1e-6, sd, 1.0)
    y = np.asarray(rec.behavior, np.float64)
    ytr = y[a:b][np.isfinite(y[a:b]).any(axis=1)]
    if ytr.shape[0] == 0:
        raise DataError(where(rec.source, "every behaviour row in the training block is NaN"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN columns: handled below
        out_mean = np.nanmean(ytr, axis=0)
        out_std = np.nanstd(ytr, axis=0)
    out_mean = np.where(np.isfinite(out_mean), out_mean, 0.0)
    out_std = np.where(np.isfinite(out_std) & (out_std > 1e-8), out_std, 1.0)
    return RefData(rec=rec, split=split, lag_bins=int(lag_bins),
                   x=torch.as_tensor(((counts - mu) / sd).astype(np.float32)),
                   y=torch.as_tensor(((y - out_mean) / out_std).astype(np.float32)),
                   mu=mu, sd=sd, out_mean=out_mean, out_std=out_std)


def masked_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error over finite targets (NaN behaviour is excluded, as for our decoder)."""
    m = torch.isfinite(y)
    err = torch.where(m, out - torch.nan_to_num(y), torch.zeros((), dtype=out.dtype))
    return (err**2).sum() / m.sum().clamp(min=1)


def lag_window(x: torch.Tensor, rows: torch.Tensor, taps: int, lag: int) -> torch.Tensor:
    """(B, taps, D): z-scored counts of bins k-lag, k-lag-1, ..., k-lag-taps+1 for each row k,
    newest first; bins before the recording's start are zero (the training mean), as in the step
    graph's lag buffer after a reset."""
    j = torch.arange(taps)
    idx = rows[:, None] - lag - j[None, :]
    out = x[idx.clamp(min=0)]
    return out * (idx >= 0).unsqueeze(-1).to(out.dtype)


class Normalized(torch.nn.Module):
    """The in-graph affine maps: counts -> z-scores, normalized outputs -> physical units."""

    def __init__(self, data: RefData):
        super().__init__()
        self.register_buffer("mu", torch.as_tensor(data.mu, dtype=torch.float32)[None])
        self.register_buffer("inv_sd", torch.as_tensor(1.0 / data.sd, dtype=torch.float32)[None])
        self.register_buffer("out_mean", torch.as_tensor(data.out_mean, dtype=torch.float32)[None])
        self.register_buffer("out_std", torch.as_tensor(data.out_std, dtype=torch.float32)[None])

    def inputs(self, counts: torch.Tensor) -> torch.Tensor:
        return (counts - self.mu) * self.inv_sd

    def outputs(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.out_std + self.out_mean


class LagBufferStep(torch.nn.Module):
    """Step module for feed-forward references on the last `taps` bins (after `lag`): the state
    `lagbuf` [1, taps + lag, D] holds z-scored counts, newest first (zeros = the training mean)."""

    def __init__(self, net: torch.nn.Module, data: RefData, taps: int):
        super().__init__()
        self.net, self.norm, self.taps, self.lag = net, Normalized(data), taps, data.lag_bins

    def forward(self, counts: torch.Tensor, lagbuf: torch.Tensor):
        new = self.norm.inputs(counts).unsqueeze(1)
        nxt = torch.cat([new, lagbuf[:, :-1]], dim=1) if lagbuf.shape[1] > 1 else new
        feats = nxt[:, self.lag:self.lag + self.taps]
        return self.norm.outputs(self.net(feats)), nxt


def lag_batches(net: torch.nn.Module, data: RefData, hp: dict, gen: torch.Generator, min_rows: int = 1):
    """Shuffled train batches for the feed-forward references on lagged bins (mlp, tcfnn):
    the masked MSE of each; batches smaller than min_rows are skipped (batch norm needs two)."""
    rows = data.rows("train")
    rows = rows[torch.randperm(len(rows), generator=gen)]
    for i in range(0, len(rows), hp["batch_size"]):
        r = rows[i:i + hp["batch_size"]]
        if len(r) < min_rows:
            continue
        yield masked_mse(net(lag_window(data.x, r, hp["taps"], data.lag_bins)), data.y[r])


def lag_val_loss(net: torch.nn.Module, data: RefData, hp: dict) -> float:
    r = data.rows("val")
    return float(masked_mse(net(lag_window(data.x, r, hp["taps"], data.lag_bins)), data.y[r]))


def lag_step_module(net: torch.nn.Module, data: RefData, hp: dict) -> tuple[torch.nn.Module, list[StateSpec]]:
    taps = hp["taps"]
    return LagBufferStep(net, data, taps), [StateSpec("lagbuf", [1, taps + data.lag_bins, data.n_channels])]


@dataclass
class ReferenceResult:
    name: str
    path: Path
    best_val: float
    epochs: int
    seconds: float
    stopped: str
    hparams: dict
    cpu_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    net: torch.nn.Module | None = None       # the trained network (best validation weights)
    data: RefData | None = None


def _module(name: str):
    if name not in NEURAL:
        raise ConfigError(f"unknown reference {name!r}; choose from {', '.join(NEURAL)}")
    return importlib.import_module(f"training.{name}")


def hparams_for(name: str, overrides: dict | None = None) -> dict:
    """The reference's defaults (module HPARAMS) with config overrides; unknown keys are errors."""
    hp = copy.deepcopy(_module(name).HPARAMS)
    for k, v in (overrides or {}).items():
        if k not in hp:
            raise ConfigError(f"baselines.{name}.{k}: unknown setting (known: {', '.join(sorted(hp))})")
        hp[k] = v
    return hp


def candidates(hp: dict) -> list[dict]:
    """A setting given as a list is tuned: one candidate per combination, the best validation loss wins."""
    import itertools

    keys = [k for k, v in hp.items() if isinstance(v, list)]
    return [hp | dict(zip(keys, combo)) for combo in itertools.product(*(hp[k] for k in keys))]


def fit_loop(name: str, net: torch.nn.Module, batches, val_loss, hp: dict, time_limit: float | None = None,
             progress: bool = True) -> tuple[int, float, str, list[dict]]:
    """AdamW; learning rate halved after `plateau` epochs without a better validation loss; stop
    after `patience` such epochs (the best-validation weights are restored), at max_epochs or at
    the time limit (CPU seconds per thread, see train.compute_seconds). batches(net): an epoch's
    losses, one per mini-batch; val_loss(net): float."""
    decay = [p for p in net.parameters() if p.dim() > 1]
    rest = [p for p in net.parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                             {"params": rest, "weight_decay": 0.0}], lr=hp["lr"])
    best, best_state, bad, since, history = float("inf"), copy.deepcopy(net.state_dict()), 0, 0, []
    threads = torch.get_num_threads()
    c0 = compute_seconds(threads)
    stopped = "max epochs"
    bar = tqdm(total=hp["max_epochs"], desc=f"train {name}", unit="epoch", file=sys.stderr, disable=not progress)
    epoch = 0
    while epoch < hp["max_epochs"]:
        net.train()
        run, n = 0.0, 0
        for loss in batches(net):
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            run += float(loss.detach())
            n += 1
            if time_limit is not None and compute_seconds(threads) - c0 > time_limit:
                stopped = "time limit"
                break
        net.eval()
        with torch.no_grad():
            val = float(val_loss(net))
        epoch += 1
        history.append({"epoch": epoch, "train": run / max(n, 1), "val": val})
        bar.update(1)
        bar.set_postfix(train=f"{run / max(n, 1):.4f}", val=f"{val:.4f}", best=f"{min(best, val):.4f}")
        if val < best - 1e-4:
            best, best_state, bad, since = val, copy.deepcopy(net.state_dict()), 0, 0
        else:
            bad += 1
            since += 1
            if since >= hp["plateau"]:
                for g in opt.param_groups:
                    g["lr"] *= 0.5
                since = 0
            if bad >= hp["patience"]:
                stopped = "early stopping"
        if stopped != "max epochs":
            break
    bar.close()
    net.load_state_dict(best_state)
    net.eval()
    return epoch, best, stopped, history


def reference_card(data: RefData, model_type: str, states: list[StateSpec], extra: dict) -> ModelCard:
    rec = data.rec
    units = list(rec.behavior_units)
    return ModelCard(kind="decoder", model_type=model_type, bin_s=float(rec.bin_s),
                     channel_names=list(rec.channel_names), outputs=list(rec.behavior_names), units=units,
                     states=states, lag_bins=data.lag_bins, data_sha256=rec.fingerprint(),
                     extra={"reference": model_type, "split": {k: list(v) for k, v in data.split.items()}, **extra})


def export_step(step: torch.nn.Module, card: ModelCard, path: str | Path) -> onnx.ModelProto:
    """Trace `step` (counts, *states) -> (prediction, *next states) to ONNX with the card's names."""
    step = step.eval()
    names = [s.name for s in card.states]
    args = (torch.zeros(1, card.n_channels),) + tuple(torch.zeros(*s.shape) for s in card.states)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the TorchScript exporter's deprecation and RNN notices
        torch.onnx.export(step, args, buf, opset_version=OPSET, dynamo=False, do_constant_folding=True,
                          input_names=["counts", *names], output_names=["prediction", *[n + "_next" for n in names]])
    model = onnx.load_from_string(buf.getvalue())
    model.ir_version = IR_VERSION
    attach(model, card)
    onnx.checker.check_model(model)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save(model, path)
    return model


def train_reference(name: str, rec: Recording, split: dict, lag_bins: int, path: str | Path,
                    overrides: dict | None = None, seed: int = 0, time_limit: float | None = None,
                    progress: bool = True, threads: int = 1) -> ReferenceResult:
    """Fit reference `name` on the train block (early-stopped on val) and export DIR/<name>.onnx.
    threads: torch threads (1 by default: on a loaded 2-core machine 2 threads ran a GRU 10x slower)."""
    mod = _module(name)
    hp = hparams_for(name, overrides)
    data = prepare_reference(rec, split, lag_bins)
    if len(data.rows("train")) < 20 or len(data.rows("val")) < 2:
        raise DataError(where(rec.source, f"too short to train the {name} reference"))
    torch.set_num_threads(threads)
    t0, c0 = time.perf_counter(), time.process_time()
    tried, fits = [], []
    for cand in candidates(hp):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        net = mod.build(data, cand)
        fit = fit_loop(name, net, lambda n, c=cand, g=gen: mod.batches(n, data, c, g),
                       lambda n, c=cand: mod.val_loss(n, data, c), cand, time_limit, progress)
        fits.append((fit[1], cand, net, fit))
        tried.append({k: cand[k] for k in hp if isinstance(hp[k], list)} | {"val_loss": fit[1]})
    best, hp, net, (epochs, _, stopped, history) = min(fits, key=lambda f: f[0])
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    step, states = mod.step_module(net, data, hp)
    extra = {"hparams": hp, "epochs": epochs, "stopped": stopped, "best_val_loss": best,
             "train_seconds": round(seconds, 2), "seed": seed, "tuned_on_val": tried if len(tried) > 1 else []}
    export_step(step, reference_card(data, name, states, extra), path)
    return ReferenceResult(name=name, path=Path(path), best_val=best, epochs=epochs, seconds=seconds,
                           stopped=stopped, hparams=hp, history=history, net=net, data=data, cpu_seconds=cpu)
