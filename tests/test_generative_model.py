"""Our generative model beside its GLM reference: the head's own-history and coupling paths export
exactly, the own-history start recovers a known history effect, and `train` writes both models'
held-out bits/spike and a 10^4-step runaway check to metrics.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import glm_sample, network_logits, train_on_counts  # noqa: E402

from rt_decoder.cli import main  # noqa: E402
from rt_decoder.recording import Recording  # noqa: E402
from rt_decoder.step_model import StepModel  # noqa: E402
from training.config import DEFAULTS, _merge, validate  # noqa: E402
from training.data import prepare  # noqa: E402
from training.export import export_step_graph  # noqa: E402
from training.train import build_model, own_history_fit  # noqa: E402

D = 12


def _coupled_sample(path, T: int, seed: int = 0) -> np.ndarray:
    """Sparse binary spikes from a GLM: refractory neurons, neuron 2k drives neuron 2k+1 one bin later."""
    return glm_sample(path, T, D, self_weight=-4.0, drive=3.5, bias=-3.5, likelihood="bernoulli", seed=seed)


@pytest.mark.parametrize("likelihood", ["bernoulli", "poisson"])
def test_own_history_and_coupling_paths_export_exactly(tmp_path, likelihood):
    rng = np.random.default_rng(0)
    rec = Recording(counts=rng.poisson(0.4, (400, 20)), bin_s=0.01, source="<gen>").validate()
    cfg = validate(_merge(DEFAULTS, {"kind": "generative", "retention": {"layout": "similarity", "decays": [0.0, 0.5, 0.9]},
                                     "model": {"widths": [4, 8], "likelihood": likelihood, "coupling_rank": 6}},
                          "<t>"), "<t>")
    prep = prepare(rec, cfg)
    torch.manual_seed(1)
    model = build_model(prep, cfg).eval()
    with torch.no_grad():                     # both paths start at zero; give them weights to check
        model.net.head.own.normal_(0, 0.5)
        model.net.head.coupling[2].weight.normal_(0, 0.3)
    export_step_graph(model, prep, cfg, tmp_path / "g.onnx")
    pred = StepModel(tmp_path / "g.onnx").run(rec.counts)
    logits = network_logits(model, prep)
    want = np.exp(logits) if likelihood == "poisson" else 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(pred, want, rtol=2e-5, atol=1e-6)


def test_own_history_fit_finds_refractoriness():
    """Neurons that never fire twice within 3 bins: the start makes a spike right after a spike unlikely."""
    rng = np.random.default_rng(2)
    T = 20_000
    x = np.zeros((T, 3))
    last = np.full(3, -10)
    for t in range(T):
        fire = (rng.random(3) < 0.1) & (t - last > 3)
        x[t] = fire
        last[fire] = t
    decays = [0.0, 0.5, 0.9]
    z = np.zeros((T, 3, 3))
    state = np.zeros((3, 3))
    for t in range(T):
        state = np.array(decays)[:, None] * state + (1 - np.array(decays))[:, None] * x[t]
        z[t] = state
    w, b = own_history_fit(z[:-1], x[1:], "bernoulli")
    assert w.shape == (3, 3) and b.shape == (3,)
    eta = np.einsum("nsd,sd->nd", z[:-1], w) + b
    p = 1 / (1 + np.exp(-eta))
    assert p[x[:-1] > 0].mean() < 0.02 and abs(p.mean() - x.mean()) < 0.01
    quiet = np.ones_like(x, bool)             # no spike in the last 6 bins: back to the base rate (0.1)
    for lag in range(6):
        quiet[lag:] &= x[:T - lag] == 0
    assert p[quiet[:-1]].mean() > 0.08


def test_train_writes_glm_bits_and_runaway_check(tmp_path, capsys):
    x = _coupled_sample(tmp_path / "truth.onnx", 6000)
    code = train_on_counts(tmp_path, x,
        "name: gen\nkind: generative\nretention: {decays: [0.0, 0.5, 0.875], quantizer: binary, levels: 2}\n"
        "model: {widths: [4], likelihood: bernoulli, coupling_rank: 8}\n"
        "training: {max_epochs: 4, batch_size: 256, threads: 1}\n"
        "baselines: {glm: {n_bases: 3, n_bins: 8, l2: [0.001, 0.0001]}}\n")
    assert code == 0
    out = capsys.readouterr().out
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    glm = m["baselines"]["glm"]
    assert (tmp_path / "run" / "glm.onnx").exists() and StepModel(tmp_path / "run" / "glm.onnx").card.model_type == "glm"
    assert glm["bits_per_spike"] > 0.2 and glm["l2"] in (0.001, 0.0001) and glm["n_bases"] == 3
    assert m["model"]["bits_per_spike"] > 0.03          # four epochs: better than the constant rate
    for s in (m["sample"], glm["sample"]):
        assert s["steps"] == 10_000 and s["runaway"]["runaway"] is False
    assert "glm (coupled Poisson GLM)" in out and "bits/spike" in out
    # a decoder reference for a generative model is one clear line
    code = main(["train", "--config", str(tmp_path / "gen.yaml"), "--data", str(tmp_path / "sim.npz"),
                 "--out", str(tmp_path / "run2"), "--baselines", "gru"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "references are glm" in err[-1]
