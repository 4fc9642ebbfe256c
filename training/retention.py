"""The differentiable twin of rt_decoder.retention: quantizers and zeta in torch.

Offline training reads zeta precomputed by the numpy functions; only what needs gradients lives
here: the learned quantizer (thesis eq. 3.1) and the retention it feeds (online mode, thesis
algorithm 1). tests/test_training_retention.py pins this file to the numpy original.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def quantize(x: torch.Tensor, levels: int = 2, kind: str = "binary") -> torch.Tensor:
    """Fixed quantizers, as rt_decoder.retention.quantize (same signature): [x > 0] or min(x, M-1)/(M-1)."""
    if kind == "binary" or (kind == "levels" and levels == 2):
        return (x > 0).to(torch.float32)
    if kind == "levels":
        return x.clamp(0, levels - 1).to(torch.float32) / (levels - 1)
    raise ValueError(f"quantizer {kind!r} has no fixed form (choose binary or levels)")


class LearnedQuantizer(nn.Module):
    """q = sum_i sigmoid(w_i * x + b_i) / (M - 1), one (w_i, b_i) per level step and channel.

    Initialised as a soft staircase with steps at counts 0.5, 1.5, ..., so it starts close to
    the `levels` quantizer and learns where the steps should be (thesis eq. 3.1).
    """

    def __init__(self, n_channels: int, levels: int = 4, sharpness: float = 4.0):
        super().__init__()
        steps = torch.arange(levels - 1, dtype=torch.float32) + 0.5
        self.w = nn.Parameter(torch.full((levels - 1, n_channels), sharpness))
        self.b = nn.Parameter((-sharpness * steps)[:, None].repeat(1, n_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., D) -> q (..., D) in [0, 1]."""
        z = x.unsqueeze(-2) * self.w + self.b
        return torch.sigmoid(z).sum(dim=-2) / self.w.shape[0]


def retention_recurrent(q: torch.Tensor, decays: Sequence[float], zeta0: torch.Tensor | None = None) -> torch.Tensor:
    """Step by step: q (T, B, ...) -> zeta (T, B, S, ...), the form the ONNX graph runs."""
    g = torch.tensor(list(decays), dtype=q.dtype, device=q.device).reshape((-1,) + (1,) * (q.dim() - 2))
    z = zeta0 if zeta0 is not None else torch.zeros(q.shape[1:2] + g.shape[:1] + q.shape[2:], dtype=q.dtype, device=q.device)
    out = []
    for k in range(q.shape[0]):
        z = g * z + (1 - g) * q[k].unsqueeze(1)
        out.append(z)
    return torch.stack(out)


def retention_parallel(q: torch.Tensor, decays: Sequence[float], zeta0: torch.Tensor | None = None) -> torch.Tensor:
    """Whole window at once: zeta_k = gamma^(k+1) zeta0 + (1-gamma) sum_j gamma^(k-j) q_j.

    q (T, B, ...) -> (T, B, S, ...). One lower-triangular matmul per decay, so a window of a few
    hundred bins trains fast with gradients flowing into the learned quantizer.
    """
    T = q.shape[0]
    k = torch.arange(T, dtype=torch.float64, device=q.device)
    diff = k[:, None] - k[None, :]
    outs = []
    for gamma in decays:
        a = torch.where(diff >= 0, (1 - gamma) * gamma ** diff.clamp(min=0), torch.zeros((), dtype=torch.float64))
        z = torch.einsum("tj,j...->t...", a.to(q.dtype), q)
        if zeta0 is not None:
            s = len(outs)
            carry = (gamma ** (k + 1)).to(q.dtype).reshape((T,) + (1,) * (q.dim() - 1))
            z = z + carry * zeta0[:, s].unsqueeze(0)
        outs.append(z)
    return torch.stack(outs, dim=2)
