"""The live plot window (pyqtgraph + PySide6): draws what the StreamWatchers hold.

One QTimer (~60 Hz) polls every watcher with pull_chunk(timeout=0) and redraws; resolution
happens in the watchers' own threads, so the GUI thread never blocks on the network. The panels
(plot/panels/) draw: traces per output, the 2-D cursor, the latency histogram, and the ζ image
or, without a Zeta stream, the spike raster. Costly panels (histogram, image, status text,
ranges) refresh at a few Hz; the traces and the cursor every frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pylsl
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from .outputs import pick_position_columns
from .panels.cursor import CursorPanel
from .panels.image import ImagePanel
from .panels.latency import LatencyPanel
from .panels.raster import RasterView
from .panels.traces import TracesPanel
from .panels.zeta import ZetaView
from .stats import StatsCounter, latency_values
from .streams import CONNECTED, LOST, WAITING, StreamWatcher

STATE_COLORS = {WAITING: "#d0a000", CONNECTED: "#40c040", LOST: "#ff5050"}
ROLES = ("decoder", "truth", "stats", "zeta", "spikes")


@dataclass
class StreamNames:
    """LSL stream names the window attaches to; '' or None leaves that panel out."""

    decoder: str = "rt-decoder"
    truth: str | None = "replay-behavior"
    stats: str | None = "rt-decoder-stats"
    zeta: str | None = "rt-decoder-zeta"
    spikes: str | None = "replay-spikes"


class _PaintCounter(QtCore.QObject):
    """Counts paint events of a widget: the frames actually drawn, for --fps."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def eventFilter(self, obj: QtCore.QObject, ev: QtCore.QEvent) -> bool:  # noqa: N802 - Qt API
        if ev.type() == QtCore.QEvent.Type.Paint:
            self.count += 1
        return False


def qt_problem() -> str | None:
    """A known-bad Qt binding, as a one-line reason, or None. PySide6 6.12 on Python < 3.12
    drops references to None/True/False on every void call (update(), setData(), ...), so a live
    plot aborts with "none_dealloc" after a few seconds; 3.12+ has immortal singletons."""
    import sys

    from pyqtgraph.Qt import QT_LIB

    if QT_LIB == "PySide6" and sys.version_info < (3, 12):
        import PySide6

        if PySide6.__version__.startswith("6.12."):
            return (f"PySide6 {PySide6.__version__} crashes on Python {sys.version_info.major}.{sys.version_info.minor} "
                    "(refcount bug); pip install 'PySide6-Essentials>=6.5,<6.12'")
    return None


