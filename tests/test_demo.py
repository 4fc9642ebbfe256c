"""The end-to-end demo: simulate -> baseline decoder -> live LSL replay + `rt-decoder run` -> report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rt_decoder.cli import main as cli_main
from rt_decoder.commands.demo_pipeline import DemoOptions, format_result, match_by_time, run_demo


def test_match_by_time_pairs_equal_bin_ends():
    a = np.array([1.00, 1.02, 1.04, 1.10])
    b = np.array([0.98, 1.0001, 1.04, 1.06, 1.08])
    ia, ib = match_by_time(a, b, 0.02)
    assert ia.tolist() == [0, 2] and ib.tolist() == [1, 2]
    assert [len(x) for x in match_by_time(a, np.zeros(0), 0.02)] == [0, 0]


@pytest.mark.slow
@pytest.mark.lsl
def test_demo_end_to_end_online_equals_offline(tmp_path):
    opts = DemoOptions(out=tmp_path / "demo", minutes=1.0, decoder="wiener", replay_s=3.0, plot="screenshot",
                       name=f"test-demo-{tmp_path.name[-6:]}")
    r = run_demo(opts, log=lambda s: None)
    assert r["model_type"] == "wiener"
    assert r["bins"] == 150 and r["predictions"] + r["skipped"] == 150  # late bins skipped on a loaded machine
    assert r["online"]["matched_bins"] >= r["predictions"] - 1, r  # every prediction received and matched
    assert r["offline_same_bins"]["max_abs_diff_vs_online"] < 1e-4  # what went over LSL is what the graph computes
    np.testing.assert_allclose(r["online"]["r2"], r["offline_same_bins"]["r2"], atol=0.05)
    vel = [r["online"]["r2"][r["outputs"].index(k)] for k in ("vel_x", "vel_y")]
    assert min(vel) > 0.5  # simulated velocities are decodable even from 3 s (positions need longer)
    assert r["latency_ms"]["p50"] > 0
    saved = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert saved["outputs"] == ["pos_x", "pos_y", "vel_x", "vel_y"]
    assert (tmp_path / "demo" / "report.png").stat().st_size > 20_000
    assert (tmp_path / "demo" / "live.png").stat().st_size > 10_000
    assert r["plot_fps"] is not None and r["plot_fps"] > 0
    assert "online R2" in format_result(r)


@pytest.mark.slow
def test_demo_trains_with_the_shipped_default_config(tmp_path):
    """The demo's training step as `make demo` runs it: the shipped default config, a real `train` process."""
    from rt_decoder.commands.demo_pipeline import load_data, train_model
    from rt_decoder.step_model import StepModel

    lines: list[str] = []
    opts = DemoOptions(out=tmp_path / "demo", minutes=0.5, channels=16, train_time_s=4.0, baselines="wiener")
    opts.out.mkdir()
    rec, path = load_data(opts, lines.append)
    model = train_model(opts, path, lines.append)
    assert model is not None, lines
    assert StepModel(model).card.n_outputs == rec.behavior.shape[1]
    m = json.loads((model.parent / "metrics.json").read_text())
    assert m["config"] == "default" and set(m["baselines"]) == {"wiener"}
    from training.config import use_bf16

    assert m["precision"] == ("bf16" if use_bf16("auto") else "fp32")       # the default's precision: auto, resolved here
    assert any("--config" in ln and "default.yaml" in ln for ln in lines)


@pytest.mark.parametrize("argv, message", [
    (["demo", "--replay-s", "0"], "--replay-s"),
    (["demo", "--data", "/nonexistent/x.npz"], "does not exist"),
])
def test_demo_bad_flags_are_one_line_errors(argv, message, capsys):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
