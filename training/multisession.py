"""Multi-session training (DESIGN §10): one shared trunk, a small read-in per session.

Each session s maps its D_s recorded channels to P shared virtual channels with a read-in
u = q A_s + c_s on the quantized counts q (A_s starts as the name-matched identity: channel
"ee01u0" of every day feeds virtual channel "ee01u0"); the shared retention + UNet + FC trunk
sees only u. Retention is linear, so the read-in acts on the precomputed zeta exactly:
zeta(u) = zeta(q) A_s + c_s * zeta(1), and training stays in the fast offline mode. An optional
per-session gain and offset on the normalized outputs absorbs day-to-day output scaling.

A session exports as one ordinary step graph (DESIGN §4): the read-in is one MatMul in the
front-end, the output affine folds into the de-normalization, so the runtime never learns that
the model was trained on many sessions. DIR/multisession.pt keeps the trunk and every read-in
for `rt-decoder calibrate`.

Splits stay contiguous per session (train / val / test blocks of each recording).
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rt_decoder.atomic import write_json
from rt_decoder.errors import ConfigError, DataError, where
from rt_decoder.layout import default_canvas, raster_layout
from rt_decoder.model_card import StateSpec
from rt_decoder.recording import Recording
from rt_decoder.retention import retention_parallel_f32, shift_for_lag

from .config import torch_threads
from .data import Prepared, prepare
from .export import make_card, network_onnx
from .model import NetConfig
from .train import Model, save_checkpoint, to_image

CHECKPOINT = "multisession.pt"


@dataclass
class Session:
    """One recording prepared for the shared trunk."""

    name: str
    path: str
    prep: Prepared
    ones: np.ndarray        # (T, S) zeta of a constant input 1 (the read-in offset's contribution), lag-shifted

    @property
    def rec(self) -> Recording:
        return self.prep.rec


def session_names(paths: list[str]) -> list[str]:
    """File stems, made unique and safe as module keys (Spike_07-18-12_WF_001 -> Spike_07_18_12_WF_001)."""
    out: list[str] = []
    for p in paths:
        base = re.sub(r"\W", "_", Path(p).stem) or "session"
        name, k = base, 2
        while name in out:
            name, k = f"{base}_{k}", k + 1
        out.append(name)
    return out


def virtual_channels(names: list[list[str]]) -> list[str]:
    """The union of the sessions' channel names, in order of first appearance."""
    seen: dict[str, None] = {}
    for ns in names:
        for n in ns:
            seen.setdefault(n, None)
    return list(seen)


def name_match(channels: list[str], virtual: list[str]) -> np.ndarray:
    """(D, P) 0/1: recorded channel i feeds the virtual channel of the same name."""
    index = {n: j for j, n in enumerate(virtual)}
    A = np.zeros((len(channels), len(virtual)), np.float32)
    for i, n in enumerate(channels):
        if n in index:
            A[i, index[n]] = 1.0
    return A


def ones_feats(T: int, decays: list[float], lag_bins: int) -> np.ndarray:
    """(T, S) zeta of a constant 1 from reset: 1 - gamma^(k+1), in the step graph's float32 recurrence."""
    return shift_for_lag(retention_parallel_f32(np.ones((T, 1), np.float32), decays)[:, :, 0], lag_bins)


def load_sessions(paths: list[str], cfg: dict, log=print) -> list[Session]:
    """Load and prepare every recording; they must share bin width and behaviour names."""
    from rt_decoder.loaders import load_recording

    if cfg["kind"] != "decoder":
        raise ConfigError(where(cfg.get("_source", "<config>"), "multi-session training is for decoders (kind: decoder)"))
    if cfg["retention"]["quantizer"] == "learned":
        raise ConfigError(where(cfg.get("_source", "<config>"), "multi-session training needs a fixed quantizer (binary or levels)"))
    sessions: list[Session] = []
    scfg = json.loads(json.dumps({k: v for k, v in cfg.items() if k != "_source"}))
    scfg["retention"]["layout"], scfg["retention"]["canvas"] = "raster", None   # per-session layout is unused
    for name, path in zip(session_names(paths), paths):
        rec = load_recording(path, cfg["bin_ms"])
        if sessions:
            first = sessions[0].rec
            if abs(rec.bin_s - first.bin_s) > 1e-9:
                raise DataError(where(rec.source, f"has {rec.bin_s * 1000:g} ms bins, {first.source} has {first.bin_s * 1000:g} ms "
                                                  "(pass bin_ms in the config to re-bin all sessions)"))
            if rec.behavior_names != first.behavior_names:
                raise DataError(where(rec.source, f"behaviour {rec.behavior_names} differs from {first.source}'s "
                                                  f"{first.behavior_names}; a shared trunk needs the same outputs"))
        prep = prepare(rec, scfg)
        sessions.append(Session(name, str(path), prep, ones_feats(rec.n_bins, prep.decays, cfg["lag_bins"])))
        log(f"session {name}: {rec.n_bins} bins x {rec.n_channels} channels at {rec.bin_s * 1000:g} ms, split {prep.split}")
    return sessions


