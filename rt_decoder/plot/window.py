"""The live plot window (pyqtgraph + PySide6): draws what the StreamWatchers hold.

One QTimer (~60 Hz) polls every watcher with pull_chunk(timeout=0) and redraws; resolution
happens in the watchers' own threads, so the GUI thread never blocks on the network. Panels:

- one small plot per output: predicted (orange) and true (grey) over the last `window_s`
  seconds, matched by channel label; x is time relative to now on the local LSL clock, so the
  gap at the right edge of the predicted trace is the decoder's latency;
- a 2-D cursor view of predicted vs true position (pos_x/pos_y, else the first two outputs)
  with short trails;
- a latency histogram from the DecoderStats stream with p50/p99 and miss/skip/gap counts;
- the live ζ image (first decay channel) when a Zeta stream is present, otherwise a spike raster
  from the replay's SpikeCounts stream.

Costly panels (histogram, image, status text, cursor range) refresh at a few Hz; the traces and
the cursor every frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pylsl
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from .outputs import pick_position_columns
from .raster import raster_image
from .stats import StatsCounter, latency_values
from .streams import CONNECTED, LOST, WAITING, StreamWatcher

PRED_PEN = pg.mkPen((255, 140, 0), width=2)
TRUTH_PEN = pg.mkPen((190, 190, 190), width=2)
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


def _fmt_ms(v: float) -> str:
    return "–" if not np.isfinite(v) else f"{v:.2f} ms"


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


def _set_curve(curve: pg.PlotDataItem, x: np.ndarray, y: np.ndarray) -> None:
    """setData without pyqtgraph's finite scan when the data is finite (the common case); a NaN
    (e.g. a skipped prediction) breaks the line there instead of corrupting the path."""
    finite = bool(np.isfinite(y).all() and np.isfinite(x).all())
    curve.setData(x, y, skipFiniteCheck=finite, connect="all" if finite else "finite")


def _cache_axes(p: pg.PlotItem) -> None:
    """Axes re-render their tick text on every repaint unless cached; with ranges that change only
    a few times a second, caching them is most of the frame budget in software rendering."""
    for name in ("left", "bottom", "right", "top"):
        p.getAxis(name).setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)


def fit_range(current: tuple[float, float], lo: float, hi: float, pad: float = 0.1) -> tuple[float, float] | None:
    """A new (low, high) when the data left the current range or uses less than half of it, else
    None, so axes change a few times per minute rather than every frame."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    span = max(hi - lo, 1e-6)
    a, b = current
    if lo < a or hi > b or (hi - lo) < 0.5 * (b - a):
        return lo - pad * span, hi + pad * span
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

        self.trace_labels: list[str] = []
        self.trace_plots: dict[str, pg.PlotItem] = {}
        self.pred_curves: dict[str, pg.PlotDataItem] = {}
        self.truth_curves: dict[str, pg.PlotDataItem] = {}
        self._placeholder = self.traces_view.addLabel("waiting for the decoder and ground-truth streams…")

        self.cursor_plot = self.side_view.addPlot(row=0, col=0, title="position: predicted vs true")
        self.cursor_plot.setAspectLocked(True)
        self.cursor_plot.showGrid(x=True, y=True, alpha=0.2)
        self.truth_path = self.cursor_plot.plot(pen=pg.mkPen((110, 110, 110), width=1))
        self.truth_trail = self.cursor_plot.plot(pen=TRUTH_PEN, name="true")
        self.pred_trail = self.cursor_plot.plot(pen=PRED_PEN, name="predicted")
        self.truth_head = self.cursor_plot.plot(pen=None, symbol="o", symbolSize=14,
                                                symbolBrush=(190, 190, 190), symbolPen=None)
        self.pred_head = self.cursor_plot.plot(pen=None, symbol="o", symbolSize=14,
                                               symbolBrush=(255, 140, 0), symbolPen=None)
        self.cursor_cols: tuple[int, int] | None = None

        self.hist_plot = self.side_view.addPlot(row=1, col=0, title="latency: no stats yet")
        self.hist_plot.setLabel("bottom", "latency", units="ms")
        self.hist_plot.setLabel("left", "bins")
        self.hist_curve = self.hist_plot.plot(stepMode="center", fillLevel=0, brush=(80, 140, 255, 150),
                                              pen=pg.mkPen((80, 140, 255)))
        self.p50_line = pg.InfiniteLine(angle=90, pen=pg.mkPen((255, 255, 255), style=QtCore.Qt.PenStyle.DashLine))
        self.p99_line = pg.InfiniteLine(angle=90, pen=pg.mkPen((255, 80, 80), style=QtCore.Qt.PenStyle.DashLine))
        for line in (self.p50_line, self.p99_line):
            line.setVisible(False)
            self.hist_plot.addItem(line)

        self.image_plot = self.side_view.addPlot(row=2, col=0, title="ζ / spikes: waiting")
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.image_item.setColorMap(pg.colormap.get("viridis"))
        self.image_plot.addItem(self.image_item)
        self.image_mode = ""  # "zeta" or "raster" once data is shown
        self._image_shape: tuple[int, int] | None = None
        for p in (self.cursor_plot, self.hist_plot, self.image_plot):
            _cache_axes(p)
        self._cursor_req = ((0.0, 0.0), (0.0, 0.0))
        self.side_view.ci.layout.setRowStretchFactor(0, 3)
        self.side_view.ci.layout.setRowStretchFactor(1, 2)
        self.side_view.ci.layout.setRowStretchFactor(2, 2)

    def _build_traces(self, labels: list[str], units: dict[str, str]) -> None:
        """One small plot per output label, x linked, legend on the first."""
        self.traces_view.clear()
        self.trace_plots.clear()
        self.pred_curves.clear()
        self.truth_curves.clear()
        self.trace_labels = list(labels)
        first: pg.PlotItem | None = None
        for i, label in enumerate(labels):
            p = self.traces_view.addPlot(row=i, col=0)
            p.setXRange(-self.window_s, 0.0, padding=0)
            p.disableAutoRange()
            _cache_axes(p)
            p.showGrid(x=True, y=True, alpha=0.2)
            p.setLabel("left", label, units=None)
            if units.get(label):
                p.setLabel("left", f"{label} ({units[label]})")
            p.setMouseEnabled(x=False, y=True)
            if first is None:
                first = p
                p.addLegend(offset=(10, 5))
            else:
                p.setXLink(first)
            if i < len(labels) - 1:
                p.getAxis("bottom").setStyle(showValues=False)
            else:
                p.setLabel("bottom", "time relative to now (s, local LSL clock)")
            self.truth_curves[label] = p.plot(pen=TRUTH_PEN, name="true")
            self.pred_curves[label] = p.plot(pen=PRED_PEN, name="predicted")
            self.trace_plots[label] = p

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
        return labels, units

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
            self._count_stats(stats, new["stats"])
        labels, units = self._wanted_labels()
        if labels and labels != self.trace_labels:
            self._build_traces(labels, units)
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
        for role, curves in (("decoder", self.pred_curves), ("truth", self.truth_curves)):
            data = self._window(role, self.window_s)
            if data is None:
                continue
            ts, x = data
            t = ts - self.now
            meta = self.watchers[role].meta
            for col, label in enumerate(meta.labels):
                c = curves.get(label)
                if c is not None:
                    _set_curve(c, t, x[:, col])

    def _range_traces(self) -> None:
        """Fit each output's y range to the true and predicted values in the window."""
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
        for label, (lo, hi) in bounds.items():
            p = self.trace_plots.get(label)
            if p is None:
                continue
            new = fit_range(tuple(p.viewRange()[1]), lo, hi)
            if new is not None:
                p.setYRange(*new, padding=0)

    def _position_cols(self, role: str) -> tuple[int, int] | None:
        w = self.watchers.get(role)
        if w is None or w.meta is None:
            return None
        return pick_position_columns(w.meta.labels)

    def _draw_cursor(self) -> None:
        for role, trail, head in (("decoder", self.pred_trail, self.pred_head),
                                  ("truth", self.truth_trail, self.truth_head)):
            cols = self._position_cols(role)
            w = self.watchers.get(role)
            if cols is None or w is None or w.buffer is None or len(w.buffer) == 0:
                continue
            _, x = w.buffer.since(w.buffer.last(1)[0][0] - self.trail_s)  # trail ends at the newest sample
            _set_curve(trail, x[:, cols[0]], x[:, cols[1]])
            head.setData(x[-1:, cols[0]], x[-1:, cols[1]])
        cols, data = self._position_cols("truth"), self._window("truth", self.window_s)
        if cols is not None and data is not None:
            _set_curve(self.truth_path, data[1][:, cols[0]], data[1][:, cols[1]])

    def _range_cursor(self) -> None:
        """Fit the cursor view to the last window of positions (a few times a second, not per frame)."""
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
        if np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)):
            (xa, xb), (ya, yb) = self._cursor_req
            nx = fit_range((xa, xb), lo[0], hi[0], pad=0.08)
            ny = fit_range((ya, yb), lo[1], hi[1], pad=0.08)
            if nx is not None or ny is not None:
                self._cursor_req = (nx or (xa, xb), ny or (ya, yb))
                self.cursor_plot.setRange(xRange=self._cursor_req[0], yRange=self._cursor_req[1], padding=0)
            w = self.watchers.get("decoder")
            if w is not None and w.meta is not None and self.cursor_cols != self._position_cols("decoder"):
                self.cursor_cols = self._position_cols("decoder")
                a, b = self.cursor_cols
                self.cursor_plot.setLabel("bottom", w.meta.labels[a])
                self.cursor_plot.setLabel("left", w.meta.labels[b])

    # ---- latency -----------------------------------------------------------------------------
    @property
    def totals(self) -> dict[str, int]:
        """Bins, deadline misses, skipped predictions and gap bins counted from the stats stream."""
        return self.counter.as_dict()

    def _count_stats(self, w: StreamWatcher, n: int) -> None:
        self.counter.update(w.meta, w.buffer.last(n)[1])

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
        if not s["n"]:
            if w.meta is not None and w.meta.column("latency_ms") is None:
                self.hist_plot.setTitle(f"latency: {w.name} has no latency_ms channel")
            return
        lat = self._latencies()
        top = max(float(np.percentile(lat, 99.9)) * 1.1, 1e-3)
        counts, edges = np.histogram(np.clip(lat, 0, top), bins=40, range=(0, top))
        self.hist_curve.setData(edges, counts)
        self.p50_line.setValue(s["p50"])
        self.p99_line.setValue(s["p99"])
        self.p50_line.setVisible(True)
        self.p99_line.setVisible(True)
        self.hist_plot.setTitle(
            f"latency p50 {_fmt_ms(s['p50'])} · p99 {_fmt_ms(s['p99'])}<br>"
            f"misses {s['deadline_miss']} · skipped {s['skipped']} · gaps {s['gap_bins']} of {s['bins']} bins")

    # ---- ζ image or spike raster -------------------------------------------------------------
    def _draw_image(self) -> None:
        z = self.watchers.get("zeta")
        if z is not None and z.state == CONNECTED and z.buffer is not None and len(z.buffer):
            self._draw_zeta(z)
            return
        sp = self.watchers.get("spikes")
        if sp is not None and sp.buffer is not None and len(sp.buffer):
            self._draw_raster(sp)

    def _draw_zeta(self, z: StreamWatcher) -> None:
        n = z.meta.channel_count
        try:
            h, w = int(z.meta.desc["canvas_h"]), int(z.meta.desc["canvas_w"])
        except (KeyError, ValueError):
            h = w = int(round(np.sqrt(n)))
        if h * w != n:
            h, w = 1, n
        _, x = z.buffer.last(1)
        img = x[0].reshape(h, w)
        if self.image_mode != "zeta":
            self._set_image_mode("zeta", True, "canvas column", "canvas row", f"ζ (first decay) · {h}×{w} canvas")
        top = float(np.max(img)) if img.size else 1.0  # ζ is in [0, 1] but mostly small: use the range
        self.image_item.setImage(img, levels=(0.0, max(top, 0.05)), autoLevels=False)
        if self._image_shape != (h, w):  # after setImage: setRect scales by the current image's size
            self._image_shape = (h, w)
            self.image_item.setRect(QtCore.QRectF(0, 0, w, h))
            self.image_plot.setRange(xRange=(0, w), yRange=(0, h), padding=0.02)

    def _set_image_mode(self, mode: str, aspect_locked: bool, xlabel: str, ylabel: str, title: str) -> None:
        """Re-dress the image panel when it switches between the ζ image and the spike raster."""
        self.image_mode = mode
        self._image_shape = None
        self.image_plot.setAspectLocked(aspect_locked)
        self.image_plot.invertY(True)
        self.image_plot.setLabel("bottom", xlabel)
        self.image_plot.setLabel("left", ylabel)
        self.image_plot.setTitle(title)

    def _draw_raster(self, sp: StreamWatcher) -> None:
        ts, x = sp.buffer.since(self.now - self.window_s)
        img, t0, colw = raster_image(ts, x, sp.meta, self.now, self.window_s)
        ncols, d = img.shape
        if self._image_shape is not None and self.image_mode == "raster" and self._image_shape[1] != d:
            self.image_mode = ""  # channel count changed (events): redo the axes
        if self.image_mode != "raster":
            self._set_image_mode("raster", False, "time relative to now (s)", "channel", f"spikes · {d} channels (no ζ stream)")
            self.image_plot.setRange(xRange=(-self.window_s, 0), yRange=(0, d), padding=0)
            self._image_shape = (ncols, d)
        self.image_item.setImage(img.T, levels=(0.0, max(1.0, float(np.percentile(img, 99)))), autoLevels=False)
        self.image_item.setRect(QtCore.QRectF(t0 - self.now, 0, ncols * colw, d))
