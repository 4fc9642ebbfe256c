"""Replay a recorded session as live LSL streams (DESIGN §5), against a drift-free target clock.

Streams (N = name, default `replay`):
  N-spikes    SpikeCounts (D int32 channels, one sample per source bin, timestamp = its end) or
              SpikeEvents (int32 channel index, timestamp = spike time, irregular rate)
  N-behavior  the recorded kinematics (K float32, labels from behavior_names), timestamp = bin end
  N-markers   trial markers ("trial_start <i>"), "replay_start", "loop <j>", "replay_end"

Timing: pushed bin n ends at T0 + (n+1) * bin_s / speed, with T0 on the grid announced in the
spikes stream's desc (`bin_origin`, `speed`, `bin_s`). Each push time is computed from T0, never
from the previous wake-up, so sleeping late delays one push but never accumulates (drift-free,
like mne-lsl's player); whatever is due when the thread wakes goes out as one chunk.

Events come from the recording's real spike times when it has them (`spike_times`,
`spike_channels` in an event .npz), else each bin's counts are spread at random times inside
the bin (away from its edges, so re-binning is exact). `source_rate` (e.g. 1000 Hz) splits each
bin's counts over its sub-bins at random (the runtime's re-binning path). Both use a seeded
generator per bin, so a replay is reproducible and loops identically.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, where
from ..events import bin_index
from ..recording import Recording, split_bounds
from . import lsl as L
from .clocked import Clocked


def load_for_replay(path: str | Path, bin_ms: float | None = None
                    ) -> tuple[Recording, tuple[np.ndarray, np.ndarray, float] | None]:
    """A recording (any supported format) plus its real spike times (times, channels, t0) when
    the file has them."""
    path = Path(path)
    from ..loaders import load_recording

    rec = load_recording(path, bin_ms)
    spikes = None
    if path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if "spike_times" in z.files and "spike_channels" in z.files:
                spikes = (z["spike_times"].astype(np.float64), z["spike_channels"].astype(np.int64),
                          float(rec.extra.get("t_start", np.min(z["spike_times"]))))
    return rec, spikes


class Player(Clocked):
    """Publish a recording on LSL in real time (or `speed` times faster).

    Outlets exist from construction, so consumers can connect before `start()`.
    """

    def __init__(self, rec: Recording | str | Path, name: str = "replay", fmt: str = "counts", speed: float = 1.0,
                 loop: bool = False, duration_s: float | None = None, start_bin: int = 0,
                 source_rate: float | None = None, seed: int = 0,
                 spikes: tuple[np.ndarray, np.ndarray, float] | None = None, source_id: str | None = None,
                 priority: str = "normal", spin_ms: float = 0.0) -> None:
        if not isinstance(rec, Recording):
            rec, spikes = load_for_replay(rec)
        rec.validate()
        if fmt not in ("counts", "events"):
            raise DataError(f"--format must be counts or events, got {fmt!r}")
        if not (speed > 0 and math.isfinite(speed)):
            raise DataError(f"--speed must be positive, got {speed}")
        if not 0 <= start_bin < rec.n_bins:
            raise DataError(where(rec.source, f"start bin {start_bin} is outside the recording's {rec.n_bins} bins"))
        self.rec, self.name, self.fmt, self.speed, self.loop = rec, name, fmt, float(speed), loop
        self.B = rec.bin_s
        self.Bs = rec.bin_s / self.speed
        self.start_bin = int(start_bin)
        self.L = rec.n_bins - self.start_bin
        if duration_s is not None:
            self.n_total = max(1, int(round(duration_s / self.B)))
            if not loop:
                self.n_total = min(self.n_total, self.L)
        else:
            self.n_total = None if loop else self.L
        self.factor = 1
        if source_rate:
            if fmt != "counts":
                raise DataError("--source-rate applies to --format counts only")
            f = self.B * source_rate
            if abs(f - round(f)) > 1e-6 or round(f) < 1:
                raise DataError(where(rec.source, f"source rate {source_rate:g} Hz does not split the {self.B * 1000:g} ms bins evenly"))
            self.factor = int(round(f))
        self.seed = seed
        self.priority = priority
        self.spin = spin_ms / 1000.0
        self._spikes = self._index_spikes(spikes) if (fmt == "events" and spikes is not None) else None
        lsl = L.pylsl()
        self.origin = lsl.local_clock()
        D = rec.n_channels
        sid = source_id or f"rt-decoder-replay:{name}"
        common = {"bin_origin": repr(self.origin), "speed": repr(self.speed), "bin_s": repr(self.B),
                  "source": str(rec.source)}
        if fmt == "counts":
            self.spikes_out = L.make_outlet(f"{name}-spikes", "SpikeCounts", rec.channel_names, self.factor / self.B,
                                            fmt="int32", source_id=sid + "-spikes", extra=common)
        else:
            info = lsl.StreamInfo(f"{name}-spikes", "SpikeEvents", 1, lsl.IRREGULAR_RATE, lsl.cf_int32, sid + "-spikes")
            L.add_channels(info, ["channel"])
            for k, v in {**common, "n_channels": D}.items():
                info.desc().append_child_value(k, str(v))
            names = info.desc().append_child("spike_channels")
            for c in rec.channel_names:
                names.append_child_value("label", c)
            self.spikes_out = lsl.StreamOutlet(info, chunk_size=0, max_buffered=60)
        self.behavior_out = None
        if rec.behavior is not None:
            self.behavior_out = L.make_outlet(f"{name}-behavior", "Behavior", rec.behavior_names, 1.0 / self.B,
                                              units=rec.behavior_units, source_id=sid + "-behavior",
                                              extra={"bin_origin": repr(self.origin), "speed": repr(self.speed)})
        self.markers_out = L.make_outlet(f"{name}-markers", "Markers", ["marker"], 0.0, fmt="string",
                                         source_id=sid + "-markers")
        self._trials = set() if rec.trial_starts is None else {int(t) for t in rec.trial_starts}
        Clocked.__init__(self)
        self.n_pushed = 0
        self.lateness = []  # push time - target time, seconds, per wake-up

    # ---- data per bin ---------------------------------------------------------------------------
    def _index_spikes(self, spikes: tuple[np.ndarray, np.ndarray, float]) -> tuple[np.ndarray, ...]:
        times, chans, t0 = spikes
        order = np.argsort(times, kind="stable")
        times, chans = times[order], chans[order]
        k = bin_index(times, t0, self.B)
        frac = np.clip((times - t0) / self.B - k, 1e-4, 1 - 1e-4)
        keep = (k >= 0) & (k < self.rec.n_bins)
        k, frac, chans = k[keep], frac[keep], chans[keep]
        bounds = np.searchsorted(k, np.arange(self.rec.n_bins + 1))
        return k, frac, chans.astype(np.int32), bounds

    def recording_bin(self, n: int) -> int:
        """Which recording bin the n-th pushed bin is."""
        return self.start_bin + n % self.L

    def _events(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(fractions of the bin in [0, 1), channel indices) for recording bin k, sorted in time."""
        if self._spikes is not None:
            _, frac, chans, bounds = self._spikes
            a, b = bounds[k], bounds[k + 1]
            return frac[a:b], chans[a:b]
        c = self.rec.counts[k]
        ch = np.repeat(np.arange(c.size, dtype=np.int32), c)
        rng = np.random.default_rng((self.seed, k))
        frac = rng.uniform(0.02, 0.98, ch.size)
        order = np.argsort(frac, kind="stable")
        return frac[order], ch[order]

    def _sub_bins(self, k: int) -> np.ndarray:
        c = self.rec.counts[k]
        if self.factor == 1:
            return c[None, :]
        rng = np.random.default_rng((self.seed, k))
        return rng.multinomial(c, np.full(self.factor, 1.0 / self.factor)).T.astype(np.int32)

    # ---- pushing ------------------------------------------------------------------------------
    def _push(self, n0: int, n1: int) -> None:
        """Pushed bins [n0, n1) go out as one chunk per stream."""
        T0, Bs = self.t0, self.Bs
        ks = [self.recording_bin(n) for n in range(n0, n1)]
        if self.fmt == "counts":
            rows = np.concatenate([self._sub_bins(k) for k in ks])
            f = self.factor
            ts = T0 + (np.repeat(np.arange(n0, n1), f) + np.tile(np.arange(1, f + 1) / f, n1 - n0)) * Bs
            self.spikes_out.push_chunk(rows, ts.tolist())
        else:
            fr, chs = [], []
            for n, k in zip(range(n0, n1), ks):
                frac, ch = self._events(k)
                fr.append(T0 + (n + frac) * Bs)
                chs.append(ch)
            ts = np.concatenate(fr)
            if ts.size:
                self.spikes_out.push_chunk(np.concatenate(chs).reshape(-1, 1), ts.tolist())
        if self.behavior_out is not None:
            y = self.rec.behavior[ks].astype(np.float32)
            self.behavior_out.push_chunk(y, (T0 + (np.arange(n0, n1) + 1) * Bs).tolist())
        for n, k in zip(range(n0, n1), ks):
            if n > 0 and k == self.start_bin:
                self.markers_out.push_sample([f"loop {n // self.L}"], T0 + n * Bs)
            if k in self._trials:
                self.markers_out.push_sample([f"trial_start {k}"], T0 + n * Bs)
        self.n_pushed = n1

    def _run(self) -> None:
        from .priority import raise_priority

        self.priority = raise_priority(self.priority)
        lsl = L.pylsl()
        clock = lsl.local_clock
        T0, Bs = self.t0, self.Bs
        n = 0
        per_wake = max(1, math.ceil(0.001 / Bs - 1e-9))  # fast replays: wake at most every ~1 ms
        spin = self.spin if (self.priority == "realtime" and Bs > 4 * self.spin) else 0.0
        try:
            self.markers_out.push_sample(["replay_start"], T0)
            while not self._stop.is_set() and (self.n_total is None or n < self.n_total):
                target = T0 + (n + per_wake) * Bs
                rem = target - clock()
                if rem > 0:
                    # sleep; spin (yielding) only the last `spin` s and only at real-time priority:
                    # a normal thread that spins is preempted (p99 ~4 ms late on a busy machine)
                    if self._stop.wait(max(0.0, rem - spin)):
                        break
                    while clock() < target:
                        if spin:
                            os.sched_yield()
                        else:
                            time.sleep(target - clock())
                now = clock()
                self.lateness.append(now - target)
                n1 = min(n + per_wake + int((now - target) // Bs), n + 5000)
                if self.n_total is not None:
                    n1 = min(n1, self.n_total)
                self._push(n, n1)
                n = n1
            self.markers_out.push_sample(["replay_end"], clock())
        finally:
            self.done.set()

    def start(self, wait_consumers_s: float = 0.0, lead_s: float = 0.05) -> Player:
        """Start pushing in a background thread; the first bin starts on the grid >= now + lead."""
        from .priority import quiet_gc

        if wait_consumers_s > 0:
            self.spikes_out.wait_for_consumers(wait_consumers_s)
        quiet_gc()  # before the clock starts: a collection takes longer than the lead
        self.first_tick(self.origin, self.Bs, lead_s)
        self.start_thread(self._run, f"replay-{self.name}")
        return self

    def close(self) -> None:
        """Stop and destroy the outlets (consumers see the source vanish)."""
        self.stop()
        self.spikes_out = self.behavior_out = self.markers_out = None

    def timing(self) -> dict[str, Any]:
        """Push lateness (wake-up vs target) in ms: how close to the drift-free clock we pushed."""
        late = np.asarray(self.lateness) * 1000.0
        if not late.size:
            return {"pushes": 0}
        return {"pushes": int(late.size), "late_ms_p50": float(np.median(late)), "late_ms_p99": float(np.percentile(late, 99)),
                "late_ms_max": float(late.max()), "late_ms_mean": float(late.mean())}


def start_bin_for(rec: Recording, start_s: float | None = None, split: str | None = None) -> int:
    """--start-s S or --split NAME -> the first recording bin to play."""
    if split:
        b = split_bounds(rec.n_bins)
        if split not in b:
            raise DataError(f"--split must be one of {sorted(b)}, got {split!r}")
        return b[split][0]
    if start_s:
        k = int(round(start_s / rec.bin_s))
        if not 0 <= k < rec.n_bins:
            raise DataError(where(rec.source, f"--start-s {start_s:g} is past the end ({rec.duration_s:.1f} s)"))
        return k
    return 0

