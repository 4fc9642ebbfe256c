"""Decoder targets beyond the cursor: limblab EMG (emgguide names) and force, chosen with --targets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import data_file

from rt_decoder.cli import main
from rt_decoder.errors import ConfigError, DataError
from rt_decoder.loaders import load_recording
from rt_decoder.recording import save_npz

SPIKE = ("limblab_spike_wf", "Spike_07-18-12_WF_001.mat")
CURSOR = ["pos_x", "pos_y", "vel_x", "vel_y"]


def _cli(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _emgguide(path) -> tuple[list[str], np.ndarray]:
    import scipy.io

    b = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["binnedData"]
    return [str(s).strip() for s in b.emgguide], np.asarray(b.emgdatabin, dtype=np.float64)


def test_emg_targets_are_the_emgguide_columns():
    path = data_file(*SPIKE)
    guide, emg = _emgguide(path)
    rec = load_recording(path, targets="emg")
    assert rec.behavior.shape == (24000, 16)
    assert rec.behavior_names == [f"emg_{g}" for g in guide] and "emg_FCR" in rec.behavior_names
    assert rec.behavior_units == ["a.u."] * 16
    np.testing.assert_array_equal(rec.behavior, emg)


def test_all_is_cursor_then_emg_and_the_default_stays_cursor():
    path = data_file(*SPIKE)
    guide, _ = _emgguide(path)
    assert load_recording(path).behavior_names == CURSOR
    every = load_recording(path, targets="all")
    assert every.behavior_names == CURSOR + [f"emg_{g}" for g in guide]
    assert every.behavior_units[:4] == ["cm", "cm", "cm/s", "cm/s"]
    assert load_recording(path, targets="cursor,emg").fingerprint() == every.fingerprint()


def _limblab_with_force(path, T: int = 400) -> None:
    """A small binnedData struct carrying cursor, force (with forcelabels) and EMG, as limblab saves it."""
    import scipy.io

    rng = np.random.default_rng(0)
    struct = {
        "timeframe": np.arange(T) * 0.05,
        "spikeratedata": rng.poisson(1.0, (T, 6)) / 0.05,
        "cursorposbin": rng.normal(size=(T, 2)),
        "velocbin": rng.normal(size=(T, 3)),
        "forcedatabin": rng.normal(size=(T, 2)),
        "forcelabels": np.array(["Fx", "Fy"], dtype=object),
        "emgdatabin": rng.random((T, 3)),
        "emgguide": np.array(["FCR", "FCU", "ECU"], dtype=object),
    }
    scipy.io.savemat(path, {"binnedData": struct})


def test_force_columns_when_the_file_has_them(tmp_path):
    path = tmp_path / "with_force.mat"
    _limblab_with_force(path)
    assert load_recording(path, targets="force").behavior_names == ["force_Fx", "force_Fy"]
    assert load_recording(path, targets="all").behavior_names == CURSOR + ["force_Fx", "force_Fy",
                                                                            "emg_FCR", "emg_FCU", "emg_ECU"]
    assert load_recording(path).behavior_names == CURSOR


def test_missing_targets_are_one_line_naming_the_file_and_what_it_has(tmp_path, capsys):
    path = data_file(*SPIKE)
    code, out, err = _cli(["convert", str(path), str(tmp_path / "x.npz"), "--targets", "force"], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "Spike_07-18-12_WF_001.mat" in err and "no force columns" in err and "emg (16:" in err
    assert not (tmp_path / "x.npz").exists()
    nick = data_file("limblab_nick_co", "Nick_CO_001-01-binned.mat")
    with pytest.raises(DataError, match="no emg columns; the file has cursor"):
        load_recording(nick, targets="emg")
    code, out, err = _cli(["convert", str(path), str(tmp_path / "x.npz"), "--targets", "muscles"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cursor|force|emg|all" in err, err
    with pytest.raises(ConfigError):
        load_recording(path, targets="cursor,muscle")


def test_convert_keeps_the_targets_and_npz_selects_them_again(tmp_path, capsys):
    path = data_file(*SPIKE)
    code, out, err = _cli(["convert", str(path), str(tmp_path / "all.npz"), "--targets", "all"], capsys)
    assert code == 0, err
    assert "K=20 behaviour" in out and "emg_FCR [a.u.]" in out
    emg = load_recording(tmp_path / "all.npz", targets="emg")
    assert emg.fingerprint() == load_recording(path, targets="emg").fingerprint()
    with pytest.raises(DataError, match="no force columns"):
        load_recording(tmp_path / "all.npz", targets="force")


SMALL = """
name: small
retention: {decays: [0.0, 0.5, 0.875, 0.96875], quantizer: levels, levels: 4}
model: {widths: [8], head_hidden: 64, dropout: 0.1}
training: {batch_size: 128, lr: 0.003, max_epochs: 30, patience: 30, seed: 0}
"""


def test_train_on_emg_writes_metrics_with_the_emg_outputs(tmp_path, capsys):
    pytest.importorskip("torch")
    path = data_file(*SPIKE)
    data = save_npz(load_recording(path, targets="all").slice(0, 6000), tmp_path / "spike_5min.npz")
    (tmp_path / "small.yaml").write_text(SMALL)
    out = tmp_path / "run"
    code, stdout, err = _cli(["train", "--config", str(tmp_path / "small.yaml"), "--data", str(data), "--out", str(out),
                              "--targets", "emg", "--baselines", "wiener", "--time-limit", "10"], capsys)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    names = load_recording(path, targets="emg").behavior_names
    assert m["outputs"] == names and len(m["model"]["r2"]) == 16 and len(m["baselines"]["wiener"]["r2"]) == 16
    assert np.mean(m["baselines"]["wiener"]["r2"]) > 0.1   # EMG is decodable from M1: above chance
    # evaluate loads the columns the model was trained on, from its card's outputs
    code, stdout, err = _cli(["evaluate", str(out / "model.onnx"), "--data", str(data), "--quiet"], capsys)
    assert code == 0, err
    assert "emg_FCR" in stdout and "pos_x" not in stdout
    (tmp_path / "bad.yaml").write_text(SMALL + "targets: muscles\n")
    code, stdout, err = _cli(["train", "--config", str(tmp_path / "bad.yaml"), "--data", str(data),
                              "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and "bad.yaml: targets: must be one of" in err and len(err.strip().splitlines()) == 1, err