class ReadIn(nn.Module):
    """u = q A + c for one session; A = A0 + delta (linear) or A0 * gain (gain), c an offset."""

    def __init__(self, A0: np.ndarray, kind: str = "linear"):
        super().__init__()
        self.kind = kind
        self.register_buffer("A0", torch.as_tensor(np.asarray(A0, np.float32)))
        D, P = self.A0.shape
        if kind == "linear":
            self.delta = nn.Parameter(torch.zeros(D, P))
        elif kind == "gain":
            self.gain = nn.Parameter(torch.ones(P))
        else:
            raise ValueError(f"read-in kind must be linear or gain, got {kind!r}")
        self.c = nn.Parameter(torch.zeros(P))

    def weight(self) -> torch.Tensor:
        return self.A0 + self.delta if self.kind == "linear" else self.A0 * self.gain

    def forward(self, z: torch.Tensor, ones: torch.Tensor) -> torch.Tensor:
        """z (B, S, D) zeta of q, ones (B, S) -> (B, S, P) zeta of u."""
        return torch.einsum("bsd,dp->bsp", z, self.weight()) + ones[..., None] * self.c

    def penalty(self) -> torch.Tensor:
        return ((self.weight() - self.A0) ** 2).sum()

    def set(self, A: np.ndarray, c: np.ndarray) -> None:
        """Load explicit weights (a checkpoint, an alignment): A0 stays the start point."""
        with torch.no_grad():
            A = torch.as_tensor(np.asarray(A, np.float32))
            if self.kind == "linear":
                self.delta.copy_(A - self.A0)
            else:
                # gain read-ins are A0 * gain by construction; take the gain off the matched entries
                hit = self.A0.sum(0) > 0
                g = torch.where(hit, (A * self.A0).sum(0) / self.A0.sum(0).clamp(min=1), torch.ones_like(self.gain))
                self.gain.copy_(g)
            self.c.copy_(torch.as_tensor(np.asarray(c, np.float32)))


class OutAffine(nn.Module):
    """A per-session gain and offset on the normalized outputs (identity at the start)."""

    def __init__(self, K: int, trainable: bool = True):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(K), requires_grad=trainable)
        self.bias = nn.Parameter(torch.zeros(K), requires_grad=trainable)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.gain + self.bias


class MultiModel(nn.Module):
    """The shared trunk (Model: the network on the P-channel canvas) and per-session read-ins."""

    def __init__(self, net_cfg: NetConfig, virtual: list[str], pixels: np.ndarray):
        super().__init__()
        self.trunk = Model(net_cfg, len(virtual), None)
        self.virtual = list(virtual)
        self.register_buffer("pixels", torch.as_tensor(np.asarray(pixels, np.int64)))
        self.readins = nn.ModuleDict()
        self.outs = nn.ModuleDict()

    @property
    def canvas(self) -> tuple[int, int]:
        return tuple(self.trunk.net.cfg.canvas)

    def add_session(self, name: str, channels: list[str], kind: str, output_affine: bool) -> None:
        self.readins[name] = ReadIn(name_match(channels, self.virtual), kind)
        self.outs[name] = OutAffine(self.trunk.net.cfg.n_outputs, output_affine)

    def forward(self, name: str, z: torch.Tensor, ones: torch.Tensor) -> torch.Tensor:
        u = self.readins[name](z, ones)
        return self.outs[name](self.trunk.net(to_image(u, self.pixels, self.canvas)))


