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
from rt_decoder.layout import raster_layout
from rt_decoder.model_card import StateSpec
from rt_decoder.recording import Recording
from rt_decoder.retention import retention_parallel_f32, shift_for_lag

from .config import canvas_for, torch_threads
from .data import Prepared, prepare
from .export import make_card, network_onnx
from .model import NetConfig
from .train import Model, save_checkpoint, to_image

CHECKPOINT = "multisession.pt"
CHUNK = 65536                  # bins read at a time from a (memory-mapped) session


@dataclass
class Session:
    """One recording prepared for the shared trunk."""

    name: str
    path: str
    prep: Prepared          # its arrays in memory, or memory-mapped from the cache (training/corpus.py)
    ones: np.ndarray        # (T, S) zeta of a constant input 1 (the read-in offset's contribution), lag-shifted
    fingerprint: str = ""   # the recording's sha256 (Recording.fingerprint)
    index: int = 0          # position among every session of the run (all ranks)

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


def load_sessions(paths: list[str], cfg: dict, log=print, cache_dir: str | Path | None = None,
                  mine=None) -> list[Session]:
    """Load and prepare the recordings (those with mine(i) true, default all); they must share bin
    width and behaviour names. With cache_dir each is prepared once into a memory-mapped cache."""
    from rt_decoder.loaders import load_recording

    from . import corpus

    if cfg["kind"] != "decoder":
        raise ConfigError(where(cfg.get("_source", "<config>"), "multi-session training is for decoders (kind: decoder)"))
    if cfg["retention"]["quantizer"] == "learned":
        raise ConfigError(where(cfg.get("_source", "<config>"), "multi-session training needs a fixed quantizer (binary or levels)"))
    if cfg["retention"]["levels"] == "auto":
        raise ConfigError(where(cfg.get("_source", "<config>"), "retention.levels: auto is chosen per recording; "
                                "multi-session training shares one quantizer: give a number (4 or 8)"))
    sessions: list[Session] = []
    scfg = json.loads(json.dumps({k: v for k, v in cfg.items() if k != "_source"}))
    scfg["retention"]["layout"], scfg["retention"]["canvas"] = "raster", None   # per-session layout is unused
    for i, (name, path) in enumerate(zip(session_names(paths), paths)):
        if mine is not None and not mine(i):
            continue
        folder = corpus.cache_folder(cache_dir, name, path, scfg) if cache_dir is not None else None
        if folder is not None and (folder / "meta.json").exists():
            prep, ones, fp = corpus.open_cache(folder)
            sessions.append(Session(name, str(path), prep, ones, fp, i))
            rec = prep.rec
            log(f"session {name}: {rec.n_bins} bins x {rec.n_channels} channels, memory-mapped from {folder}")
            continue
        corpus.OPENED.append(str(path))
        rec = load_recording(path, cfg["bin_ms"], cfg.get("targets"))
        if sessions:
            first = sessions[0].rec
            if abs(rec.bin_s - first.bin_s) > 1e-9:
                raise DataError(where(rec.source, f"has {rec.bin_s * 1000:g} ms bins, {first.source} has {first.bin_s * 1000:g} ms "
                                                  "(pass bin_ms in the config to re-bin all sessions)"))
            if rec.behavior_names != first.behavior_names:
                raise DataError(where(rec.source, f"behaviour {rec.behavior_names} differs from {first.source}'s "
                                                  f"{first.behavior_names}; a shared trunk needs the same outputs"))
        prep = prepare(rec, scfg)
        ones = ones_feats(rec.n_bins, prep.decays, cfg["lag_bins"])
        if folder is not None:
            corpus.write_cache(folder, prep, ones)
            del prep, ones, rec
            prep, ones, fp = corpus.open_cache(folder)
            rec = prep.rec
            log(f"session {name}: cached in {folder}")
        else:
            fp = rec.fingerprint()
        sessions.append(Session(name, str(path), prep, ones, fp, i))
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
                     dropout=m["dropout"], likelihood="gaussian", stem_bias=m["stem_bias"])


