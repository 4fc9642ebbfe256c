"""Record one closed-loop block from LSL and turn it into a canonical recording (DESIGN §3, §9).

`StreamRecorder` keeps every sample of the named streams (spikes, task state, markers, decoder
kinematics, participant intent), the way LabRecorder does: a stream that appears late is picked
up when it appears; one that never appears is simply absent from the result.

`block_recording` bins the spikes with the runtime's own binners (runtime/binner.py), so the
offline counts are exactly what `rt-decoder run` saw online, and aligns at each bin's end:

  behavior        pos_x, pos_y (cursor, cm), vel_x, vel_y (cm/s: cursor displacement over the bin / bin width)
  trial_starts    bin of each `trial_start` marker
  extra arrays    target_x, target_y, target_radius, task_state (code), trial, decoded (K decoder
                  outputs at that bin, NaN where none), decoded_names, intent (participant's
                  intended velocity), bin_end (LSL time of each bin's end)

`save_streams` writes the raw streams as one npz (XDF-like: per stream its timestamps, samples
and header), so nothing the block produced is lost to the binning.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..errors import DataError, where
from ..recording import Recording
from ..runtime import lsl as L
from ..runtime.binner import CountsBinner, EventBinner
from . import streams as S


@dataclass
class RawStream:
    """Every sample of one LSL stream: timestamps (N,) local clock, samples (N, C) (strings: (N,) str)."""

    name: str
    type: str
    rate: float
    labels: list[str]
    units: list[str]
    desc: dict[str, str]
    timestamps: np.ndarray
    samples: np.ndarray

    @property
    def n(self) -> int:
        return int(self.timestamps.size)


@dataclass
class _Live:
    info: Any
    inlet: Any
    header: dict
    ts: list = field(default_factory=list)
    xs: list = field(default_factory=list)


def _header(info: Any) -> dict:
    labels, units = [], []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty():
        labels.append(ch.child_value("label"))
        units.append(ch.child_value("unit"))
        ch = ch.next_sibling("channel")
    desc = {}
    node = info.desc().first_child()
    while not node.empty():
        if node.name() != "channels" and node.child_value():
            desc[node.name()] = node.child_value()
        node = node.next_sibling()
    return {"name": info.name(), "type": info.type(), "rate": float(info.nominal_srate()),
            "fmt": int(info.channel_format()), "channels": int(info.channel_count()),
            "labels": labels, "units": units, "desc": desc, "source_id": info.source_id()}


class StreamRecorder:
    """Record named LSL streams in a background thread; streams that appear late are picked up.

    Only outlets created after `not_before` (LSL local clock) are taken, so a block never records a
    stale outlet of the same name from the block before; `any_age` names (a source that lives across
    blocks, e.g. the participant) are taken whenever they were created.
    """

    def __init__(self, names: list[str], not_before: float | None = None, poll_s: float = 0.02,
                 any_age: tuple[str, ...] = ()) -> None:
        self.names = list(dict.fromkeys(names))
        self.any_age = set(any_age)
        self.poll_s = poll_s
        self.lsl = L.pylsl()
        self.not_before = self.lsl.local_clock() - 0.5 if not_before is None else not_before
        self._live: dict[str, _Live] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="closedloop-recorder")
        self._next_resolve = 0.0

    def start(self) -> StreamRecorder:
        self._thread.start()
        return self

    def found(self) -> list[str]:
        return list(self._live)

    def _resolve(self) -> None:
        for name in self.names:
            if name in self._live:
                continue
            found = [i for i in self.lsl.resolve_byprop("name", name, 0, 0.1)
                     if name in self.any_age or i.created_at() >= self.not_before]
            if not found:
                continue
            info = max(found, key=lambda i: i.created_at())
            buflen = 360 if info.nominal_srate() > 0 else 100000
            try:
                inlet = self.lsl.StreamInlet(info, max_buflen=buflen, recover=False)
                full = inlet.info(timeout=2.0)
                inlet.open_stream(timeout=2.0)
            except Exception:  # listed but gone already: try again next round
                continue
            self._live[name] = _Live(full, inlet, _header(full))

    def _drain(self, live: _Live) -> None:
        strings = live.header["fmt"] == 3
        while True:
            if strings:
                x, ts = live.inlet.pull_chunk(timeout=0.0, max_samples=1024)
                x = np.asarray([row[0] for row in x], dtype=object)
            else:
                x, ts = live.inlet.pull_chunk(timeout=0.0, max_samples=4096, as_numpy=True)
            n = len(ts)
            if n:
                live.ts.append(np.asarray(ts, np.float64))
                live.xs.append(np.asarray(x).reshape(n, -1) if not strings else x)
            if n < (1024 if strings else 4096):
                return

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            if len(self._live) < len(self.names) and now >= self._next_resolve:
                self._resolve()
                self._next_resolve = time.monotonic() + 0.25
            for live in list(self._live.values()):
                try:
                    self._drain(live)
                except Exception:  # the outlet went away: keep what we have
                    pass
            self._stop.wait(self.poll_s)

    def stop(self, settle_s: float = 0.2) -> dict[str, RawStream]:
        """Drain what is still in flight, close the inlets, and return every stream recorded."""
        time.sleep(settle_s)
        self._stop.set()
        self._thread.join(timeout=5.0)
        out = {}
        for name, live in self._live.items():
            try:
                self._drain(live)
            except Exception:
                pass
            try:
                live.inlet.close_stream()
            except Exception:
                pass
            h = live.header
            strings = h["fmt"] == 3
            ts = np.concatenate(live.ts) if live.ts else np.zeros(0)
            if strings:
                xs = np.concatenate(live.xs).astype(str) if live.xs else np.zeros(0, str)
            else:
                xs = np.concatenate(live.xs) if live.xs else np.zeros((0, h["channels"]), np.float32)
            out[name] = RawStream(name, h["type"], h["rate"], h["labels"], h["units"], h["desc"], ts, xs)
        return out


# ----------------------------------------------------------------------------- raw streams file


def save_streams(raw: dict[str, RawStream], path: str | Path) -> Path:
    """All streams in one npz: `<i>/time_stamps`, `<i>/time_series` and a JSON `header` listing
    each stream's name, type, rate, labels, units and desc (XDF's content, numpy's container)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    header = []
    for i, s in enumerate(raw.values()):
        arrays[f"{i}/time_stamps"] = s.timestamps
        arrays[f"{i}/time_series"] = s.samples
        header.append({"index": i, "name": s.name, "type": s.type, "nominal_srate": s.rate,
                       "labels": s.labels, "units": s.units, "desc": s.desc, "n_samples": s.n})
    arrays["header"] = np.array(json.dumps(header))
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def load_streams(path: str | Path) -> dict[str, RawStream]:
    """Inverse of save_streams."""
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(str(z["header"]))
        return {h["name"]: RawStream(h["name"], h["type"], h["nominal_srate"], h["labels"], h["units"], h["desc"],
                                     z[f"{h['index']}/time_stamps"], z[f"{h['index']}/time_series"]) for h in header}


