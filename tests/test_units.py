"""Units of the kinematics travel from every loader through the .npz, the model cards, the LSL
channel descriptions (<unit>, what LabRecorder keeps) and evaluate's table."""

from __future__ import annotations

import uuid

import numpy as np
import pylsl
import pytest
from conftest import data_file

from rt_decoder.baselines import fit_baselines
from rt_decoder.commands.evaluate import format_table
from rt_decoder.errors import DataError
from rt_decoder.loaders import load_recording
from rt_decoder.plot.streams import read_meta
from rt_decoder.recording import Recording, load_npz, save_npz, split_bounds
from rt_decoder.simulate import simulate_session


@pytest.mark.parametrize("parts, units", [
    (("limblab_nick_co", "Nick_CO_001-01-binned.mat"), ["cm", "cm", "cm/s", "cm/s"]),
    (("mc_maze_small_nlb", "mc_maze_small_full.h5"), ["mm/s", "mm/s"]),
    (("nelpy_hippocampus", "linear-track"), ["px", "px"]),
    (("ziv_ca1_calcium_linear_track",), ["bin (4 cm)", "cm/s"]),
    (("chestek_contdata95", "contdata95.mat"), ["a.u."] * 4),  # the course file states no unit
])
def test_each_loader_states_its_units(parts, units):
    rec = load_recording(data_file(*parts))
    assert rec.behavior_units == units


def test_npz_round_trip_keeps_units_and_files_without_them_read_as_au(tmp_path):
    rec = Recording(counts=np.ones((10, 3), np.int32), bin_s=0.02, behavior=np.zeros((10, 2)),
                    behavior_names=["x", "y"], behavior_units=["mm", "deg"]).validate()
    assert load_npz(save_npz(rec, tmp_path / "a.npz")).behavior_units == ["mm", "deg"]
    np.savez(tmp_path / "b.npz", counts=np.ones((10, 3)), bin_s=0.02, behavior=np.zeros((10, 2)))
    assert load_npz(tmp_path / "b.npz").behavior_units == ["a.u.", "a.u."]
    assert load_npz(save_npz(rec.rebin(2), tmp_path / "c.npz")).behavior_units == ["mm", "deg"]
    assert rec.slice(0, 4).behavior_units == ["mm", "deg"]


def test_event_npz_carries_units(tmp_path):
    np.savez(tmp_path / "ev.npz", spike_times=np.array([0.01, 0.05, 0.09]), spike_channels=np.array([0, 1, 0]),
             behavior=np.array([[0.0], [1.0], [2.0]]), behavior_times=np.array([0.0, 0.05, 0.1]),
             behavior_names=np.array(["angle"]), behavior_units=np.array(["deg"]), bin_s=0.02)
    assert load_recording(tmp_path / "ev.npz").behavior_units == ["deg"]


def test_wrong_number_of_units_is_a_one_line_data_error():
    with pytest.raises(DataError, match="behavior_units has 1 units for 2"):
        Recording(counts=np.ones((5, 2), np.int32), bin_s=0.02, behavior=np.zeros((5, 2)),
                  behavior_units=["cm"], source="x.npz").validate()


def test_baseline_cards_and_evaluate_table_carry_units(tmp_path):
    from rt_decoder.model_card import read_card
    from rt_decoder.step_graph import save

    rec = simulate_session(minutes=0.5, channels=16, seed=1)
    assert rec.behavior_units == ["cm", "cm", "cm/s", "cm/s"]
    models = fit_baselines(rec, split_bounds(rec.n_bins), lag_bins=0, taps=3)
    for name, m in models.items():
        save(m, tmp_path / f"{name}.onnx")
        assert read_card(tmp_path / f"{name}.onnx").units == ["cm", "cm", "cm/s", "cm/s"]
    res = {"model_type": "wiener", "block": "test", "range": [0, 10], "n_bins": 10, "bin_s": 0.02, "lag_bins": 0,
           "outputs": ["pos_x", "vel_x"], "units": ["cm", "cm/s"],
           "model": {"r2": [0.5, 0.6], "rmse": [1.0, 2.0], "corr": [0.7, 0.8]}}
    lines = format_table(res).splitlines()
    assert "unit" in lines[1] and " cm " in lines[2] and " cm/s " in lines[3]


@pytest.mark.lsl
def test_replayed_behaviour_stream_describes_each_channel_unit():
    from rt_decoder.runtime.player import Player

    rec = simulate_session(minutes=0.2, channels=8, seed=2)
    name = f"test-units-{uuid.uuid4().hex[:8]}"
    player = Player(rec, name=name)
    try:
        info = pylsl.resolve_byprop("name", f"{name}-behavior", 1, 10.0)[0]
        inlet = pylsl.StreamInlet(info)
        meta = read_meta(inlet.info(timeout=5.0))
        assert meta.labels == ["pos_x", "pos_y", "vel_x", "vel_y"]
        assert meta.units == ["cm", "cm", "cm/s", "cm/s"]
        del inlet
    finally:
        player.close()