def build(sessions: list, cfg: dict) -> MultiModel:
    """The model for every session of the run; `sessions` are Session or session_info() dicts."""
    if cfg["model"]["stack"] != "none":
        raise ConfigError(where(cfg.get("_source", "<config>"), "model.stack is not supported in multi-session "
                                                                 "training yet; use model.stack none"))
    t = cfg["training"]
    for key, off in (("input_offset", 0.0), ("input_gain", 0.0), ("input_drop", 0.0), ("keep", "best")):
        value = t[key]
        if value != off:
            raise ConfigError(where(cfg.get("_source", "<config>"), f"training.{key} {value} is not supported in "
                                                                     f"multi-session training yet; use {off}"))
    sessions = [session_info(s) if isinstance(s, Session) else s for s in sessions]
    virtual = virtual_channels([s["channel_names"] for s in sessions])
    canvas = canvas_for(cfg, len(virtual))
    if canvas[0] * canvas[1] < len(virtual):
        raise ConfigError(where(cfg.get("_source", "<config>"), f"{len(virtual)} virtual channels do not fit the canvas {canvas}"))
    net_cfg = net_config_for(cfg, len(cfg["retention"]["decays"]), canvas, sessions[0]["n_outputs"])
    try:
        model = MultiModel(net_cfg, virtual, raster_layout(len(virtual), canvas))
    except ValueError as e:
        raise ConfigError(where(cfg.get("_source", "<config>"), f"model: {e}")) from None
    ms = cfg["multisession"]
    for s in sessions:
        model.add_session(s["name"], s["channel_names"], ms["readin"], ms["output_affine"])
    return model


def session_info(s: Session, batch_size: int = 1) -> dict:
    """What every rank must know of a session it may not hold: names, shapes, statistics."""
    rec, p = s.rec, s.prep
    a, b = p.split["train"]
    n_train = int(np.count_nonzero(p.valid[a:b]))
    return {"index": s.index, "name": s.name, "path": s.path, "channel_names": list(rec.channel_names),
            "n_outputs": p.n_outputs, "bin_s": float(rec.bin_s), "behavior_names": list(rec.behavior_names),
            "units": list(rec.behavior_units or []), "out_mean": np.asarray(p.out_mean).tolist(),
            "out_std": np.asarray(p.out_std).tolist(), "split": {k: [int(x), int(y)] for k, (x, y) in p.split.items()},
            "source": rec.source, "n_batches": math.ceil(n_train / batch_size)}


def check_infos(infos: list[dict]) -> None:
    """Sessions loaded by different ranks must still share bin width and outputs (every rank
    checks the same gathered list, so every rank raises together)."""
    first = infos[0]
    for s in infos[1:]:
        if abs(s["bin_s"] - first["bin_s"]) > 1e-9:
            raise DataError(where(s["source"], f"has {s['bin_s'] * 1000:g} ms bins, {first['source']} has "
                                               f"{first['bin_s'] * 1000:g} ms (pass bin_ms in the config to re-bin all sessions)"))
        if s["behavior_names"] != first["behavior_names"]:
            raise DataError(where(s["source"], f"behaviour {s['behavior_names']} differs from {first['source']}'s "
                                               f"{first['behavior_names']}; a shared trunk needs the same outputs"))


class SessionData:
    """Tensors of one session: zeta of q, zeta of 1, normalized targets, train/val rows."""

    def __init__(self, s: Session, train_block: str = "train", val_block: str = "val"):
        p = s.prep
        self.name = s.name
        self.index = s.index
        # numpy arrays, in memory or memory-mapped: a batch copies only its rows
        self.feats, self.ones, self.target = p.feats, s.ones, p.target
        a, b = p.split[train_block]
        self.train_rows = torch.as_tensor(np.flatnonzero(p.valid[a:b]) + a)
        a, b = p.split[val_block]
        self.val_rows = torch.as_tensor(np.flatnonzero(p.valid[a:b]) + a)

    def batch(self, rows: torch.Tensor):
        r = rows.numpy()
        y = torch.from_numpy(np.asarray(self.target[r], np.float32))      # fancy indexing copies the rows
        z = torch.from_numpy(np.asarray(self.feats[r], np.float32))
        return z, torch.from_numpy(np.asarray(self.ones[r], np.float32)), y, torch.isfinite(y)


def loss_on(model: MultiModel, d: SessionData, rows: torch.Tensor) -> torch.Tensor:
    z, o, y, m = d.batch(rows)
    return model.trunk.net.loss(model(d.name, z, o), y, m)