class PlotWindow(QtWidgets.QWidget):
    """Live view of decoder output vs ground truth, latency and ζ (or the spike raster)."""

    def __init__(
        self,
        names: StreamNames | None = None,
        *,
        window_s: float = 10.0,
        trail_s: float = 1.0,
        interval_ms: int = 16,
        slow_every_s: float = 0.25,
    ) -> None:
        super().__init__()
        self.names = names or StreamNames()
        self.window_s = float(window_s)
        self.trail_s = float(trail_s)
        self.slow_every_s = float(slow_every_s)
        self.setWindowTitle(f"rt-decoder plot — {self.names.decoder}")
        self.resize(1400, 860)
        self.watchers: dict[str, StreamWatcher] = {}
        for role in ROLES:
            name = getattr(self.names, role)
            if name:
                w = StreamWatcher(name, window_s=self.window_s + 2.0, min_capacity=64 if role == "zeta" else 256)
                self.watchers[role] = w
        self.now = pylsl.local_clock()  # the LSL time the last frame was drawn at
        self.frames = 0  # redraws done by tick()
        self.counter = StatsCounter()
        self._last_slow = 0.0
        self._started_at = time.perf_counter()
        self._build()
        self.paints = _PaintCounter()
        self.traces_view.viewport().installEventFilter(self.paints)
        self.timer = QtCore.QTimer(self)
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self.timer.setInterval(int(interval_ms))
        self.timer.timeout.connect(self.tick)

    # ---- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 6)
        bar = QtWidgets.QGridLayout()
        bar.setHorizontalSpacing(18)
        bar.setVerticalSpacing(2)
        self.status_labels: dict[str, QtWidgets.QLabel] = {}
        for i, (role, w) in enumerate(self.watchers.items()):
            lab = QtWidgets.QLabel()
            lab.setTextFormat(QtCore.Qt.TextFormat.RichText)
            lab.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
            self.status_labels[role] = lab
            bar.addWidget(lab, i // 3, i % 3)
            self._set_status(role, w)
        outer.addLayout(bar)

        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        self.traces_view = pg.GraphicsLayoutWidget()
        self.side_view = pg.GraphicsLayoutWidget()
        split.addWidget(self.traces_view)
        split.addWidget(self.side_view)
        split.setSizes([840, 560])
        outer.addWidget(split, 1)

        self.traces = TracesPanel(self.traces_view, self.window_s)
        side = self.side_view.ci
        self.cursor = CursorPanel(side, row=0)
        self.latency = LatencyPanel(side, row=1)
        self.image = ImagePanel(side, row=2)
        self.zeta_view = ZetaView(self.image)
        self.raster_view = RasterView(self.image, self.window_s)
        side.layout.setRowStretchFactor(0, 3)
        side.layout.setRowStretchFactor(1, 2)
        side.layout.setRowStretchFactor(2, 2)

    # what tests and callers read, named as before the panels were split out
    @property
    def trace_labels(self) -> list[str]:
        return self.traces.labels

    @property
    def pred_curves(self) -> dict[str, pg.PlotDataItem]:
        return self.traces.pred

    @property
    def truth_curves(self) -> dict[str, pg.PlotDataItem]:
        return self.traces.truth

    @property
    def pred_head(self) -> pg.PlotDataItem:
        return self.cursor.pred_head

    @property
    def pred_trail(self) -> pg.PlotDataItem:
        return self.cursor.pred_trail

    @property
    def hist_plot(self) -> pg.PlotItem:
        return self.latency.plot

    @property
    def image_item(self) -> pg.ImageItem:
        return self.image.item

    @property
    def image_mode(self) -> str:
        return self.image.mode

    def _wanted_labels(self) -> tuple[list[str], dict[str, str]]:
        labels: list[str] = []
        units: dict[str, str] = {}
        for role in ("decoder", "truth"):
            w = self.watchers.get(role)
            if w is None or w.meta is None:
                continue
            for lab, unit in zip(w.meta.labels, w.meta.units, strict=True):
                if lab not in units:
                    labels.append(lab)
                    units[lab] = unit
                elif unit and not units[lab]:
                    units[lab] = unit  # the decoder's card may lack units its ground truth carries
        return labels, units

    def resizeEvent(self, ev: QtGui.QResizeEvent) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(ev)
        QtCore.QTimer.singleShot(0, self.image.refit)  # after the layout has given the panel its width

    # ---- status ------------------------------------------------------------------------------
    def _set_status(self, role: str, w: StreamWatcher) -> None:
        color = STATE_COLORS.get(w.state, "#ffffff")
        extra = ""
        if w.state == CONNECTED and w.meta is not None:
            rate = w.rate or w.meta.nominal_srate
            extra = f" · {w.meta.channel_count} ch · {rate:.1f} Hz"
        text = f"<b>{role}</b> <i>{w.name}</i>: <span style='color:{color}'>{w.state}</span>{extra}"
        lab = self.status_labels[role]
        if lab.text() != text:
            lab.setText(text)

    def status(self, role: str) -> str:
        """The state shown for a stream role ("waiting for stream", "connected", "stream lost")."""
        return self.watchers[role].state

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> PlotWindow:
        for w in self.watchers.values():
            w.start()
        self._started_at = time.perf_counter()
        self.timer.start()
        return self

    def stop(self) -> None:
        self.timer.stop()
        for w in self.watchers.values():
            w.stop()

    def closeEvent(self, ev: QtGui.QCloseEvent) -> None:  # noqa: N802 - Qt API
        self.stop()
        super().closeEvent(ev)

    def fps(self) -> float:
        """Frames painted per second since start()."""
        dt = time.perf_counter() - self._started_at
        return self.paints.count / dt if dt > 0 else 0.0

    # ---- the frame ---------------------------------------------------------------------------
    def tick(self) -> None:
        """Poll every stream and redraw (called by the timer; tests may call it directly)."""
        new = {role: w.poll() for role, w in self.watchers.items()}
        self.now = pylsl.local_clock()
        stats = self.watchers.get("stats")
        if stats is not None and new.get("stats"):
            self.counter.update(stats.meta, stats.buffer.last(new["stats"])[1])
        labels, units = self._wanted_labels()
        if labels and (labels != self.traces.labels or units != self.traces.units):
            self.traces.build(labels, units)
        self._draw_traces()
        if new.get("decoder") or new.get("truth"):
            self._draw_cursor()
        wall = time.perf_counter()
        if wall - self._last_slow >= self.slow_every_s:
            self._last_slow = wall
            for role, w in self.watchers.items():
                self._set_status(role, w)
            self._draw_latency()
            self._draw_image()
            self._range_cursor()
            self._range_traces()
        self.frames += 1

    def _window(self, role: str, seconds: float) -> tuple[np.ndarray, np.ndarray] | None:
        w = self.watchers.get(role)
        if w is None or w.buffer is None or len(w.buffer) == 0:
            return None
        return w.buffer.since(self.now - seconds)

    def _draw_traces(self) -> None:
        for role, curves in (("decoder", self.traces.pred), ("truth", self.traces.truth)):
            data = self._window(role, self.window_s)
            if data is not None:
                self.traces.draw(curves, self.watchers[role].meta.labels, data[0] - self.now, data[1])

    def _range_traces(self) -> None:
        bounds: dict[str, list[float]] = {}
        for role in ("decoder", "truth"):
            data = self._window(role, self.window_s)
            if data is None or len(data[0]) == 0:
                continue
            x = data[1]
            ok = np.isfinite(x)
            lo, hi = np.where(ok, x, np.inf).min(axis=0), np.where(ok, x, -np.inf).max(axis=0)
            for col, label in enumerate(self.watchers[role].meta.labels):
                b = bounds.setdefault(label, [np.inf, -np.inf])
                b[0], b[1] = min(b[0], float(lo[col])), max(b[1], float(hi[col]))
        self.traces.fit(bounds)

    def _position_cols(self, role: str) -> tuple[int, int] | None:
        w = self.watchers.get(role)
        if w is None or w.meta is None:
            return None
        return pick_position_columns(w.meta.labels)

    def _draw_cursor(self) -> None:
        for role in ("decoder", "truth"):
            cols = self._position_cols(role)
            w = self.watchers.get(role)
            if cols is None or w is None or w.buffer is None or len(w.buffer) == 0:
                continue
            _, x = w.buffer.since(w.buffer.last(1)[0][0] - self.trail_s)  # trail ends at the newest sample
            self.cursor.draw_trail(role, x[:, list(cols)])
        cols, data = self._position_cols("truth"), self._window("truth", self.window_s)
        if cols is not None and data is not None:
            self.cursor.draw_path(data[1][:, list(cols)])

    def _range_cursor(self) -> None:
        lo, hi = np.array([np.inf, np.inf]), np.array([-np.inf, -np.inf])
        for role in ("decoder", "truth"):
            cols = self._position_cols(role)
            data = self._window(role, self.window_s)
            if cols is None or data is None or len(data[0]) == 0:
                continue
            xy = data[1][:, list(cols)]
            xy = xy[np.all(np.isfinite(xy), axis=1)]
            if len(xy):
                lo, hi = np.minimum(lo, xy.min(axis=0)), np.maximum(hi, xy.max(axis=0))
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            return
        self.cursor.fit(lo, hi)
        for role in ("decoder", "truth"):
            cols = self._position_cols(role)
            if cols is not None:
                meta = self.watchers[role].meta
                _, units = self._wanted_labels()
                a, b = (meta.labels[c] for c in cols)
                self.cursor.set_axes((a, units.get(a, "")), (b, units.get(b, "")))
                break

    # ---- latency -----------------------------------------------------------------------------
    @property
    def totals(self) -> dict[str, int]:
        """Bins, deadline misses, skipped predictions and gap bins counted from the stats stream."""
        return self.counter.as_dict()

    def _latencies(self) -> np.ndarray | None:
        w = self.watchers.get("stats")
        if w is None or w.buffer is None:
            return None
        return latency_values(w.meta, w.buffer.last()[1])

    def latency_summary(self) -> dict[str, float]:
        """p50/p99 (ms) over the held stats samples and the running counts."""
        out: dict[str, float] = {"p50": float("nan"), "p99": float("nan"), "n": 0, **self.totals}
        lat = self._latencies()
        if lat is not None and len(lat):
            out["p50"], out["p99"] = (float(v) for v in np.percentile(lat, [50, 99]))
            out["n"] = len(lat)
        return out

    def _draw_latency(self) -> None:
        w = self.watchers.get("stats")
        if w is None or w.buffer is None:
            return
        s = self.latency_summary()
        if s["n"]:
            self.latency.draw(self._latencies(), s)
        elif w.meta is not None and w.meta.column("latency_ms") is None:
            self.latency.no_column(w.name)

    # ---- ζ image or spike raster -------------------------------------------------------------
    def _draw_image(self) -> None:
        z = self.watchers.get("zeta")
        if z is not None and z.state == CONNECTED and z.buffer is not None and len(z.buffer):
            self.zeta_view.draw(z)
            return
        sp = self.watchers.get("spikes")
        if sp is not None and sp.buffer is not None and len(sp.buffer):
            self.raster_view.draw(sp, self.now)