# ----------------------------------------------------------------------------- binning


def bin_spikes(spikes: RawStream, bin_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(counts (T, D), bin ends (T,)) through the runtime's binner for the stream's kind."""
    if spikes.n == 0:
        raise DataError(where(spikes.name, "no spike samples were recorded"))
    origin = spikes.desc.get("bin_origin")
    origin = float(origin) if origin else None
    if spikes.rate > 0:  # SpikeCounts
        D = spikes.samples.shape[1]
        f = bin_s * spikes.rate
        if abs(f - round(f)) > 1e-6 or round(f) < 1:
            raise DataError(where(spikes.name, f"source rate {spikes.rate:g} Hz does not divide the {bin_s * 1000:g} ms bin"))
        b = CountsBinner(D, bin_s, spikes.rate)
        b.anchor(origin, spikes.rate, bin_s)
        bins = b.feed(spikes.samples, spikes.timestamps)
    else:  # SpikeEvents: channel index per sample
        D = int(spikes.desc.get("n_channels") or (int(spikes.samples[:, 0].max()) + 1))
        b = EventBinner(D, bin_s, grace_s=0.0)
        bins = b.anchor(origin, float(spikes.timestamps[0]), bin_s)
        b.feed(spikes.samples, spikes.timestamps)
        bins += b.poll(float(spikes.timestamps[-1]))
    if not bins:
        raise DataError(where(spikes.name, f"too short: no whole {bin_s * 1000:g} ms bin was recorded"))
    counts = np.stack([x.counts for x in bins]).round().astype(np.int32)
    return counts, np.array([x.t_end for x in bins])


def _previous(ts: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """values of the last sample at or before each time in `at` (NaN before the first)."""
    i = np.searchsorted(ts, at, side="right") - 1
    out = np.full((at.size,) + values.shape[1:], np.nan)
    ok = i >= 0
    out[ok] = values[i[ok]]
    return out


def _interp(ts: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    return np.stack([np.interp(at, ts, values[:, j], left=np.nan, right=np.nan) for j in range(values.shape[1])], axis=1)


def block_recording(raw: dict[str, RawStream], spikes: str, state: str, markers: str | None = None,
                    decoder: str | None = None, intent: str | None = None, bin_s: float = 0.02,
                    source: str = "<block>") -> Recording:
    """The canonical recording of a block: counts binned as online, kinematics at each bin's end.

    Bins before the first or after the last task-state sample are dropped (no cursor known there).
    """
    if spikes not in raw:
        raise DataError(where(source, f"the spike stream {spikes!r} was never seen (recorded: {sorted(raw)})"))
    if state not in raw or raw[state].n < 2:
        raise DataError(where(source, f"the task state stream {state!r} was never seen (recorded: {sorted(raw)})"))
    counts, t_end = bin_spikes(raw[spikes], bin_s)
    st = raw[state]
    sx = st.samples.astype(np.float64)
    keep = (t_end - bin_s >= st.timestamps[0]) & (t_end <= st.timestamps[-1])
    if keep.sum() < 2:
        raise DataError(where(source, "spikes and task state do not overlap in time"))
    counts, t_end = counts[keep], t_end[keep]
    pos = _interp(st.timestamps, sx[:, [S.CURSOR_X, S.CURSOR_Y]], t_end)
    pos_start = _interp(st.timestamps, sx[:, [S.CURSOR_X, S.CURSOR_Y]], t_end - bin_s)
    vel = (pos - pos_start) / bin_s
    prev = _previous(st.timestamps, sx, t_end)
    extra: dict[str, np.ndarray] = {
        "bin_end": t_end,
        "target_x": prev[:, S.TARGET_X], "target_y": prev[:, S.TARGET_Y], "target_radius": prev[:, S.TARGET_RADIUS],
        "trial": np.nan_to_num(prev[:, S.TRIAL]).astype(np.int32),
        "task_state": np.nan_to_num(prev[:, S.STATE], nan=S.STATE_ITI).astype(np.int32),
        "behavior_units": np.array(["cm", "cm", "cm/s", "cm/s"]),
    }
    if decoder and decoder in raw and raw[decoder].n:
        d = raw[decoder]
        # the decoder stamps each prediction with its bin's end: match within half a bin
        j = np.clip(np.searchsorted(d.timestamps, t_end), 1, d.n - 1) if d.n > 1 else np.zeros(t_end.size, int)
        if d.n > 1:
            j = np.where(np.abs(d.timestamps[j - 1] - t_end) < np.abs(d.timestamps[j] - t_end), j - 1, j)
        dec = d.samples[j].astype(np.float64)
        dec[np.abs(d.timestamps[j] - t_end) > bin_s / 2] = np.nan
        extra["decoded"] = dec
        extra["decoded_names"] = np.array(d.labels or [f"y{i}" for i in range(dec.shape[1])])
    if intent and intent in raw and raw[intent].n:
        extra["intent"] = _previous(raw[intent].timestamps, raw[intent].samples.astype(np.float64), t_end)
    trial_starts = None
    if markers and markers in raw and raw[markers].n:
        mk = raw[markers]
        starts = [t for t, m in zip(mk.timestamps, mk.samples) if str(m).split(" ")[0] == "trial_start"]
        if starts:
            idx = np.searchsorted(t_end, np.asarray(starts), side="right")
            trial_starts = np.unique(idx[idx < t_end.size])
    rec = Recording(counts=counts, bin_s=bin_s, behavior=np.concatenate([pos, vel], axis=1),
                    behavior_names=["pos_x", "pos_y", "vel_x", "vel_y"],
                    channel_names=raw[spikes].labels or None, trial_starts=trial_starts, source=source, extra=extra)
    if rec.channel_names is not None and len(rec.channel_names) != counts.shape[1]:
        rec.channel_names = None
    return rec.validate()
