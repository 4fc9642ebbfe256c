"""The simplest nonlinear reference: an MLP on the last 10 bins of z-scored counts (the Wiener
filter's inputs, with hidden layers), predicting normalized kinematics. Run bin by bin with a
lag buffer of z-scored counts as state (`lagbuf`, newest first, zeros = the training mean).
"""

from __future__ import annotations

import torch
from torch import nn

from .reference import RefData, lag_batches, lag_step_module, lag_val_loss

HPARAMS = {
    "taps": 10, "hidden": 256, "layers": 2, "dropout": 0.3,
    "batch_size": 256, "lr": 1e-3, "weight_decay": 1e-2, "max_epochs": 60, "patience": 6, "plateau": 2,
}


class MLP(nn.Module):
    """(B, taps, D) -> (B, K)."""

    def __init__(self, n_in: int, n_out: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        mods: list[nn.Module] = [nn.Flatten(1), nn.Dropout(dropout / 2)]
        for i in range(layers):
            mods += [nn.Linear(n_in if i == 0 else hidden, hidden), nn.ReLU(), nn.Dropout(dropout)]
        self.body = nn.Sequential(*mods, nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def build(data: RefData, hp: dict) -> MLP:
    return MLP(hp["taps"] * data.n_channels, data.n_outputs, hp["hidden"], hp["layers"], hp["dropout"])


def batches(net: nn.Module, data: RefData, hp: dict, gen: torch.Generator):
    return lag_batches(net, data, hp, gen, min_rows=1)


val_loss = lag_val_loss
step_module = lag_step_module
