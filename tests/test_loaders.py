"""Loaders: each format on the real files (skipped when ../shared/data is absent), round trips
through NWB and XDF files written here, and the re-binning / event-binning rules."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, data_file

from rt_decoder.errors import DataError
from rt_decoder.events import bin_events
from rt_decoder.loaders import load_recording
from rt_decoder.recording import Recording, save_npz
from rt_decoder.simulate import simulate_session

sys.path.insert(0, str(ROOT / "tools"))
from write_xdf import Stream, recording_streams, write_xdf  # noqa: E402

realdata = pytest.mark.realdata


# ---------------------------------------------------------------- real files


@realdata
def test_chestek_course_mat():
    rec = load_recording(data_file("chestek_contdata95", "contdata95.mat"))
    assert rec.counts.shape == (31413, 95)
    assert rec.bin_s == 0.05
    assert rec.behavior.shape == (31413, 4)
    assert rec.behavior_names == ["pos_x", "pos_y", "vel_x", "vel_y"]
    assert rec.counts.dtype == np.int32 and rec.counts.min() == 0
    assert rec.counts.mean() == pytest.approx(1.28, abs=0.01)
    # trials of about 22 bins, found from the velocity resets
    assert 1400 < len(rec.trial_starts) < 1500 and rec.trial_starts[0] == 0
    assert 20 <= np.median(np.diff(rec.trial_starts)) <= 24


@realdata
def test_chestek_rebinned_to_100ms():
    path = data_file("chestek_contdata95", "contdata95.mat")
    native = load_recording(path)
    rec = load_recording(path, bin_ms=100)
    assert rec.counts.shape == (31413 // 2, 95) and rec.bin_s == pytest.approx(0.1)
    np.testing.assert_array_equal(rec.counts[:10], native.counts[:20].reshape(10, 2, 95).sum(1))
    with pytest.raises(DataError, match="contdata95.mat: cannot re-bin 50 ms bins to 70 ms"):
        load_recording(path, bin_ms=70)


@realdata
def test_limblab_binned_data():
    rec = load_recording(data_file("limblab_nick_co", "Nick_CO_001-01-binned.mat"))
    assert rec.counts.shape == (11880, 97)
    assert rec.bin_s == pytest.approx(0.05, abs=1e-9)
    assert rec.behavior_names == ["pos_x", "pos_y", "vel_x", "vel_y"]
    assert rec.channel_names[:2] == ["ee01u1", "ee01u2"]
    # about 20 Hz per unit, so the Hz -> counts conversion used the right bin width
    assert 15 < rec.counts.mean() / rec.bin_s < 25
    assert len(rec.trial_starts) == 178 and rec.trial_starts[0] > 0
    import scipy.io

    b = scipy.io.loadmat(data_file("limblab_nick_co", "Nick_CO_001-01-binned.mat"), squeeze_me=True,
                         struct_as_record=False)["binnedData"]
    np.testing.assert_array_equal(rec.counts, np.round(b.spikeratedata * 0.05))
    np.testing.assert_allclose(rec.behavior[:, 2:], b.velocbin[:, :2], rtol=1e-6)


def test_limblab_binned_data_under_another_variable_name(tmp_path):
    """limblab also saves the struct as e.g. `train_data` (Jango_20141203_default_offline_data.mat,
    limblab/bmi): it is found by its fields, not its name."""
    import scipy.io

    src = data_file("limblab_nick_co", "Nick_CO_001-01-binned.mat")
    struct = scipy.io.loadmat(src)["binnedData"]
    path = tmp_path / "Jango_like.mat"
    scipy.io.savemat(path, {"train_data": struct, "notes": np.array(["offline data"]), "n": 3.0})
    rec, ref = load_recording(path), load_recording(src)
    assert rec.fingerprint() == ref.fingerprint()
    assert rec.behavior_names == ref.behavior_names and rec.channel_names == ref.channel_names
    np.testing.assert_array_equal(rec.trial_starts, ref.trial_starts)
    scipy.io.savemat(path, {"a": struct, "b": struct})
    with pytest.raises(DataError, match="several limblab binnedData structs"):
        load_recording(path)
    scipy.io.savemat(path, {"s": {"x": np.ones(3)}})
    with pytest.raises(DataError, match="found variables"):
        load_recording(path)


@realdata
def test_nlb_tensor_h5():
    path = data_file("mc_maze_small_nlb", "mc_maze_small_full.h5")
    rec = load_recording(path)
    assert rec.counts.shape == (75 * 140, 142)
    assert rec.bin_s == 0.005
    assert rec.behavior_names == ["vel_x", "vel_y"]
    np.testing.assert_array_equal(rec.trial_starts, np.arange(75) * 140)
    rec20 = load_recording(path, bin_ms=20)
    assert rec20.counts.shape == (75 * 35, 142)
    assert rec20.counts.sum() == rec.counts.sum()
    np.testing.assert_array_equal(rec20.trial_starts, np.arange(75) * 35)


@realdata
def test_nlb_test_nwb_spike_times():
    path = data_file("mc_maze_small_nlb", "sub-Jenkins_ses-small_desc-test_ecephys.nwb")
    rec = load_recording(path)  # 20 ms default for spike times
    assert rec.n_channels == 107 and rec.bin_s == 0.02
    assert rec.counts.sum() == 32897  # every spike in the file lands in a bin
    assert rec.behavior is None
    assert len(rec.trial_starts) == 100 and rec.trial_starts[1] == 40  # trials every 0.8 s
    assert rec.duration_s == pytest.approx(79.9, abs=0.03)
    rec5 = load_recording(path, bin_ms=5)
    assert rec5.counts.sum() == 32897 and rec5.n_bins == pytest.approx(4 * rec.n_bins, abs=2)


@realdata
def test_ziv_calcium_folder_and_file():
    folder = data_file("ziv_ca1_calcium_linear_track")
    rec = load_recording(folder)
    assert rec.counts.shape == (18137, 452) and rec.bin_s == 0.05
    assert rec.counts.max() == 1
    assert rec.behavior_names == ["position", "velocity"]
    same = load_recording(folder / "neuronal_activity_mat.mat")
    np.testing.assert_array_equal(same.counts, rec.counts)


@realdata
def test_nelpy_linear_track():
    rec = load_recording(data_file("nelpy_hippocampus", "linear-track"))
    assert rec.n_channels == 31 and rec.bin_s == 0.02
    assert rec.behavior_names == ["pos_x", "pos_y"]
    assert np.isfinite(rec.behavior).all()
    assert 28000 < rec.counts.sum() <= 28829


# ---------------------------------------------------------------- round trips


def test_npz_round_trip_and_content_sniffing(tmp_path):
    rec = simulate_session(minutes=0.2, channels=8, seed=3)
    save_npz(rec, tmp_path / "a.npz")
    (tmp_path / "a.npz").rename(tmp_path / "a.bin")  # the zip magic, not the name, decides
    back = load_recording(tmp_path / "a.bin")
    np.testing.assert_array_equal(back.counts, rec.counts)
    np.testing.assert_allclose(back.behavior, rec.behavior)
    assert back.behavior_names == rec.behavior_names and back.channel_names == rec.channel_names
    np.testing.assert_array_equal(back.trial_starts, rec.trial_starts)


def test_event_npz_bins_at_requested_width(tmp_path):
    np.savez(tmp_path / "ev.npz", spike_times=np.array([0.0, 0.005, 0.019, 0.02, 0.041]),
             spike_channels=np.array([0, 1, 1, 0, 2]))
    rec = load_recording(tmp_path / "ev.npz", bin_ms=20)
    np.testing.assert_array_equal(rec.counts, [[1, 2, 0], [1, 0, 0], [0, 0, 1]])


def _write_nwb(path: Path, rec: Recording, spikes: list[np.ndarray]) -> None:
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.behavior import Position

    nwb = NWBFile("round trip", "rt-decoder-test", datetime(2024, 1, 1, tzinfo=timezone.utc))
    for t in spikes:
        nwb.add_unit(spike_times=t)
    nwb.add_trial_column("target", "target index")
    for k, start in enumerate(rec.trial_starts):
        stop = rec.trial_starts[k + 1] if k + 1 < len(rec.trial_starts) else rec.n_bins
        nwb.add_trial(start_time=start * rec.bin_s, stop_time=stop * rec.bin_s, target=k % 8)
    beh = nwb.create_processing_module("behavior", "kinematics")
    # velocity at 1 kHz, position as a SpatialSeries at 100 Hz: each is sampled at bin centres
    t_fast = np.arange(int(rec.duration_s * 1000)) / 1000.0
    vel = np.stack([np.interp(t_fast, (np.arange(rec.n_bins) + 0.5) * rec.bin_s, rec.behavior[:, j]) for j in (2, 3)], 1)
    beh.add(TimeSeries(name="hand_vel", data=vel, unit="cm/s", timestamps=t_fast))
    pos = Position(name="Position")
    t_pos = np.arange(int(rec.duration_s * 100)) / 100.0
    xy = np.stack([np.interp(t_pos, (np.arange(rec.n_bins) + 0.5) * rec.bin_s, rec.behavior[:, j]) for j in (0, 1)], 1)
    pos.create_spatial_series(name="cursor_pos", data=xy, reference_frame="centre", starting_time=0.0, rate=100.0)
    beh.add(pos)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def test_nwb_round_trip(tmp_path):
    rec = simulate_session(minutes=0.25, channels=6, seed=5)
    rng = np.random.default_rng(0)
    # one spike per count, placed inside its bin, away from the edges
    spikes = [np.sort(np.repeat(np.arange(rec.n_bins), rec.counts[:, d]) + rng.uniform(0.05, 0.95, rec.counts[:, d].sum())) * rec.bin_s
              for d in range(rec.n_channels)]
    path = tmp_path / "session.nwb"
    _write_nwb(path, rec, spikes)
    back = load_recording(path, bin_ms=20)
    assert back.n_channels == 6 and back.bin_s == 0.02
    assert back.behavior_names == ["cursor_pos_x", "cursor_pos_y", "hand_vel_x", "hand_vel_y"]
    n = back.n_bins
    assert rec.n_bins - 2 <= n <= rec.n_bins
    np.testing.assert_array_equal(back.counts, rec.counts[:n])
    np.testing.assert_allclose(back.behavior[:, :2], rec.behavior[:n, :2], atol=0.2)
    np.testing.assert_allclose(back.behavior[:, 2:], rec.behavior[:n, 2:], atol=1.0)
    np.testing.assert_array_equal(back.trial_starts, rec.trial_starts[rec.trial_starts < n])
    coarse = load_recording(path, bin_ms=60)
    assert coarse.counts.sum() == pytest.approx(rec.counts.sum(), rel=0.02)


@pytest.mark.parametrize("fmt", ["counts", "events"])
def test_xdf_round_trip(tmp_path, fmt):
    rec = simulate_session(minutes=0.25, channels=12, seed=7)
    path = write_xdf(tmp_path / f"{fmt}.xdf", recording_streams(rec, fmt, "sim", t0=1200.0))
    back = load_recording(path)
    assert back.bin_s == pytest.approx(0.02)
    np.testing.assert_array_equal(back.counts, rec.counts)
    assert back.channel_names == rec.channel_names
    assert back.behavior_names == rec.behavior_names
    np.testing.assert_allclose(back.behavior, rec.behavior, atol=1e-3)  # float32 on the wire
    np.testing.assert_array_equal(back.trial_starts, rec.trial_starts)
    coarse = load_recording(path, bin_ms=60)  # events bin on the clock's 60 ms grid: 1200 s is on it
    np.testing.assert_array_equal(coarse.counts[: rec.n_bins // 3], rec.rebin(3).counts)


def test_xdf_counts_stream_keeps_lost_samples_as_empty_bins(tmp_path):
    counts = np.arange(1, 21, dtype=np.int32).reshape(10, 2)
    ends = 5.0 + 0.01 * (np.arange(10) + 1)
    keep = np.r_[0:4, 6:10]  # samples 4 and 5 never arrived
    s = Stream("gap", "SpikeCounts", counts[keep], ends[keep], "int32", 100.0, ["a", "b"])
    path = write_xdf(tmp_path / "gap.xdf", [s])
    rec = load_recording(path)
    expected = counts.copy()
    expected[4:6] = 0
    np.testing.assert_array_equal(rec.counts, expected)
    assert int(rec.extra["missing_bins"]) == 2


def test_xdf_prefers_ground_truth_over_decoder_output(tmp_path):
    rec = simulate_session(minutes=0.1, channels=4, seed=2)
    streams = recording_streams(rec, "counts", "sim")
    truth = streams[1]
    decoded = Stream("rt-decoder", "Kinematics", np.zeros_like(truth.samples), truth.timestamps, "float32",
                     truth.nominal_srate, truth.labels)
    path = write_xdf(tmp_path / "both.xdf", [streams[0], decoded, truth])
    back = load_recording(path)
    np.testing.assert_allclose(back.behavior, rec.behavior, atol=1e-3)


# ---------------------------------------------------------------- binning rules


def test_rebin_sums_counts_and_averages_behaviour():
    counts = np.arange(14, dtype=np.int32).reshape(7, 2)
    rec = Recording(counts=counts, bin_s=0.01, behavior=np.arange(7.0)[:, None],
                    trial_starts=np.array([0, 3, 5])).validate()
    out = rec.rebin(3)
    np.testing.assert_array_equal(out.counts, [[0 + 2 + 4, 1 + 3 + 5], [6 + 8 + 10, 7 + 9 + 11]])  # ragged tail dropped
    np.testing.assert_allclose(out.behavior[:, 0], [1.0, 4.0])
    np.testing.assert_array_equal(out.trial_starts, [0, 1])
    assert out.bin_s == pytest.approx(0.03)


def test_bin_events_edges_belong_to_the_later_bin():
    rec = bin_events(np.array([0.0, 0.0999999, 0.1, 0.25, 0.35]), np.array([0, 0, 0, 1, 1]), 0.1, t_start=0.0)
    np.testing.assert_array_equal(rec.counts, [[2, 0], [1, 0], [0, 1], [0, 1]])


def test_bin_events_conserves_spikes_at_any_width():
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0, 10, 5000))
    ch = rng.integers(0, 7, t.size)
    for width in (0.001, 0.005, 0.02, 0.1, 0.37):
        rec = bin_events(t, ch, width, n_channels=7)
        assert rec.counts.sum() == t.size
        np.testing.assert_array_equal(rec.counts.sum(0), np.bincount(ch, minlength=7))


def test_behaviour_sampling_bridges_lost_samples_and_tolerates_edge_noise():
    from rt_decoder.events import sample_at

    t = np.array([0.0, 1.0, 2.0, 3.0])
    v = np.array([[0.0, 10.0], [np.nan, 11.0], [2.0, 12.0], [3.0, 13.0]])
    out = sample_at(t, v, np.array([-0.1, -1e-12, 0.5, 1.0, 3.0 + 1e-12, 3.5]), tol=0.01)
    np.testing.assert_allclose(out[:, 0], [np.nan, 0.0, 0.5, 1.0, 3.0, np.nan])
    np.testing.assert_allclose(out[:, 1], [np.nan, 10.0, 10.5, 11.0, 13.0, np.nan])
