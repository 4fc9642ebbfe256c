"""The network: a small UNet over the zeta image, with a decoder head or a generative head.

Read top to bottom: NetConfig (data), UNet (features at full resolution), DecoderHead (FC ->
K normalized kinematics, Gaussian likelihood = MSE, thesis eq. 3.7-3.8), GenerativeHead (one
logit per pixel for the next bin's spikes, Bernoulli or Poisson), and Net, which is exactly the
graph exported to ONNX: zeta image [B, S, H, W] -> [B, K] or [B, 1, H, W].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


def regression_loss(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, huber: float = 0.0) -> torch.Tensor:
    """Mean squared error over the entries mask keeps (finite behaviour); with huber > 0
    (training.huber) err^2 within huber output sds and 2 huber |err| - huber^2 beyond, so a few
    training bins far from the rest (cursor jumps) pull less on the fit. Every decoder's loss."""
    err = torch.where(mask, out - torch.nan_to_num(target), torch.zeros((), dtype=out.dtype))
    sq = err**2
    if huber:
        a = err.abs()
        sq = torch.where(a <= huber, sq, 2 * huber * a - huber * huber)
    return sq.sum() / mask.sum().clamp(min=1)


@dataclass
class NetConfig:
    in_channels: int                     # S, one image channel per decay
    canvas: tuple[int, int]              # (H, W)
    kind: str = "decoder"                # decoder | generative
    n_outputs: int = 0                   # K (decoder)
    widths: list[int] = field(default_factory=lambda: [16, 32])  # channels per UNet level
    head_hidden: int = 256               # decoder FC width (0: linear readout of the features)
    head_layers: int = 1                 # hidden FC layers
    dropout: float = 0.1
    likelihood: str = "gaussian"         # gaussian (decoder) | bernoulli | poisson (generative)
    coupling_rank: int = 0               # generative: rank of the all-to-all coupling path (0: none)
    decays: list[float] = field(default_factory=list)   # generative coupling: zeta channel s is scaled by 1/(1 - decays[s])
    self_gain_max: float | None = None   # generative: bound on each neuron's net self-excitation (None: unbounded)
    saturation_penalty: float = 0.0      # generative: weight of Net.saturation_excess in the loss (0: off)
    glm_base: bool = False               # generative: the loss adds a base log-rate (the fitted GLM's) carried in the target
    dropout_mask: str = "bernoulli"      # bernoulli (nn.Dropout) | bytes (ByteDropout)
    stem_bias: bool = True               # False: no conv of the UNet has a bias: silent pixels give zero features
    linear_skip: bool = False            # stacked decoder: a linear map from the zeta image added to the output

    def to_dict(self) -> dict:
        d = asdict(self)
        d["canvas"] = list(self.canvas)
        return d


class ByteDropout(nn.Module):
    """Dropout whose mask compares random bytes with round(256 p): on CPU torch's Bernoulli draw
    took a fifth of a stacked training step; eight masks per 64-bit random number cost a third."""

    def __init__(self, p: float):
        super().__init__()
        self.cut = round(256 * p)
        self.scale = 256 / (256 - self.cut) if self.cut < 256 else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.cut == 0:
            return x
        n = x.numel()
        words = torch.randint(-2**63, 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64)  # full range: every byte uniform
        keep = words.view(torch.uint8)[:n].view(x.shape) >= self.cut
        return x * keep.to(x.dtype).mul_(self.scale)


def dropout(cfg: NetConfig) -> nn.Module:
    return ByteDropout(cfg.dropout) if cfg.dropout_mask == "bytes" else nn.Dropout(cfg.dropout)


