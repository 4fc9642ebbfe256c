"""Stand-in LSL streams with the shapes the plot reads, so the plot can be tried and tested
without a model, a replay or hardware.

Publishes, at `rate_hz` on the local LSL clock: a decoder output (`Kinematics`: pos_x, pos_y,
vel_x, vel_y), its ground truth, `DecoderStats`, `SpikeCounts` from a cosine-tuned Poisson
population, and (optionally) `Zeta` snapshots at 10 Hz. Run it on its own with

    python -m rt_decoder.plot.synthetic --seconds 60 --decoder my-dec ...
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Sequence

import numpy as np
import pylsl

from ..runtime.lsl import STATS_LABELS, add_channels

KIN_LABELS = ("pos_x", "pos_y", "vel_x", "vel_y")
KIN_UNITS = ("mm", "mm", "mm/s", "mm/s")


def stream_info(
    name: str,
    stype: str,
    labels: Sequence[str],
    rate_hz: float,
    *,
    units: Sequence[str] | None = None,
    fmt: int = pylsl.cf_float32,
    source_id: str = "",
    desc: dict[str, object] | None = None,
) -> pylsl.StreamInfo:
    """A StreamInfo with channel labels (and units) in desc/channels/channel, as DESIGN §5 asks."""
    info = pylsl.StreamInfo(name, stype, len(labels), rate_hz, fmt, source_id or f"{name}-{time.time_ns()}")
    add_channels(info, list(labels), None if units is None else list(units))
    for k, v in (desc or {}).items():
        info.desc().append_child_value(k, str(v))
    return info


class SyntheticStreams:
    """A background thread that publishes plausible decoder streams until stop()."""

    def __init__(
        self,
        *,
        decoder: str = "rt-decoder",
        truth: str | None = "replay-behavior",
        stats: str | None = "rt-decoder-stats",
        spikes: str | None = "replay-spikes",
        zeta: str | None = "rt-decoder-zeta",
        rate_hz: float = 50.0,
        channels: int = 96,
        canvas: int | None = None,
        budget_ms: float = 5.0,
        seed: int = 0,
    ) -> None:
        self.rate_hz = float(rate_hz)
        self.channels = int(channels)
        # the smallest square canvas holding every channel, at least 16x16 (what training picks for 96)
        self.canvas = int(canvas) if canvas else max(16, int(np.ceil(np.sqrt(self.channels))))
        if self.canvas ** 2 < self.channels:
            raise ValueError(f"a {self.canvas}x{self.canvas} canvas cannot hold {self.channels} channels")
        self.budget_ms = float(budget_ms)
        self.rng = np.random.default_rng(seed)
        mk = stream_info
        self.out_dec = pylsl.StreamOutlet(mk(decoder, "Kinematics", KIN_LABELS, rate_hz, units=KIN_UNITS))
        self.out_truth = truth and pylsl.StreamOutlet(mk(truth, "Kinematics", KIN_LABELS, rate_hz, units=KIN_UNITS))
        self.out_stats = stats and pylsl.StreamOutlet(mk(stats, "DecoderStats", STATS_LABELS, rate_hz))
        spike_labels = [f"ch{i}" for i in range(self.channels)]
        self.out_spikes = spikes and pylsl.StreamOutlet(
            mk(spikes, "SpikeCounts", spike_labels, rate_hz, fmt=pylsl.cf_int16))
        hw = self.canvas * self.canvas
        self.out_zeta = zeta and pylsl.StreamOutlet(
            mk(zeta, "Zeta", [f"px{i}" for i in range(hw)], 10.0, desc={"canvas_h": self.canvas, "canvas_w": self.canvas}))
        self.pushed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._err = np.zeros(4)
        self._zeta = np.zeros(self.canvas * self.canvas, dtype=np.float32)
        self._pd = self.rng.uniform(0, 2 * np.pi, self.channels)  # preferred directions

    def _truth(self, t: float) -> np.ndarray:
        """A smooth 2-D path (two incommensurate ellipses) and its velocity."""
        a, b = 2 * np.pi * 0.11, 2 * np.pi * 0.17
        px = 60 * np.sin(a * t) + 20 * np.sin(b * t)
        py = 50 * np.sin(b * t + 0.7) + 15 * np.cos(a * t)
        vx = 60 * a * np.cos(a * t) + 20 * b * np.cos(b * t)
        vy = 50 * b * np.cos(b * t + 0.7) - 15 * a * np.sin(a * t)
        return np.array([px, py, vx, vy], dtype=np.float32)

    def step(self, k: int, t_end: float) -> None:
        """Publish bin k, whose end is t_end on the local LSL clock."""
        dt = 1.0 / self.rate_hz
        y = self._truth(k * dt)
        self._err = 0.9 * self._err + self.rng.normal(0, [1.5, 1.5, 6, 6])  # smooth decoding error
        pred = (self._truth((k - 3) * dt) + self._err).astype(np.float32)
        speed_dir = np.arctan2(y[3], y[2])
        lam = np.clip(0.3 + 0.25 * np.cos(speed_dir - self._pd) * np.hypot(y[2], y[3]) / 60, 0.02, None)
        counts = self.rng.poisson(lam).astype(np.int16)
        lat = float(self.rng.lognormal(np.log(1.5), 0.35)) + (8.0 if self.rng.random() < 0.01 else 0.0)
        miss = float(lat > self.budget_ms)
        if self.out_spikes:
            self.out_spikes.push_sample(counts, t_end)
        if self.out_truth:
            self.out_truth.push_sample(y, t_end)
        self.out_dec.push_sample(pred, t_end)
        if self.out_stats:
            self.out_stats.push_sample(np.array([k, lat, 0, miss, 0, 0], dtype=np.float32), t_end)
        if self.out_zeta:
            self._zeta[: self.channels] = 0.5 * self._zeta[: self.channels] + 0.5 * (counts > 0)
            if k % max(1, round(self.rate_hz / 10)) == 0:
                self.out_zeta.push_sample(self._zeta, t_end)
        self.pushed += 1

    def _run(self, seconds: float | None) -> None:
        dt = 1.0 / self.rate_hz
        t0 = pylsl.local_clock()
        k = 0
        while not self._stop.is_set():
            t_end = t0 + (k + 1) * dt
            wait = t_end - pylsl.local_clock()
            if wait > 0 and self._stop.wait(wait):
                break
            self.step(k, t_end)
            k += 1
            if seconds is not None and k * dt >= seconds:
                break

    def start(self, seconds: float | None = None) -> SyntheticStreams:
        self._thread = threading.Thread(target=self._run, args=(seconds,), name="synthetic streams", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> SyntheticStreams:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--decoder", default="rt-decoder")
    p.add_argument("--truth", default="replay-behavior")
    p.add_argument("--stats", default="rt-decoder-stats")
    p.add_argument("--spikes", default="replay-spikes")
    p.add_argument("--zeta", default="rt-decoder-zeta", help="'' to publish no zeta stream")
    p.add_argument("--rate", type=float, default=50.0, help="bins per second (default 50)")
    p.add_argument("--channels", type=int, default=96)
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: run until Ctrl+C)")
    a = p.parse_args(argv)
    s = SyntheticStreams(decoder=a.decoder, truth=a.truth or None, stats=a.stats or None, spikes=a.spikes or None,
                         zeta=a.zeta or None, rate_hz=a.rate, channels=a.channels)
    s.start(a.seconds)
    try:
        s.join()
    except KeyboardInterrupt:
        s.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
