"""XDF recordings (what LabRecorder writes) via pyxdf.

Spikes come from one stream of type `SpikeCounts` (regular: one sample = counts of one bin,
timestamp = bin end) or `SpikeEvents` (irregular: int channel index per spike, timestamp = spike
time). Behaviour comes from a stream of type Behavior / Mocap / Kinematics (the decoder's own
`rt-decoder` output is skipped), interpolated to bin centres; a `Markers` stream gives trial starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, where
from ..events import bin_events, bin_index, sample_at
from ..recording import Recording
from .common import check_bin_ms, quiet, reason, rebin_to, trim_to_behavior

DEFAULT_EVENT_BIN_MS = 20.0
BEHAVIOR_TYPES = ("behavior", "behaviour", "mocap", "kinematics")  # in order of preference
DECODER_OUTPUT_NAMES = ("rt-decoder",)


def _info(stream: dict, key: str, default: str = "") -> str:
    v = stream["info"].get(key, [default])
    return str(v[0] if isinstance(v, list) and v else v)


def _desc(stream: dict) -> dict:
    d = stream["info"].get("desc", [None])
    return d[0] if isinstance(d, list) and d and isinstance(d[0], dict) else {}


def _labels(stream: dict, group: str = "channels", key: str = "label") -> list[str]:
    """Per-channel `key` (label, unit) from the stream's desc (<group><channel><key>), or [] when absent."""
    try:
        chans = _desc(stream)[group][0]["channel"]
        return [str((c.get(key) or [""])[0] or "") for c in chans]
    except (KeyError, IndexError, TypeError, AttributeError):
        return []


def read_xdf(path: Path) -> list[dict]:
    """All streams of an XDF file; corruption reported by pyxdf becomes a DataError."""
    import pyxdf

    if not path.exists():
        raise DataError(where(path, "no such file"))
    try:
        with quiet("pyxdf", "pyxdf.pyxdf") as errors:
            # no dejittering: it spreads samples over gaps, and lost counts samples must stay empty bins
            streams, _ = pyxdf.load_xdf(str(path), dejitter_timestamps=False)
    except Exception as e:
        raise DataError(where(path, f"not a readable XDF file ({reason(e)})")) from None
    if errors:
        msg = " ".join(errors[0].getMessage().split())[:160]
        raise DataError(where(path, f"XDF file is truncated or corrupt (pyxdf: {msg})"))
    return streams


def load_xdf(path: str | Path, bin_ms: float | None = None) -> Recording:
    """Spike stream -> counts (re-binned or binned at `bin_ms`), plus behaviour and trial markers."""
    path = Path(path)
    if bin_ms is not None:
        check_bin_ms(path, bin_ms)
    streams = read_xdf(path)
    by_type: dict[str, list[dict]] = {}
    for s in streams:
        by_type.setdefault(_info(s, "type").lower(), []).append(s)
    found = ", ".join(f"{_info(s, 'name')!r} ({_info(s, 'type')})" for s in streams) or "none"
    if "spikecounts" in by_type:
        rec = _counts(path, by_type["spikecounts"][0])
    elif "spikeevents" in by_type:
        rec = _events(path, by_type["spikeevents"][0], bin_ms)
        bin_ms = None
    else:
        raise DataError(where(path, f"no stream of type 'SpikeCounts' or 'SpikeEvents'; streams: {found}"))
    t0 = float(rec.extra["t_start"])
    beh = _behavior_stream(by_type)
    if beh is not None:
        ts = np.asarray(beh["time_stamps"], dtype=np.float64)
        v = np.asarray(beh["time_series"], dtype=np.float64)
        if ts.size >= 2 and v.ndim == 2:
            centres = t0 + (np.arange(rec.n_bins) + 0.5) * rec.bin_s
            labels = _labels(beh)
            rec.behavior = sample_at(ts, v, centres, tol=rec.bin_s / 2)
            rec.behavior_names = labels if len(labels) == v.shape[1] and all(labels) else \
                [f"{_info(beh, 'name')}{i}" for i in range(v.shape[1])]
            units = _labels(beh, key="unit")  # what LabRecorder keeps of each channel's <unit>
            rec.behavior_units = units if len(units) == v.shape[1] else None
    markers = by_type.get("markers", [])
    if markers and len(markers[0]["time_stamps"]):
        m = markers[0]
        text = [str(x[0]) if isinstance(x, (list, tuple, np.ndarray)) else str(x) for x in m["time_series"]]
        mt = np.asarray(m["time_stamps"], dtype=np.float64)
        starts = np.array(["start" in t.lower() for t in text])
        if starts.any():
            mt = mt[starts]
        k = bin_index(mt, t0, rec.bin_s)
        rec.trial_starts = np.unique(k[(k >= 0) & (k < rec.n_bins)])
    rec = trim_to_behavior(rec.validate())
    return rebin_to(rec, bin_ms)


