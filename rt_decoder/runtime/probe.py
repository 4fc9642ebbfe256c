"""What a downstream user sees: a consumer that records a stream's samples and their arrival
time, and a small retention_linear step graph to measure with when no trained model is given.

The benchmarks and the tests measure latency the way DESIGN §5 defines it: local_clock() at
receipt minus the sample's timestamp (the bin's end).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from . import lsl as L


class Consumer:
    """Collect every sample of one LSL stream (by name) in a background thread."""

    def __init__(self, name: str, timeout: float = 10.0, prop: str = "name") -> None:
        lsl = L.pylsl()
        found = lsl.resolve_byprop(prop, name, 1, timeout)
        if not found:
            raise RuntimeError(f"consumer: no stream {prop}={name!r} after {timeout:g} s")
        self.inlet = lsl.StreamInlet(found[0], max_buflen=120, recover=False)
        self.inlet.open_stream(timeout=5.0)
        self.info = self.inlet.info(timeout=5.0)
        self.samples: list[np.ndarray] = []
        self.stamps: list[float] = []
        self.received: list[float] = []
        self._stop = threading.Event()
        self._lost = False
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"consumer-{name}")
        self._thread.start()

    def _run(self) -> None:
        lsl = L.pylsl()
        n = self.info.channel_count()
        strings = self.info.channel_format() == 3
        buf = None if strings else np.empty((1024, n), dtype=np.dtype(getattr(self.inlet, "np_dtype", None) or np.float32))
        while not self._stop.is_set():
            try:
                x, ts = self.inlet.pull_chunk(timeout=0.05, max_samples=1024, dest_obj=buf, min_samples=1,
                                              as_numpy=not strings)
            except L.LostError:
                self._lost = True
                break
            if len(ts):
                now = lsl.local_clock()
                self.samples.extend(x if strings else buf[: len(ts)].copy())
                self.stamps.extend(list(ts))
                self.received.extend([now] * len(ts))

    def wait_for(self, n: int, timeout: float) -> bool:
        """Until n samples arrived (True) or timeout (False)."""
        lsl = L.pylsl()
        t_end = lsl.local_clock() + timeout
        while len(self.stamps) < n and lsl.local_clock() < t_end and self._thread.is_alive():
            self._stop.wait(0.01)
        return len(self.stamps) >= n

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(samples (n, C), timestamps (n,), latency_s (n,) = receipt - timestamp)."""
        x = np.array(self.samples) if self.samples else np.zeros((0, self.info.channel_count()))  # str for markers
        ts = np.array(self.stamps, np.float64)
        return x, ts, np.array(self.received, np.float64) - ts


def linear_model(path: str | Path, n_channels: int = 96, n_outputs: int = 4, bin_s: float = 0.02,
                 decays: tuple[float, ...] = (0.5, 0.875, 0.96875), lag_bins: int = 0, seed: int = 0) -> Path:
    """A retention_linear step graph with random readout weights (no torch): for tests and benchmarks."""
    from ..layout import default_canvas, raster_layout
    from ..model_card import ModelCard, StateSpec
    from ..step_graph import build_retention_model, save

    canvas = default_canvas(n_channels)
    S = len(decays)
    names = ["pos_x", "pos_y", "vel_x", "vel_y"]
    outputs = names[:n_outputs] if n_outputs <= 4 else [f"y{k}" for k in range(n_outputs)]
    card = ModelCard(kind="decoder", model_type="retention_linear", bin_s=bin_s,
                     channel_names=[f"ch{i:03d}" for i in range(n_channels)], outputs=outputs,
                     units=["cm" if o.startswith("pos") else "cm/s" for o in outputs],
                     states=[StateSpec("zeta", [1, S, *canvas])], decays=list(decays), canvas=list(canvas),
                     layout={"kind": "raster", "pixels": raster_layout(n_channels, canvas).tolist()}, lag_bins=lag_bins)
    rng = np.random.default_rng(seed)
    W = rng.normal(scale=0.1, size=(S * canvas[0] * canvas[1], n_outputs))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(build_retention_model(card, linear=(W, rng.normal(size=n_outputs)), out_mean=np.zeros(n_outputs),
                               out_std=np.ones(n_outputs)), path)
    return path


def poisson_recording(n_bins: int, n_channels: int, bin_s: float = 0.02, rate_hz: float = 20.0, seed: int = 0,
                      n_outputs: int = 2) -> Any:
    """A quick random recording (counts + smooth behaviour + trials) when no simulator is at hand."""
    from ..recording import Recording

    rng = np.random.default_rng(seed)
    counts = rng.poisson(rate_hz * bin_s, size=(n_bins, n_channels)).astype(np.int32)
    t = np.arange(n_bins) * bin_s
    beh = np.stack([np.sin(2 * np.pi * 0.2 * t + k) for k in range(n_outputs)], axis=1)
    return Recording(counts=counts, bin_s=bin_s, behavior=beh, behavior_names=[f"pos_{'xyzw'[k]}" for k in range(n_outputs)],
                     trial_starts=np.arange(0, n_bins, 100)).validate()


class RuntimeThread:
    """Run a Runtime in a background thread (tests, the demo): start() waits until it is ready."""

    def __init__(self, runtime: Any, max_bins: int | None = None, duration_s: float | None = None) -> None:
        self.runtime = runtime
        self.summary: dict | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(max_bins, duration_s), daemon=True, name="runtime")

    def _run(self, max_bins: int | None, duration_s: float | None) -> None:
        try:
            self.summary = self.runtime.run(max_bins=max_bins, duration_s=duration_s)
        except BaseException as e:  # handed to the caller in join()
            self.error = e
            self.runtime.ready.set()

    def start(self, timeout: float = 20.0) -> RuntimeThread:
        self._thread.start()
        if not self.runtime.ready.wait(timeout):
            raise RuntimeError("runtime not ready in time")
        if self.error is not None:
            raise self.error
        return self

    def join(self, timeout: float = 10.0) -> dict:
        """Stop the runtime and return its summary (re-raising its error, if any)."""
        self.runtime.stop()
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.summary or {}


def decode_replay(model_path: str | Path, rec: Any, log_path: str | Path | None = None,
                  speed: float = 4.0) -> tuple[np.ndarray, dict]:
    """Replay `rec` over LSL into a runtime and record what it publishes: (predictions, summary).

    The whole online path a user runs (player -> runtime -> consumer), for tests that compare it
    with the offline step graph."""
    import uuid

    from .loop import Runtime
    from .player import Player

    name = "t" + uuid.uuid4().hex[:10]
    player = Player(rec, name=name, speed=speed)
    rt = Runtime(model_path, f"{name}-spikes", output=f"{name}-dec", stats=None, budget_ms=1000.0, log_path=log_path)
    th = RuntimeThread(rt).start()
    dec = Consumer(f"{name}-dec")
    player.start(wait_consumers_s=5.0)
    if not player.wait(15.0 + rec.n_bins * rec.bin_s / speed):
        raise RuntimeError("replay did not finish in time")
    dec.wait_for(rec.n_bins, 5.0)
    summary = th.join()
    dec.stop()
    player.close()
    x, _, _ = dec.data()
    return x, summary


def interrupt(procs: list, timeout: float) -> None:
    """Ctrl-C each process still running, in the order given (so a runtime stopped before its
    source logs no "lost"), kill one that outlives `timeout`; every process is reaped."""
    import signal
    import subprocess

    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)
