"""Neural Latents Benchmark tensor files (`*_full.h5` from nlb_tools): trials x bins x units at 5 ms.

Held-in and held-out units are joined along units; trials are laid end to end in time, each
trial's first bin recorded in trial_starts, so contiguous splits fall on whole trials.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, where
from ..recording import Recording
from .common import quiet, reason, rebin_to

NLB_BIN_S = 0.005
VELOCITY_UNIT = "mm/s"  # MC_Maze hand velocity (nlb_tools: finger/hand position in mm, differentiated)


def is_nlb_h5(f) -> bool:
    """An open h5py file is an NLB tensor file when it holds train_spikes_heldin."""
    return "train_spikes_heldin" in f


def load_nlb_h5(path: str | Path, bin_ms: float | None = None) -> Recording:
    """Train trials only (the eval trials carry no behaviour): counts (n*T, held-in + held-out)."""
    import h5py

    path = Path(path)
    try:
        with quiet(), h5py.File(path, "r") as f:
            if not is_nlb_h5(f):
                raise DataError(where(path, f"not an NLB tensor file: no 'train_spikes_heldin'; found {sorted(f)}"))
            parts = [np.asarray(f["train_spikes_heldin"])]
            if "train_spikes_heldout" in f:
                parts.append(np.asarray(f["train_spikes_heldout"]))
            beh = np.asarray(f["train_behavior"]) if "train_behavior" in f else None
    except DataError:
        raise
    except Exception as e:
        raise DataError(where(path, f"not a readable HDF5 file ({reason(e)})")) from None
    for p in parts:
        if p.ndim != 3:
            raise DataError(where(path, f"spike tensors must be (trials, bins, units), got shape {p.shape}"))
    if any(p.shape[:2] != parts[0].shape[:2] for p in parts):
        raise DataError(where(path, f"held-in {parts[0].shape} and held-out {parts[-1].shape} differ in trials or bins"))
    n, t, _ = parts[0].shape
    spikes = np.concatenate(parts, axis=2)
    counts = spikes.reshape(n * t, -1)
    names = [f"heldin{i:03d}" for i in range(parts[0].shape[2])]
    if len(parts) > 1:
        names += [f"heldout{i:03d}" for i in range(parts[1].shape[2])]
    behavior = behavior_names = None
    if beh is not None:
        if beh.ndim != 3 or beh.shape[:2] != (n, t):
            raise DataError(where(path, f"train_behavior must be (trials={n}, bins={t}, K), got shape {beh.shape}"))
        behavior = beh.reshape(n * t, -1).astype(np.float64)
        k = behavior.shape[1]
        behavior_names = ["vel_x", "vel_y"] if k == 2 else [f"behavior{i}" for i in range(k)]
    rec = Recording(counts=counts, bin_s=NLB_BIN_S, behavior=behavior, behavior_names=behavior_names,
                    behavior_units=[VELOCITY_UNIT] * 2 if behavior_names == ["vel_x", "vel_y"] else None,
                    channel_names=names, trial_starts=np.arange(n) * t, source=str(path))
    return rebin_to(rec.validate(), bin_ms)
