"""Generation from generative step graphs, bits per spike, and `rt-decoder generate`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rt_decoder.cli import main
from rt_decoder.errors import ModelError
from rt_decoder.evaluation import evaluate_decoder
from rt_decoder.generation import compare_statistics, fano_factors, generate
from rt_decoder.layout import default_canvas, raster_layout
from rt_decoder.model_card import ModelCard, StateSpec
from rt_decoder.recording import Recording, load_npz, save_npz
from rt_decoder.step_graph import build_retention_model, save
from rt_decoder.step_model import StepModel

D = 8
P = np.linspace(0.05, 0.5, D)


def _gen_model(path, bias: np.ndarray, self_weight: float = 0.0, likelihood: str = "bernoulli", decays=(0.5,)):
    """p_d = link(bias_d + self_weight * zeta_d): zero weight = a constant-rate model."""
    canvas = default_canvas(D)
    S, HW = len(decays), canvas[0] * canvas[1]
    pix = raster_layout(D, canvas)
    card = ModelCard(kind="generative", model_type="retention_linear", bin_s=0.01,
                     channel_names=[f"n{i}" for i in range(D)], outputs=[f"n{i}" for i in range(D)],
                     units=["p" if likelihood == "bernoulli" else "count"] * D,
                     states=[StateSpec("zeta", [1, S, *canvas])], decays=list(decays), canvas=list(canvas),
                     layout={"kind": "raster", "pixels": pix.tolist()}, likelihood=likelihood)
    W = np.zeros((S * HW, HW))
    W[pix, pix] = self_weight
    b = np.zeros(HW)
    b[pix] = bias
    save(build_retention_model(card, linear=(W, b)), path)
    return path


def _logit(p):
    return np.log(p / (1 - p))


def test_constant_bernoulli_rates_and_determinism(tmp_path):
    m = StepModel(_gen_model(tmp_path / "c.onnx", _logit(P)))
    x, info = generate(m, 6000, seed=7)
    assert x.shape == (6000, D) and x.dtype == np.int32 and set(np.unique(x)) <= {0, 1}
    assert np.all(np.abs(x.mean(axis=0) - P) < 0.03), x.mean(axis=0)
    assert info["steps_per_s"] > 0
    again, _ = generate(m, 6000, seed=7)
    np.testing.assert_array_equal(x, again)
    other, _ = generate(m, 6000, seed=8)
    assert not np.array_equal(x, other)
    burnt, _ = generate(m, 100, seed=7, burn_in=50)
    assert burnt.shape == (100, D)


def test_poisson_rates_and_fano(tmp_path):
    rates = np.linspace(0.2, 3.0, D)
    m = StepModel(_gen_model(tmp_path / "p.onnx", np.log(rates), likelihood="poisson"))
    x, info = generate(m, 5000, seed=1)
    assert info["likelihood"] == "poisson" and x.max() > 1
    assert np.all(np.abs(x.mean(axis=0) - rates) < 0.1 * rates + 0.05)
    assert np.all(np.abs(fano_factors(x, 10) - 1) < 0.25)


def test_self_excitation_shows_in_statistics(tmp_path):
    """A bursty model (self-excitation) has Fano > 1; a constant one ~1 (binary counts: 1 - p)."""
    const = StepModel(_gen_model(tmp_path / "c.onnx", _logit(np.full(D, 0.1))))
    bursty = StepModel(_gen_model(tmp_path / "b.onnx", np.full(D, -4.0), self_weight=8.0))
    xc, _ = generate(const, 5000, seed=2)
    xb, _ = generate(bursty, 5000, seed=2)
    s = compare_statistics(xb, xc, bin_s=0.01)["summary"]
    assert s["median_fano_generated"] > 1.5 * s["median_fano_real"]
    same = compare_statistics(xc, generate(const, 5000, seed=3)[0], bin_s=0.01)["summary"]
    assert abs(same["median_fano_generated"] - same["median_fano_real"]) < 0.15
    assert abs(same["mean_rate_generated"] - 10.0) < 1.0      # p = 0.1 per 10 ms bin = 10 Hz


def test_bits_per_spike(tmp_path):
    """bits/spike of the constant-rate model is ~0; of the true (history-dependent) model > 0."""
    true_path = _gen_model(tmp_path / "t.onnx", np.full(D, -3.0), self_weight=6.0)
    x, _ = generate(StepModel(true_path), 8000, seed=4, burn_in=100)
    rec = Recording(counts=x, bin_s=0.01, channel_names=[f"n{i}" for i in range(D)], source="gen").validate()
    p_train = (x[:5600] > 0).mean(axis=0)
    const_path = _gen_model(tmp_path / "c.onnx", _logit(p_train))
    res_c = evaluate_decoder(const_path, rec, "test")
    res_t = evaluate_decoder(true_path, rec, "test")
    assert res_t["likelihood"] == "bernoulli" and res_t["n_bins"] == 1600
    assert abs(res_c["model"]["bits_per_spike"]) < 0.02, res_c["model"]
    assert res_t["model"]["bits_per_spike"] > 0.1, res_t["model"]
    assert res_t["model"]["log_likelihood_per_bin"] > res_c["model"]["log_likelihood_per_bin"]
    # the same through the command line
    save_npz(rec, tmp_path / "gen.npz")
    assert main(["evaluate", str(true_path), "--data", str(tmp_path / "gen.npz"), "--json", str(tmp_path / "e.json"), "--quiet"]) == 0
    cli = json.loads((tmp_path / "e.json").read_text())
    assert cli["model"]["bits_per_spike"] == pytest.approx(res_t["model"]["bits_per_spike"], rel=1e-9)


def test_generate_cli(tmp_path, capsys):
    path = _gen_model(tmp_path / "c.onnx", _logit(P))
    real = Recording(counts=(np.random.default_rng(0).random((3000, D)) < P).astype(int), bin_s=0.01,
                     channel_names=[f"n{i}" for i in range(D)])
    save_npz(real, tmp_path / "real.npz")
    argv = ["generate", str(path), "--steps", "3000", "--seed", "3", "--out", str(tmp_path / "g.npz"),
            "--compare", str(tmp_path / "real.npz"), "--report", str(tmp_path / "r.png"),
            "--json", str(tmp_path / "s.json"), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "steps/s" in out and "rate r =" in out
    g = load_npz(tmp_path / "g.npz")
    assert g.counts.shape == (3000, D) and g.bin_s == 0.01 and g.channel_names == real.channel_names
    assert (tmp_path / "r.png").stat().st_size > 10_000
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["rate_corr"] > 0.9 and s["steps_per_s"] > 0
    assert main(argv[:-5] + ["--quiet"]) == 0       # without --compare
    np.testing.assert_array_equal(load_npz(tmp_path / "g.npz").counts, g.counts)


def test_generate_refuses_decoders_in_one_line(tmp_path, capsys):
    from rt_decoder.baselines import fit_wiener
    from rt_decoder.simulate import simulate_session

    rec = simulate_session(minutes=0.5, channels=D, bin_s=0.05, seed=0)
    save(fit_wiener(rec.slice(0, 400), rec.slice(400, 500), taps=2), tmp_path / "w.onnx")
    with pytest.raises(ModelError, match="not a generative model"):
        generate(tmp_path / "w.onnx", 10)
    code = main(["generate", str(tmp_path / "w.onnx"), "--steps", "10", "--out", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "w.onnx" in err
    path = _gen_model(tmp_path / "c.onnx", _logit(P))
    save_npz(rec, tmp_path / "sim.npz")
    code = main(["generate", str(path), "--steps", "10", "--out", str(tmp_path / "x.npz"), "--compare", str(tmp_path / "sim.npz")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "sim.npz" in err


def test_prime_sets_the_starting_state(tmp_path):
    """Priming with busy real bins starts a self-exciting model in its busy state."""
    m = StepModel(_gen_model(tmp_path / "b.onnx", np.full(D, -4.0), self_weight=8.0))
    cold, _ = generate(m, 20, seed=0)
    hot, _ = generate(m, 20, seed=0, prime=np.ones((30, D)))
    assert hot[:5].mean() > 0.8 and cold[:5].mean() < 0.2
    with pytest.raises(ValueError, match="prime"):
        generate(m, 5, prime=np.ones((3, D + 1)))
