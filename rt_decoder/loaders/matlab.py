"""MATLAB .mat recordings: limblab `binnedData`, course-style `Y`/`X`, and the Ziv calcium matrix.

Which layout a file holds is read from its variable names, so one `.mat` entry point serves all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, where
from ..recording import UNKNOWN_UNIT, Recording
from .common import rebin_to
from .matfile import read_mat

COURSE_BIN_S = 0.05  # contdata95.mat and its course: 50 ms bins unless the file stores bin_s


def load_mat(path: str | Path, bin_ms: float | None = None) -> Recording:
    """Dispatch on the variables inside: binnedData, neuronal_activity_mat, or Y + X."""
    path = Path(path)
    names = read_mat(path, whos=True)
    if "binnedData" in names:
        return rebin_to(load_binned_data(path), bin_ms)
    renamed = find_binned_struct(path, names)
    if renamed:
        return rebin_to(load_binned_data(path, renamed), bin_ms)
    if "neuronal_activity_mat" in names:
        from .ziv import load_ziv

        return load_ziv(path, bin_ms)
    if "Y" in names:
        return rebin_to(course_recording(path, read_mat(path)), bin_ms)
    if "spikes" in names and (path.parent / "trajectory.videoPositionTracking").exists():
        from .nelpy import load_nelpy

        return load_nelpy(path.parent, bin_ms)
    raise DataError(where(path, f"no known layout: expected 'binnedData' (limblab: a struct with timeframe and "
                                f"spikeratedata, under any name), 'Y' + 'X' (counts, kinematics) "
                                f"or 'neuronal_activity_mat' (calcium events); found variables {sorted(names)}"))


def course_recording(path: Path, m: dict) -> Recording:
    """`Y` (T, D) counts and optional `X` (T, K) kinematics; 4 columns are pos_x, pos_y, vel_x, vel_y."""
    Y = np.asarray(m["Y"])
    if Y.ndim != 2:
        raise DataError(where(path, f"'Y' must be a 2-D (T, D) count matrix, got shape {Y.shape}"))
    bin_s = COURSE_BIN_S
    for key in ("bin_s", "binsize", "bin_size"):
        if key in m:
            try:
                bin_s = float(np.asarray(m[key], dtype=np.float64).ravel()[0])
            except (TypeError, ValueError, IndexError):
                raise DataError(where(path, f"'{key}' must be a number of seconds, got {m[key]!r}")) from None
            break
    X = names = trial_starts = None
    if "X" in m:
        X = np.asarray(m["X"])
        if X.ndim == 1:
            X = X[:, None]
        if X.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise DataError(where(path, f"'X' must be (T={Y.shape[0]}, K) to match 'Y' {Y.shape}, got shape {X.shape}"))
        if not np.issubdtype(X.dtype, np.number):
            raise DataError(where(path, f"'X' must be numeric, got dtype {X.dtype}"))
        if X.shape[1] == 4:
            names = ["pos_x", "pos_y", "vel_x", "vel_y"]
            trial_starts = resets(X)
    # contdata95 states no unit (positions reach a radius of about 100; velocity = 10 * diff(pos)):
    # Recording.validate makes every column "a.u."
    return Recording(counts=Y, bin_s=bin_s, behavior=X, behavior_names=names,
                     trial_starts=trial_starts, source=str(path)).validate()


def resets(X: np.ndarray) -> np.ndarray | None:
    """Trial starts of course data: the velocity is exactly zero where the cursor resets to the centre."""
    z = np.flatnonzero((X[:, 2] == 0) & (X[:, 3] == 0))
    if z.size < 2:
        return None
    return np.unique(np.concatenate([[0], z]))


BINNED_FIELDS = ("timeframe", "spikeratedata")   # what makes a struct a limblab binnedData


def find_binned_struct(path: Path, names: dict) -> str | None:
    """The one struct variable with binnedData's fields, whatever it is called (limblab files
    also store it as e.g. `train_data`); None when there is none. Two candidates are ambiguous."""
    structs = [n for n, cls in names.items() if cls == "struct"]
    if not structs:
        return None
    m = read_mat(path, squeeze_me=True, struct_as_record=False, variable_names=structs)
    found = [n for n in structs if set(BINNED_FIELDS) <= set(getattr(m.get(n), "_fieldnames", None) or ())]
    if len(found) > 1:
        raise DataError(where(path, f"several limblab binnedData structs ({', '.join(sorted(found))}); "
                                    "keep one per file (save it as 'binnedData')"))
    return found[0] if found else None


def load_binned_data(path: Path, var: str = "binnedData") -> Recording:
    """limblab binnedData (stored as `var`): spikeratedata is in Hz, so counts = rate * bin width (whole numbers)."""
    m = read_mat(path, squeeze_me=True, struct_as_record=False, variable_names=[var])
    b = m[var]
    if not hasattr(b, "_fieldnames"):
        raise DataError(where(path, f"'{var}' is not a MATLAB struct"))
    fields = set(b._fieldnames)
    for need in BINNED_FIELDS:
        if need not in fields:
            raise DataError(where(path, f"{var} has no field '{need}'"))
    tf = np.asarray(b.timeframe, dtype=np.float64).ravel()
    rate = np.asarray(b.spikeratedata, dtype=np.float64)
    if rate.ndim == 1:
        rate = rate[:, None]
    if rate.ndim != 2 or rate.shape[0] != tf.size:
        raise DataError(where(path, f"spikeratedata must be (T={tf.size}, N), got shape {rate.shape}"))
    if tf.size < 2:
        raise DataError(where(path, "binnedData.timeframe has fewer than 2 bins; cannot tell the bin width"))
    bin_s = float(np.round((tf[-1] - tf[0]) / (tf.size - 1), 6))  # float32 stamps: the mean step is exact
    if not np.isfinite(bin_s) or bin_s <= 0:
        raise DataError(where(path, f"binnedData.timeframe is not increasing (median step {bin_s})"))
    if not np.all(np.isfinite(rate)):
        raise DataError(where(path, f"spikeratedata has {int((~np.isfinite(rate)).sum())} NaN/inf values"))
    counts = rate * bin_s
    rounded = np.round(counts)
    if np.abs(counts - rounded).max(initial=0) > 1e-3:
        raise DataError(where(path, f"spikeratedata * {bin_s * 1000:g} ms is not whole spike counts "
                                    "(expected firing rates in Hz of binned spikes)"))
    T = tf.size
    cols, names, units = [], [], []

    def add(field: str, labels: list[str], unit: str, ncols: int | None = None) -> None:
        if field not in fields:
            return
        a = np.asarray(getattr(b, field), dtype=np.float64)
        if a.size == 0:
            return
        if a.ndim == 1:
            a = a[:, None]
        if a.shape[0] != T:
            raise DataError(where(path, f"binnedData.{field} has {a.shape[0]} rows for {T} bins"))
        a = a[:, :ncols] if ncols else a
        cols.append(a)
        fallback = "force_" if field == "forcedatabin" else "emg_" if field == "emgdatabin" else field
        names.extend(labels[: a.shape[1]] + [f"{fallback}{i}" for i in range(len(labels), a.shape[1])])
        units.extend([unit] * a.shape[1])

    # limblab cursor position is in cm, its velocity the derivative in cm/s; force has no stated unit
    add("cursorposbin", ["pos_x", "pos_y"], "cm", 2)
    add("velocbin", ["vel_x", "vel_y"], "cm/s", 2)
    # names carry the target group (loaders/targets.py): force_<forcelabels>, emg_<emgguide>; EMG is
    # rectified, filtered voltage in no stated unit
    add("forcedatabin", guide_names(b, "forcelabels", "force_"), UNKNOWN_UNIT)
    add("emgdatabin", guide_names(b, "emgguide", "emg_"), UNKNOWN_UNIT)
    behavior = np.concatenate(cols, axis=1) if cols else None
    guide = np.atleast_1d(getattr(b, "spikeguide", np.array([])))
    channel_names = [str(s).strip() for s in guide] if guide.size == rate.shape[1] else None
    return Recording(counts=rounded.astype(np.int32), bin_s=bin_s, behavior=behavior,
                     behavior_names=names or None, behavior_units=units or None, channel_names=channel_names,
                     trial_starts=trial_table_starts(b, tf, bin_s), source=str(path)).validate()


def guide_names(b, field: str, prefix: str) -> list[str]:
    """Column names from a limblab label list (emgguide, forcelabels), each with the group prefix."""
    labels = [str(s).strip() for s in np.atleast_1d(getattr(b, field, np.array([])))]
    return [f"{prefix}{s or i}" for i, s in enumerate(labels)]


def trial_table_starts(b, tf: np.ndarray, bin_s: float) -> np.ndarray | None:
    """Column 0 of trialtable is each trial's start time; keep it when it fits the time frame."""
    tt = np.asarray(getattr(b, "trialtable", np.array([])), dtype=np.float64)
    if tt.ndim != 2 or tt.shape[0] < 1:
        return None
    t = tt[:, 0]
    t = t[np.isfinite(t) & (t >= tf[0] - bin_s) & (t <= tf[-1])]
    if t.size == 0 or np.any(np.diff(t) < 0):
        return None
    # timeframe[k] stamps bin k; a trial starting at t belongs to the first bin stamped at or after it
    return np.unique(np.clip(np.searchsorted(tf, t - 1e-9), 0, tf.size - 1))
