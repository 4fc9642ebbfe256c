"""Ziv-lab calcium imaging (Rubin et al. 2019): binarised events per frame at 20 Hz.

`neuronal_activity_mat` (N, T) holds 0/1 events; `position_per_frame` and `velocity_per_frame`
(1, T) beside it are the behaviour. A folder holding these files loads the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, where
from ..recording import Recording
from .common import rebin_to
from .matfile import read_mat

FRAME_S = 0.05  # 20 Hz miniscope frames
ACTIVITY = "neuronal_activity_mat.mat"
# (file variable, behaviour name, unit). Neither file states a unit: position is the track bin 1..24;
# velocity tracks 4.1 x d(position bin)/dt (corr 0.94), i.e. cm/s on 4 cm bins (a 96 cm track)
BEHAVIOUR = (("position_per_frame", "position", "bin (4 cm)"), ("velocity_per_frame", "velocity", "cm/s"))


def load_ziv(path: str | Path, bin_ms: float | None = None) -> Recording:
    """Events become counts (T, N); position and velocity files, when present, become behaviour."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    act_path = path / ACTIVITY if path.is_dir() else path
    m = read_mat(act_path)
    if "neuronal_activity_mat" not in m:
        raise DataError(where(act_path, f"missing variable 'neuronal_activity_mat'; found {sorted(m)}"))
    a = np.asarray(m["neuronal_activity_mat"])
    if a.ndim != 2:
        raise DataError(where(act_path, f"neuronal_activity_mat must be (neurons, frames), got shape {a.shape}"))
    T = a.shape[1]
    cols, names, units = [], [], []
    for var, name, unit in BEHAVIOUR:
        f = folder / f"{var}.mat"
        if not f.exists():
            continue
        v = read_mat(f)
        if var not in v:
            raise DataError(where(f, f"missing variable '{var}'; found {sorted(v)}"))
        x = np.asarray(v[var], dtype=np.float64).ravel()
        if x.size != T:
            raise DataError(where(f, f"{var} has {x.size} frames, neuronal_activity_mat has {T}"))
        cols.append(x)
        names.append(name)
        units.append(unit)
    rec = Recording(counts=a.T, bin_s=FRAME_S, behavior=np.stack(cols, axis=1) if cols else None,
                    behavior_names=names or None, behavior_units=units or None,
                    channel_names=[f"cell{i:03d}" for i in range(a.shape[0])], source=str(act_path))
    return rebin_to(rec.validate(), bin_ms)
