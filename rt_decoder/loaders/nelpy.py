"""nelpy example data (hippocampal tetrodes): `spikes.mat` + `trajectory.videoPositionTracking`.

spikes.mat nests one struct per tetrode and cell; every non-empty `time` vector (seconds) is a
unit. The tracking file is a text header ending "<End settings>" followed by 12-byte records
<time uint32 (30 kHz clock)><x uint16><y uint16><x2 uint16><y2 uint16>, pixels, about 60 Hz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, where
from ..events import bin_events, sample_at
from .common import check_bin_ms, trim_to_behavior
from .matfile import read_mat

DEFAULT_BIN_MS = 20.0
TRACK_CLOCK_HZ = 30000.0
RECORD = np.dtype([("t", "<u4"), ("x", "<u2"), ("y", "<u2"), ("x2", "<u2"), ("y2", "<u2")])


def _spike_trains(obj, out: list[np.ndarray]) -> None:
    """Walk nested MATLAB structs/cells in file order, collecting each non-empty 'time' field."""
    if isinstance(obj, np.ndarray) and obj.dtype.names:
        for idx in np.ndindex(obj.shape):
            if "time" in obj.dtype.names:
                t = np.asarray(obj[idx]["time"], dtype=np.float64).ravel()
                if t.size:
                    out.append(t)
            else:
                for name in obj.dtype.names:
                    _spike_trains(obj[idx][name], out)
    elif isinstance(obj, np.ndarray) and obj.dtype == object:
        for idx in np.ndindex(obj.shape):
            _spike_trains(obj[idx], out)


def read_tracking(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(times s, xy pixels) of LED 1; samples where tracking was lost (0, 0) are dropped."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(where(path, f"cannot read tracking file ({e.strerror})")) from None
    end = raw.find(b"<End settings>\n")
    if end < 0:
        raise DataError(where(path, "no '<End settings>' header: not a videoPositionTracking file"))
    body = raw[end + len(b"<End settings>\n"):]
    n = len(body) // RECORD.itemsize
    rec = np.frombuffer(body[: n * RECORD.itemsize], dtype=RECORD)
    ok = (rec["x"] > 0) | (rec["y"] > 0)
    if ok.sum() < 2:
        raise DataError(where(path, "tracking file holds fewer than 2 tracked positions"))
    xy = np.stack([rec["x"][ok], rec["y"][ok]], axis=1).astype(np.float64)
    return rec["t"][ok] / TRACK_CLOCK_HZ, xy


def load_nelpy(folder: str | Path, bin_ms: float | None = None):
    """Units binned at `bin_ms` (20 ms default); behaviour = LED position in pixels at bin centres."""
    folder = Path(folder)
    bin_s = check_bin_ms(folder, DEFAULT_BIN_MS if bin_ms is None else bin_ms) / 1000.0
    m = read_mat(folder / "spikes.mat")
    if "spikes" not in m:
        raise DataError(where(folder / "spikes.mat", f"missing variable 'spikes'; found {sorted(m)}"))
    trains: list[np.ndarray] = []
    _spike_trains(m["spikes"], trains)
    if not trains:
        raise DataError(where(folder / "spikes.mat", "no unit has any spike time"))
    times = np.concatenate(trains)
    chans = np.repeat(np.arange(len(trains)), [t.size for t in trains])
    pt, xy = read_tracking(folder / "trajectory.videoPositionTracking")
    t0, t1 = max(times.min(), pt.min()), min(times.max(), pt.max())
    if t1 - t0 < bin_s:
        raise DataError(where(folder, "spike times and position tracking do not overlap in time"))
    n_bins = int(np.floor((t1 - t0) / bin_s))
    rec = bin_events(times, chans, bin_s, n_channels=len(trains), t_start=t0, n_bins=n_bins,
                     channel_names=[f"unit{i:02d}" for i in range(len(trains))], source=str(folder))
    centres = t0 + (np.arange(rec.n_bins) + 0.5) * bin_s
    rec.behavior = sample_at(pt, xy, centres, tol=bin_s / 2)
    rec.behavior_names = ["pos_x", "pos_y"]
    rec.behavior_units = ["px", "px"]  # camera pixels (640x480 frame); the files give no scale to cm
    return trim_to_behavior(rec.validate())