def net_config_for(cfg: dict, n_decays: int, canvas: tuple[int, int], n_outputs: int) -> NetConfig:
    m = cfg["model"]
    return NetConfig(in_channels=n_decays, canvas=tuple(canvas), kind="decoder", n_outputs=n_outputs,
                     widths=list(m["widths"]), head_hidden=m["head_hidden"], head_layers=m["head_layers"],
                     dropout=m["dropout"], likelihood="gaussian")


def build(sessions: list[Session], cfg: dict) -> MultiModel:
    virtual = virtual_channels([s.rec.channel_names for s in sessions])
    rcfg = cfg["retention"]
    canvas = tuple(rcfg["canvas"]) if rcfg["canvas"] else default_canvas(len(virtual))
    if canvas[0] * canvas[1] < len(virtual):
        raise ConfigError(where(cfg.get("_source", "<config>"), f"{len(virtual)} virtual channels do not fit the canvas {canvas}"))
    net_cfg = net_config_for(cfg, len(sessions[0].prep.decays), canvas, sessions[0].prep.n_outputs)
    try:
        model = MultiModel(net_cfg, virtual, raster_layout(len(virtual), canvas))
    except ValueError as e:
        raise ConfigError(where(cfg.get("_source", "<config>"), f"model: {e}")) from None
    ms = cfg["multisession"]
    for s in sessions:
        model.add_session(s.name, s.rec.channel_names, ms["readin"], ms["output_affine"])
    return model


class SessionData:
    """Tensors of one session: zeta of q, zeta of 1, normalized targets, train/val rows."""

    def __init__(self, s: Session, train_block: str = "train", val_block: str = "val"):
        p = s.prep
        self.name = s.name
        self.feats = torch.as_tensor(p.feats)
        self.ones = torch.as_tensor(s.ones)
        self.target = torch.as_tensor(p.target)
        a, b = p.split[train_block]
        self.train_rows = torch.as_tensor(np.flatnonzero(p.valid[a:b]) + a)
        a, b = p.split[val_block]
        self.val_rows = torch.as_tensor(np.flatnonzero(p.valid[a:b]) + a)

    def batch(self, rows: torch.Tensor):
        y = self.target[rows]
        return self.feats[rows], self.ones[rows], y, torch.isfinite(y)


def loss_on(model: MultiModel, d: SessionData, rows: torch.Tensor) -> torch.Tensor:
    z, o, y, m = d.batch(rows)
    return model.trunk.net.loss(model(d.name, z, o), y, m)


@torch.no_grad()
def val_loss(model: MultiModel, data: list[SessionData]) -> float:
    """Mean over sessions of each session's validation MSE (every day counts the same)."""
    model.eval()
    out = []
    for d in data:
        tot, n = 0.0, 0
        for i in range(0, len(d.val_rows), 2048):
            r = d.val_rows[i:i + 2048]
            tot += float(loss_on(model, d, r)) * len(r)
            n += len(r)
        out.append(tot / max(n, 1))
    return float(np.mean(out))


@dataclass
class MultiFit:
    model: MultiModel
    best_val: float
    epochs: int
    seconds: float
    stopped: str
    history: list[dict]


