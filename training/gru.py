"""The recurrent reference: a causal GRU (Glaser et al. 2020 found GRU/LSTM decoders the ones to
beat), 2 layers x 256 by default, on z-scored counts -> normalized kinematics.

Trained on windows cut from the training block, each started from a zero hidden state whose first
`burn_in` bins only warm the state (their loss is ignored), so the net learns to decode from a
state it built itself, as at run time; or, with `carry`, on contiguous streams whose state is
carried from window to window (truncated BPTT, as model.stack trains). Run statefully bin by bin: the hidden state [layers, 1,
hidden] is the step graph's state `gru_h`, zeros at reset. With lag_bins = 1 the prediction for
bin k is read from the state before bin k's counts arrive.
"""

from __future__ import annotations

import torch
from torch import nn

from rt_decoder.model_card import StateSpec

from .reference import Normalized, RefData, masked_mse

HPARAMS = {
    "hidden": 256, "layers": 2, "dropout": 0.2,
    "window": 64, "burn_in": 16, "batch_size": 16,
    "carry": False,     # True: batch_size contiguous streams read window by window, the state carried (TBPTT)
    "lr": 2e-3, "weight_decay": 1e-2, "max_epochs": 40, "patience": 5, "plateau": 2,
}


class GRUNet(nn.Module):
    def __init__(self, n_in: int, n_out: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.gru = nn.GRU(n_in, hidden, num_layers=layers, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None, lag: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """x (T, B, D) -> predictions (T, B, K) and the final state. lag 1: the prediction at t
        reads the top layer's state after t-1 (zeros, or h's top layer, at t = 0)."""
        seq, h_last = self.gru(x, h)
        if lag == 1:
            top0 = h[-1:] if h is not None else torch.zeros_like(seq[:1])
            seq = torch.cat([top0, seq[:-1]])
        return self.out(self.drop(seq)), h_last


def build(data: RefData, hp: dict) -> GRUNet:
    if data.lag_bins not in (0, 1):
        raise ValueError(f"the GRU reference supports lag_bins 0 or 1, got {data.lag_bins}")
    return GRUNet(data.n_channels, data.n_outputs, hp["hidden"], hp["layers"], hp["dropout"])


def batches(net: GRUNet, data: RefData, hp: dict, gen: torch.Generator):
    """One epoch: windows of burn_in + window bins tiling the training block from a random shift,
    in random order; loss on the last `window` bins of each. With carry, streams instead."""
    if hp["carry"]:
        yield from carried_batches(net, data, hp, gen)
        return
    a, b = data.split["train"]
    span = hp["burn_in"] + hp["window"]
    shift = int(torch.randint(0, hp["window"], (1,), generator=gen))
    starts = torch.arange(a + shift - hp["burn_in"], b - span + 1, hp["window"]).clamp(min=a)
    if len(starts) == 0:
        starts = torch.tensor([a])
        span = b - a
    starts = starts[torch.randperm(len(starts), generator=gen)]
    steps = torch.arange(span)
    burn = min(hp["burn_in"], span - 1)
    for i in range(0, len(starts), hp["batch_size"]):
        idx = starts[i:i + hp["batch_size"], None] + steps[None]       # (B, span)
        yield window_loss(net, data.x[idx].transpose(0, 1), data.y[idx].transpose(0, 1), burn, data.lag_bins)


def carried_batches(net: GRUNet, data: RefData, hp: dict, gen: torch.Generator):
    """Truncated BPTT, as model.stack trains (training/stacked.py): the training block cut into
    batch_size contiguous streams, read `window` bins at a time from a random shift, the hidden
    state carried (detached) between windows, so the loss sees states as warm as at run time."""
    a, b = data.split["train"]
    n = max(1, min(hp["batch_size"], (b - a) // (2 * hp["window"])))
    edges = torch.linspace(a, b, n + 1).long()
    starts, length = edges[:-1], int((edges[1:] - edges[:-1]).min())
    shift = int(torch.randint(0, hp["window"], (1,), generator=gen))
    h = None
    for off in range(0, length - shift, hp["window"]):
        idx = (starts + shift + off)[None] + torch.arange(min(hp["window"], length - shift - off))[:, None]
        pred, h_last = net(data.x[idx], h, lag=data.lag_bins)
        h = h_last.detach()
        yield masked_mse(pred, data.y[idx])


def window_loss(net: GRUNet, x: torch.Tensor, y: torch.Tensor, burn: int, lag: int) -> torch.Tensor:
    """x (T, B, D), y (T, B, K) from a zero state: the first `burn` bins only warm the state."""
    pred, _ = net(x, lag=lag)
    return masked_mse(pred[burn:], y[burn:])


def val_loss(net: GRUNet, data: RefData, hp: dict) -> float:
    """The validation block run as one stream from a zero state, as evaluation runs the test block."""
    a, b = data.split["val"]
    pred, _ = net(data.x[a:b, None], lag=data.lag_bins)
    return float(masked_mse(pred[:, 0], data.y[a:b]))


class GRUStep(nn.Module):
    """(counts [1, D], gru_h [layers, 1, hidden]) -> (prediction [1, K], gru_h_next)."""

    def __init__(self, net: GRUNet, data: RefData):
        super().__init__()
        self.net, self.norm, self.lag = net, Normalized(data), data.lag_bins

    def forward(self, counts: torch.Tensor, gru_h: torch.Tensor):
        x = self.norm.inputs(counts).unsqueeze(0)                       # (1, 1, D)
        seq, h_next = self.net.gru(x, gru_h)
        top = gru_h[-1] if self.lag == 1 else seq[0]
        return self.norm.outputs(self.net.out(top)), h_next


def step_module(net: GRUNet, data: RefData, hp: dict) -> tuple[nn.Module, list[StateSpec]]:
    return GRUStep(net, data), [StateSpec("gru_h", [hp["layers"], 1, hp["hidden"]])]
