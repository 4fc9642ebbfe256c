"""`rt-decoder experiment` end to end over real LSL: a short headless session (observation ->
Wiener -> closed loop -> ReFIT -> closed loop) writes every file, and a failing piece is one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from rt_decoder.model_card import read_card
from rt_decoder.recording import load_npz

BLOCKS = ("1-observe", "3-closed", "5-closed-refit")


def _experiment(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rt_decoder.cli", "experiment", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_short_wiener_session_writes_every_file(tmp_path):
    out = tmp_path / "session"
    p = _experiment("--decoder", "wiener", "--out", str(out), "--headless", "--observe-s", "25", "--trials", "4",
                    "--seed", "3", "--refit-gain", "match")
    assert p.returncode == 0, p.stderr[-2000:] + p.stdout[-2000:]
    for b in BLOCKS:
        d = out / b
        for f in ("block.npz", "streams.npz", "trials.csv", "summary.json"):
            assert (d / f).is_file(), f"{d / f} missing"
        rec = load_npz(d / "block.npz")
        assert rec.behavior_names == ["pos_x", "pos_y", "vel_x", "vel_y"] and rec.bin_s == 0.02
        assert rec.n_bins > 100 and rec.counts.sum() > 0 and rec.trial_starts.size >= 2
        with np.load(d / "block.npz") as z:
            assert {"target_x", "target_y", "task_state", "trial", "intent"} <= set(z.files)
        s = json.loads((d / "summary.json").read_text())
        assert {"trials", "success_rate", "time_to_target_s", "path_efficiency", "bitrate_bps"} <= set(s)
        rows = (d / "trials.csv").read_text().strip().splitlines()
        assert len(rows) - 1 == s["trials"]
    for b in BLOCKS[1:]:
        s = json.loads((out / b / "summary.json").read_text())
        assert s["trials"] == 4 and s["decode_latency_ms"]["p99"] > 0 and s["decoded_bins"] > 50
        assert s["success_rate"] > 0  # the loop is closed: the session's participant saw each new task
        with np.load(out / b / "block.npz") as z:  # the decoder's output was recorded next to the spikes
            ok = np.isfinite(z["decoded"]).all(axis=1)
            assert list(z["decoded_names"]) == ["vel_x", "vel_y"] and ok.any()
            first = int(np.argmax(ok))  # NaN before: the decoder still starting (longer on a busy machine)
            assert first < ok.size // 2 and ok[first:].mean() > 0.98, (first, ok.size, ok[first:].mean())
    for m in ("2-model/wiener.onnx", "4-model-refit/wiener.onnx"):
        card = read_card(out / m)
        assert card.outputs == ["vel_x", "vel_y"] and card.model_type == "wiener"
    refit = load_npz(out / "4-model-refit" / "train.npz")
    assert np.isnan(refit.behavior).any() and np.isfinite(refit.behavior).any()  # ITI unknown, reach relabelled
    # pooled: the observation block (cursor velocity) then the relabelled closed-loop block
    n_obs, n_cl = (load_npz(out / b / "block.npz").n_bins for b in ("1-observe", "3-closed"))
    assert refit.n_bins == n_obs + n_cl and np.isfinite(refit.behavior[:n_obs]).all()
    g3, g5 = (json.loads((out / b / "summary.json").read_text())["task_gain"] for b in ("3-closed", "5-closed-refit"))
    assert g3 == 1.0 and 0.2 < g5 < 5 and g5 != 1.0   # --refit-gain match: the ReFIT block's gain was set
    task_cmd = (out / "5-closed-refit" / "logs" / "task.log").read_text().splitlines()[0]
    assert task_cmd.endswith(f"--gain {g5:.6g}") or f"--gain {g5:.6g} " in task_cmd
    assert "--gain" not in (out / "3-closed" / "logs" / "task.log").read_text().splitlines()[0]
    assert json.loads((out / "summary.json").read_text())["refit"] == {"speed": "keep", "data": "pooled", "gain": "match",
                                                                       "fine_tune": False}
    top = json.loads((out / "summary.json").read_text())
    assert set(top["blocks"]) == set(BLOCKS) and top["decoder"] == "wiener"
    fig = Path(top["figure"])
    assert fig.is_file() and fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failing_participant_is_one_clear_line(tmp_path):
    p = _experiment("--decoder", "kalman", "--out", str(tmp_path / "s"), "--headless", "--observe-s", "5",
                    "--participant", f"--encoding fit:{tmp_path / 'missing.mat'}", timeout=120)
    assert p.returncode == 2
    err = [line for line in p.stderr.strip().splitlines() if line.strip()]
    assert len(err) == 1 and "participant" in err[0] and "Traceback" not in p.stderr


def test_bench_table_and_bad_decoder_list():
    from rt_decoder.closedloop.bench import COLUMNS, table

    rows = {"ours": {"trials": 40, "success_rate": 0.975, "time_to_target_s": 1.2, "path_efficiency": 0.99,
                     "bitrate_bps": 1.25, "latency_p99_ms": 2.5},
            "ours+refit": {"trials": 40, "success_rate": 1.0, "time_to_target_s": float("nan"), "path_efficiency": None,
                           "bitrate_bps": 1.0, "latency_p99_ms": 3.0}}
    lines = table(rows).splitlines()
    assert lines[0].split() == ["decoder", *COLUMNS] and len(lines) == 4
    assert lines[2].split() == ["ours", "40", "97.5%", "1.200", "0.990", "1.250", "2.500"]
    assert lines[3].split() == ["ours+refit", "40", "100.0%", "-", "-", "1.000", "3.000"]
    p = subprocess.run([sys.executable, "-m", "rt_decoder.cli", "bench", "closed-loop", "--decoders", "ours,gru"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "gru" in p.stderr
