"""A second recurrent layer over the UNet's nonlinear features (model.stack), trained on windows.

The flat decoder reads the fixed-decay zeta image through UNet + FC. Here the first FC layer's
output h_k = relu(FC1([UNet(zeta1_k), zeta1_k])) feeds a second state s that also advances one
bin at a time, and the head reads both: y_k = FC2([h_k, s_k]). `model.stack` picks the update:

  none       no second state (today's network; trained on windows it isolates "how it is trained")
  retention  s_k = g * s_{k-1} + (1 - g) * W h_k, learnable per-feature decays g = sigmoid(a)
  gated      as retention with input-dependent decays g_k = sigmoid(a + U h_k)
  leaky      s_k = g * s_{k-1} + (1 - g) * tanh(W h_k + R s_{k-1}): the state passes a nonlinearity
  gru        s_k = GRUCell(h_k, s_{k-1})
  gru2       two GRU layers (the GRU reference's depth); the state is both layers' [1, 2N], the head
             reads the top layer's

Training cuts the training block into `streams` contiguous streams read in windows of `window`
bins, s carried (detached) from window to window (truncated BPTT), so the state the loss sees
is as warm as at run time. The step graph carries s as the state `stack_s` [1, N] after zeta.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .model import NetConfig, UNet, dropout, regression_loss

STACKS = ("none", "retention", "gated", "leaky", "gru", "gru2")
STACK_STATE = "stack_s"     # the step graph's name for the second state


def init_decays(n: int, lo: float = 0.5, hi: float = 0.99) -> torch.Tensor:
    """Logits of n decays spread evenly in log-timescale between lo and hi."""
    tau = torch.exp(torch.linspace(math.log(1 / (1 - lo)), math.log(1 / (1 - hi)), n))
    g = 1 - 1 / tau
    return torch.log(g / (1 - g))


class StackedNet(nn.Module):
    """zeta image [B, S, H, W] and state [B, N] -> normalized outputs [B, K] and the next state."""

    def __init__(self, cfg: NetConfig, stack: str, state_size: int, pixels: np.ndarray | None = None):
        super().__init__()
        if stack not in STACKS:
            raise ValueError(f"model.stack must be one of {', '.join(STACKS)}, got {stack!r}")
        self.cfg, self.stack = cfg, stack
        H, W = cfg.canvas
        levels = len(cfg.widths) - 1
        if H % (2**levels) or W % (2**levels):
            raise ValueError(f"canvas {H}x{W} is not divisible by 2^{levels} for a {levels + 1}-level UNet")
        self.unet = UNet(cfg.in_channels, list(cfg.widths), cfg.stem_bias)
        hid = cfg.head_hidden
        self.drop = dropout(cfg)
        # FC1 reads only the inputs that can be nonzero (pixels: the occupied canvas pixels). Drawn at
        # full width and sliced, so its weights are those the full layer would start from: the same
        # network, 41% of the multiply (96 channels on 16x16).
        full = nn.Linear((self.unet.out_channels + cfg.in_channels) * H * W, hid)
        keep = torch.arange(full.in_features) if pixels is None else self.support(pixels).nonzero()[:, 0]
        self.register_buffer("fc1_keep", keep, persistent=False)
        self.fc1 = torch.nn.utils.skip_init(nn.Linear, len(keep), hid)     # draws nothing: later layers start as before
        with torch.no_grad():
            self.fc1.weight.copy_(full.weight[:, keep])
            self.fc1.bias.copy_(full.bias)
        N = 0 if stack == "none" else state_size
        self.layers = 2 if stack == "gru2" else 1
        self.state_size = N * self.layers
        if stack in ("retention", "gated", "leaky"):
            self.inp = nn.Linear(hid, N)
            self.a = nn.Parameter(init_decays(N))
        if stack == "gated":
            self.gate = nn.Linear(hid, N)
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)
        if stack == "leaky":
            self.rec = nn.Linear(N, N, bias=False)
            nn.init.orthogonal_(self.rec.weight, gain=0.5)
        if stack in ("gru", "gru2"):
            self.gru = nn.GRU(hid, N, num_layers=self.layers)
        self.fc2 = nn.Linear(hid + N, hid)
        self.out = nn.Linear(hid, cfg.n_outputs)
        # model.linear_skip: a Wiener-like path beside the nonlinear one, zero at the start. ReLU
        # features saturate outside the training range; a linear map keeps growing with the input.
        self.skip = nn.Linear(cfg.in_channels * H * W, cfg.n_outputs, bias=False) if cfg.linear_skip else None
        if self.skip is not None:
            nn.init.zeros_(self.skip.weight)

    @torch.no_grad()
    def support(self, pixels: np.ndarray) -> torch.Tensor:
        """Which of FC1's inputs, [UNet features, zeta] flattened, can be nonzero when zeta is zero
        off the occupied pixels: zeta there, and the UNet's receptive field around them (every
        feature where its convs have a bias). The UNet with every weight 1 on a positive image is
        positive exactly where some input can reach."""
        S, (H, W) = self.cfg.in_channels, self.cfg.canvas
        occ = torch.zeros(H * W, dtype=torch.bool)
        occ[torch.as_tensor(pixels, dtype=torch.long)] = True
        with torch.random.fork_rng(devices=[]):
            probe = UNet(S, list(self.cfg.widths), self.cfg.stem_bias)
        for p in probe.parameters():
            p.fill_(1.0)
        reach = probe(occ.float().view(1, 1, H, W).expand(1, S, H, W))[0] > 0
        return torch.cat([reach.flatten(), occ.repeat(S)])

    def features(self, zeta: torch.Tensor) -> torch.Tensor:
        """[B, S, H, W] -> h [B, hidden]."""
        x = self.drop(torch.cat([self.unet(zeta), zeta], dim=1).flatten(1))
        return F.relu(self.fc1(x.index_select(1, self.fc1_keep)))

    def update(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """One bin of the second state: h [B, hidden], s [B, N] -> s_next."""
        if self.stack == "none":
            return s
        if self.stack in ("gru", "gru2"):
            return self._flat(self.gru(h.unsqueeze(0), self._layered(s))[1])
        u = self.inp(h)
        if self.stack == "leaky":
            u = torch.tanh(u + self.rec(s))
        g = torch.sigmoid(self.a + self.gate(h)) if self.stack == "gated" else torch.sigmoid(self.a)
        return g * s + (1 - g) * u

    # One layer keeps the plain unsqueeze / index, so the default's step graph has no reshapes per bin.
    def _layered(self, s: torch.Tensor) -> torch.Tensor:
        """[B, layers * N] -> nn.GRU's [layers, B, N]."""
        if self.layers == 1:
            return s.unsqueeze(0)
        return s.view(s.shape[0], self.layers, -1).transpose(0, 1).contiguous()

    def _flat(self, s: torch.Tensor) -> torch.Tensor:
        """nn.GRU's [layers, B, N] -> [B, layers * N]."""
        if self.layers == 1:
            return s[0]
        return s.transpose(0, 1).reshape(s.shape[1], -1)

    def _top(self, s: torch.Tensor) -> torch.Tensor:
        """[B, layers * N] -> the top layer's state [B, N], what the head reads."""
        return s if self.layers == 1 else s[:, -(self.state_size // self.layers):]

    def readout(self, h: torch.Tensor, s: torch.Tensor, zeta: torch.Tensor) -> torch.Tensor:
        """s: the top layer's state [..., N]; zeta [..., S, H, W] feeds model.linear_skip's path."""
        x = torch.cat([h, s], dim=-1) if self.state_size else h
        y = self.out(self.drop(F.relu(self.fc2(self.drop(x)))))
        return y if self.skip is None else y + self.skip(zeta.flatten(-3))

    def forward(self, zeta: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One bin (the step graph's network): zeta [1, S, H, W], s [1, N] -> (y [1, K], s_next)."""
        h = self.features(zeta)
        s = self.update(h, s)
        return self.readout(h, self._top(s), zeta), s

    def sequence(self, zeta: torch.Tensor, s0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A window: zeta [L, B, S, H, W] -> (y [L, B, K], s after the last bin). The conv and FC1
        run on all L*B bins at once; only the state update loops over bins."""
        L, B = zeta.shape[:2]
        h = self.features(zeta.flatten(0, 1)).view(L, B, -1)
        s = s0 if s0 is not None else h.new_zeros(B, self.state_size)
        if self.stack in ("gru", "gru2"):
            seq, last = self.gru(h, self._layered(s))
            return self.readout(h, seq, zeta), self._flat(last)
        if self.stack == "none":
            return self.readout(h, h.new_zeros(L, B, 0), zeta), s
        states = []
        if self.stack in ("retention", "gated"):      # the input path is linear: one matmul for the window
            u = self.inp(h)
            g = torch.sigmoid(self.a + self.gate(h)) if self.stack == "gated" else torch.sigmoid(self.a).expand_as(u)
            for k in range(L):
                s = g[k] * s + (1 - g[k]) * u[k]
                states.append(s)
        else:
            for k in range(L):
                s = self.update(h[k], s)
                states.append(s)
        return self.readout(h, torch.stack(states), zeta), s

    def loss(self, out: torch.Tensor, target: torch.Tensor, huber: float = 0.0) -> torch.Tensor:
        """model.regression_loss over the finite targets."""
        return regression_loss(out, target, torch.isfinite(target), huber)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def auto_streams(bins: int, window: int) -> int:
    """training.streams auto: a batch of windows holding about 1/16 of the training block, within
    16-32 streams. A long recording takes bigger batches (half the optimizer steps of 16 streams,
    and big enough for 2 threads to share), a short one keeps 16 streams and >= 16 steps per epoch
    (32 streams left Nick_CO_001 8 steps per epoch and cost it 0.03 R2)."""
    return int(min(32, max(16, bins // (16 * window))))


class Windows:
    """Contiguous streams over the training block, read window by window (TBPTT); a random shift
    per epoch so windows differ between epochs. Yields (zeta image [L, B, S, H, W], target [L, B, K],
    continues) where continues says whether the state carries over from the previous window."""

    def __init__(self, feats: torch.Tensor, target: torch.Tensor, pixels: torch.Tensor, canvas: tuple[int, int],
                 block: tuple[int, int], streams: int | str, window: int):
        self.feats, self.target, self.pixels, self.canvas = feats, target, pixels, canvas
        a, b = block
        if streams == "auto":
            streams = auto_streams(b - a, window)
        n = max(1, min(streams, (b - a) // (2 * window)))
        edges = np.linspace(a, b, n + 1).astype(int)
        self.starts = torch.as_tensor(edges[:-1])
        self.length = int(np.diff(edges).min())
        self.window = window

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Bin indices (L, B) -> zeta images (L, B, S, H, W)."""
        from .train import to_image  # train imports this module

        L, B = idx.shape
        return to_image(self.feats[idx.flatten()], self.pixels, self.canvas).view(L, B, -1, *self.canvas)

    def __len__(self) -> int:
        return math.ceil(self.length / self.window)

    def epoch(self, gen: torch.Generator):
        shift = int(torch.randint(0, self.window, (1,), generator=gen))
        usable = self.length - shift
        for off in range(0, usable, self.window):
            n = min(self.window, usable - off)
            idx = (self.starts + shift + off)[None] + torch.arange(n)[:, None]      # (n, B)
            yield self.rows(idx), self.target[idx], off > 0


@torch.no_grad()
def predict(net: StackedNet, win: Windows, a: int, b: int, chunk: int = 1024) -> torch.Tensor:
    """Bins a..b as one stream from a zero second state -> normalized outputs (b - a, K)."""
    s, outs = None, []
    for o in range(a, b, chunk):
        idx = torch.arange(o, min(b, o + chunk))[:, None]
        out, s = net.sequence(win.rows(idx), s)
        outs.append(out[:, 0])
    return torch.cat(outs)