class UNet(nn.Module):
    """Stem conv at full resolution, then one stride-2 conv per level down and a 2x2 transposed
    conv per level up with additive skips. Downsampling early keeps a 64x64 step in ~1 ms."""

    def __init__(self, in_channels: int, widths: list[int], stem_bias: bool = True):
        super().__init__()
        # stem_bias False: a pixel whose zeta is zero (no electrode, or silent) gives zero features. With a
        # bias it gives relu(b) everywhere: thousands of FC inputs carrying one constant, whose weights Adam
        # moves together, a bias step hundreds of times the learning rate that killed every FC unit of a
        # stacked decoder on ziv CA1 (452 cells, 24x24 canvas) in its first epoch.
        # The levels below obey it too: a biased down, mid or up conv turns the zero features of silent
        # pixels back into relu(b) at every pixel (a 2-level UNet died so on ziv CA1, 2 seeds of 3).
        bias = stem_bias          # the name stays for configs; it now covers every conv
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=bias)
        self.down = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1, bias=bias) for a, b in zip(widths, widths[1:]))
        self.mid = nn.Conv2d(widths[-1], widths[-1], 3, padding=1, bias=bias) if len(widths) > 1 else nn.Identity()
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, stride=2, bias=bias) for a, b in zip(widths, widths[1:]))
        self.out_channels = widths[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        skips = []
        for conv in self.down:
            skips.append(h)
            h = F.relu(conv(h))
        h = F.relu(self.mid(h)) if len(self.down) else h
        for up, skip in zip(reversed(self.up), reversed(skips)):
            h = F.relu(up(h) + skip)
        return h


class DecoderHead(nn.Module):
    """FC layers on the UNet's features and on the zeta image itself (a linear path that keeps
    the network at least as good as a ridge readout of zeta) -> K normalized outputs."""

    def __init__(self, cfg: NetConfig, feat_channels: int):
        super().__init__()
        H, W = cfg.canvas
        n_in = (feat_channels + cfg.in_channels) * H * W
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.head_hidden > 0:
            layers: list[nn.Module] = []
            for i in range(cfg.head_layers):
                layers += [nn.Linear(n_in if i == 0 else cfg.head_hidden, cfg.head_hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            self.fc = nn.Sequential(*layers, nn.Linear(cfg.head_hidden, cfg.n_outputs))
        else:
            self.fc = nn.Linear(n_in, cfg.n_outputs)

    def forward(self, feats: torch.Tensor, zeta: torch.Tensor) -> torch.Tensor:
        x = torch.cat([feats, zeta], dim=1).flatten(1)
        return self.fc(self.drop(x))


class GenerativeHead(nn.Module):
    """1x1 conv -> one logit per pixel, plus each neuron's own history filter (a weight per decay
    and pixel: zeta at the neuron's pixel is its spike train filtered by each decay) and a learned
    per-pixel bias (its base rate). The conv shares one weight per decay across all pixels, which
    gave every neuron the same refractoriness and burstiness; the own-history weights let each
    neuron have its own, as a GLM's spike-history filter does (Pillow et al. 2008)."""

    def __init__(self, cfg: NetConfig, feat_channels: int):
        super().__init__()
        self.proj = nn.Conv2d(feat_channels + cfg.in_channels, 1, 1)
        self.own = nn.Parameter(torch.zeros(1, cfg.in_channels, *cfg.canvas))
        self.bias = nn.Parameter(torch.zeros(1, 1, *cfg.canvas))
        self.coupling = None
        if cfg.coupling_rank > 0:
            # every neuron's past -> every neuron's next logit through a rank-r bottleneck (a GLM's
            # coupling filters on the decays' exponential basis). Zeta is rescaled so a spike adds 1 at
            # lag 0 in every channel: the slow channels (zeta ~ 1 - decay per spike) then need no
            # weights far larger than Adam's steps can reach. The read-out starts at zero.
            H, W = cfg.canvas
            gain = [1.0 / (1.0 - g) for g in (cfg.decays or [0.0] * cfg.in_channels)]
            self.register_buffer("gain", torch.tensor(gain, dtype=torch.float32).view(1, -1, 1, 1))
            self.coupling = nn.Sequential(nn.Flatten(), nn.Linear(cfg.in_channels * H * W, cfg.coupling_rank),
                                          nn.Linear(cfg.coupling_rank, H * W), nn.Unflatten(1, (1, H, W)))
            nn.init.zeros_(self.coupling[2].weight)
            nn.init.zeros_(self.coupling[2].bias)

    def self_gain(self) -> torch.Tensor:
        """Each pixel's net self-excitation (H, W): the change of its logit once its own q has stayed
        at 1 long enough that zeta is 1 in every channel (zeta is normalised: a constant q gives
        zeta = q), through the linear paths that read its own zeta: its own-history weights, the
        shared 1x1 conv's zeta weights and the coupling path's diagonal (the UNet's nonlinear path
        is left out). A positive gain lets a neuron sustain itself on its own spikes: fitted to
        task-driven rate changes, it makes the model run away when fed its own samples."""
        S = self.own.shape[1]
        H, W = self.own.shape[2:]
        g = self.own.sum(dim=1)[0] + self.proj.weight[0, -S:].sum()
        if self.coupling is not None:
            w_in = self.coupling[1].weight.view(-1, S, H * W)           # (rank, S, H*W), Flatten order
            w_out = self.coupling[2].weight                             # (H*W, rank)
            g = g + torch.einsum("pr,rsp,s->p", w_out, w_in, self.gain.view(-1)).view(H, W)
        return g

    @torch.no_grad()
    def bound_self_gain(self, limit: float | None) -> None:
        """Project the own-history weights so that no neuron's self_gain exceeds `limit` (the
        Euclidean projection onto that half-space: the excess is taken evenly off its S weights),
        so a stable GLM's net-refractory self-history is kept while training (projected gradient)."""
        if limit is None:
            return
        excess = (self.self_gain() - limit).clamp(min=0)
        self.own -= excess / self.own.shape[1]

    def forward(self, feats: torch.Tensor, zeta: torch.Tensor) -> torch.Tensor:
        own = (zeta * self.own).sum(dim=1, keepdim=True)
        out = self.proj(torch.cat([feats, zeta], dim=1)) + own + self.bias
        if self.coupling is not None:
            out = out + self.coupling(zeta * self.gain)
        return out


class Net(nn.Module):
    """zeta image [B, S, H, W] -> decoder outputs [B, K] or generative logits [B, 1, H, W]."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        levels = len(cfg.widths) - 1
        H, W = cfg.canvas
        if H % (2**levels) or W % (2**levels):
            raise ValueError(f"canvas {H}x{W} is not divisible by 2^{levels} for a {levels + 1}-level UNet")
        self.unet = UNet(cfg.in_channels, list(cfg.widths), cfg.stem_bias)
        self.base: tuple[torch.Tensor, ...] | None = None
        if cfg.kind == "decoder":
            self.head = DecoderHead(cfg, self.unet.out_channels)
        elif cfg.kind == "generative":
            self.head = GenerativeHead(cfg, self.unet.out_channels)
        else:
            raise ValueError(f"kind must be decoder or generative, got {cfg.kind!r}")

    def forward(self, zeta: torch.Tensor) -> torch.Tensor:
        return self.head(self.unet(zeta), zeta)

    def set_base(self, weights, bias, basis, pixels, eta_max: float) -> None:
        """model.glm_base: the fitted GLM (weights (B*D, D), bias (D,), basis (L, B)) and each channel's
        pixel, so saturation_excess judges a firing pattern under the GLM's log-rate plus the network's."""
        f = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        self.base = (f(weights), f(bias), f(basis), torch.as_tensor(pixels, dtype=torch.long), float(eta_max))

    def _base_eta(self, on: torch.Tensor, period: torch.Tensor, phase: torch.Tensor, count: float) -> torch.Tensor:
        """(n, H*W) the GLM's log-rate (0 off the channels' pixels) after each subset `on` fired `count`
        spikes every `period` bins, last `phase` bins ago, for as long as the GLM's filters reach."""
        w, b, basis, pix, eta_max = self.base
        L, B = basis.shape
        j = torch.arange(L, dtype=torch.float32)[None]
        fire = ((j >= phase) & (torch.remainder(j - phase, period) == 0)).float() * count      # (n, L)
        on_ch = on[:, pix].float()                                                            # (n, D)
        feat = ((fire @ basis)[:, :, None] * on_ch[:, None, :]).flatten(1)                    # feature b*D + e
        eta = (feat @ w + b).clamp(max=eta_max)
        return torch.zeros(on.shape[0], on.shape[1]).index_copy(1, pix, eta)

    def saturation_excess(self, occupied: torch.Tensor, levels: int, n: int = 32) -> torch.Tensor:
        """How far sustained firing feeds itself, through every path (UNet included). For n random
        subsets of the neurons (fractions u^3, u uniform: down to single neurons) firing at the quantizer's top level
        (q = 1, M - 1 counts or more) in every bin or every other bin (period P in {1, 2}), zeta is that
        pattern's stationary value at a random phase; the pattern sustains itself when a firing
        neuron's expected next quantized count E[q(x)] reaches its mean level q/P. Returns the mean
        of max(E[q(x)] - q/(2P), 0) over firing neurons: at zero each such pattern at least halves,
        so none is a fixed point (nor, with sampling noise, near one) that the model falls into when
        fed its own samples (runaway sampling: on mc_maze a subset firing ~1000 every other bin),
        while the rates above silence that the task drives stay free. With a GLM base (glm_base) a
        firing neuron's excess is counted above what the GLM alone gives it: the network must not
        make a pattern more self-sustaining than its (stable) base."""
        H, W = self.cfg.canvas
        S = self.cfg.in_channels
        M = max(int(levels), 2)
        g = torch.tensor(self.cfg.decays or [0.0] * S, dtype=torch.float32)
        q = torch.ones(n, 1)
        period = torch.randint(1, 3, (n, 1)).float()
        phase = torch.floor(torch.rand(n, 1) * period)                       # bins since the last firing
        level = q * (1 - g) * g.pow(phase) / (1 - g.pow(period))             # (n, S) stationary zeta
        on = (torch.rand(n, H * W) < torch.rand(n, 1) ** 3) & occupied      # small subsets too: one neuron can run away
        z = (on[:, None, :] * level[:, :, None]).view(n, S, H, W)
        eta = self(z).flatten(1)
        allowed = q / (2 * period)
        if self.base is not None:                   # the network may not add to what the GLM alone sustains
            base = self._base_eta(on, period, phase, float(M - 1))
            eta = eta + base
            allowed = torch.maximum(allowed, self._expected_level(base, M).detach())
        return ((self._expected_level(eta, M) - allowed).clamp(min=0) * on).sum() / on.sum().clamp(min=1)

    def _expected_level(self, eta: torch.Tensor, M: int) -> torch.Tensor:
        """E[q] of the next bin at log-rate (logit) eta: E[min(x, M-1)] / (M-1) for x ~ Poisson(exp(eta)),
        or P(spike) for Bernoulli."""
        if self.cfg.likelihood == "poisson":
            eta = eta.clamp(max=20)
            k = torch.arange(M - 1, dtype=eta.dtype)
            pk = torch.exp(k * eta[..., None] - eta.exp()[..., None] - torch.lgamma(k + 1))
            return ((k * pk).sum(-1) + (M - 1) * (1 - pk.sum(-1)).clamp(min=0)) / (M - 1)
        return torch.sigmoid(eta)

    def loss(self, out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, huber: float = 0.0) -> torch.Tensor:
        """Mean loss over valid entries. Decoder: `regression_loss`, mask (B, K) excludes NaN
        behaviour. Generative: BCE or Poisson NLL at occupied pixels, mask (H*W,) marks them; with
        glm_base the target is [next counts | base log-rate] (B, 2N), and the base is added to the logits."""
        if self.cfg.kind == "decoder":
            return regression_loss(out, target, mask, huber)
        logits = out.flatten(1)[:, mask]
        if self.cfg.glm_base:
            target, base = target.chunk(2, dim=1)
            logits = logits + base
        if self.cfg.likelihood == "poisson":
            return F.poisson_nll_loss(logits, target, log_input=True, full=False)
        return F.binary_cross_entropy_with_logits(logits, (target > 0).to(logits.dtype))

    @torch.no_grad()
    def zero_generative_output(self) -> None:
        """Every path of the generative head outputs zero (UNet features still flow, so gradients
        reach them): with glm_base the model starts exactly at the GLM."""
        head = self.head
        for t in (head.proj.weight, head.proj.bias, head.own, head.bias):
            t.zero_()

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
