"""Runaway sampling is caught (with the step where it starts), and the generation report describes
the whole sample: count and synchrony distributions, activity over time, bits/spike of both models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import data_file

from rt_decoder.cli import main
from rt_decoder.generation import (
    compare_statistics,
    detect_runaway,
    generate,
    report_png,
    runaway_warning,
)
from rt_decoder.glm import GLMParams, glm_card, raised_cosine_basis
from rt_decoder.recording import Recording, save_npz
from rt_decoder.step_graph import save
from rt_decoder.step_model import StepModel

D = 10


def _sparse(T: int, p: float = 0.02, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((T, D)) < p).astype(np.int32)


def _glm(path, coupling: float, bias: float = -4.5, likelihood: str = "bernoulli") -> StepModel:
    """Every neuron excites every neuron for a few bins: weak coupling is stable, strong runs away."""
    basis = raised_cosine_basis(3, 6)
    W = np.zeros((3, D, D))
    W[0] = coupling
    rec = Recording(counts=np.zeros((5, D), int), bin_s=0.01, channel_names=[f"n{i}" for i in range(D)])
    p = GLMParams(bias=np.full(D, bias), weights=W.reshape(3 * D, D), basis=basis, likelihood=likelihood)
    save(p.to_onnx(glm_card(rec, p)), path)
    return StepModel(path)


def test_detector_finds_the_step_a_synthetic_runaway_starts():
    x = _sparse(5000)
    x[3000:] = 1
    r = detect_runaway(x)
    assert r["runaway"] and r["start_step"] == 3000 and r["saturated_fraction_after"] == 1.0
    # noisy saturation (each channel on with p = 0.97) still starts at 3000, within a bin or two
    noisy = _sparse(5000)
    noisy[3000:] = np.random.default_rng(1).random((2000, D)) < 0.97
    r = detect_runaway(noisy)
    assert r["runaway"] and 3000 <= r["start_step"] <= 3002, r
    line = runaway_warning(r)
    assert line.startswith("WARNING: runaway") and f"step {r['start_step']}" in line and "\n" not in line


def test_detector_catches_a_count_explosion_with_half_the_population_silent():
    """A Poisson sample whose channels alternate between silence and the rate cap (what a trained
    mc_maze model did): never 90% of channels in one bin, but a mean rate no population sustains."""
    x = _sparse(4000)
    x[2500::2, ::2] = 1000
    x[2501::2, 1::2] = 1000
    x[2500:, :] *= (x[2500:, :] == 1000)
    assert not detect_runaway(x)["runaway"]                       # the saturation criterion alone misses it
    r = detect_runaway(x, bin_s=0.005)
    assert r["runaway"] and r["start_step"] == 2500 and r["rate_hz"] == 200.0
    assert "200 Hz" in runaway_warning(r)
    assert compare_statistics(x, bin_s=0.005)["runaway"]["start_step"] == 2500


def test_detector_judges_a_sparse_population_against_its_real_level():
    """Stuck at 40% of channels per bin, 20x a real 2% population: a runaway next to the real data."""
    real = _sparse(3000, p=0.02, seed=9)
    x = _sparse(4000, p=0.02)
    x[1000:] = np.random.default_rng(4).random((3000, D)) < 0.4
    assert not detect_runaway(x)["runaway"]
    r = detect_runaway(x, real=real)
    assert r["runaway"] and 1000 <= r["start_step"] <= 1003 and r["level"] < 0.4
    assert not detect_runaway(_sparse(4000, p=0.02, seed=11), real=real)["runaway"]


def test_detector_catches_a_lone_neuron_alternating_between_silence_and_hundreds():
    """One channel of ten alternating 0 / 300 counts per 5 ms bin (what a trained mc_maze model did):
    neither the share of channels firing nor their mean rate over 90% of bins gives it away;
    its own busiest real stretch does."""
    real = _sparse(3000, p=0.02, seed=9)
    x = _sparse(6000, p=0.02)
    x[3000::2, 4] = 300
    x[3001::2, 4] = 0
    assert not detect_runaway(x, bin_s=0.005)["runaway"]
    r = detect_runaway(x, bin_s=0.005, real=real)
    assert r["runaway"] and r["channels"] == [4] and r["start_step"] == 3000 and not r["population"]
    line = runaway_warning(r)
    assert "1 channel(s) (index 4)" in line and "busiest real stretch" in line and "\n" not in line
    assert compare_statistics(x, real, bin_s=0.005)["runaway"]["channels"] == [4]
    # a channel that is busy in the real block too, at its real level, is not a runaway
    busy_real = real.copy()
    busy_real[:, 7] = np.random.default_rng(2).poisson(3.0, 3000)
    busy = _sparse(6000, p=0.02)
    busy[:, 7] = np.random.default_rng(3).poisson(3.0, 6000)
    assert not detect_runaway(busy, bin_s=0.005, real=busy_real)["runaway"]
    # nor is a lone neuron's burst that ends before the sample does
    burst = _sparse(6000, p=0.02)
    burst[3000:5000:2, 4] = 300
    assert not detect_runaway(burst, bin_s=0.005, real=real)["runaway"]


def test_detector_stays_quiet_without_a_runaway():
    assert not detect_runaway(_sparse(5000))["runaway"]
    burst = _sparse(5000)
    burst[1000:1300] = 1                    # a long synchronous burst that ends is not a runaway
    assert not detect_runaway(burst)["runaway"]
    late = _sparse(5000)
    late[-20:] = 1                          # shorter than the window: too short to call
    assert not detect_runaway(late)["runaway"]
    assert runaway_warning(detect_runaway(burst)) is None


@pytest.mark.realdata
@pytest.mark.parametrize("parts", [("ziv_ca1_calcium_linear_track",), ("chestek_contdata95", "contdata95.mat"),
                                   ("mc_maze_small_nlb", "mc_maze_small_full.h5")])
def test_detector_stays_quiet_on_real_data(parts):
    from rt_decoder.loaders import load_recording

    rec = load_recording(data_file(*parts), None)
    r = detect_runaway(rec.counts, bin_s=rec.bin_s, real=rec.counts[int(0.8 * rec.n_bins):])
    assert not r["runaway"], r


def test_a_runaway_model_is_caught_and_a_stable_one_is_not(tmp_path):
    hot, _ = generate(_glm(tmp_path / "hot.onnx", coupling=1.5), 4000, seed=0)
    r = detect_runaway(hot)
    assert r["runaway"]
    s = r["start_step"]
    assert (hot[s:] > 0).mean() > 0.9 and (hot[max(0, s - 200):s] > 0).mean() < 0.5
    cool, _ = generate(_glm(tmp_path / "cool.onnx", coupling=0.3), 4000, seed=0)
    assert not detect_runaway(cool)["runaway"]


def test_statistics_cover_the_whole_sample():
    """A sample that saturates only after bin 5000 of 6000: the stats see it (not just the first 200 bins)."""
    x = _sparse(6000)
    x[5000:] = 1
    real = _sparse(3000, seed=5)
    s = compare_statistics(x, real, bin_s=0.01)
    sm = s["summary"]
    assert sm["n_bins_generated"] == 6000 and sm["runaway"] and sm["runaway_start_step"] == 5000
    assert sm["active_fraction_first_tenth_generated"] < 0.05 and sm["active_fraction_last_tenth_generated"] == 1.0
    syn = s["distributions"]["synchrony_generated"]
    assert syn.size == D + 1 and syn[D] == pytest.approx(1000 / 6000)
    assert s["distributions"]["synchrony_real"].sum() == pytest.approx(1.0)
    assert sm["synchrony_tv"] == pytest.approx(0.5 * np.abs(syn - s["distributions"]["synchrony_real"]).sum())
    assert sm["synchrony_tv"] > 0.15 and sm["window_count_tv"] > 0.1
    # the same process as the real block: small distances
    same = compare_statistics(_sparse(6000, seed=7), real, bin_s=0.01)["summary"]
    assert same["synchrony_tv"] < 0.05 and same["window_count_tv"] < 0.05 and not same["runaway"]


def test_report_png_of_a_long_sample(tmp_path):
    x = _sparse(12_000)
    x[9000:] = 1
    stats = compare_statistics(x, _sparse(3000, seed=2), bin_s=0.01)
    out = report_png(stats, tmp_path / "r.png", x, _sparse(3000, seed=2), title="t", note="bits/spike 0.1")
    assert out.stat().st_size > 50_000


def test_generate_cli_reports_runaway_reference_and_bits(tmp_path, capsys):
    real = Recording(counts=_sparse(3000, p=0.011, seed=3), bin_s=0.01, channel_names=[f"n{i}" for i in range(D)],
                     source="real").validate()
    save_npz(real, tmp_path / "real.npz")
    _glm(tmp_path / "hot.onnx", coupling=1.5)
    _glm(tmp_path / "cool.onnx", coupling=0.3)
    argv = ["generate", str(tmp_path / "hot.onnx"), "--steps", "4000", "--out", str(tmp_path / "g.npz"),
            "--compare", str(tmp_path / "real.npz"), "--reference", str(tmp_path / "cool.onnx"),
            "--report", str(tmp_path / "rep.png"), "--json", str(tmp_path / "g.json"), "--quiet"]
    assert main(argv) == 0
    cap = capsys.readouterr()
    warnings = [ln for ln in cap.err.splitlines() if "WARNING: runaway" in ln]
    doc = json.loads((tmp_path / "g.json").read_text())
    assert doc["runaway"]["runaway"] and len(warnings) == 1 and "hot.onnx" in warnings[0]
    assert f"from step {doc['runaway']['start_step']} " in warnings[0]
    assert not doc["reference"]["runaway"]["runaway"]
    assert doc["n_bins_generated"] == 4000 and len(doc["distributions"]["synchrony_generated"]) == D + 1
    for side in (doc, doc["reference"]):
        assert np.isfinite(side["held_out"]["bits_per_spike"]) and "synchrony_tv" in side
    assert "bits/spike" in cap.out
    assert (tmp_path / "rep.png").stat().st_size > 30_000 and (tmp_path / "rep_reference.png").stat().st_size > 30_000
