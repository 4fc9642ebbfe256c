"""The live plot window (pytest-qt, offscreen) fed by real LSL outlets on loopback."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pylsl
import pytest

pytest.importorskip("pytestqt")
pg = pytest.importorskip("pyqtgraph")

from rt_decoder.cli import main as cli_main  # noqa: E402
from rt_decoder.plot.streams import CONNECTED, LOST, WAITING  # noqa: E402
from rt_decoder.plot.synthetic import (  # noqa: E402
    KIN_LABELS,
    KIN_UNITS,
    STATS_LABELS,
    SyntheticStreams,
    stream_info,
)
from rt_decoder.plot.window import PlotWindow, StreamNames, qt_problem  # noqa: E402

pytestmark = pytest.mark.lsl


def unique_names(zeta: bool = True) -> StreamNames:
    p = f"test-plotwin-{uuid.uuid4().hex[:8]}"
    return StreamNames(decoder=f"{p}-dec", truth=f"{p}-behavior", stats=f"{p}-dec-stats",
                       zeta=f"{p}-dec-zeta" if zeta else None, spikes=f"{p}-spikes")


def npts(curve) -> int:
    x = curve.getData()[0]
    return 0 if x is None else len(x)


@pytest.fixture
def make_window(qtbot):
    made: list[PlotWindow] = []

    if qt_problem():  # would abort the whole pytest process, not just fail
        pytest.skip(qt_problem())

    def make(names: StreamNames, **kw) -> PlotWindow:
        win = PlotWindow(names, **kw)
        qtbot.addWidget(win)
        win.show()
        win.start()
        made.append(win)
        return win

    yield make
    for win in made:
        win.stop()


def test_qt_binding_is_not_the_known_crashing_one():
    assert qt_problem() is None


def test_curves_hold_exactly_the_samples_pushed(qtbot, make_window):
    names = unique_names(zeta=False)
    win = make_window(names)
    dec = pylsl.StreamOutlet(stream_info(names.decoder, "Kinematics", KIN_LABELS, 50.0, units=KIN_UNITS))
    order = [2, 0, 3, 1]  # the truth stream lists the same outputs in another order: matched by label
    truth = pylsl.StreamOutlet(stream_info(names.truth, "Kinematics", [KIN_LABELS[i] for i in order], 50.0))
    qtbot.waitUntil(lambda: win.status("decoder") == CONNECTED and win.status("truth") == CONNECTED, timeout=10000)
    rng = np.random.default_rng(3)
    n = 150
    pred = rng.normal(size=(n, 4)).astype(np.float32)
    true = rng.normal(size=(n, 4)).astype(np.float32)
    pred[70, 1] = np.nan  # a skipped prediction: drawn as a break, kept as a sample
    ts = pylsl.local_clock() - 4.0 + np.arange(n) / 50.0  # inside the 10 s window
    dec.push_chunk(pred, ts)
    truth.push_chunk(true[:, order], ts)

    def all_drawn() -> bool:
        return set(win.pred_curves) == set(KIN_LABELS) and all(
            npts(win.pred_curves[k]) == n and npts(win.truth_curves[k]) == n for k in KIN_LABELS)

    qtbot.waitUntil(all_drawn, timeout=5000)
    assert win.trace_labels == list(KIN_LABELS)
    for i, label in enumerate(KIN_LABELS):
        x, y = win.pred_curves[label].getData()
        np.testing.assert_array_equal(y, pred[:, i])
        np.testing.assert_allclose(x + win.now, ts, atol=5e-3)  # time relative to the frame's clock
        _, yt = win.truth_curves[label].getData()
        np.testing.assert_array_equal(yt, true[:, i])
    xs, ys = win.pred_head.getData()
    assert (xs[0], ys[0]) == (pred[-1, 0], pred[-1, 1])  # cursor head = newest pos_x, pos_y
    del dec, truth


def test_status_follows_stream_appearing_and_vanishing(qtbot, make_window):
    names = unique_names()
    win = make_window(names)
    label = win.status_labels["decoder"]
    qtbot.wait(300)
    assert win.status("decoder") == WAITING and WAITING in label.text()
    out = pylsl.StreamOutlet(stream_info(names.decoder, "Kinematics", KIN_LABELS, 50.0))
    qtbot.waitUntil(lambda: CONNECTED in label.text(), timeout=10000)
    assert win.status("decoder") == CONNECTED
    del out
    gc.collect()
    qtbot.waitUntil(lambda: LOST in label.text(), timeout=10000)
    assert win.status("decoder") == LOST
    assert WAITING in win.status_labels["truth"].text()  # never published


def test_latency_columns_found_by_label_and_image_switches_to_zeta(qtbot, make_window):
    names = unique_names()
    win = make_window(names)
    shuffled = ["skipped", "gap_bins", "latency_ms", "bin_index", "deadline_miss", "backlog"]
    assert sorted(shuffled) == sorted(STATS_LABELS)
    stats = pylsl.StreamOutlet(stream_info(names.stats, "DecoderStats", shuffled, 50.0))
    spikes = pylsl.StreamOutlet(stream_info(names.spikes, "SpikeCounts", [f"ch{i}" for i in range(12)], 50.0,
                                            fmt=pylsl.cf_int16))
    qtbot.waitUntil(lambda: win.status("stats") == CONNECTED and win.status("spikes") == CONNECTED, timeout=10000)
    rng = np.random.default_rng(4)
    n = 200
    lat = rng.lognormal(0.5, 0.4, n)
    miss = (lat > 3.0).astype(float)
    rows = np.zeros((n, 6), dtype=np.float32)
    rows[:, shuffled.index("latency_ms")] = lat
    rows[:, shuffled.index("deadline_miss")] = miss
    rows[:, shuffled.index("gap_bins")] = 0
    rows[7, shuffled.index("gap_bins")] = 3
    rows[:, shuffled.index("bin_index")] = np.arange(n)
    now = pylsl.local_clock()
    stats.push_chunk(rows, now - 3 + np.arange(n) / 50.0)
    spikes.push_chunk(rng.poisson(1.0, (n, 12)).astype(np.int16), now - 3 + np.arange(n) / 50.0)
    qtbot.waitUntil(lambda: win.totals["bins"] == n and win.image_mode == "raster", timeout=5000)
    s = win.latency_summary()
    lat32 = lat.astype(np.float32)
    assert s["p50"] == pytest.approx(np.percentile(lat32, 50))
    assert s["p99"] == pytest.approx(np.percentile(lat32, 99))
    assert s["deadline_miss"] == int(miss.sum()) and s["gap_bins"] == 3 and s["skipped"] == 0
    assert f"misses {int(miss.sum())}" in win.hist_plot.titleLabel.text
    assert win.image_item.image.shape[0] == 12  # raster: one row per channel

    zeta = pylsl.StreamOutlet(stream_info(names.zeta, "Zeta", [f"px{i}" for i in range(6 * 4)], 10.0,
                                          desc={"canvas_h": 6, "canvas_w": 4}))
    qtbot.waitUntil(lambda: win.status("zeta") == CONNECTED, timeout=10000)
    frame = rng.random(24).astype(np.float32)
    zeta.push_sample(frame)
    qtbot.waitUntil(lambda: win.image_mode == "zeta", timeout=5000)
    qtbot.waitUntil(lambda: np.array_equal(win.image_item.image, frame.reshape(6, 4)), timeout=2000)
    del stats, spikes, zeta


def _image_stats(path: Path) -> tuple[int, int, float]:
    from pyqtgraph.Qt import QtGui

    img = QtGui.QImage(str(path))
    assert not img.isNull(), f"{path} is not a readable image"
    img = img.convertToFormat(QtGui.QImage.Format.Format_RGB32)
    ptr = img.constBits()
    arr = np.frombuffer(ptr, dtype=np.uint8, count=img.sizeInBytes()).reshape(img.height(), img.bytesPerLine())
    return img.width(), img.height(), float(arr[:, : img.width() * 4].astype(np.float64).var())


def test_screenshot_of_a_live_session_is_not_blank(qtbot, make_window, tmp_path):
    names = unique_names()
    with SyntheticStreams(decoder=names.decoder, truth=names.truth, stats=names.stats, spikes=names.spikes,
                          zeta=names.zeta, seed=5):
        win = make_window(names)
        win.resize(1200, 800)
        qtbot.waitUntil(lambda: all(w.state == CONNECTED for w in win.watchers.values()), timeout=10000)
        qtbot.waitUntil(lambda: npts(win.pred_curves.get("pos_x", win.pred_trail)) > 25, timeout=5000)
        qtbot.wait(600)
        png = tmp_path / "plot.png"
        assert win.grab().save(str(png))
    w, h, var = _image_stats(png)
    assert (w, h) == (1200, 800)
    assert var > 100.0
    assert win.paints.count > 10 and win.frames > 10
    assert win.image_mode == "zeta"
    assert npts(win.truth_curves["vel_y"]) > 25


def test_cli_screenshot_runs_headless_and_exits_zero(tmp_path):
    names = unique_names(zeta=False)
    png = tmp_path / "cli.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    with SyntheticStreams(decoder=names.decoder, truth=names.truth, stats=names.stats, spikes=names.spikes,
                          zeta=None, seed=6):
        r = subprocess.run(
            [sys.executable, "-m", "rt_decoder.cli", "plot", "--decoder", names.decoder, "--truth", names.truth,
             "--stats", names.stats, "--spikes", names.spikes, "--zeta", "", "--screenshot", str(png),
             "--duration", "2.5", "--fps", "--size", "900x600"],
            capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fps:" in r.stdout and f"screenshot: {png}" in r.stdout
    assert f"decoder {names.decoder}: connected" in r.stderr
    w, h, var = _image_stats(png)
    assert (w, h) == (900, 600) and var > 100.0


@pytest.mark.parametrize("argv, message", [
    (["plot", "--window-s", "0"], "--window-s"),
    (["plot", "--screenshot", "/nonexistent-dir/x.png"], "does not exist"),
    (["plot", "--size", "12"], "--size"),
])
def test_cli_bad_flags_are_one_line_errors(argv, message, capsys):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="DISPLAY decides headless on Linux only")
def test_cli_without_display_asks_for_a_screenshot_instead_of_running_invisibly(monkeypatch, capsys):
    for var in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    assert cli_main(["plot", "--decoder", "nobody"]) == 2
    err = capsys.readouterr().err
    assert "no display" in err and "--screenshot" in err