def _behavior_stream(by_type: dict[str, list[dict]]) -> dict | None:
    for t in BEHAVIOR_TYPES:
        for s in by_type.get(t, []):
            if _info(s, "name") not in DECODER_OUTPUT_NAMES and _info(s, "channel_format") != "string":
                return s
    return None


def _counts(path: Path, s: dict) -> Recording:
    """Regular counts stream: each sample sits in the bin its timestamp ends; lost samples stay empty bins."""
    srate = float(_info(s, "nominal_srate", "0") or 0)
    if srate <= 0:
        raise DataError(where(path, f"SpikeCounts stream {_info(s, 'name')!r} has no regular rate (nominal_srate={srate})"))
    v = np.asarray(s["time_series"])
    ts = np.asarray(s["time_stamps"], dtype=np.float64)
    if v.ndim != 2 or v.shape[0] == 0:
        raise DataError(where(path, f"SpikeCounts stream {_info(s, 'name')!r} has no samples"))
    if not np.issubdtype(v.dtype, np.number):
        raise DataError(where(path, f"SpikeCounts stream must be numeric, got format {_info(s, 'channel_format')!r}"))
    bin_s = 1.0 / srate
    idx = np.round((ts - ts[0]) / bin_s).astype(np.int64)
    if np.any(np.diff(idx) <= 0):
        # timestamps jitter by more than half a bin: trust the sample order, assume nothing was lost
        idx = np.arange(ts.size)
    counts = np.zeros((int(idx[-1]) + 1, v.shape[1]), dtype=v.dtype)
    counts[idx] = v
    labels = _labels(s)
    return Recording(counts=counts, bin_s=bin_s, channel_names=labels if len(labels) == v.shape[1] else None,
                     source=str(path), extra={"t_start": np.float64(ts[0] - bin_s),
                                              "missing_bins": np.int64(counts.shape[0] - v.shape[0])}).validate()


def _events(path: Path, s: dict, bin_ms: float | None) -> Recording:
    """Irregular events stream: channel index in column 0, timestamp = spike time."""
    v = np.asarray(s["time_series"])
    ts = np.asarray(s["time_stamps"], dtype=np.float64)
    if v.ndim != 2 or v.shape[0] == 0:
        raise DataError(where(path, f"SpikeEvents stream {_info(s, 'name')!r} has no spikes"))
    ch = v[:, 0]
    if not np.issubdtype(ch.dtype, np.number) or np.any(ch < 0) or np.any(ch != np.round(ch)):
        raise DataError(where(path, "SpikeEvents channel indices must be non-negative integers"))
    # spike channels are named in desc/spike_channels (or counted by desc/n_channels); the stream's
    # own <channels> describe its 1-2 columns (channel, unit), not the electrodes
    names = _labels(s, "spike_channels") or None
    n = None
    try:
        n = int(_desc(s)["n_channels"][0])
    except (KeyError, IndexError, TypeError, ValueError):
        pass
    if names is not None and n is not None and len(names) != n:
        names = None
    bin_s = (DEFAULT_EVENT_BIN_MS if bin_ms is None else bin_ms) / 1000.0
    # bins sit on the clock's grid (multiples of the bin width), so the same spikes bin the same
    # way whatever the first spike's time
    t0 = np.floor(ts.min() / bin_s + 1e-9) * bin_s
    return bin_events(ts, ch.astype(np.int64), bin_s, n_channels=n, t_start=t0, channel_names=names, source=str(path))
