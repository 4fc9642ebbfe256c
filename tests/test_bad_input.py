"""Bad input through the command line: one line on stderr naming the file and the problem, a
non-zero exit status, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from conftest import ROOT

from rt_decoder.cli import main
from rt_decoder.recording import save_npz
from rt_decoder.simulate import simulate_session

sys.path.insert(0, str(ROOT / "tools"))
from write_xdf import Stream, recording_streams, write_xdf  # noqa: E402


def convert(capsys, *args: str) -> tuple[int, str]:
    """Run `rt-decoder convert ...` in-process; return (exit status, stderr)."""
    code = main(["convert", *map(str, args)])
    err = capsys.readouterr().err
    return code, err


def assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"


@pytest.fixture(scope="module")
def rec():
    return simulate_session(minutes=0.1, channels=5, seed=11)


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# ------------------------------------------------------------------ files that are not there or not ours


def test_nonexistent_file(capsys, tmp_path):
    code, err = convert(capsys, tmp_path / "nope.mat", tmp_path / "out.npz")
    assert_one_line(code, err, "nope.mat", "no such file")


def test_unknown_format(capsys, tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("these are not spikes\n")
    code, err = convert(capsys, p, tmp_path / "out.npz")
    assert_one_line(code, err, "notes.txt", "unknown recording format", ".nwb", ".xdf")


def test_empty_file(capsys, tmp_path):
    p = tmp_path / "empty.dat"
    p.write_bytes(b"")
    code, err = convert(capsys, p, tmp_path / "out.npz")
    assert_one_line(code, err, "empty.dat", "empty")


def test_folder_without_recording(capsys, tmp_path):
    code, err = convert(capsys, tmp_path, tmp_path / "out.npz")
    assert_one_line(code, err, str(tmp_path), "no known recording")


# ------------------------------------------------------------------ truncated files, one per format


def test_truncated_npz(capsys, tmp_path, rec):
    p = _truncate(save_npz(rec, tmp_path / "cut.npz"))
    code, err = convert(capsys, p, tmp_path / "out.npz")
    assert_one_line(code, err, "cut.npz", "not a readable .npz")


def test_truncated_mat(capsys, tmp_path, rec):
    p = tmp_path / "cut.mat"
    scipy.io.savemat(p, {"Y": rec.counts, "X": rec.behavior})
    code, err = convert(capsys, _truncate(p), tmp_path / "out.npz")
    assert_one_line(code, err, "cut.mat", "MATLAB")


def test_truncated_h5(capsys, tmp_path):
    p = tmp_path / "cut.h5"
    with h5py.File(p, "w") as f:
        f["train_spikes_heldin"] = np.ones((4, 10, 3), dtype=np.float32)
        f["train_behavior"] = np.zeros((4, 10, 2), dtype=np.float32)
    code, err = convert(capsys, _truncate(p, 0.3), tmp_path / "out.npz")
    assert_one_line(code, err, "cut.h5", "HDF5")


def test_truncated_xdf(capsys, tmp_path, rec):
    p = write_xdf(tmp_path / "cut.xdf", recording_streams(rec, "counts"))
    code, err = convert(capsys, _truncate(p, 0.6), tmp_path / "out.npz")
    assert_one_line(code, err, "cut.xdf")


# ------------------------------------------------------------------ wrong shapes, bad values, missing keys


@pytest.mark.parametrize(
    "arrays, needle",
    [
        ({"counts": np.arange(5), "bin_s": 0.02}, "counts must be 2-D"),
        ({"counts": -np.ones((4, 3)), "bin_s": 0.02}, "negative"),
        ({"counts": np.array([[1.0, np.nan], [0, 1]]), "bin_s": 0.02}, "NaN"),
        ({"counts": np.array([[0.5, 1.0]]), "bin_s": 0.02}, "whole numbers"),
        ({"counts": np.ones((4, 3)), "bin_s": -1.0}, "bin_s must be a positive"),
        ({"counts": np.ones((4, 3)), "bin_s": 0.02, "behavior": np.ones((3, 2))}, "behavior must be (T=4, K)"),
        ({"counts": np.ones((4, 3))}, "missing key 'bin_s'"),
        ({"rates": np.ones((4, 3))}, "missing key 'counts'"),
    ],
)
def test_bad_npz(capsys, tmp_path, arrays, needle):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    code, err = convert(capsys, p, tmp_path / "out.npz")
    assert_one_line(code, err, "bad.npz", needle)


@pytest.mark.parametrize(
    "variables, needle",
    [
        ({"Y": np.ones((10, 3)), "X": np.ones((9, 4))}, "'X' must be (T=10, K)"),
        ({"Y": np.full((10, 3), -1.0), "X": np.ones((10, 4))}, "negative"),
        ({"Y": np.array([[np.nan, 1.0]])}, "NaN"),
        ({"Z": np.ones((10, 3))}, "no known layout"),
        ({"binnedData": {"timeframe": np.arange(5) * 0.05}}, "no field 'spikeratedata'"),
        ({"binnedData": {"timeframe": np.arange(5) * 0.05, "spikeratedata": np.full((5, 2), 3.0)}}, "not whole spike counts"),
        ({"binnedData": {"timeframe": np.arange(5) * 0.05, "spikeratedata": np.ones((4, 2)) * 20}}, "spikeratedata must be (T=5"),
    ],
)
def test_bad_mat(capsys, tmp_path, variables, needle):
    p = tmp_path / "bad.mat"
    scipy.io.savemat(p, variables)
    code, err = convert(capsys, p, tmp_path / "out.npz")
    assert_one_line(code, err, "bad.mat", needle)


def test_hdf5_that_is_neither_nwb_nor_nlb(capsys, tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["something"] = np.ones(3)
    code, err = convert(capsys, p, tmp_path / "out.npz")
    assert_one_line(code, err, "other.h5", "neither NWB nor NLB")


def test_nlb_h5_with_mismatched_behaviour(capsys, tmp_path):
    p = tmp_path / "nlb.h5"
    with h5py.File(p, "w") as f:
        f["train_spikes_heldin"] = np.ones((4, 10, 3), dtype=np.float32)
        f["train_behavior"] = np.zeros((4, 9, 2), dtype=np.float32)
    code, err = convert(capsys, p, tmp_path / "out.npz")
    assert_one_line(code, err, "nlb.h5", "train_behavior must be (trials=4, bins=10, K)")


def test_xdf_without_spike_stream(capsys, tmp_path):
    s = Stream("mocap", "Mocap", np.zeros((5, 2), np.float32), np.arange(5) * 0.01, "float32", 100.0)
    p = write_xdf(tmp_path / "nospikes.xdf", [s])
    code, err = convert(capsys, p, tmp_path / "out.npz")
    assert_one_line(code, err, "nospikes.xdf", "no stream of type 'SpikeCounts' or 'SpikeEvents'", "'mocap' (Mocap)")


def test_xdf_events_with_negative_channel(capsys, tmp_path):
    s = Stream("ev", "SpikeEvents", np.array([[0], [-3], [1]], np.int32), np.array([0.0, 0.01, 0.02]), "int32")
    p = write_xdf(tmp_path / "neg.xdf", [s])
    code, err = convert(capsys, p, tmp_path / "out.npz")
    assert_one_line(code, err, "neg.xdf", "non-negative")


# ------------------------------------------------------------------ bad options and outputs


@pytest.mark.parametrize("bin_ms, needle", [("0", "positive"), ("-20", "positive"), ("nan", "positive"), ("30", "cannot re-bin 20 ms bins to 30 ms")])
def test_bad_bin_width(capsys, tmp_path, rec, bin_ms, needle):
    p = save_npz(rec, tmp_path / "ok.npz")
    code, err = convert(capsys, p, tmp_path / "out.npz", "--bin-ms", bin_ms)
    assert_one_line(code, err, "ok.npz", needle)


def test_unwritable_output(capsys, tmp_path, rec):
    p = save_npz(rec, tmp_path / "ok.npz")
    (tmp_path / "file").write_text("x")
    code, err = convert(capsys, p, tmp_path / "file" / "out.npz")
    assert_one_line(code, err, "out.npz", "cannot write")


def test_simulate_bad_arguments(capsys, tmp_path):
    code = main(["simulate", "--minutes", "0", "--out", str(tmp_path / "s.npz")])
    assert_one_line(code, capsys.readouterr().err, "minutes must be > 0")
    code = main(["simulate", "--minutes", "1", "--channels", "0", "--out", str(tmp_path / "s.npz")])
    assert_one_line(code, capsys.readouterr().err, "channels >= 1")


def test_console_script_on_truncated_file(tmp_path, rec):
    """The installed `rt-decoder` itself: exit status 2, one line, no traceback."""
    exe = Path(sys.executable).parent / "rt-decoder"
    if not exe.exists():
        pytest.skip("rt-decoder console script not installed next to this Python")
    p = _truncate(save_npz(rec, tmp_path / "cut.npz"))
    r = subprocess.run([str(exe), "convert", str(p), str(tmp_path / "o.npz")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert_one_line(r.returncode, r.stderr, "cut.npz")
    assert r.stdout == ""


@pytest.mark.parametrize("name, content, expected", [
    ("notes.npz", b"time,x,y\n0,1,2\n", "is not a .npz file"),
    ("empty.npz", b"", "is not a .npz file"),
    ("notes.mat", b"% exported by hand\n1 2 3\n", "is not a MATLAB .mat file"),
    ("table.h5", b"a,b\n1,2\n", "is not an HDF5 file"),
    ("arr.npz", b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'", "is not a .npz file"),
])
def test_a_file_that_is_not_what_its_name_says(capsys, tmp_path, name, content, expected):
    """Say what the file is and what was expected, not the reader's confusion (a pickle ValueError)."""
    p = tmp_path / name
    p.write_bytes(content)
    code, err = convert(capsys, p, tmp_path / "out.npz")
    line = err.strip()
    assert_one_line(code, err, name, expected)
    what = {"notes.npz": "a text file starting 'time,x,y'", "empty.npz": "an empty file (0 bytes)",
            "notes.mat": "a text file", "table.h5": "a text file", "arr.npz": "a single NumPy array (.npy)"}[name]
    assert what in line and "pickle" not in line


@pytest.mark.parametrize("content, what", [(b"", "an empty file (0 bytes)"), (b"hello, not a model\n", "a text file"),
                                           (b"PK\x03\x04rest-of-a-zip", "a zip archive (.npz)")])
def test_a_model_file_that_is_not_onnx(capsys, tmp_path, rec, content, what):
    data = save_npz(rec, tmp_path / "d.npz")
    m = tmp_path / "model.onnx"
    m.write_bytes(content)
    code = main(["evaluate", str(m), "--data", str(data)])
    err = capsys.readouterr().err
    assert_one_line(code, err, "model.onnx", "not a readable ONNX model", "expected a protobuf", what)
    assert "model card" not in err
