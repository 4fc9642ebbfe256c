"""What the live window's panels show (pytest-qt, offscreen, real LSL on loopback): units on the
axes, the latency axis in plain ms, the ζ image cropped to the rows channels fill, the legend off
the traces."""

from __future__ import annotations

import uuid

import numpy as np
import pylsl
import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("pyqtgraph")

from rt_decoder.plot.panels.zeta import occupied_box  # noqa: E402
from rt_decoder.plot.streams import CONNECTED  # noqa: E402
from rt_decoder.plot.synthetic import KIN_LABELS, STATS_LABELS, stream_info  # noqa: E402
from rt_decoder.plot.window import PlotWindow, StreamNames, qt_problem  # noqa: E402

pytestmark = pytest.mark.lsl


@pytest.fixture
def window(qtbot):
    if qt_problem():
        pytest.skip(qt_problem())
    p = f"test-panels-{uuid.uuid4().hex[:8]}"
    names = StreamNames(decoder=f"{p}-dec", truth=f"{p}-behavior", stats=f"{p}-dec-stats", zeta=f"{p}-dec-zeta",
                        spikes=None)
    win = PlotWindow(names)
    qtbot.addWidget(win)
    win.resize(1400, 860)
    win.show()
    win.start()
    yield win
    win.stop()


def test_latency_axis_reads_ms_with_values_in_ms(qtbot, window):
    out = pylsl.StreamOutlet(stream_info(window.names.stats, "DecoderStats", list(STATS_LABELS), 50.0))
    qtbot.waitUntil(lambda: window.status("stats") == CONNECTED, timeout=10000)
    rows = np.zeros((100, len(STATS_LABELS)), np.float32)
    rows[:, list(STATS_LABELS).index("latency_ms")] = np.linspace(0.3, 0.9, 100)  # sub-ms: where SI prefixing bit
    out.push_chunk(rows, pylsl.local_clock() - 2 + np.arange(100) / 50.0)
    qtbot.waitUntil(lambda: window.totals["bins"] == 100, timeout=5000)
    qtbot.wait(400)
    axis = window.hist_plot.getAxis("bottom")
    assert axis.labelString() .count("latency (ms)") == 1 and "mms" not in axis.labelString()
    assert axis.autoSIPrefixScale == 1.0  # tick values are the ms values themselves, not µs
    lo, hi = window.hist_plot.viewRange()[0]
    assert lo <= 0.3 and 0.9 <= hi < 5  # the histogram spans the pushed ms values
    del out


def test_trace_and_cursor_axes_carry_the_stream_units(qtbot, window):
    units = ["cm", "cm", "cm/s", "cm/s"]
    out = pylsl.StreamOutlet(stream_info(window.names.decoder, "Kinematics", list(KIN_LABELS), 50.0, units=units))
    qtbot.waitUntil(lambda: window.status("decoder") == CONNECTED, timeout=10000)
    out.push_chunk(np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32),
                   pylsl.local_clock() - 1 + np.arange(50) / 50.0)
    qtbot.waitUntil(lambda: window.trace_labels == list(KIN_LABELS), timeout=5000)
    qtbot.waitUntil(lambda: window.cursor.axes is not None, timeout=5000)
    for label, unit in zip(KIN_LABELS, units, strict=True):
        assert window.traces.plots[label].getAxis("left").labelString().count(f"{label} ({unit})") == 1
    assert window.cursor.axes == (("pos_x", "cm"), ("pos_y", "cm"))
    del out


def test_legend_sits_above_the_traces_not_on_them(qtbot, window):
    out = pylsl.StreamOutlet(stream_info(window.names.decoder, "Kinematics", list(KIN_LABELS), 50.0))
    qtbot.waitUntil(lambda: window.status("decoder") == CONNECTED, timeout=10000)
    out.push_sample(np.zeros(4, np.float32))
    qtbot.waitUntil(lambda: window.trace_labels == list(KIN_LABELS), timeout=5000)
    qtbot.wait(300)
    legend = window.traces.legend.sceneBoundingRect()
    assert "predicted" in window.traces.legend.text and "true" in window.traces.legend.text
    for p in window.traces.plots.values():
        assert p.legend is None
        assert not legend.intersects(p.vb.sceneBoundingRect())
    del out


def test_occupied_box_spans_the_pixels_ever_nonzero():
    seen = np.zeros((16, 16), bool)
    assert occupied_box(seen) == (slice(0, 16), slice(0, 16))  # nothing seen yet: the whole canvas
    seen[:6] = True
    seen[2, 3] = True
    assert occupied_box(seen) == (slice(0, 6), slice(0, 16))
    seen[:] = False
    seen[3, 4] = seen[5, 9] = True
    assert occupied_box(seen) == (slice(3, 6), slice(4, 10))


def test_zeta_of_96_channels_on_16x16_shows_six_rows_sized_to_fit(qtbot, window):
    out = pylsl.StreamOutlet(stream_info(window.names.zeta, "Zeta", [f"px{i}" for i in range(256)], 10.0,
                                         desc={"canvas_h": 16, "canvas_w": 16}))
    qtbot.waitUntil(lambda: window.status("zeta") == CONNECTED, timeout=10000)
    rng = np.random.default_rng(1)
    frame = np.zeros(256, np.float32)
    frame[:96] = rng.random(96) + 0.01  # a raster layout: channel i at pixel i, rows 0..5
    out.push_sample(frame)
    qtbot.waitUntil(lambda: window.image_mode == "zeta" and window.image_item.image is not None
                    and window.image_item.image.shape == (6, 16), timeout=5000)
    np.testing.assert_array_equal(window.image_item.image, frame[:96].reshape(6, 16))
    vb = window.image.plot.vb

    def fitted() -> bool:  # the panel settles within a few refreshes as the axes get their widths
        (x0, x1), (y0, y1) = vb.viewRange()
        return y1 - y0 < 7 and x1 - x0 < 16 * 1.1 and abs(vb.height() / vb.width() - 6 / 16) < 0.06

    qtbot.waitUntil(fitted, timeout=3000)  # six rows shown at their aspect, no empty range either side
    (x0, x1), (y0, y1) = vb.viewRange()
    assert x0 <= 0 and x1 >= 16 and y0 <= 0 and y1 >= 6  # ... and all of them
    del out


def test_raster_of_1024_channels_is_summed_to_at_most_256_rows_keeping_every_spike():
    from rt_decoder.plot.panels.raster import group_channels

    img = np.random.default_rng(2).poisson(0.3, (500, 1021)).astype(np.float32)
    shown, g = group_channels(img)
    assert g == 4 and shown.shape == (500, 256)
    assert shown.sum() == img.sum()
    np.testing.assert_array_equal(shown[:, 0], img[:, :4].sum(axis=1))
    same, g1 = group_channels(img[:, :96])
    assert g1 == 1 and same.shape == (500, 96)


def test_synthetic_streams_size_the_canvas_for_1024_channels():
    from rt_decoder.plot.synthetic import SyntheticStreams

    p = f"test-syn-{uuid.uuid4().hex[:8]}"
    s = SyntheticStreams(decoder=f"{p}-dec", truth=None, stats=None, spikes=None, zeta=f"{p}-zeta", channels=1024)
    assert s.canvas == 32
    s.step(0, pylsl.local_clock())  # writes 1024 channels into the 32x32 ζ without an error
    assert s.pushed == 1
