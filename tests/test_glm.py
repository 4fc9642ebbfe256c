"""The coupled Poisson GLM reference: its step graph, its fit, and bits/spike by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import gammaln

from rt_decoder.evaluation import bits_per_spike, evaluate_decoder
from rt_decoder.generation import generate
from rt_decoder.glm import GLMParams, glm_card, history_features, raised_cosine_basis
from rt_decoder.recording import Recording
from rt_decoder.step_graph import save
from rt_decoder.step_model import StepModel

D = 4


def _rec(counts: np.ndarray, bin_s: float = 0.01) -> Recording:
    return Recording(counts=counts, bin_s=bin_s, channel_names=[f"n{i}" for i in range(counts.shape[1])],
                     source="<glm test>").validate()


def _true_glm(likelihood: str = "poisson") -> GLMParams:
    """Refractory self-history for every neuron, n0 excites n1, n2 inhibits n3."""
    basis = raised_cosine_basis(4, 12)
    B = basis.shape[1]
    W = np.zeros((B, D, D))
    for d in range(D):
        W[:, d, d] = [-3.0, -1.0, -0.3, 0.0]       # refractory, recovering
    W[:, 0, 1] = [1.2, 0.8, 0.3, 0.0]
    W[:, 2, 3] = [-1.0, -0.8, -0.4, 0.0]
    return GLMParams(bias=np.log(np.array([0.2, 0.1, 0.25, 0.15])), weights=W.reshape(B * D, D), basis=basis,
                     likelihood=likelihood)


def _write(params: GLMParams, rec: Recording, path) -> StepModel:
    save(params.to_onnx(glm_card(rec, params)), path)
    return StepModel(path)


def test_basis_is_a_smooth_partition_of_unity():
    b = raised_cosine_basis(5, 20)
    assert b.shape == (20, 5) and np.all(b >= 0) and np.all(b <= 1)
    np.testing.assert_allclose(b.sum(axis=1), 1.0, atol=1e-12)     # between the first and last peak
    assert b[0, 0] == pytest.approx(1.0) and b[-1, -1] == pytest.approx(1.0)
    peaks = b.argmax(axis=0)
    assert np.all(np.diff(peaks) > 0) and np.all(np.diff(np.diff(peaks)) >= 0)   # log-stretched: wider later


def test_history_features_by_hand():
    x = np.zeros((6, 2))
    x[1, 0] = 2
    basis = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    F = history_features(x, basis)                 # feature b*D + e
    assert F.shape == (6, 4)
    np.testing.assert_allclose(F[:, 0], [0, 2, 1, 0, 0, 0])      # basis 0, neuron 0: lags 0, 1
    np.testing.assert_allclose(F[:, 2], [0, 0, 1, 2, 0, 0])      # basis 1, neuron 0: lags 1, 2
    assert not F[:, [1, 3]].any()


@pytest.mark.parametrize("likelihood", ["poisson", "bernoulli"])
def test_step_graph_matches_numpy_twin(tmp_path, likelihood):
    p = _true_glm(likelihood)
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.3, size=(1200, D))
    rec = _rec(counts)
    m = _write(p, rec, tmp_path / "g.onnx")
    assert m.card.kind == "generative" and m.card.model_type == "glm" and m.card.likelihood == likelihood
    np.testing.assert_allclose(m.run(counts), p.predict(counts), rtol=2e-5, atol=1e-7)
    m.reset()                                      # reset empties the history: the same again
    np.testing.assert_allclose(m.run(counts[:50]), p.predict(counts[:50]), rtol=2e-5, atol=1e-7)


def test_fit_recovers_known_filters(tmp_path):
    """Simulate 24000 bins from a GLM with known filters through its step graph, refit, compare."""
    from training.glm import fit_glm

    true = _true_glm()
    T = 24_000
    dummy = _rec(np.zeros((10, D), int))
    x, _ = generate(_write(true, dummy, tmp_path / "true.onnx"), T, seed=3)
    rec = _rec(x)
    split = {"train": (0, 16_000), "val": (16_000, 20_000), "test": (20_000, T)}
    fit = fit_glm(rec, split, "poisson", {"n_bases": 4, "n_bins": 12, "l2": [1e-3, 1e-4, 1e-5]}, log=lambda s: None)
    got, want = fit.filters(), true.filters()
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.97
    # the depth of a strong refractory dip is weakly identified (spikes rarely test it): deep is enough
    lag0_self = np.zeros_like(got, bool)
    lag0_self[0, np.arange(D), np.arange(D)] = True
    assert np.all(got[lag0_self] < -2.0), got[lag0_self]
    assert np.max(np.abs(got - want)[~lag0_self]) < 0.4, np.max(np.abs(got - want)[~lag0_self])
    assert np.max(np.abs(got[:3, 0, 1] - want[:3, 0, 1])) < 0.3               # the excitatory coupling
    assert np.all(got[:3, 2, 3] < -0.3) and np.all(np.abs(got[:, 1, 0]) < 0.3)   # inhibition; no 1->0 coupling
    np.testing.assert_allclose(fit.bias, true.bias, atol=0.3)
    assert fit.info["l2"] is not None and len(fit.info["path"]) >= 2
    # held-out: the refit scores like the truth, both far above the constant-rate model
    path = tmp_path / "fit.onnx"
    save(fit.to_onnx(glm_card(rec, fit)), path)
    scored = {n: evaluate_decoder(p, rec, "test", split)["model"]["bits_per_spike"]
              for n, p in (("fit", path), ("true", tmp_path / "true.onnx"))}
    assert scored["true"] > 0.1 and abs(scored["fit"] - scored["true"]) < 0.02, scored


def test_bits_per_spike_hand_cases(tmp_path):
    assert bits_per_spike(-10.0, -10.0 - 2 * math.log(2), 2) == pytest.approx(1.0)
    assert bits_per_spike(-5.0, -5.0, 7) == 0.0
    assert bits_per_spike(-12.0, -10.0, 4) == pytest.approx(-2 / (4 * math.log(2)))
    # a history-free Poisson GLM with known rates, scored on a block we can sum by hand
    rng = np.random.default_rng(1)
    counts = rng.poisson(0.5, size=(400, 2))
    counts[:, 1] = rng.poisson(2.0, size=400)
    rec = _rec(counts)
    split = {"train": (0, 280), "val": (280, 320), "test": (320, 400)}
    rates = np.array([0.7, 1.5])
    p = GLMParams(bias=np.log(rates), weights=np.zeros((2 * 3, 2)), basis=raised_cosine_basis(3, 5))
    m = _write(p, rec, tmp_path / "c.onnx")
    got = evaluate_decoder(m, rec, "test", split)["model"]
    x = counts[321:400].astype(float)              # the prediction after bin k scores bin k + 1
    const = counts[:280].mean(axis=0)
    ll = (x * np.log(rates) - rates - gammaln(x + 1)).sum()
    ll0 = (x * np.log(const) - const - gammaln(x + 1)).sum()
    assert got["n_spikes"] == x.sum() and got["scored_bins"] == 79
    assert got["bits_per_spike"] == pytest.approx((ll - ll0) / (x.sum() * math.log(2)), rel=1e-5)
    # the train-rate model itself scores exactly zero
    p0 = GLMParams(bias=np.log(const), weights=np.zeros((2 * 3, 2)), basis=raised_cosine_basis(3, 5))
    assert evaluate_decoder(_write(p0, rec, tmp_path / "z.onnx"), rec, "test", split)["model"]["bits_per_spike"] \
        == pytest.approx(0.0, abs=1e-6)
