"""The cursor task over real LSL on loopback: scripted decoders drive it, a subscriber checks the markers.

Each test runs `rt-decoder task` in-process (headless, short hold/timeout) against a decoder thread
that publishes a Kinematics stream computed from the task's own `<t>-state`, as a real decoder
fed by a participant would.
"""

from __future__ import annotations

import math
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from rt_decoder.cli import main as cli_main
from rt_decoder.closedloop import streams as S
from rt_decoder.closedloop.task import TaskConfig, TaskCore, read_trials_csv
from rt_decoder.runtime import lsl as L

pytestmark = pytest.mark.lsl

QUICK = ["--hold-ms", "100", "--timeout-s", "3", "--iti-ms", "50", "--wait", "10", "--lead-s", "1.5", "--headless",
         "--priority", "normal"]  # in-process: the pytest thread must not stay SCHED_FIFO


def unique(prefix: str) -> str:
    return f"test-cl-{prefix}-{uuid.uuid4().hex[:8]}"


class ScriptedDecoder(threading.Thread):
    """A stand-in decoder: publishes `labels` at `rate` Hz, computed from the latest `<task>-state`.

    kind "velocity": straight toward the target (speed-limited, slowing inside 1 cm);
    "position": the cursor one step closer to the target; "still": zeros."""

    def __init__(self, name: str, task: str, kind: str = "velocity", labels: tuple[str, ...] = ("vel_x", "vel_y"),
                 rate: float = 50.0, speed: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.kind, self.task, self.rate, self.speed = kind, task, rate, speed
        self.outlet = L.make_outlet(name, "Kinematics", list(labels), rate, units=["cm/s"] * len(labels))
        self.stop_ev = threading.Event()

    def command(self, s: np.ndarray | None) -> list[float]:
        if s is None or self.kind == "still" or not np.isfinite(s[S.TARGET_X]):
            if self.kind == "position" and s is not None:
                return [float(s[S.CURSOR_X]), float(s[S.CURSOR_Y])]
            return [0.0, 0.0]
        c = np.array([s[S.CURSOR_X], s[S.CURSOR_Y]])
        d = np.array([s[S.TARGET_X], s[S.TARGET_Y]]) - c
        dist = float(np.hypot(*d))
        if self.kind == "position":
            step = min(dist, self.speed / self.rate)
            return list(c + (d / dist * step if dist > 0 else 0.0))
        v = d / dist * min(self.speed, dist / 0.1) if dist > 1e-9 else d * 0
        return [float(v[0]), float(v[1])]

    def run(self) -> None:
        lsl = L.pylsl()
        inlet = None
        last = None
        period = 1.0 / self.rate
        t0 = lsl.local_clock()
        k = 0
        while not self.stop_ev.is_set():
            if inlet is None:
                found = lsl.resolve_bypred(f"name='{S.state_name(self.task)}'", 1, 0.05)
                if found:
                    inlet = lsl.StreamInlet(found[0])
            else:
                data, ts = inlet.pull_chunk(timeout=0.0)
                if ts:
                    last = np.asarray(data[-1], dtype=np.float64)
            k += 1
            self.outlet.push_sample(self.command(last), lsl.local_clock())
            wait = t0 + k * period - lsl.local_clock()
            if wait > 0:
                self.stop_ev.wait(wait)

    def close(self) -> None:
        self.stop_ev.set()
        self.join(timeout=5)


class StreamLog(threading.Thread):
    """Subscribes to one of the task's streams and keeps (timestamp, sample) until the block ends
    (marker block_end, or state code 3); `info` is the stream's full info (desc included)."""

    def __init__(self, name: str) -> None:
        super().__init__(daemon=True)
        self.name = name
        self.got: list[tuple[float, list]] = []
        self.info = None

    def run(self) -> None:
        lsl = L.pylsl()
        found = []
        for _ in range(300):
            found = lsl.resolve_bypred(f"name='{self.name}'", 1, 0.1)
            if found:
                break
        if not found:
            return
        inlet = lsl.StreamInlet(found[0], processing_flags=0)
        self.info = inlet.info(timeout=5)
        inlet.open_stream(timeout=5)
        while True:
            s, t = inlet.pull_sample(timeout=30)
            if s is None:
                return
            self.got.append((t, s))
            if (isinstance(s[0], str) and s[0].startswith("block_end")) or (len(s) == 7 and s[S.STATE] == S.STATE_DONE):
                return

    @property
    def markers(self) -> list[tuple[float, str]]:
        return [(t, s[0]) for t, s in self.got]


def run_task(tmp_path: Path, decoder_kind: str | None, args: list[str], labels=("vel_x", "vel_y")):
    task, dec = unique("task"), unique("dec")
    decoder = ScriptedDecoder(dec, task, decoder_kind, labels) if decoder_kind else None
    if decoder:
        decoder.start()
    log, state = StreamLog(S.markers_name(task)), StreamLog(S.state_name(task))
    log.start()
    state.start()
    try:
        rc = cli_main(["task", "--name", task, "--decoder", dec, "--out", str(tmp_path), *QUICK, *args])
    finally:
        if decoder:
            decoder.close()
    log.join(timeout=10)
    state.join(timeout=10)
    log.state = state
    return rc, log


def check_marker_order(markers: list[str], n_trials: int) -> list[tuple[int, str]]:
    """The grammar of CLOSEDLOOP.md: block_start, then per trial trial_start n, target_on n ...,
    (acquired n | hold_broken n)* in alternation, success n | timeout n; block_end N. Returns
    [(trial, outcome)]."""
    parsed = [S.parse_marker(m) for m in markers]
    assert parsed[0].event == "block_start"
    assert parsed[-1].event == "block_end" and parsed[-1].args["n_trials"] == n_trials
    outcomes = []
    i, n = 1, 0
    while i < len(parsed) - 1:
        n += 1
        assert (parsed[i].event, parsed[i].trial) == ("trial_start", n), markers[i]
        assert (parsed[i + 1].event, parsed[i + 1].trial) == ("target_on", n), markers[i + 1]
        i += 2
        holding = False
        while parsed[i].event in ("acquired", "hold_broken"):
            assert parsed[i].trial == n
            assert parsed[i].event == ("hold_broken" if holding else "acquired"), markers[i]
            holding = not holding
            i += 1
        assert parsed[i].event in S.TRIAL_OUTCOMES and parsed[i].trial == n, markers[i]
        if parsed[i].event == "success":
            assert holding  # a success ends a hold
        outcomes.append((n, parsed[i].event))
        i += 1
    assert n == n_trials
    return outcomes


def check_csv_matches_markers(rows: list[dict], got: list[tuple[float, str]]) -> None:
    assert got
    by_trial: dict[int, dict] = {}
    for t, m in got:
        p = S.parse_marker(m)
        if p.trial is not None:
            d = by_trial.setdefault(p.trial, {})
            d[p.event] = (t, p)
    assert [r["trial"] for r in rows] == sorted(by_trial)
    for r in rows:
        d = by_trial[r["trial"]]
        t_on, on = d["target_on"]
        assert r["target_x"] == pytest.approx(on.args["x"], abs=1e-4)
        assert r["target_y"] == pytest.approx(on.args["y"], abs=1e-4)
        assert r["target_radius"] == pytest.approx(on.args["r"], abs=1e-4)
        assert r["start_time"] == pytest.approx(t_on, abs=1e-5)
        assert r["outcome"] in d
        assert r["end_time"] == pytest.approx(d[r["outcome"]][0], abs=1e-5)


def test_scripted_velocity_decoder_acquires_every_target_straight(tmp_path):
    rc, log = run_task(tmp_path, "velocity", ["--trials", "6"])
    assert rc == 0
    rows = read_trials_csv(tmp_path / "trials.csv")
    assert len(rows) == 6
    assert [r["outcome"] for r in rows] == ["success"] * 6
    assert all(r["path_efficiency"] > 0.9 for r in rows)
    # center-out: odd trials go out to the ring (8 cm), even trials come back to the centre
    assert all(math.hypot(r["target_x"], r["target_y"]) == pytest.approx(8.0) for r in rows[::2])
    assert all(math.hypot(r["target_x"], r["target_y"]) == pytest.approx(0.0, abs=1e-6) for r in rows[1::2])
    assert all(r["time_to_target_s"] >= 0.1 for r in rows)  # the hold is included
    import json

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["trials"] == 6 and summary["success_rate"] == 1.0
    assert summary["path_efficiency"] > 0.9
    for key in ("time_to_target_s", "bitrate_bps", "fitts_itr_bps", "dial_in_s", "orbiting"):
        assert summary[key] is not None and summary[key] >= 0
    assert summary["settings"]["control"] == "velocity"
    # the drift-free clock: one update per period over the block (missed periods are counted, not bunched)
    assert summary["updates"] + summary["late_updates_skipped"] == pytest.approx(summary["block_time_s"] * 100, rel=0.1)
    lat = summary["update_latency"]
    assert lat["n"] > 0 and 0 <= lat["p50_ms"] <= lat["p99_ms"] < 1000
    # the markers arrived in order, and trials.csv says what they say
    outcomes = check_marker_order([m for _, m in log.markers], 6)
    assert outcomes == [(i + 1, "success") for i in range(6)]
    check_csv_matches_markers(rows, log.markers)


def test_decoder_that_never_moves_times_out(tmp_path):
    rc, log = run_task(tmp_path, "still", ["--trials", "2", "--timeout-s", "0.6"])
    assert rc == 0
    rows = read_trials_csv(tmp_path / "trials.csv")
    assert [r["outcome"] for r in rows] == ["timeout", "timeout"]
    assert all(r["end_time"] - r["start_time"] == pytest.approx(0.6, abs=0.05) for r in rows)
    assert all(math.isnan(r["time_to_target_s"]) and r["path_length_cm"] == 0 for r in rows)
    assert check_marker_order([m for _, m in log.markers], 2) == [(1, "timeout"), (2, "timeout")]
    check_csv_matches_markers(rows, log.markers)
    # <t>-state as CLOSEDLOOP.md says: labels, units, desc; NaN target in the ITI; last sample "done"
    info = log.state.info
    assert info.type() == S.STATE_TYPE and info.nominal_srate() == 100 and info.channel_count() == 7
    assert L.desc_labels(info) == S.STATE_LABELS
    assert L.desc_value(info, "control") == "velocity" and L.desc_value(info, "mode") == "closed"
    x = np.array([s for _, s in log.state.got], dtype=np.float64)
    assert x[-1, S.STATE] == S.STATE_DONE
    iti = x[:, S.STATE] == S.STATE_ITI
    assert iti.any() and np.isnan(x[iti, S.TARGET_X:S.TARGET_RADIUS + 1]).all()
    shown = x[:, S.STATE] == S.STATE_REACH
    for n, r in zip((1, 2), rows):  # the target on the state stream is the trial's target
        rows_n = x[shown & (x[:, S.TRIAL] == n)]
        assert len(rows_n) > 0.5 * 0.6 * 100  # the 0.6 s trial at 100 Hz, generously
        np.testing.assert_allclose(rows_n[:, S.TARGET_X], r["target_x"], atol=1e-4)
        np.testing.assert_allclose(rows_n[:, S.TARGET_Y], r["target_y"], atol=1e-4)
    ts = np.array([t for t, _ in log.state.got])
    assert np.median(np.diff(ts)) == pytest.approx(0.01, abs=0.003)  # updates at --rate


def test_position_control_decoder(tmp_path, capsys):
    rc, log = run_task(tmp_path, "position", ["--trials", "4", "--task", "random", "--seed", "3"], labels=("pos_x", "pos_y"))
    assert rc == 0
    assert "position control from pos_x, pos_y" in capsys.readouterr().err
    rows = read_trials_csv(tmp_path / "trials.csv")
    assert [r["outcome"] for r in rows] == ["success"] * 4
    assert all(r["path_efficiency"] > 0.9 for r in rows)
    check_csv_matches_markers(rows, log.markers)


def test_grid_selections_give_achieved_bitrate(tmp_path):
    rc, log = run_task(tmp_path, "velocity", ["--trials", "4", "--task", "grid", "--grid", "4", "--hold-ms", "400"])
    assert rc == 0
    rows = read_trials_csv(tmp_path / "trials.csv")
    assert [r["outcome"] for r in rows] == ["success"] * 4
    assert all(r["selected"] == r["cued"] >= 0 for r in rows)
    import json

    s = json.loads((tmp_path / "summary.json").read_text())
    # Nuyujukian 2015: log2(16 - 1) * 4 correct / block time
    assert s["bitrate_bps"] == pytest.approx(math.log2(15) * 4 / s["block_time_s"])


def test_missing_decoder_stream_is_one_line_after_the_wait(capsys):
    name = unique("nodec")
    rc = cli_main(["task", "--headless", "--priority", "normal", "--decoder", name, "--wait", "0.5", "--name", unique("t")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert "waiting up to 0.5 s" in err[0] and name in err[0]
    assert err[1].startswith("rt-decoder task: error: ") and name in err[1] and "after waiting 0.5 s" in err[1]


def test_kinematics_without_position_or_velocity_names_is_a_clear_error(capsys):
    dec = unique("dec")
    outlet = L.make_outlet(dec, "Kinematics", ["y0", "y1"], 50.0)  # noqa: F841 - keep it alive
    rc = cli_main(["task", "--headless", "--priority", "normal", "--decoder", dec, "--wait", "5", "--name", unique("t")])
    assert rc == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("rt-decoder task: error: ") and dec in last
    assert "y0, y1" in last and "vel_x/vel_y" in last and "pos_x/pos_y" in last


# ---------------------------------------------------------------- the state machine, no LSL

def drive(core: TaskCore, path_fn, t_end: float, dt: float = 0.01) -> list[str]:
    out = core.begin(0.0)
    t = 0.0
    while t < t_end and not core.finished:
        t = round(t + dt, 9)
        out += core.step(np.asarray(path_fn(t, core)), t)
    return out


def test_core_hold_broken_then_success_counts_entries_and_dial_in():
    cfg = TaskConfig(task="center-out", hold_s=0.2, timeout_s=5, iti_s=0.1, n_trials=1)
    core = TaskCore(cfg)

    def path(t, c):  # enter at t=0.5, leave at 0.6, re-enter at 0.8 and stay
        if c.target is None or t < 0.5:
            return (0.0, 0.0)
        tx, ty = c.target.x, c.target.y
        return (tx, ty) if (t < 0.6 or t >= 0.8) else (tx * 0.5, ty * 0.5)

    markers = drive(core, path, 3.0)
    events = [m.split()[0] for m in markers]
    assert events == ["block_start", "trial_start", "target_on", "acquired", "hold_broken", "acquired", "success"]
    r = core.records[0]
    assert r.outcome == "success" and r.entries == 2
    assert r.dial_in_s == pytest.approx(0.3, abs=1e-6)          # 0.5 first entry -> 0.8 final
    assert r.time_to_target_s == pytest.approx(0.9, abs=1e-6)   # target on at 0.1, success at 1.0 (hold included)
    # path from target on: 8 cm jump (efficiency 1 up to the first entry) ... out 4 cm, back 4 cm: 8 / 16
    assert r.path_efficiency == pytest.approx(0.5)


# ---------------------------------------------------------------- the window (offscreen Qt)

@pytest.fixture
def qt_ok():
    pytest.importorskip("pytestqt")
    from rt_decoder.plot.window import qt_problem

    if qt_problem():  # would abort the whole pytest process, not just fail
        pytest.skip(qt_problem())


def test_window_shows_target_and_cursor_counts_trials_and_publishes_the_pointer(qt_ok, qtbot):
    from pyqtgraph.Qt import QtCore

    from rt_decoder.closedloop.task import RunnerSettings, TaskRunner
    from rt_decoder.closedloop.task_window import HOLD_COLOR, REACH_COLOR, TaskWindow

    cfg = TaskConfig(mode="observe", hold_s=0.15, iti_s=0.05, n_trials=2, reach_s=0.4)
    runner = TaskRunner(cfg, RunnerSettings(name=unique("win"), lead_s=0.3), log=lambda s: None)
    win = TaskWindow(cfg.workspace, 0, runner.set.name)
    qtbot.addWidget(win)
    win.show()
    lsl = L.pylsl()
    found = lsl.resolve_bypred(f"name='{S.pointer_name(runner.set.name)}'", 1, 5.0)
    assert found and found[0].type() == S.POINTER_TYPE and found[0].channel_count() == 2
    pointer = lsl.StreamInlet(found[0])
    pointer.open_stream(timeout=5)
    # the mouse at workspace (3, -2) cm
    win._mouse_moved(win.plot.getViewBox().mapViewToScene(QtCore.QPointF(3.0, -2.0)))
    win.attach(runner)
    colours = set()

    def target_drawn() -> bool:
        s = win._drawn
        if s is None or s.target is None or not win.target.isVisible():
            return False
        c = win.target.rect().center()
        assert (c.x(), c.y()) == pytest.approx((s.target.x, s.target.y), abs=1e-6)
        assert win.target.rect().width() == pytest.approx(2 * s.target.radius)
        assert (win.cursor.pos().x(), win.cursor.pos().y()) == pytest.approx(s.cursor, abs=1e-6)
        colours.add(win.target.brush().color().getRgb()[:3])
        return HOLD_COLOR in colours

    qtbot.waitUntil(target_drawn, timeout=10000)
    assert REACH_COLOR in colours  # amber while reaching, then green while holding
    qtbot.waitUntil(lambda: not win.running, timeout=10000)
    qtbot.waitUntil(lambda: "success 2/2 (100%)" in win.status.text(), timeout=5000)
    assert "trial 2" in win.status.text() and "block done" in win.status.text()
    data, _ = pointer.pull_chunk(timeout=1.0)
    assert len(data) > 0 and data[-1] == pytest.approx([3.0, -2.0], abs=1e-3)
    win.finish()


def test_grid_window_marks_a_hold_in_the_wrong_cell(qt_ok, qtbot):
    from rt_decoder.closedloop.task import Snapshot, Target
    from rt_decoder.closedloop.task_window import REACH_COLOR, TaskWindow

    win = TaskWindow(3.0, grid=3, pointer=False)
    qtbot.addWidget(win)
    cued = Target(2.0, 2.0, 1.0, cell=2)
    win.show_snapshot(Snapshot((-2.0, -2.0), cued, S.STATE_HOLD, 1, 0, 0, "", 3, 3.0))  # holding in cell 6
    assert win.target.isVisible() and win.held.isVisible()
    assert win.target.brush().color().getRgb()[:3] == REACH_COLOR
    r = win.held.mapRectToParent(win.held.rect())
    assert (r.center().x(), r.center().y()) == pytest.approx((-2.0, -2.0))
    win.show_snapshot(Snapshot((2.0, 2.0), cued, S.STATE_HOLD, 1, 0, 0, "", 3, 3.0))   # in the cued cell
    assert not win.held.isVisible()


@pytest.mark.parametrize("args, what", [(["--trials", "0"], "--trials 0"), (["--grid", "1", "--task", "grid"], "--grid 1"),
                                        (["--ring-radius", "11"], "does not fit"), (["--rate", "0"], "--rate 0")])
def test_bad_settings_are_one_line(capsys, args, what):
    rc = cli_main(["task", "--headless", "--priority", "normal", "--wait", "0.1", "--name", unique("t"), *args])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rt-decoder task: error: ") and what in err[0]


def test_minimum_jerk_reach_starts_and_ends_at_rest():
    from rt_decoder.closedloop.task import minimum_jerk

    p0, p1 = np.array([0.0, 0.0]), np.array([8.0, -4.0])
    np.testing.assert_allclose(minimum_jerk(p0, p1, 0.0), p0)
    np.testing.assert_allclose(minimum_jerk(p0, p1, 0.5), (p0 + p1) / 2)   # symmetric profile
    np.testing.assert_allclose(minimum_jerk(p0, p1, 1.0), p1)
    np.testing.assert_allclose(minimum_jerk(p0, p1, 3.0), p1)             # holds at the target
    h = 1e-4
    assert np.hypot(*(minimum_jerk(p0, p1, h) - p0)) / h < 1e-6          # zero velocity at the ends
    assert np.hypot(*(p1 - minimum_jerk(p0, p1, 1 - h))) / h < 1e-6
    # peak speed 1.875 * distance / duration at the midpoint (Flash & Hogan 1985)
    v = np.hypot(*(minimum_jerk(p0, p1, 0.5 + h) - minimum_jerk(p0, p1, 0.5 - h))) / (2 * h)
    assert v == pytest.approx(1.875 * np.hypot(8, 4), rel=1e-6)
