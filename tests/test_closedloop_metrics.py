"""Closed-loop metrics against hand-computed cases; the marker format; the grid state machine."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rt_decoder.closedloop import metrics as M
from rt_decoder.closedloop import streams as S
from rt_decoder.closedloop.task import TaskConfig, TaskCore, grid_cell, grid_centre, pick_control
from rt_decoder.errors import StreamError


def test_fitts_id_and_itr_by_hand():
    assert M.fitts_id(3.0, 1.0) == pytest.approx(2.0)              # log2((3 + 1) / 1)
    assert M.fitts_id(8.0, 3.0) == pytest.approx(math.log2(11 / 3))
    assert M.fitts_id(0.0, 3.0) == 0.0
    assert M.fitts_itr(3.0, 1.0, 0.5) == pytest.approx(4.0)        # 2 bits in 0.5 s
    assert M.fitts_itr(7.0, 1.0, 1.5) == pytest.approx(2.0)        # log2(8) = 3 bits in 1.5 s
    assert math.isnan(M.fitts_itr(3.0, 1.0, 0.0))
    with pytest.raises(ValueError):
        M.fitts_id(3.0, 0.0)


def test_path_length_and_efficiency_by_hand():
    path = np.array([[0, 0], [3, 0], [3, 4]], dtype=float)          # 3 + 4 = 7 long, 5 straight
    assert M.path_length(path) == pytest.approx(7.0)
    assert M.path_efficiency(path) == pytest.approx(5 / 7)
    straight = np.linspace([0, 0], [6, 8], 11)
    assert M.path_efficiency(straight) == pytest.approx(1.0)
    there_and_back = np.array([[0, 0], [4, 0], [2, 0]], dtype=float)  # 6 long, 2 straight
    assert M.path_efficiency(there_and_back) == pytest.approx(1 / 3)
    assert math.isnan(M.path_efficiency(np.zeros((5, 2))))


def test_achieved_bitrate_by_hand():
    # Nuyujukian et al. 2015: B = log2(N - 1) * max(Sc - Si, 0) / t
    assert M.achieved_bitrate(16, 10, 2, 60.0) == pytest.approx(math.log2(15) * 8 / 60)
    assert M.achieved_bitrate(9, 20, 0, 10.0) == pytest.approx(3 * 20 / 10)   # log2(8) = 3
    assert M.achieved_bitrate(16, 2, 5, 60.0) == 0.0                          # more wrong than right
    assert M.achieved_bitrate(2, 5, 0, 1.0) == 0.0                             # 2 targets: log2(1) = 0
    with pytest.raises(ValueError):
        M.achieved_bitrate(1, 1, 0, 1.0)


def test_entries_success_rate_dial_in():
    inside = np.array([0, 1, 1, 0, 1, 0, 0, 1], dtype=bool)
    assert M.target_entries(inside) == 3
    assert M.target_entries(np.array([1, 1, 0, 1], dtype=bool)) == 2  # inside at the start counts
    t = np.arange(8) * 0.1
    np.testing.assert_allclose(M.entry_times(t, inside), [0.1, 0.4, 0.7])
    assert M.dial_in_time(0.1, 0.7) == pytest.approx(0.6)
    assert M.success_rate(["success", "timeout", "success", "wrong"]) == 0.5
    assert math.isnan(M.success_rate([]))


def test_trial_record_by_hand():
    # target at (10, 0), radius 1 (W = 2); cursor samples every 0.1 s from target on at t = 5:
    # out to x = 9.5 (inside) at 5.2, overshoot to 11.5 (outside) at 5.3, back to 10 at 5.4, success at 5.9
    t = np.array([5.0, 5.1, 5.2, 5.3, 5.4, 5.5, 5.6, 5.7, 5.8, 5.9])
    x = np.array([0.0, 5.0, 9.5, 11.5, 10.0, 10, 10, 10, 10, 10])
    xy = np.stack([x, np.zeros_like(x)], axis=1)
    r = M.trial_record(3, t, xy, (10.0, 0.0), 1.0, "success", end_time=5.9, acquired_time=5.4)
    assert r.entries == 2
    assert r.dial_in_s == pytest.approx(0.2)                   # 5.2 -> 5.4
    assert r.time_to_target_s == pytest.approx(0.9)            # hold included
    assert r.path_length_cm == pytest.approx(11.5 + 1.5)       # up to the final acquisition
    assert r.path_efficiency == pytest.approx(10 / 13)
    assert r.fitts_id_bits == pytest.approx(math.log2(12 / 2))  # D = 10, W = 2
    assert r.fitts_itr_bps == pytest.approx(math.log2(6) / 0.9)
    timeout = M.trial_record(4, t, xy * 0, (10.0, 0.0), 1.0, "timeout", end_time=5.9)
    assert timeout.entries == 0 and math.isnan(timeout.time_to_target_s) and math.isnan(timeout.path_efficiency)


def test_block_summary_by_hand():
    def rec(outcome, ttt, eff, ident):
        return M.TrialRecord(1, 0, 0, 1, 0, 1, outcome, ttt, 1, eff, 0.0, 1, ident, ident / ttt if ttt == ttt else math.nan)

    recs = [rec("success", 1.0, 0.9, 2.0), rec("success", 2.0, 0.7, 3.0), rec("timeout", math.nan, math.nan, 2.5)]
    s = M.block_summary(recs, block_time_s=10.0)
    assert s["trials"] == 3 and s["success_rate"] == pytest.approx(2 / 3)
    assert s["time_to_target_s"] == pytest.approx(1.5)
    assert s["path_efficiency"] == pytest.approx(0.8)
    assert s["fitts_itr_bps"] == pytest.approx((2.0 + 1.5) / 2)
    assert s["bitrate_bps"] == pytest.approx((2.0 + 3.0) / 10.0)   # successful bits / block time
    g = M.block_summary(recs + [rec("wrong", math.nan, math.nan, 1.0)], block_time_s=10.0, grid_targets=25)
    assert g["bitrate_bps"] == g["achieved_bitrate_bps"] == pytest.approx(math.log2(24) * (2 - 1) / 10.0)
    for key in ("trials", "success_rate", "time_to_target_s", "path_efficiency", "bitrate_bps"):
        assert key in s and key in g


def test_markers_format_and_parse():
    m = S.format_marker("target_on", 3, 8.0, -0.5, 1.5)
    assert m == "target_on 3 8 -0.5 1.5"
    p = S.parse_marker(m)
    assert p.event == "target_on" and p.trial == 3 and p.args == {"trial": 3, "x": 8.0, "y": -0.5, "r": 1.5}
    assert S.parse_marker("block_start center-out closed").args == {"task": "center-out", "mode": "closed"}
    assert S.parse_marker("block_end 40").args == {"n_trials": 40}
    assert S.parse_marker("replay_start").event == "replay_start"   # unknown events parse too
    with pytest.raises(ValueError):
        S.format_marker("success")
    with pytest.raises(ValueError):
        S.parse_marker("acquired")
    with pytest.raises(ValueError):
        S.format_marker("launch", 1)


def test_pick_control_prefers_velocity_and_names_what_it_saw():
    assert pick_control(["pos_x", "pos_y", "vel_x", "vel_y"]) == ("velocity", [2, 3])
    assert pick_control(["pos_y", "pos_x"]) == ("position", [1, 0])
    with pytest.raises(StreamError, match="y0, y1"):
        pick_control(["y0", "y1"])


def test_grid_core_wrong_selection_and_blocked_start_cell():
    cfg = TaskConfig(task="grid", grid=3, workspace=3.0, hold_s=0.2, timeout_s=5, iti_s=0.0, n_trials=2, seed=1)
    assert grid_cell(cfg, np.array([-2.5, 2.5])) == 0 and grid_cell(cfg, np.array([2.5, -2.5])) == 8
    assert grid_centre(cfg, 4) == (0.0, 0.0)
    core = TaskCore(cfg)
    core.begin(0.0)
    t = 0.0
    markers: list[str] = []
    wrong_cell = None
    for _ in range(200):  # trial 1: sit in the starting cell (not selectable), then hold in a wrong cell
        t = round(t + 0.01, 9)
        if core.target is not None and core.trial == 1 and t > 0.5:
            cued = core.target.cell
            wrong_cell = next(c for c in range(9) if c not in (cued, 4))
            where = grid_centre(cfg, wrong_cell)
        elif core.target is not None and core.trial == 2:
            where = (core.target.x, core.target.y)
        else:
            where = (0.0, 0.0)
        markers += core.step(np.array(where), t)
        if core.finished:
            break
    outcomes = [r.outcome for r in core.records]
    assert outcomes == ["wrong", "success"]
    assert core.records[0].selected == wrong_cell != core.records[0].cued
    # nothing was selected while the cursor sat in its starting cell for 0.5 s (> hold)
    assert core.records[0].end_time == pytest.approx(0.51 + 0.2, abs=1e-6)
    assert [m.split()[0] for m in markers].count("wrong") == 1
