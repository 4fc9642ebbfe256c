"""The training loop: AdamW, warm-up + cosine schedule, early stopping on the validation block,
seeds, a time limit, resumable checkpoints (plain state dicts, read with weights_only=True).

Two modes (DESIGN §1):
  offline  precomputed zeta, shuffled mini-batches of bins (thesis algorithm 2);
  online   contiguous streams cut into windows, zeta built in torch from counts and carried
           across windows (truncated BPTT), so the learned quantizer gets gradients (algorithm 1).
With model.stack (training/stacked.py) offline training reads precomputed zeta in the same kind of
windows, the network's second state carried (detached) from window to window.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rt_decoder.atomic import atomic_path
from rt_decoder.errors import ConfigError, DataError, where
from rt_decoder.evaluation import constant_rate

from .config import torch_threads, use_bf16
from .data import Prepared
from .model import GenerativeHead, Net, NetConfig
from .retention import LearnedQuantizer, quantize, retention_parallel
from .stacked import StackedNet, Windows, predict


def to_image(z: torch.Tensor, pixels: torch.Tensor, canvas: tuple[int, int]) -> torch.Tensor:
    """Per-channel zeta (B, S, D) -> canvas image (B, S, H, W), zeros on empty pixels."""
    B, S, _ = z.shape
    flat = z.new_zeros(B, S, canvas[0] * canvas[1])
    flat[:, :, pixels] = z
    return flat.view(B, S, *canvas)


def augment(x: torch.Tensor, noise: float, offset: float, scale: torch.Tensor | None = None,
            gain: float = 0.0, drop: float = 0.0) -> torch.Tensor:
    """Training-time noise on a zeta image (B, S, H, W) or window (L, B, S, H, W): white noise on every
    value, and per channel, held over the window and shared by every decay, what drifts between the
    training and test blocks: a gain exp(N(0, gain)) (a unit's amplitude against its threshold), a
    silenced channel with probability drop (a lost electrode), and an offset (a shift of the
    baseline rate; the constant-offset noise of Willett et al. 2021). scale (H, W): the offset's
    unit per pixel (each channel's standard deviation; 0 on empty pixels), so that one setting suits
    50 ms threshold crossings and sparse 5 ms units alike."""
    if noise:
        x = x + noise * torch.randn_like(x)
    shape = list(x.shape)
    shape[-3] = 1
    if x.dim() == 5:
        shape[0] = 1
    if gain:
        x = x * torch.exp(gain * torch.randn(shape, dtype=x.dtype))
    if drop:
        x = x * (torch.rand(shape) >= drop).to(x.dtype)
    if offset:
        x = x + offset * torch.randn(shape, dtype=x.dtype) * (1.0 if scale is None else scale.to(x.dtype))
    return x


class Model(torch.nn.Module):
    """What is trained and exported: an optional learned quantizer and the network (with
    model.stack, a StackedNet carrying a second state: training/stacked.py)."""

    def __init__(self, net_cfg: NetConfig, n_channels: int, learned_levels: int | None,
                 stack: str = "none", stack_size: int = 0, pixels: np.ndarray | None = None):
        super().__init__()
        self.net = Net(net_cfg) if stack == "none" else StackedNet(net_cfg, stack, stack_size, pixels)
        self.quant = LearnedQuantizer(n_channels, learned_levels) if learned_levels else None


@dataclass
class FitResult:
    model: Model
    best_val: float
    epochs: int
    seconds: float
    cpu_seconds: float       # process CPU time: comparable across machine loads, unlike wall time
    threads: int
    stopped: str             # "early stopping", "max epochs", "time limit", "interrupted" (Ctrl-C)
    history: list[dict]
    kept: str = "best"       # the weights returned: "best" (validation) or "last" (training.keep)
    precision: str = "fp32"  # the training forward's arithmetic (training.precision resolved on this machine)


def net_config(prep: Prepared, cfg: dict) -> NetConfig:
    m = cfg["model"]
    return NetConfig(in_channels=len(prep.decays), canvas=tuple(prep.canvas), kind=cfg["kind"],
                     n_outputs=prep.n_outputs if cfg["kind"] == "decoder" else 0, widths=list(m["widths"]),
                     head_hidden=m["head_hidden"], head_layers=m["head_layers"], dropout=m["dropout"], likelihood=m["likelihood"],
                     coupling_rank=m["coupling_rank"] if cfg["kind"] == "generative" else 0, decays=list(prep.decays),
                     self_gain_max=m["self_gain_max"], saturation_penalty=m["saturation_penalty"],
                     glm_base=bool(m["glm_base"]) and cfg["kind"] == "generative", dropout_mask=m["dropout_mask"],
                     stem_bias=m["stem_bias"], linear_skip=m["linear_skip"])


def build_model(prep: Prepared, cfg: dict) -> Model:
    r, m = cfg["retention"], cfg["model"]
    try:
        return Model(net_config(prep, cfg), prep.rec.n_channels, r["levels"] if r["quantizer"] == "learned" else None,
                     m["stack"], m["stack_size"], prep.pixels)
    except ValueError as e:
        raise ConfigError(where(cfg.get("_source", "<config>"), f"model: {e}")) from None


def transfer_unet(model: Model, path: str) -> int:
    """Initialise the UNet from a trained generative checkpoint (the thesis's transfer); from a
    decoder checkpoint, every network tensor of matching shape (head too): fine-tuning, e.g. a ReFIT
    recalibration starting from the observation-trained decoder."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(where(path, "training.init_from: no such checkpoint")) from None
    except Exception as e:
        raise ConfigError(where(path, f"training.init_from: not a readable checkpoint ({type(e).__name__})")) from None
    src = ck.get("best_model", ck.get("model", {}))
    own = model.state_dict()
    try:
        kind = json.loads(ck.get("net_config_json", "{}")).get("kind")
    except (TypeError, ValueError):
        kind = None
    prefix = "net." if kind == "decoder" and model.net.cfg.kind == "decoder" else "net.unet."
    take = {k: v for k, v in src.items() if k.startswith(prefix) and k in own and own[k].shape == v.shape}
    if not take:
        raise ConfigError(where(path, "training.init_from: no UNet weights of matching shape (same canvas, decays, widths?)"))
    own.update(take)
    model.load_state_dict(own)
    return len(take)


def init_rates(model: Model, prep: Prepared) -> None:
    """Start each pixel's bias at its neuron's training rate (logit or log), so the network learns
    what history adds to the base rate instead of spending its first thousand steps finding it."""
    a, b = prep.split["train"]
    x = prep.rec.counts[a:b]
    lik = model.net.cfg.likelihood
    rate = constant_rate(x, lik).clip(1e-4, 1 - 1e-4)
    value = np.log(rate) if lik == "poisson" else np.log(rate / (1 - rate))
    with torch.no_grad():
        flat = model.net.head.bias.view(-1)
        flat.fill_(float(value.min()))
        flat[torch.as_tensor(prep.pixels)] = torch.as_tensor(value, dtype=flat.dtype)


def own_history_fit(feats: np.ndarray, y: np.ndarray, likelihood: str, l2: float = 1.0,
                    iters: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Each neuron's own-history GLM on its zeta: eta_d = b_d + sum_s w_sd zeta_sd, fit by
    L2-damped Newton steps (IRLS) for all neurons at once. feats (n, S, D), y (n, D) next-bin
    counts -> (w (S, D), b (D,)). The penalty l2 (on the summed log-likelihood, bias free) keeps
    w finite where the data separate (no spike ever follows a spike: an infinite refractory weight)."""
    n, S, D = feats.shape
    X = np.concatenate([np.asarray(feats, np.float64), np.ones((n, 1, D))], axis=1)     # (n, S+1, D)
    t = (y > 0).astype(np.float64) if likelihood != "poisson" else np.asarray(y, np.float64)
    rate = constant_rate(y, likelihood).clip(1e-4, 1 - 1e-4)
    theta = np.zeros((S + 1, D))
    theta[S] = np.log(rate) if likelihood == "poisson" else np.log(rate / (1 - rate))
    pen = np.full(S + 1, l2)
    pen[S] = 1e-6
    for _ in range(iters):
        eta = np.clip(np.einsum("nsd,sd->nd", X, theta), -30, 20)
        if likelihood == "poisson":
            mu = np.exp(eta)
            v = mu
        else:
            mu = 1 / (1 + np.exp(-eta))
            v = mu * (1 - mu)
        g = np.einsum("nsd,nd->ds", X, mu - t) + pen * theta.T
        H = np.empty((D, S + 1, S + 1))
        for i in range(S + 1):
            for j in range(i, S + 1):
                H[:, i, j] = H[:, j, i] = (X[:, i] * v * X[:, j]).sum(axis=0)
        H[:, np.arange(S + 1), np.arange(S + 1)] += pen
        step = np.linalg.solve(H, g[..., None])[..., 0]
        theta -= np.clip(step, -5, 5).T
        if np.abs(step).max() < 1e-6:
            break
    return theta[:S], theta[S]


def init_history(model: Model, prep: Prepared) -> None:
    """Start each neuron's own-history weights and bias at its own-history GLM (own_history_fit on
    the training block), so training begins where a per-neuron GLM ends and the network learns
    what coupling adds. From zero, AdamW's steps (about lr each) could not reach the large
    weights that refractoriness needs within a training run."""
    if prep.feats is None:
        init_rates(model, prep)          # learned quantizer: zeta is not fixed before training
        return
    a, b = prep.split["train"]
    w, bias = own_history_fit(prep.feats[a:b - 1], prep.rec.counts[a + 1:b], model.net.cfg.likelihood)
    pix = torch.as_tensor(prep.pixels)
    with torch.no_grad():
        init_rates(model, prep)
        model.net.head.bias.view(-1)[pix] = torch.as_tensor(bias, dtype=torch.float32)
        own = model.net.head.own.view(w.shape[0], -1)
        own[:, pix] = torch.as_tensor(w, dtype=torch.float32)
    model.net.head.bound_self_gain(model.net.cfg.self_gain_max)


class Batches:
    """Yields (zeta image, target, mask) mini-batches for one epoch, in either mode."""

    def __init__(self, prep: Prepared, cfg: dict, model: Model, gen: torch.Generator):
        self.prep, self.cfg, self.model, self.gen = prep, cfg, model, gen
        t = cfg["training"]
        self.pixels = torch.as_tensor(prep.pixels)
        self.occupied = torch.zeros(prep.canvas[0] * prep.canvas[1], dtype=torch.bool)
        self.occupied[self.pixels] = True
        self.decoder = cfg["kind"] == "decoder"
        # generative targets in pixel order: the loss reads logits at occupied pixels, ascending
        order = slice(None) if self.decoder else np.argsort(prep.pixels)
        self.target = torch.as_tensor(prep.target[:, order])
        if model.net.cfg.glm_base:      # [next counts | the GLM's log-rate for them]
            if prep.base_eta is None:
                raise ConfigError("model.glm_base: the GLM is fitted on one recording's split before training "
                                  "(training/pipeline.py); multi-session training does not support it")
            self.target = torch.cat([self.target, torch.as_tensor(prep.base_eta[:, order], dtype=torch.float32)], dim=1)
        a, b = prep.split["train"]
        self.train_rows = torch.as_tensor(np.flatnonzero(prep.valid[a:b]) + a)
        self.batch_size = t["batch_size"]
        self.online = t["mode"] == "online"
        self.counts = torch.as_tensor(prep.rec.counts, dtype=torch.float32)
        # zeta precomputed (numpy, the step graph's recurrence) whenever the quantizer is fixed
        self.feats = None if prep.feats is None else torch.as_tensor(prep.feats)
        self.channel_sd = None           # (H, W): training.input_offset's unit per pixel, when it is set
        if t["input_offset"]:
            r = cfg["retention"]
            q = quantize(self.counts[a:b], levels=r["levels"], kind="levels" if r["quantizer"] == "learned" else r["quantizer"])
            self.channel_sd = self.image(q.std(0)[None, None])[0, 0]
        self.stacked = isinstance(model.net, StackedNet)
        if self.stacked:      # TBPTT windows over precomputed zeta; the second state carried between them
            self.windows = Windows(self.feats, self.target, self.pixels, prep.canvas, (a, b), t["streams"], t["window"])
        if self.online:
            n = t["streams"]
            edges = np.linspace(a, b, n + 1).astype(int)
            self.streams = [(int(s), int(e)) for s, e in zip(edges[:-1], edges[1:]) if e - s > 1]
            self.window = t["window"]

    def mask(self, y: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(y) if self.decoder else self.occupied

    def image(self, z: torch.Tensor) -> torch.Tensor:
        return to_image(z, self.pixels, self.prep.canvas)

    def __len__(self) -> int:
        if self.stacked:
            return len(self.windows)
        if not self.online:
            return math.ceil(len(self.train_rows) / self.batch_size)
        return math.ceil(max(e - s for s, e in self.streams) / self.window)

    def q(self, x: torch.Tensor) -> torch.Tensor:
        r = self.cfg["retention"]
        return self.model.quant(x) if self.model.quant is not None else quantize(x, levels=r["levels"], kind=r["quantizer"])

    def __iter__(self):
        if self.stacked:
            yield from self.windows.epoch(self.gen)
            return
        if not self.online:
            order = self.train_rows[torch.randperm(len(self.train_rows), generator=self.gen)]
            for i in range(0, len(order), self.batch_size):
                rows = order[i:i + self.batch_size]
                y = self.target[rows]
                yield self.image(self.feats[rows]), y, self.mask(y)
            return
        # online: every stream starts at a random offset so windows differ between epochs
        lag = self.cfg["lag_bins"] if self.decoder else 0
        shift = int(torch.randint(0, max(1, self.window), (1,), generator=self.gen))
        starts = [s + min(shift, e - s - 1) for s, e in self.streams]
        L = min(e - st for (s, e), st in zip(self.streams, starts))
        zeta = None
        for off in range(0, L, self.window):
            n = min(self.window, L - off)
            idx = torch.stack([torch.arange(st + off, st + off + n) for st in starts], dim=1)   # (n, B)
            qw = self.q(self.counts[idx])                                                      # (n, B, D)
            z = retention_parallel(qw, self.prep.decays, zeta)                                 # (n, B, S, D)
            prev = zeta if zeta is not None else torch.zeros_like(z[0])
            feats = torch.cat([prev[None], z[:-1]]) if lag == 1 else z
            zeta = z[-1].detach()
            keep = torch.as_tensor(self.prep.valid)[idx].flatten()
            f = feats.flatten(0, 1)[keep]
            y = self.target[idx].flatten(0, 1)[keep]
            if len(y):
                yield self.image(f), y, self.mask(y)

    @torch.no_grad()
    def all_feats(self) -> torch.Tensor:
        """Zeta over the whole recording, shifted for lag (validation); recomputed only when a
        learned quantizer changes it."""
        if self.feats is not None:
            return self.feats
        zs, zeta = [], None
        for off in range(0, self.counts.shape[0], 1024):
            z = retention_parallel(self.q(self.counts[off:off + 1024, None]), self.prep.decays, zeta)
            zeta = z[-1]
            zs.append(z[:, 0])
        z = torch.cat(zs)
        if self.decoder and self.cfg["lag_bins"] == 1:
            z = torch.cat([torch.zeros_like(z[:1]), z[:-1]])
        return z

    @torch.no_grad()
    def val_loss(self, block: str = "val") -> float:
        a, b = self.prep.split[block]
        if self.stacked:                 # the block as one stream from a zero second state, as evaluation runs it
            return float(self.model.net.loss(predict(self.model.net, self.windows, a, b), self.target[a:b]))
        feats = self.all_feats()
        rows = torch.as_tensor(np.flatnonzero(self.prep.valid[a:b]) + a)
        total, n = 0.0, 0
        for i in range(0, len(rows), 1024):
            r = rows[i:i + 1024]
            y = self.target[r]
            out = self.model.net(self.image(feats[r]))
            total += float(self.model.net.loss(out, y, self.mask(y))) * len(r)
            n += len(r)
        return total / max(n, 1)


VAL_EVERY = 5                  # training.keep last: validation (8% of a Spike run) only informs, so it is sparse
CHECKPOINT_EVERY_S = 20.0      # a checkpoint per epoch cost 5% of a 40-epoch run; --resume loses at most this much


def compute_seconds(threads: int) -> float:
    """This process's CPU time divided by its torch threads: equal to wall time on an idle
    machine, but not stretched when other jobs share the cores. Time limits and the LR schedule
    run on this clock, so a busy machine does not cut training short (a 600 s wall limit stopped
    chestek after 11 of its epochs, 62 s of CPU, while eight other jobs ran)."""
    return time.process_time() / max(1, threads)


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic (rt_decoder.atomic): a crash or a full disk leaves the previous checkpoint intact."""
    buf = io.BytesIO()          # serialized first: a full disk then fails as an OSError naming the cause
    torch.save(state, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def check_resume(ck: dict, ckpt_path: Path, cfg: dict, data_sha256: str) -> None:
    """A checkpoint continues only the run it came from: same model/retention config, same data."""
    if ck.get("config_json") != json.dumps(_model_keys(cfg), sort_keys=True):
        raise ConfigError(where(ckpt_path, "--resume: the checkpoint was trained with a different model/retention config"))
    theirs = ck.get("data_sha256")
    if not theirs:
        raise ConfigError(where(ckpt_path, "--resume: the checkpoint does not record which data it was trained on "
                                           "(an older rt-decoder); train afresh without --resume"))
    if theirs != data_sha256:
        raise ConfigError(where(ckpt_path, f"--resume: the checkpoint was trained on different data (sha256 "
                                           f"{theirs[:12]}, this data {data_sha256[:12]}); train afresh without "
                                           "--resume, or into another --out"))


def fit(prep: Prepared, cfg: dict, ckpt_path: Path, resume: bool = False,
        time_limit: float | None = None, log=print, run_id: str = "") -> FitResult:
    """Train with early stopping; the best-validation weights are returned and checkpointed, or with
    training.keep: last, no early stopping and the weights at the end of the schedule (the cosine
    has annealed them; a small validation block picked worse, early, weights on most recordings).

    Ctrl-C (KeyboardInterrupt) ends training like a time limit: the best weights of the epochs
    completed so far are returned with stopped="interrupted"; the last checkpoint (written at the end
    of an epoch, at most CHECKPOINT_EVERY_S apart, and after the last) stays valid for --resume.
    Interrupted before the first epoch ends, it re-raises.
    """
    data_sha256 = prep.rec.fingerprint()
    t = cfg["training"]
    threads = torch_threads(t["threads"])
    torch.set_num_threads(threads)
    torch.manual_seed(t["seed"])
    gen = torch.Generator().manual_seed(t["seed"])
    model = build_model(prep, cfg)
    if prep.base is not None and model.net.cfg.glm_base:
        from rt_decoder.glm import ETA_MAX

        model.net.set_base(prep.base.weights, prep.base.bias, prep.base.basis, prep.pixels, ETA_MAX)
    if t["init_from"] and not resume:
        n = transfer_unet(model, t["init_from"])
        log(f"initialised {n} network tensors from {t['init_from']}")
    if cfg["kind"] == "generative" and not resume:
        if model.net.cfg.glm_base:
            model.net.zero_generative_output()      # start at the GLM; the network learns what it adds
        else:
            init_history(model, prep)
    batches = Batches(prep, cfg, model, gen)
    bf16 = batches.stacked and use_bf16(t["precision"])
    if bf16:
        log("training the stacked net's forward in bfloat16 autocast (training.precision)")
    if batches.stacked and t["streams"] == "auto":
        log(f"training.streams auto: {len(batches.windows.starts)} streams of {t['window']} bins per batch")
    if len(batches) == 0:
        raise DataError(where(prep.rec.source, "no valid training rows (all behaviour NaN?)"))
    decay = [p for n, p in model.named_parameters() if p.dim() > 1 and n != "net.head.bias"]
    rest = [p for n, p in model.named_parameters() if not (p.dim() > 1 and n != "net.head.bias")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t["weight_decay"]}, {"params": rest, "weight_decay": 0.0}],
                            lr=t["lr"], fused=True)      # one kernel per step: 5x cheaper than the default loop on CPU
    bound = isinstance(getattr(model.net, "head", None), GenerativeHead)     # keep self-excitation bounded
    held_levels = cfg["retention"]["levels"] if cfg["retention"]["quantizer"] != "binary" else 2
    steps_per_epoch = len(batches)
    total = t["max_epochs"] * steps_per_epoch
    warm = max(1, t["warmup_epochs"] * steps_per_epoch)
    limit = time_limit if time_limit is not None else t["time_limit_s"]
    clock = {"c0": compute_seconds(threads)}

    def lr_factor(s: int) -> float:
        """Linear warm-up, then cosine to zero at max_epochs or at the time limit, whichever comes first."""
        frac = s / total
        if limit is not None:
            frac = max(frac, (compute_seconds(threads) - clock["c0"]) / limit)
        return min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    epoch, best_val, bad, elapsed, computed, history = 0, float("inf"), 0, 0.0, 0.0, []
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        check_resume(ck, ckpt_path, cfg, data_sha256)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        gen.set_state(ck["gen"])
        torch.set_rng_state(ck["torch_rng"])
        epoch, best_val, bad, elapsed = ck["epoch"], ck["best_val"], ck["bad_epochs"], ck["elapsed"]
        computed = ck.get("computed", elapsed)
        best_state, history = ck["best_model"], json.loads(ck["history_json"])
        log(f"resumed from {ckpt_path} at epoch {epoch} (best val {best_val:.4f})")
    elif resume:
        log(f"--resume: no checkpoint at {ckpt_path} yet; starting from scratch")
    if model.net.cfg.glm_base and not resume:      # net_config sets it for generative models only
        model.eval()                     # the start (the GLM itself) is a candidate: ours then contains it
        best_val = batches.val_loss()
        log(f"glm base: validation loss {best_val:.4f} at the start (the GLM alone)")
    t0 = time.perf_counter() - elapsed
    clock["c0"] = compute_seconds(threads) - computed
    c0 = time.process_time()
    stopped = "max epochs"
    saved_at = -math.inf
    bar = tqdm(total=t["max_epochs"], initial=epoch, desc=f"train {cfg['name']}", unit="epoch", file=sys.stderr)
    noise, offset, gain, drop, huber = t["input_noise"], t["input_offset"], t["input_gain"], t["input_drop"], t["huber"]
    try:
        while epoch < t["max_epochs"] and stopped == "max epochs":
            model.train()
            run_loss, n = 0.0, 0
            state = None
            for x, y, m in batches:
                x = augment(x, noise, offset, batches.channel_sd, gain, drop)
                if batches.stacked:           # m: does this window continue the previous one's streams?
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        out, last = model.net.sequence(x, state if m else None)
                    state = last.detach().float()
                    loss = model.net.loss(out.float(), y, huber)
                else:
                    loss = model.net.loss(model.net(x), y, m, huber)
                    if bound and model.net.cfg.saturation_penalty > 0:
                        loss = loss + model.net.cfg.saturation_penalty * model.net.saturation_excess(m, held_levels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                if bound:
                    model.net.head.bound_self_gain(model.net.cfg.self_gain_max)
                run_loss += float(loss.detach())
                n += 1
                if limit is not None and compute_seconds(threads) - clock["c0"] > limit:
                    stopped = "time limit"
                    break
            model.eval()
            epoch += 1
            # keep: last needs no validation to choose weights: every VAL_EVERY-th epoch, the first and the last
            checked = (t["keep"] == "best" or epoch == 1 or epoch % VAL_EVERY == 0 or epoch >= t["max_epochs"]
                       or stopped != "max epochs")
            val = batches.val_loss() if checked else None
            history.append({"epoch": epoch, "train": run_loss / max(n, 1), "val": val})
            if val is not None and val < best_val - 1e-5:
                best_val, bad = val, 0
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            elif val is not None:
                bad += 1
                if bad >= t["patience"] and stopped == "max epochs" and t["keep"] == "best":
                    stopped = "early stopping"
            bar.update(1)
            if val is not None:
                bar.set_postfix(train=f"{run_loss / max(n, 1):.4f}", val=f"{val:.4f}", best=f"{best_val:.4f}")
            last_epoch = epoch >= t["max_epochs"] or stopped != "max epochs"
            if last_epoch or time.perf_counter() - saved_at >= CHECKPOINT_EVERY_S:
                saved_at = time.perf_counter()
                save_checkpoint(ckpt_path, {
                    "model": model.state_dict(), "best_model": best_state, "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                    "epoch": epoch, "best_val": best_val, "bad_epochs": bad,
                    "elapsed": time.perf_counter() - t0, "computed": compute_seconds(threads) - clock["c0"],
                    "history_json": json.dumps(history),
                    "config_json": json.dumps(_model_keys(cfg), sort_keys=True),
                    "net_config_json": json.dumps(model.net.cfg.to_dict()),
                    "data_sha256": data_sha256, "run_id": run_id,
                })
    except KeyboardInterrupt:
        stopped = "interrupted"
        if epoch == 0:               # no whole epoch yet: nothing worth exporting
            bar.close()
            raise
    bar.close()
    kept = "last" if t["keep"] == "last" and stopped != "interrupted" else "best"    # interrupted: not annealed
    if kept == "best":
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(model=model, best_val=best_val, epochs=epoch, seconds=time.perf_counter() - t0,
                     cpu_seconds=time.process_time() - c0, threads=threads,
                     stopped=stopped, history=history, kept=kept, precision="bf16" if bf16 else "fp32")


def _model_keys(cfg: dict) -> dict:
    """The parts of a config a checkpoint's weights depend on (resume must match them)."""
    return {"kind": cfg["kind"], "lag_bins": cfg["lag_bins"], "retention": cfg["retention"], "model": cfg["model"]}


def main(argv: list[str] | None = None) -> int:
    """`python -m training.train` takes `rt-decoder train`'s flags; under torchrun every rank runs
    it and joins the process group first (training/distributed.py)."""
    from rt_decoder.cli import main as cli_main

    from .distributed import init, shutdown

    d = init()
    try:
        code = cli_main(["train", *(sys.argv[1:] if argv is None else argv)])
        d.barrier()       # no rank tears the group down while another still works in it (rank 0 writes last)
        return code
    finally:
        shutdown()


if __name__ == "__main__":
    sys.exit(main())