@torch.no_grad()
def val_loss(model: MultiModel, data: list[SessionData], plan=None) -> float:
    """Mean over sessions of each session's validation MSE (every day counts the same); with a
    shard plan each rank scores its own sessions and the ranks sum their slots."""
    from .distributed import current

    model.eval()
    out = torch.zeros(plan.n_sessions if plan else len(data), dtype=torch.float64)
    for k, d in enumerate(data):
        tot, n = 0.0, 0
        for i in range(0, len(d.val_rows), 2048):
            r = d.val_rows[i:i + 2048]
            tot += float(loss_on(model, d, r)) * len(r)
            n += len(r)
        out[d.index if plan else k] = tot / max(n, 1)
    if plan:
        out = current().sum(out)
    return float(out.mean())


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

    def forward(self, items: list[tuple[str, torch.Tensor, torch.Tensor]]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """items: (session, zeta, zeta of 1) of each batch of this step (one per local shard)."""
        pen = sum(self.model.readins[n].penalty() for n in self.names) / len(self.names)
        return [self.model(name, z, ones) for name, z, ones in items], pen


def optimise(model: MultiModel, data: list[SessionData], params: list[dict], t: dict, l2: float,
             max_epochs: int, patience: int, time_limit: float | None, desc: str,
             gen: torch.Generator, progress: bool = True, ckpt: Path | None = None, resume: bool = False,
             plan=None, infos: list[dict] | None = None) -> MultiFit:
    """The loop shared by multi-session training and calibration: batches drawn from every
    session in random order, warm-up + cosine schedule, early stopping on the mean session
    validation loss, best weights restored. Under torchrun each global batch is sharded across
    ranks (training/distributed.py); rank 0 writes `ckpt` after every epoch, `resume` reads it.
    With a shard plan (training/corpus.py) `data` holds this rank's sessions only, `infos` every
    session's, and a step takes one batch from each shard."""
    from .corpus import shard_generator, shard_jobs
    from .distributed import current, wrap

    d = current()
    step = wrap(TrainStep(model, list(model.readins) if plan else [x.name for x in data]))
    opt = torch.optim.AdamW(params, lr=t["lr"])
    bs = t["batch_size"]
    if plan:
        steps_per_epoch = max(sum(s["n_batches"] for s in infos if plan.shard_of(s["index"]) == g)
                              for g in range(plan.n_shards))
    else:
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
    best_val, bad, history, stopped, epoch, elapsed = val_loss(model, data, plan), 0, [], "max epochs", 0, 0.0
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
    noise, huber = t["input_noise"], t["huber"]
    bar = tqdm(total=max_epochs, initial=epoch, desc=desc, unit="epoch", file=sys.stderr, disable=not progress or not d.main)
    while epoch < max_epochs and stopped == "max epochs":
        model.train()
        if plan:
            gens = {g: shard_generator(t["seed"], g, epoch) for g in plan.local_shards()}
            streams = [shard_jobs([(j, x.train_rows) for j, x in enumerate(data) if plan.shard_of(x.index) == g],
                                  bs, steps_per_epoch, gens[g]) for g in gens]
            steps = [[(g, *job) for g, stream in zip(gens, streams) for job in [stream[k]]] for k in range(steps_per_epoch)]
        else:
            jobs = []
            for j, x in enumerate(data):
                order = x.train_rows[torch.randperm(len(x.train_rows), generator=gen)]
                jobs += [(j, order[i:i + bs]) for i in range(0, len(order), bs)]
            steps = [[(None, *jobs[k])] for k in torch.randperm(len(jobs), generator=gen).tolist()]
        run, n = 0.0, 0
        for parts in steps:
            items, targets = [], []
            for g, j, rows in parts:
                x = data[j]
                z, o, y, m = x.batch(rows if plan else d.shard(rows))
                if noise:
                    z = z + noise * (torch.randn(z.shape, generator=gens[g]) if plan else torch.randn_like(z))
                items.append((x.name, z, o))
                targets.append((y, m))
            outs, pen = step(items)
            loss = sum(model.trunk.net.loss(out, y, m, huber) for out, (y, m) in zip(outs, targets)) / len(outs) + l2 * pen
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
        val = val_loss(model, data, plan)
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
              resume: bool = False, plan=None, infos: list[dict] | None = None) -> MultiFit:
    """Train on `sessions` (with a shard plan: this rank's, and `infos` describes every session)."""
    t = cfg["training"]
    torch.set_num_threads(torch_threads(t["threads"]))
    torch.manual_seed(t["seed"])
    gen = torch.Generator().manual_seed(t["seed"])
    model = build(infos if plan else sessions, cfg)
    trunk = list(model.trunk.named_parameters())
    decay = [p for n, p in trunk if p.dim() > 1]
    rest = [p for n, p in trunk if p.dim() <= 1]
    per = [p for p in list(model.readins.parameters()) + list(model.outs.parameters()) if p.requires_grad]
    params = [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": rest + per, "weight_decay": 0.0}]
    data = [SessionData(s) for s in sessions]
    limit = time_limit if time_limit is not None else t["time_limit_s"]
    n = len(infos) if plan else len(sessions)
    return optimise(model, data, params, t, cfg["multisession"]["readin_l2"], t["max_epochs"], t["patience"],
                    limit, f"train {cfg['name']} ({n} sessions)", gen, ckpt=ckpt, resume=resume, plan=plan, infos=infos)


@torch.no_grad()
def input_reference(model: MultiModel, sessions: list[Session], shared: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each virtual channel's input u = q A_s + c_s on a typical training day: the
    average over sessions of each session's training-block mean and variance (pooling the bins
    instead would count the differences between days as variance). Unsupervised alignment maps a
    new day onto these (rt_decoder.adaptation). Read in chunks (memory-mapped sessions); sessions
    held by other ranks arrive through a gather."""
    from .distributed import current

    stats = []
    for s in sessions:
        a, b = s.prep.split["train"]
        A, c = readin_arrays(model, s.name)
        blocks = [(i, min(i + CHUNK, b)) for i in range(a, b, CHUNK)]
        mean = sum((s.prep.q[i:j].astype(np.float64) @ A + c).sum(0) for i, j in blocks) / (b - a)
        var = sum((((s.prep.q[i:j].astype(np.float64) @ A + c) - mean) ** 2).sum(0) for i, j in blocks) / (b - a)
        stats.append((s.index, mean, var))
    if shared:
        stats = sorted((x for part in current().gather(stats) for x in part), key=lambda x: x[0])
    return np.mean([m for _, m, _ in stats], axis=0), np.sqrt(np.mean([v for _, _, v in stats], axis=0))


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


def save_multi(path: Path, model: MultiModel, infos: list[dict], cfg: dict, ref: tuple[np.ndarray, np.ndarray],
               info: dict) -> None:
    """DIR/multisession.pt: the trunk, every read-in and output affine, the reference statistics
    and the config; read back with weights_only=True by `calibrate`. infos: session_info() of
    every session."""
    per = {}
    for s in infos:
        per[s["name"]] = {"channel_names": list(s["channel_names"]), "source": s["path"],
                          "out_mean": torch.as_tensor(np.asarray(s["out_mean"])), "out_std": torch.as_tensor(np.asarray(s["out_std"])),
                          "split": {k: list(v) for k, v in s["split"].items()}}
    cfg_clean = {k: v for k, v in cfg.items() if k != "_source"}
    save_checkpoint(path, {
        "state": model.state_dict(), "net_config_json": json.dumps(model.trunk.net.cfg.to_dict()),
        "config_json": json.dumps(cfg_clean), "virtual": list(model.virtual), "sessions": per,
        "ref_mean": torch.as_tensor(ref[0]), "ref_std": torch.as_tensor(ref[1]),
        "outputs": list(infos[0]["behavior_names"]), "bin_s": float(infos[0]["bin_s"]),
        "units": list(infos[0]["units"]),
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
    that session's test block: DIR/sessions/<name>/model.onnx + metrics.json, DIR/metrics.json.

    multisession.memmap caches each session on disk (training/corpus.py); multisession.shards
    shards the sessions over the ranks, and each rank then also exports and scores its own."""
    from .corpus import OPENED, ShardPlan, check_plan
    from .distributed import current

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d = current()
    OPENED.clear()
    ms = cfg["multisession"]
    cache = (Path(ms["cache_dir"]) if ms["cache_dir"] else out / "cache") if ms["memmap"] else None
    plan = None
    if ms["shards"]:
        check_plan(ms["shards"], d.world, len(paths), cfg.get("_source", "<config>"))
        plan = ShardPlan(ms["shards"], d.rank, d.world, len(paths))
    quiet = log if d.main else (lambda s: None)
    sessions = load_sessions(paths, cfg, log if plan else quiet, cache, plan.mine if plan else None)
    bs = cfg["training"]["batch_size"]
    infos = sorted((x for part in d.gather([session_info(s, bs) for s in sessions]) for x in part), key=lambda x: x["index"]) \
        if plan else [session_info(s, bs) for s in sessions]
    check_infos(infos)
    loaded = d.gather(list(OPENED))
    res = fit_multi(sessions, cfg, time_limit, ckpt=out / "training_state.pt", resume=resume, plan=plan, infos=infos)
    model = res.model
    ref = input_reference(model, sessions, shared=plan is not None)
    info = {"epochs": res.epochs, "stopped": res.stopped, "best_val_loss": res.best_val, "train_seconds": round(res.seconds, 1)}
    if d.main:       # rank 0 alone writes the checkpoints
        save_multi(out / CHECKPOINT, model, infos, cfg, ref, info)
    # sharded: every rank exports and scores the sessions it holds; else rank 0 does them all
    mine = [score_session(model, s, cfg, out, ref, info, baselines, log) for s in sessions] if plan or d.main else []
    scored = dict(x for part in d.gather(mine) for x in part) if plan else dict(mine)
    if not d.main:
        return {"multisession": True, "rank": d.rank}
    n_trunk = sum(p.numel() for p in model.trunk.parameters())
    n_per = {s["name"]: sum(p.numel() for p in model.readins[s["name"]].parameters()) + 2 * s["n_outputs"] for s in infos}
    log(f"trained {res.epochs} epochs in {res.seconds:.1f} s ({res.stopped}); best mean validation loss {res.best_val:.4f}; "
        f"trunk {n_trunk} parameters, read-in + output affine {min(n_per.values())}-{max(n_per.values())} per session")
    summary: dict = {"kind": "decoder", "multisession": True, "outputs": list(infos[0]["behavior_names"]),
                     "bin_s": float(infos[0]["bin_s"]), "lag_bins": int(cfg["lag_bins"]), "config": cfg["name"],
                     "virtual_channels": len(model.virtual), "trunk_parameters": n_trunk,
                     "session_parameters": n_per, "train_seconds": round(res.seconds, 1), "epochs": res.epochs,
                     "stopped": res.stopped, "world_size": d.world, "shards": ms["shards"], "memmap": ms["memmap"],
                     "loaded_by_rank": loaded, "sessions": {s["name"]: scored[s["name"]] for s in infos}}
    for name, r in summary["sessions"].items():
        log(f"session {name}: test R2 {np.round(r['r2'], 4).tolist()}"
            + "".join(f", {k} {np.round(v, 4).tolist()}" for k, v in r["baselines"].items()))
    write_json(out / "metrics.json", summary)
    return summary


def score_session(model: MultiModel, s: Session, cfg: dict, out: Path, ref, info: dict, baselines, log) -> tuple[str, dict]:
    """Export one session's step graph, score it (and the references) on its test block, write
    DIR/sessions/<name>/metrics.json."""
    from rt_decoder.evaluation import evaluate_baselines, evaluate_decoder

    from .pipeline import set_card_metrics

    do_base = cfg["baselines"]["enabled"] if baselines is None else baselines
    lag = cfg["baselines"]["lag_bins"]
    lag = cfg["lag_bins"] if lag is None else lag
    folder = out / "sessions" / s.name
    path = folder / "model.onnx"
    export_session(model, s.name, s.prep, cfg, path, ref, s.prep.out_mean, s.prep.out_std, extra=info)
    ev = evaluate_decoder(path, s.rec, "test", split_bounds=s.prep.split, progress=True)
    set_card_metrics(path, ev["model"])
    m = {"outputs": list(s.rec.behavior_names), "bin_s": float(s.rec.bin_s), "lag_bins": int(cfg["lag_bins"]),
         "split": {k: [int(a), int(b)] for k, (a, b) in s.prep.split.items()}, "model": ev["model"], "baselines": {},
         "data": s.path, "data_sha256": s.fingerprint, "session": s.name, "train_seconds": info["train_seconds"]}
    if do_base:
        for bname, r in evaluate_baselines(s.rec, s.prep.split, lag, folder, progress=True).items():
            m["baselines"][bname] = r["model"] | {"lag_bins": lag}
    write_json(folder / "metrics.json", m)
    return s.name, {"data": s.path, "model": str(path), "r2": ev["model"]["r2"],
                    "baselines": {k: v["r2"] for k, v in m["baselines"].items()}}
