"""Attach to an LSL stream by name and keep its recent samples: the plot's data side, no Qt.

A `StreamWatcher` finds its stream in a background thread (one ContinuousResolver per process;
opening an inlet blocks for the stream's header and a first clock offset, which a GUI thread
must never wait for), and the owner calls `poll()` from its own thread (the plot's QTimer) to
pull whatever arrived with `pull_chunk(timeout=0)` into a `RingBuffer`. The state says what a
user needs to know:

- "waiting for stream": nothing with that name has been seen yet;
- "connected": an inlet is open and data arrives;
- "stream lost": the source went away (LostError: inlets are opened with recover=False so a
  vanished outlet is reported, not hidden) or sent nothing for `silence_s`. The watcher keeps
  resolving and reconnects when a stream with that name (re)appears.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import pylsl
from pylsl.util import LostError
from pylsl.util import TimeoutError as LslTimeoutError

from .ringbuffer import RingBuffer

WAITING = "waiting for stream"
CONNECTED = "connected"
LOST = "stream lost"


_resolver: pylsl.ContinuousResolver | None = None
_resolver_lock = threading.Lock()


def _visible_streams() -> list[pylsl.StreamInfo]:
    """Streams on the network now, from one ContinuousResolver shared by every watcher in the
    process. results() never blocks; concurrent resolve_byprop calls, by contrast, sometimes
    take 5 s instead of their timeout, which stalls reconnection and shutdown."""
    global _resolver
    with _resolver_lock:
        if _resolver is None:
            _resolver = pylsl.ContinuousResolver(forget_after=5.0)
        return list(_resolver.results())


@dataclass
class StreamMeta:
    """What the stream says about itself (header plus the parts of desc the plot reads)."""

    name: str
    type: str
    channel_count: int
    nominal_srate: float
    source_id: str
    uid: str
    hostname: str
    labels: list[str]
    units: list[str]
    desc: dict[str, str] = field(default_factory=dict)

    def column(self, label: str) -> int | None:
        """Index of the channel with this label (case-insensitive), or None."""
        low = [s.lower() for s in self.labels]
        try:
            return low.index(label.lower())
        except ValueError:
            return None


def read_meta(info: pylsl.StreamInfo) -> StreamMeta:
    """Header and desc of a full StreamInfo (from inlet.info()): channel labels, units and the
    top-level desc values (e.g. canvas_h, canvas_w). Missing labels become ch0, ch1, ..."""
    n = info.channel_count()
    labels: list[str] = []
    units: list[str] = []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty() and len(labels) < n:
        labels.append(ch.child_value("label") or f"ch{len(labels)}")
        units.append(ch.child_value("unit"))
        ch = ch.next_sibling("channel")
    labels += [f"ch{i}" for i in range(len(labels), n)]
    units += [""] * (n - len(units))
    desc: dict[str, str] = {}
    node = info.desc().first_child()
    while not node.empty():
        if node.first_child().is_text():
            desc[node.name()] = node.first_child().value()
        node = node.next_sibling()
    return StreamMeta(
        name=info.name(),
        type=info.type(),
        channel_count=n,
        nominal_srate=float(info.nominal_srate()),
        source_id=info.source_id(),
        uid=info.uid(),
        hostname=info.hostname(),
        labels=labels,
        units=units,
        desc=desc,
    )


class StreamWatcher:
    """One LSL stream, found by name, buffered for the last `window_s` seconds (at least)."""

    def __init__(
        self,
        name: str,
        *,
        window_s: float = 10.0,
        min_capacity: int = 256,
        irregular_capacity: int = 4096,
        silence_s: float | None = None,
        resolve_timeout_s: float = 0.5,  # how often to look again while nothing matches
        clocksync: bool = True,
    ) -> None:
        self.name = name
        self.window_s = float(window_s)
        self.min_capacity = int(min_capacity)
        self.irregular_capacity = int(irregular_capacity)
        self.silence_s = silence_s
        self.resolve_timeout_s = float(resolve_timeout_s)
        self.clocksync = clocksync
        self.state = WAITING
        self.meta: StreamMeta | None = None
        self.buffer: RingBuffer | None = None
        self.connects = 0  # inlets adopted
        self.losses = 0  # times the stream was declared lost
        self.last_data = 0.0  # local_clock() of the last pull that returned samples
        self._inlet: pylsl.StreamInlet | None = None
        self._uid = ""
        self._dead: set[str] = set()  # uids of sources that went away (the resolver lists them a while)
        self._connected_at = 0.0
        self._pending: tuple[pylsl.StreamInlet, StreamMeta] | None = None
        self._lock = threading.Lock()
        self._want = threading.Event()  # set while the resolver should look for a stream
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> StreamWatcher:
        if self._thread is None:
            self._want.set()
            self._thread = threading.Thread(target=self._resolve_loop, name=f"resolve {self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._want.set()
        if self._thread is not None:
            self._thread.join(timeout=self.resolve_timeout_s + 3.0)
            self._thread = None
        with self._lock:
            self._pending = None
        self._inlet = None

    def __enter__(self) -> StreamWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- background: find the stream and open an inlet ---------------------------------------
    def _resolve_loop(self) -> None:
        while not self._stop.is_set():
            if not self._want.wait(0.25) or self._stop.is_set():
                continue
            found = [i for i in _visible_streams() if i.name() == self.name
                     and i.uid() != self._uid and i.uid() not in self._dead]
            if not found:
                self._stop.wait(self.resolve_timeout_s / 5)
                continue
            info = max(found, key=lambda i: i.created_at())
            try:
                flags = pylsl.proc_clocksync if self.clocksync else pylsl.proc_none
                # seconds for regular streams, hundreds of samples for irregular ones (liblsl's rule)
                buflen = max(2, int(np.ceil(2 * self.window_s))) if info.nominal_srate() > 0 else 1000
                inlet = pylsl.StreamInlet(info, max_buflen=buflen, recover=False, processing_flags=flags)
                meta = read_meta(inlet.info(timeout=2.0))
                inlet.open_stream(timeout=2.0)
                if self.clocksync:  # the first estimate blocks ~0.5 s: take it here, not in poll()
                    inlet.time_correction(timeout=2.0)
            except (LostError, LslTimeoutError, RuntimeError):
                self._dead.add(info.uid())  # listed by the resolver but gone: do not retry it
                continue
            with self._lock:
                self._pending = (inlet, meta)
            self._want.clear()

    # ---- foreground: pull what arrived -------------------------------------------------------
    def _capacity(self, meta: StreamMeta) -> int:
        if meta.nominal_srate > 0:
            return max(self.min_capacity, int(np.ceil(1.5 * self.window_s * meta.nominal_srate)) + 16)
        return max(self.min_capacity, self.irregular_capacity)

    def _silence_limit(self) -> float | None:
        if self.silence_s is not None:
            return self.silence_s
        if self.meta is not None and self.meta.nominal_srate > 0:
            return max(2.0, 5.0 / self.meta.nominal_srate)
        return None

    def _adopt(self, inlet: pylsl.StreamInlet, meta: StreamMeta) -> None:
        self._inlet = inlet
        self._uid = meta.uid
        cap = self._capacity(meta)
        b = self.buffer
        if b is None or b.channels != meta.channel_count or b.capacity != cap:
            self.buffer = RingBuffer(cap, meta.channel_count)
        self.meta = meta
        self.state = CONNECTED
        self.connects += 1
        self._connected_at = pylsl.local_clock()
        self.last_data = self._connected_at

    def _lose(self) -> None:
        self._inlet = None
        self._dead.add(self._uid)
        self._uid = ""
        self.state = LOST
        self.losses += 1
        self._want.set()

    MAX_CAPACITY = 1 << 21

    def _make_room(self, n: int, newest: float) -> None:
        """Irregular streams (spike events) have no rate to size the buffer by: double it while the
        window does not fit (up to MAX_CAPACITY samples)."""
        b = self.buffer
        if self.meta.nominal_srate > 0 or len(b) + n <= b.capacity or b.capacity >= self.MAX_CAPACITY:
            return
        oldest = b.last(max(1, b.capacity - n))[0][0] if len(b) else newest
        if newest - oldest < self.window_s:
            b.grow(min(self.MAX_CAPACITY, 2 * (b.capacity + n)))

    def poll(self, max_samples: int = 4096) -> int:
        """Pull everything that arrived since the last call (never blocks). Returns the count."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._adopt(*pending)
        if self._inlet is None:
            return 0
        got = 0
        try:
            while True:
                x, ts = self._inlet.pull_chunk(timeout=0.0, max_samples=max_samples, as_numpy=True)
                n = len(ts)
                if n:
                    self._make_room(n, float(ts[-1]))
                    self.buffer.extend(np.asarray(ts), np.asarray(x).reshape(n, -1))
                    got += n
                if n < max_samples:
                    break
        except (LostError, RuntimeError):
            self._lose()
            return got
        now = pylsl.local_clock()
        if got:
            self.last_data = now
            if self.state != CONNECTED:
                self.state = CONNECTED
                self._want.clear()
        else:
            limit = self._silence_limit()
            if self.state == CONNECTED and limit is not None and now - self.last_data > limit:
                self.state = LOST  # stalled: keep the inlet, and look for a new source meanwhile
                self.losses += 1
                self._want.set()
        return got

    @property
    def rate(self) -> float:
        """Measured sample rate over the held samples (Hz), or 0 when too few."""
        if self.buffer is None or len(self.buffer) < 2:
            return 0.0
        ts, _ = self.buffer.last()
        span = ts[-1] - ts[0]
        return (len(ts) - 1) / span if span > 0 else 0.0