class TrainStep(nn.Module):
    """One training step's forward: the prediction and the read-in penalty (every read-in takes
    part, so under DDP no parameter gets a gradient from outside the forward)."""

    def __init__(self, model: MultiModel, names: list[str]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, name: str, z: torch.Tensor, ones: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pen = sum(self.model.readins[n].penalty() for n in self.names) / len(self.names)
        return self.model(name, z, ones), pen


def optimise(model: MultiModel, data: list[SessionData], params: list[dict], t: dict, l2: float,
             max_epochs: int, patience: int, time_limit: float | None, desc: str,
             gen: torch.Generator, progress: bool = True, ckpt: Path | None = None, resume: bool = False) -> MultiFit:
    """The loop shared by multi-session training and calibration: batches drawn from every
    session in random order, warm-up + cosine schedule, early stopping on the mean session
    validation loss, best weights restored. Under torchrun each global batch is sharded across
    ranks (training/distributed.py); rank 0 writes `ckpt` after every epoch, `resume` reads it."""
    from .distributed import current, wrap

    d = current()
    step = wrap(TrainStep(model, [x.name for x in data]))
    opt = torch.optim.AdamW(params, lr=t["lr"])
    bs = t["batch_size"]
    steps_per_epoch = sum(math.ceil(len(x.train_rows) / bs) for x in data)
    total = max(1, max_epochs * steps_per_epoch)
    warm = max(1, t["warmup_epochs"] * steps_per_epoch)
    clock = {"t0": time.perf_counter()}

    def lr_factor(s: int) -> float:
        frac = s / total
        if time_limit is not None and not d.active:   # ranks would disagree on a wall-clock schedule
            frac = max(frac, (time.perf_counter() - clock["t0"]) / time_limit)
        return min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    best_val, bad, history, stopped, epoch, elapsed = val_loss(model, data), 0, [], "max epochs", 0, 0.0
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    if resume and ckpt is not None and ckpt.exists():
        ck = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["state"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        gen.set_state(ck["gen"])
        torch.set_rng_state(ck["torch_rng"])
        epoch, best_val, bad, elapsed = ck["epoch"], ck["best_val"], ck["bad_epochs"], ck["elapsed"]
        best_state, history = ck["best_state"], json.loads(ck["history_json"])
        print(f"resumed from {ckpt} at epoch {epoch} (best val {best_val:.4f})", file=sys.stderr)
    t0 = clock["t0"] = time.perf_counter() - elapsed
    noise = t["input_noise"]
    bar = tqdm(total=max_epochs, initial=epoch, desc=desc, unit="epoch", file=sys.stderr, disable=not progress or not d.main)
    while epoch < max_epochs and stopped == "max epochs":
        model.train()
        jobs = []
        for j, x in enumerate(data):
            order = x.train_rows[torch.randperm(len(x.train_rows), generator=gen)]
            jobs += [(j, order[i:i + bs]) for i in range(0, len(order), bs)]
        run, n = 0.0, 0
        for k in torch.randperm(len(jobs), generator=gen).tolist():
            j, rows = jobs[k]
            x = data[j]
            z, o, y, m = x.batch(d.shard(rows))
            if noise:
                z = z + noise * torch.randn_like(z)
            out, pen = step(x.name, z, o)
            loss = model.trunk.net.loss(out, y, m) + l2 * pen
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in params for p in g["params"]], 1.0)
            opt.step()
            sched.step()
            run += float(loss.detach())
            n += 1
            if time_limit is not None and d.any(time.perf_counter() - t0 > time_limit):
                stopped = "time limit"
                break
        val = val_loss(model, data)
        epoch += 1
        history.append({"epoch": epoch, "train": run / max(n, 1), "val": val})
        if val < best_val - 1e-5:
            best_val, bad = val, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= patience and stopped == "max epochs":
                stopped = "early stopping"
        bar.update(1)
        bar.set_postfix(train=f"{run / max(n, 1):.4f}", val=f"{val:.4f}", best=f"{best_val:.4f}")
        if ckpt is not None and d.main:
            save_checkpoint(ckpt, {"state": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                                   "gen": gen.get_state(), "torch_rng": torch.get_rng_state(), "epoch": epoch,
                                   "best_val": best_val, "bad_epochs": bad, "elapsed": time.perf_counter() - t0,
                                   "best_state": best_state, "history_json": json.dumps(history)})
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return MultiFit(model, best_val, epoch, time.perf_counter() - t0, stopped, history)


