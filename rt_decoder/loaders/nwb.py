"""NWB files (DANDI / Neural Latents Benchmark layout) via pynwb.

Spike times of `nwb.units` are binned (default 20 ms; `bin_ms` to change); every behavioural
TimeSeries in processing['behavior'] and acquisition (hand_vel, cursor_pos, Position/SpatialSeries...)
is interpolated to the bin centres at its own timestamps; the trials table gives trial_starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, where
from ..events import bin_events, bin_index, sample_at
from ..recording import UNKNOWN_UNIT, Recording
from .common import axis_names, check_bin_ms, quiet, reason, trim_to_behavior

DEFAULT_BIN_MS = 20.0
MAX_BEHAVIOR_COLUMNS = 16  # wider series are signals (LFP, spectra, images), not kinematics


def is_nwb_h5(f) -> bool:
    """An open h5py file is NWB when its root carries nwb_version (every NWB 2 file does)."""
    return "nwb_version" in f.attrs or ("general" in f and "acquisition" in f)


def load_nwb(path: str | Path, bin_ms: float | None = None) -> Recording:
    """Units' spike times -> counts at `bin_ms` (20 ms default); behaviour and trials aligned to bins."""
    path = Path(path)
    bin_s = check_bin_ms(path, DEFAULT_BIN_MS if bin_ms is None else bin_ms) / 1000.0
    if not path.exists():
        raise DataError(where(path, "no such file"))
    try:
        from pynwb import NWBHDF5IO

        with quiet("hdmf", "pynwb"), NWBHDF5IO(str(path), "r") as io:
            nwb = io.read()
            units = _units(path, nwb)
            series = _behavior_series(nwb)
            trials = None
            if nwb.trials is not None and len(nwb.trials) > 0:
                trials = np.asarray(nwb.trials["start_time"][:], dtype=np.float64)
                trial_stop = float(np.max(nwb.trials["stop_time"][:]))
    except DataError:
        raise
    except Exception as e:
        raise DataError(where(path, f"not a readable NWB file ({reason(e)})")) from None
    times, channels, names = units
    lo = [times.min()] if times.size else []
    hi = [times.max()] if times.size else []
    if trials is not None:
        lo.append(trials.min())
        hi.append(trial_stop)
    for _, t, _, _ in series:
        lo.append(t.min())
        hi.append(t.max())
    if not lo:
        raise DataError(where(path, "no spikes, trials or behaviour: nothing to bin"))
    t0, t1 = float(min(lo)), float(max(hi))
    n_bins = max(1, int(np.ceil((t1 - t0) / bin_s - 1e-9)))
    rec = bin_events(times, channels, bin_s, n_channels=len(names), t_start=t0,
                     n_bins=n_bins, channel_names=names, source=str(path))
    if series:
        centres = t0 + (np.arange(rec.n_bins) + 0.5) * bin_s
        rec.behavior = np.concatenate([sample_at(t, v, centres, tol=bin_s / 2) for _, t, v, _ in series], axis=1)
        rec.behavior_names = [n for name, _, v, _ in series for n in axis_names(name, v.shape[1])]
        rec.behavior_units = [unit for _, _, v, unit in series for _ in range(v.shape[1])]
    if trials is not None:
        k = bin_index(trials, t0, bin_s)
        rec.trial_starts = np.unique(k[(k >= 0) & (k < rec.n_bins)])
    return trim_to_behavior(rec.validate())


def _units(path: Path, nwb) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All units' spike times flattened, with the unit index of each spike and a name per unit."""
    u = nwb.units
    if u is None or len(u) == 0:
        raise DataError(where(path, "NWB file has no units table (no sorted spike times to bin)"))
    if "spike_times" not in u.colnames:
        raise DataError(where(path, f"NWB units table has no spike_times column; columns {list(u.colnames)}"))
    times = np.asarray(u.spike_times.data[:], dtype=np.float64)
    ends = np.asarray(u.spike_times_index.data[:], dtype=np.int64)
    counts = np.diff(np.concatenate([[0], ends]))
    channels = np.repeat(np.arange(len(ends)), counts)
    names = [f"unit{int(i)}" for i in u.id[:]]
    return times, channels, names


def _behavior_series(nwb) -> list[tuple[str, np.ndarray, np.ndarray, str]]:
    """(name, timestamps, values (N, K), unit) for each numeric behavioural TimeSeries; the unit is
    the series' own `unit` attribute (NWB requires one), "a.u." when it is empty or 'no unit'."""
    from pynwb import TimeSeries
    from pynwb.ecephys import ElectricalSeries

    found: list = []

    def visit(obj) -> None:
        if isinstance(obj, ElectricalSeries):
            return
        if isinstance(obj, TimeSeries):
            found.append(obj)
            return
        for child in getattr(obj, "children", []):
            visit(child)

    if "behavior" in nwb.processing:
        for obj in nwb.processing["behavior"].data_interfaces.values():
            visit(obj)
    for obj in nwb.acquisition.values():
        visit(obj)
    out = []
    for ts in sorted(found, key=lambda s: s.name):
        shape = getattr(ts.data, "shape", None)
        if shape is None or len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] > MAX_BEHAVIOR_COLUMNS):
            continue
        v = np.asarray(ts.data[:])
        if not np.issubdtype(v.dtype, np.number) or v.shape[0] < 2:
            continue
        v = v.reshape(v.shape[0], -1).astype(np.float64)
        if ts.timestamps is not None:
            t = np.asarray(ts.timestamps[:], dtype=np.float64)
        else:
            t = float(ts.starting_time or 0.0) + np.arange(v.shape[0]) / float(ts.rate)
        unit = str(getattr(ts, "unit", "") or "").strip()
        out.append((ts.name, t, v, unit if unit and unit.lower() not in ("no unit", "unknown") else UNKNOWN_UNIT))
    return out
