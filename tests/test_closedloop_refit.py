"""ReFIT intention labels (Gilja et al. 2012) and the block recorder, on hand-made cases."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from rt_decoder.closedloop import streams as S
from rt_decoder.closedloop.recorder import (
    StreamRecorder,
    block_recording,
    load_streams,
    save_streams,
)
from rt_decoder.closedloop.refit import intended_velocity, observation_recording, refit_recording
from rt_decoder.errors import DataError
from rt_decoder.recording import Recording
from rt_decoder.runtime import lsl as L


def test_refit_rotates_toward_target_keeps_speed():
    decoded = np.array([[3.0, 4.0], [0.0, -2.0], [1.0, 1.0]])
    cursor = np.array([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]])
    target = np.array([[8.0, 0.0], [1.0, 9.0], [-2.0, -6.0]])
    y = intended_velocity(decoded, cursor, target, np.full(3, 1.5))
    np.testing.assert_allclose(y, [[5.0, 0.0], [0.0, 2.0], [0.0, -np.sqrt(2)]], atol=1e-12)


def test_refit_zero_inside_target_nan_without_target():
    decoded = np.array([[3.0, 4.0], [3.0, 4.0], [3.0, 4.0], [np.nan, np.nan]])
    cursor = np.array([[7.0, 0.5], [8.0, 1.5], [0.0, 0.0], [0.0, 0.0]])
    target = np.array([[8.0, 0.0], [8.0, 0.0], [np.nan, np.nan], [8.0, 0.0]])
    y = intended_velocity(decoded, cursor, target, np.array([1.5, 1.5, np.nan, 1.5]))
    np.testing.assert_array_equal(y[0], [0.0, 0.0])         # inside: hold still
    np.testing.assert_array_equal(y[1], [0.0, 0.0])         # on the edge counts as inside (|c - t| <= r)
    assert np.isnan(y[2]).all() and np.isnan(y[3]).all()    # no target / no decoded sample: unknown


def _block(decoded_names=("vel_x", "vel_y")) -> Recording:
    T = 4
    pos = np.array([[0.0, 0.0], [1.0, 0.0], [7.5, 0.0], [0.0, 0.0]])
    beh = np.concatenate([pos, np.zeros((T, 2))], axis=1)
    return Recording(counts=np.ones((T, 3), np.int32), bin_s=0.02, behavior=beh,
                     behavior_names=["pos_x", "pos_y", "vel_x", "vel_y"],
                     extra={"decoded": np.array([[0.0, 2.0], [-1.0, 0.0], [1.0, 1.0], [1.0, 0.0]]),
                            "decoded_names": np.array(list(decoded_names)),
                            "target_x": np.array([8.0, 8.0, 8.0, np.nan]), "target_y": np.zeros(T),
                            "target_radius": np.array([1.5, 1.5, 1.5, np.nan])}).validate()


def test_refit_recording_relabels_a_block():
    r = refit_recording(_block())
    assert r.behavior_names == ["vel_x", "vel_y"]
    np.testing.assert_allclose(r.behavior[:3], [[2.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    assert np.isnan(r.behavior[3]).all()
    o = observation_recording(_block())
    assert o.behavior_names == ["vel_x", "vel_y"] and np.all(o.behavior == 0)


def test_refit_needs_a_velocity_decoder():
    with pytest.raises(DataError, match="velocity decoder"):
        refit_recording(_block(decoded_names=("pos_x", "pos_y")))


def test_recorder_bins_like_the_runtime_and_aligns_the_task(tmp_path):
    """Real LSL: spikes at 1 kHz, task state at 100 Hz, markers and a decoder stream, one of them
    appearing late; the block has the right counts per 20 ms bin and the cursor at each bin end."""
    lsl = L.pylsl()
    tag = uuid.uuid4().hex[:8]
    names = {k: f"rec-{tag}-{k}" for k in ("p", "t", "dec")}
    spikes_n, state_n, markers_n = S.spikes_name(names["p"]), S.state_name(names["t"]), S.markers_name(names["t"])
    rec = StreamRecorder([spikes_n, state_n, markers_n, names["dec"]]).start()
    sp = L.make_outlet(spikes_n, "SpikeCounts", [f"ch{i}" for i in range(4)], 1000.0, fmt="int32")
    st = L.make_outlet(state_n, S.STATE_TYPE, S.STATE_LABELS, 100.0, units=S.STATE_UNITS)
    mk = L.make_outlet(markers_n, "Markers", ["marker"], 0.0, fmt="string")
    time.sleep(1.5)  # let the recorder find them
    t0 = lsl.local_clock()
    n_ms = 1000
    # channel c spikes once every (c + 1) ms
    for j in range(n_ms):
        t = t0 + (j + 1) / 1000
        sp.push_sample([int((j + 1) % (c + 1) == 0) for c in range(4)], t)
        if j % 10 == 0:  # cursor moves at 10 cm/s along x; target at (8, 0) from 0.5 s
            state = S.STATE_REACH if j >= 500 else S.STATE_ITI
            tx = 8.0 if j >= 500 else np.nan
            st.push_sample([10.0 * (t - t0), 0.0, tx, 0.0, 1.5 if j >= 500 else np.nan, 1.0 if j >= 500 else 0.0, state], t)
        if j == 500:
            mk.push_sample(["trial_start 1"], t)
    dec = L.make_outlet(names["dec"], "Kinematics", ["vel_x", "vel_y"], 50.0)  # late: after the others
    time.sleep(1.0)
    for k in range(5):
        dec.push_sample([1.0 * k, 0.0], t0 + 0.5 + 0.02 * (k + 1))
    time.sleep(0.5)
    raw = rec.stop()
    assert set(raw) == {spikes_n, state_n, markers_n, names["dec"]}
    save_streams(raw, tmp_path / "streams.npz")
    again = load_streams(tmp_path / "streams.npz")
    assert again[spikes_n].n == n_ms and list(again[markers_n].samples) == ["trial_start 1"]
    b = block_recording(raw, spikes_n, state_n, markers_n, decoder=names["dec"], bin_s=0.02)
    # every whole bin inside the state's span; 20 ms bins: channel c has 20 // (c + 1) spikes
    assert 45 <= b.n_bins <= 50
    assert np.all(b.counts[:, 0] == 20) and np.all(b.counts[:, 1] == 10) and np.all(b.counts[:, 3] == 5)
    np.testing.assert_allclose(b.behavior[:, 2], 10.0, atol=1e-3)  # float32 samples          # vel_x
    np.testing.assert_allclose(b.behavior[:, 0], 10.0 * (b.extra["bin_end"] - t0), atol=1e-4)
    assert b.trial_starts.tolist() == [int(np.searchsorted(b.extra["bin_end"], t0 + 0.501, side="right"))]
    dec_ok = np.isfinite(b.extra["decoded"][:, 0])
    assert dec_ok.sum() == 5
    np.testing.assert_allclose(b.extra["decoded"][dec_ok, 0], [0, 1, 2, 3, 4])
    assert np.isnan(b.extra["target_x"][0]) and b.extra["target_x"][-1] == 8.0


def test_intent_tracking_hand_case():
    from rt_decoder.closedloop.experiment import intent_tracking

    T = 6
    ang = np.radians(np.array([0.0, 90.0, 180.0, 45.0, 0.0, 0.0]))
    intent = 10.0 * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    rot = np.radians(10.0)
    R = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
    decoded = 0.5 * intent @ R.T
    decoded[4:] = [[3.0, 4.0], [0.0, 1.0]]      # two hold bins: speeds 5 and 1
    state = np.array([S.STATE_REACH] * 4 + [S.STATE_HOLD] * 2)
    rec = Recording(counts=np.zeros((T, 2), np.int32), bin_s=0.02, behavior=np.zeros((T, 4)),
                    behavior_names=["pos_x", "pos_y", "vel_x", "vel_y"],
                    extra={"intent": intent, "decoded": decoded, "decoded_names": np.array(["vel_x", "vel_y"]),
                           "task_state": state}).validate()
    t = intent_tracking(rec)
    assert t["reach_bins"] == 4 and t["hold_bins"] == 2
    assert t["reach_speed_ratio"] == pytest.approx(0.5) and t["reach_angle_error_deg"] == pytest.approx(10.0)
    assert t["hold_decoded_speed_cm_s"] == pytest.approx(3.0)


def test_match_speed_maps_quantiles_keeps_direction_zero_and_nan():
    from rt_decoder.closedloop.refit import match_speed

    labels = np.array([[0.0, 0.0], [0.0, 1.0], [-2.0, 0.0], [0.6, 0.8], [np.nan, np.nan], [0.0, 3.0]])
    ref = np.array([[10.0, 0.0], [0.0, 0.0], [0.0, 20.0], [-30.0, 0.0], [0.0, 40.0]])  # moving speeds 10..40
    y = match_speed(labels, ref)
    # moving label speeds 1, 2, 1, 3 -> mid-rank quantiles; 4 reference quantiles (i + 0.5) / 4
    # ranks: 1 (row 1) -> 0, 1 (row 3) -> 1, 2 -> 2, 3 -> 3 (stable argsort keeps row order for ties)
    np.testing.assert_allclose(y[0], [0.0, 0.0])
    np.testing.assert_allclose(y[1], [0.0, 10.0])
    np.testing.assert_allclose(y[2], [-30.0, 0.0])
    np.testing.assert_allclose(y[3], [0.6 * 20.0, 0.8 * 20.0])
    assert np.isnan(y[4]).all()
    np.testing.assert_allclose(y[5], [0.0, 40.0])


def test_refit_training_set_pools_observation_first():
    from rt_decoder.closedloop.refit import refit_training_set

    closed, obs = _block(), _block()
    obs.behavior[:, 2] = [5.0, 4.0, 3.0, 2.0]          # cursor vel_x in the observation block
    obs.trial_starts = np.array([0, 2])
    closed.trial_starts = np.array([1])
    pooled = refit_training_set(closed, obs, speed="keep", data="pooled")
    assert pooled.n_bins == 8 and pooled.trial_starts.tolist() == [0, 2, 5]
    np.testing.assert_allclose(pooled.behavior[:4, 0], [5.0, 4.0, 3.0, 2.0])
    np.testing.assert_allclose(pooled.behavior[4:7], [[2.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    only = refit_training_set(closed, None, speed="keep", data="closed")
    assert only.n_bins == 4
    np.testing.assert_allclose(only.behavior[:3], [[2.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    # observed: the two moving ReFIT labels (speeds 2 and 1) take the observation speeds' quantiles
    obs_sp = refit_training_set(closed, obs, speed="observed", data="closed")
    # sorted observation speeds 2, 3, 4, 5 sit at quantiles 1/8, 3/8, 5/8, 7/8; speed 2 (rank 1 of 2) is
    # quantile 3/4 -> halfway from 4 to 5; speed 1 is quantile 1/4 -> halfway from 2 to 3
    np.testing.assert_allclose(obs_sp.behavior[:3], [[4.5, 0.0], [2.5, 0.0], [0.0, 0.0]])
    with pytest.raises(DataError, match="observation block"):
        refit_training_set(closed, None, speed="keep", data="pooled")
    with pytest.raises(DataError, match="label speed"):
        refit_training_set(closed, obs, speed="fast")
    other = _block()
    other.counts, other.channel_names = np.ones((4, 5), np.int32), None
    with pytest.raises(DataError, match="cannot pool"):
        refit_training_set(closed, other)


def test_speed_gain_and_task_gain_hand_cases():
    from rt_decoder.closedloop.experiment import task_gain
    from rt_decoder.closedloop.refit import speed_gain

    labels = np.array([[3.0, 4.0], [0.0, 10.0], [6.0, 8.0], [0.0, 0.0], [np.nan, np.nan]])   # speeds 5, 10, 10, 0, -
    decoded = np.array([[0.0, 2.0], [4.0, 0.0], [0.0, 8.0], [9.0, 9.0], [1.0, 1.0]])          # speeds 2, 4, 8
    assert speed_gain(labels, decoded) == pytest.approx(10.0 / 4.0)    # medians over moving labels only
    assert speed_gain(np.zeros((3, 2)), decoded[:3]) == 1.0            # nothing moving: no change
    assert task_gain([]) == 1.0 and task_gain(["--gain", "2", "--hold", "0.3", "--gain=1.5"]) == 1.5
    assert task_gain(["--gain", "fast"]) == 1.0                        # the task names a bad value itself