def fit_multi(sessions: list[Session], cfg: dict, time_limit: float | None = None, ckpt: Path | None = None,
              resume: bool = False) -> MultiFit:
    t = cfg["training"]
    torch.set_num_threads(torch_threads(t["threads"]))
    torch.manual_seed(t["seed"])
    gen = torch.Generator().manual_seed(t["seed"])
    model = build(sessions, cfg)
    trunk = list(model.trunk.named_parameters())
    decay = [p for n, p in trunk if p.dim() > 1]
    rest = [p for n, p in trunk if p.dim() <= 1]
    per = [p for p in list(model.readins.parameters()) + list(model.outs.parameters()) if p.requires_grad]
    params = [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": rest + per, "weight_decay": 0.0}]
    data = [SessionData(s) for s in sessions]
    limit = time_limit if time_limit is not None else t["time_limit_s"]
    return optimise(model, data, params, t, cfg["multisession"]["readin_l2"], t["max_epochs"], t["patience"],
                    limit, f"train {cfg['name']} ({len(sessions)} sessions)", gen, ckpt=ckpt, resume=resume)


@torch.no_grad()
def input_reference(model: MultiModel, sessions: list[Session]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each virtual channel's input u = q A_s + c_s on a typical training day: the
    average over sessions of each session's training-block mean and variance (pooling the bins
    instead would count the differences between days as variance). Unsupervised alignment maps a
    new day onto these (rt_decoder.adaptation)."""
    means, variances = [], []
    for s in sessions:
        a, b = s.prep.split["train"]
        A, c = readin_arrays(model, s.name)
        u = s.prep.q[a:b].astype(np.float64) @ A + c
        means.append(u.mean(0))
        variances.append(u.var(0))
    return np.mean(means, axis=0), np.sqrt(np.mean(variances, axis=0))


def readin_arrays(model: MultiModel, name: str) -> tuple[np.ndarray, np.ndarray]:
    r = model.readins[name]
    return r.weight().detach().numpy().astype(np.float64), r.c.detach().numpy().astype(np.float64)


def export_session(model: MultiModel, name: str, prep: Prepared, cfg: dict, path: Path,
                   ref: tuple[np.ndarray, np.ndarray], out_mean: np.ndarray, out_std: np.ndarray,
                   extra: dict | None = None):
    """One session's ordinary step graph: read-in in the front-end, output affine folded into the
    de-normalization (pred = (y g + b) std + mean = y (g std) + (b std + mean))."""
    from rt_decoder.step_graph import build_retention_model, save

    A, c = readin_arrays(model, name)
    o = model.outs[name]
    g, b = o.gain.detach().numpy().astype(np.float64), o.bias.detach().numpy().astype(np.float64)
    card = make_card(prep, cfg, extra={"multisession": {"session": name}, "adapt_ref": {"mean": ref[0].tolist(), "std": ref[1].tolist()},
                                       **(extra or {})})
    H, W = model.canvas
    card.canvas = [H, W]
    card.states = [StateSpec("zeta", [1, len(prep.decays), H, W])]
    card.layout = {"kind": "raster", "pixels": [int(p) for p in model.pixels],
                   "readin": {"names": list(model.virtual), "kind": model.readins[name].kind}}
    graph = build_retention_model(card, network=network_onnx(model.trunk), out_mean=b * out_std + out_mean,
                                  out_std=g * out_std, readin=(A, c))
    path.parent.mkdir(parents=True, exist_ok=True)
    save(graph, path)
    return graph


def save_multi(path: Path, model: MultiModel, sessions: list[Session], cfg: dict, ref: tuple[np.ndarray, np.ndarray],
               info: dict) -> None:
    """DIR/multisession.pt: the trunk, every read-in and output affine, the reference statistics
    and the config; read back with weights_only=True by `calibrate`."""
    per = {}
    for s in sessions:
        per[s.name] = {"channel_names": list(s.rec.channel_names), "source": s.path,
                       "out_mean": torch.as_tensor(s.prep.out_mean), "out_std": torch.as_tensor(s.prep.out_std),
                       "split": {k: list(v) for k, v in s.prep.split.items()}}
    cfg_clean = {k: v for k, v in cfg.items() if k != "_source"}
    save_checkpoint(path, {
        "state": model.state_dict(), "net_config_json": json.dumps(model.trunk.net.cfg.to_dict()),
        "config_json": json.dumps(cfg_clean), "virtual": list(model.virtual), "sessions": per,
        "ref_mean": torch.as_tensor(ref[0]), "ref_std": torch.as_tensor(ref[1]),
        "outputs": list(sessions[0].rec.behavior_names), "bin_s": float(sessions[0].rec.bin_s),
        "units": list(sessions[0].rec.behavior_units),
        "info_json": json.dumps(info),
    })


def load_multi(folder: str | Path) -> tuple[MultiModel, dict]:
    """(model with every training session's read-in, checkpoint dict) from a multi-session DIR."""
    from rt_decoder.errors import ModelError

    path = Path(folder) / CHECKPOINT
    if not path.exists():
        raise ModelError(where(folder, f"no {CHECKPOINT}: not a folder written by multi-session `rt-decoder train`"))
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(where(path, f"not a readable checkpoint ({type(e).__name__})")) from None
    nc = json.loads(ck["net_config_json"])
    nc["canvas"] = tuple(nc["canvas"])
    cfg = json.loads(ck["config_json"])
    model = MultiModel(NetConfig(**nc), ck["virtual"], ck["state"]["pixels"].numpy())
    for name, s in ck["sessions"].items():
        model.add_session(name, s["channel_names"], cfg["multisession"]["readin"], cfg["multisession"]["output_affine"])
    model.load_state_dict(ck["state"])
    model.eval()
    ck["config"] = cfg
    return model, ck


def run_multisession(cfg: dict, paths: list[str], out: str | Path, time_limit: float | None = None,
                     baselines: bool | list | None = None, resume: bool = False, log=print) -> dict:
    """Train the shared trunk on every session, export each session's step graph and score it on
    that session's test block: DIR/sessions/<name>/model.onnx + metrics.json, DIR/metrics.json."""
    from rt_decoder.evaluation import evaluate_baselines, evaluate_decoder

    from .pipeline import set_card_metrics

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from .distributed import current

    d = current()
    sessions = load_sessions(paths, cfg, log if d.main else (lambda s: None))
    res = fit_multi(sessions, cfg, time_limit, ckpt=out / "training_state.pt", resume=resume)
    model = res.model
    if not d.main:   # rank 0 alone writes the checkpoint, the exports and the metrics
        return {"multisession": True, "rank": d.rank}
    n_trunk = sum(p.numel() for p in model.trunk.parameters())
    n_per = {s.name: sum(p.numel() for p in model.readins[s.name].parameters()) + 2 * s.prep.n_outputs for s in sessions}
    log(f"trained {res.epochs} epochs in {res.seconds:.1f} s ({res.stopped}); best mean validation loss {res.best_val:.4f}; "
        f"trunk {n_trunk} parameters, read-in + output affine {min(n_per.values())}-{max(n_per.values())} per session")
    ref = input_reference(model, sessions)
    info = {"epochs": res.epochs, "stopped": res.stopped, "best_val_loss": res.best_val, "train_seconds": round(res.seconds, 1)}
    save_multi(out / CHECKPOINT, model, sessions, cfg, ref, info)
    do_base = cfg["baselines"]["enabled"] if baselines is None else baselines
    lag = cfg["baselines"]["lag_bins"]
    lag = cfg["lag_bins"] if lag is None else lag
    summary: dict = {"kind": "decoder", "multisession": True, "outputs": list(sessions[0].rec.behavior_names),
                     "bin_s": float(sessions[0].rec.bin_s), "lag_bins": int(cfg["lag_bins"]), "config": cfg["name"],
                     "virtual_channels": len(model.virtual), "trunk_parameters": n_trunk,
                     "session_parameters": n_per, "train_seconds": round(res.seconds, 1), "epochs": res.epochs,
                     "stopped": res.stopped, "world_size": d.world, "sessions": {}}
    for s in sessions:
        folder = out / "sessions" / s.name
        path = folder / "model.onnx"
        export_session(model, s.name, s.prep, cfg, path, ref, s.prep.out_mean, s.prep.out_std, extra=info)
        ev = evaluate_decoder(path, s.rec, "test", split_bounds=s.prep.split, progress=True)
        set_card_metrics(path, ev["model"])
        m = {"outputs": list(s.rec.behavior_names), "bin_s": float(s.rec.bin_s), "lag_bins": int(cfg["lag_bins"]),
             "split": {k: [int(a), int(b)] for k, (a, b) in s.prep.split.items()}, "model": ev["model"], "baselines": {},
             "data": s.path, "data_sha256": s.rec.fingerprint(), "session": s.name, "train_seconds": round(res.seconds, 1)}
        if do_base:
            for bname, r in evaluate_baselines(s.rec, s.prep.split, lag, folder, progress=True).items():
                m["baselines"][bname] = r["model"] | {"lag_bins": lag}
        write_json(folder / "metrics.json", m)
        summary["sessions"][s.name] = {"data": s.path, "model": str(path), "r2": ev["model"]["r2"],
                                       "baselines": {k: v["r2"] for k, v in m["baselines"].items()}}
        log(f"session {s.name}: test R2 {np.round(ev['model']['r2'], 4).tolist()}"
            + "".join(f", {k} {np.round(v['r2'], 4).tolist()}" for k, v in m["baselines"].items()))
    write_json(out / "metrics.json", summary)
    return summary
