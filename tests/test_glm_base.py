"""model.glm_base: our generative log-rate = the fitted coupled GLM's + the network's. The step graph
carries the GLM's history beside zeta and is exactly GLM + network; started at zero it is the GLM;
`train` fits the GLM once (base and reference), and the saturation penalty counts only what the
network adds to the GLM's own self-excitation."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import glm_sample, network_logits, train_on_counts  # noqa: E402

from rt_decoder.errors import ConfigError  # noqa: E402
from rt_decoder.recording import Recording  # noqa: E402
from rt_decoder.step_model import StepModel  # noqa: E402
from training.config import DEFAULTS, _merge, validate  # noqa: E402
from training.data import prepare  # noqa: E402
from training.export import export_step_graph  # noqa: E402
from training.glm import fit_glm  # noqa: E402
from training.train import build_model  # noqa: E402

D = 12


def _cfg(**model) -> dict:
    return validate(_merge(DEFAULTS, {"kind": "generative", "retention": {"layout": "similarity", "decays": [0.0, 0.5, 0.9]},
                                      "model": {"widths": [4, 8], "likelihood": "poisson", "glm_base": True, **model}},
                           "<t>"), "<t>")


def _poisson_glm_sample(path, T: int, seed: int = 0) -> np.ndarray:
    """Poisson counts from a stable coupled GLM: refractory neurons, neuron 2k drives neuron 2k+1."""
    return glm_sample(path, T, D, self_weight=-2.0, drive=0.8, bias=-2.5, likelihood="poisson", seed=seed)


def _prepared(tmp_path, T: int = 1500):
    x = _poisson_glm_sample(tmp_path / "truth.onnx", T)
    rec = Recording(counts=x, bin_s=0.01, channel_names=[f"n{i}" for i in range(D)], source="<sim>").validate()
    cfg = _cfg(coupling_rank=4)
    prep = prepare(rec, cfg)
    prep.base = fit_glm(rec, prep.split, "poisson", {"n_bases": 3, "n_bins": 8, "l2": [1e-3]}, log=lambda *a: None)
    prep.base_eta = prep.base.eta(rec.counts).astype(np.float32)
    return rec, cfg, prep


def test_the_step_graph_is_the_glm_plus_the_network(tmp_path):
    rec, cfg, prep = _prepared(tmp_path)
    torch.manual_seed(0)
    model = build_model(prep, cfg).eval()
    model.net.zero_generative_output()
    export_step_graph(model, prep, cfg, tmp_path / "g.onnx")
    m = StepModel(tmp_path / "g.onnx")
    assert [s.name for s in m.card.states] == ["zeta", "glm_hist"] and m.card.extra["glm_base"]["n_bins"] == 8
    # started at zero, ours is the GLM, bin by bin over the whole recording (its history state from reset)
    np.testing.assert_allclose(m.run(rec.counts), prep.base.predict(rec.counts), rtol=2e-5, atol=1e-7)
    with torch.no_grad():                      # every path of the network gets weights: graph = exp(GLM + network)
        model.net.head.own.normal_(0, 0.3)
        model.net.head.proj.weight.normal_(0, 0.3)
        model.net.head.coupling[2].weight.normal_(0, 0.3)
    export_step_graph(model, prep, cfg, tmp_path / "g2.onnx")
    pred = StepModel(tmp_path / "g2.onnx").run(rec.counts)
    net = network_logits(model, prep)
    assert np.abs(net).mean() > 0.05           # the network's part is not negligible
    np.testing.assert_allclose(pred, np.exp(net + prep.base.eta(rec.counts)), rtol=5e-5, atol=1e-7)


def test_the_penalty_counts_only_what_the_network_adds(tmp_path):
    _, cfg, prep = _prepared(tmp_path)
    model = build_model(prep, _cfg(coupling_rank=4, saturation_penalty=1.0))
    from rt_decoder.glm import ETA_MAX

    # a base at 2.5 counts per bin whatever the history: a neuron firing at the top level (3 counts)
    # expects ~0.7 of it next bin, above the q/2P the penalty allows a network on its own
    b = prep.base
    model.net.set_base(np.zeros_like(b.weights), np.full(D, np.log(2.5)), b.basis, prep.pixels, ETA_MAX)
    model.net.zero_generative_output()
    occupied = torch.zeros(prep.canvas[0] * prep.canvas[1], dtype=torch.bool)
    occupied[torch.as_tensor(prep.pixels)] = True
    torch.manual_seed(0)
    assert float(model.net.saturation_excess(occupied, 4, n=64).detach()) == 0.0       # the network adds nothing
    with torch.no_grad():
        model.net.head.own.fill_(-1.0)          # refractory on top of it: still nothing added
    assert float(model.net.saturation_excess(occupied, 4, n=64).detach()) == 0.0
    with torch.no_grad():
        model.net.head.own.fill_(1.0)           # self-excitation on top of the base's: penalised
    assert float(model.net.saturation_excess(occupied, 4, n=64).detach()) > 0.01


def test_train_fits_the_glm_once_and_starts_from_it(tmp_path, capsys):
    x = _poisson_glm_sample(tmp_path / "truth.onnx", 5000)
    code = train_on_counts(tmp_path, x,
        "name: gen\nkind: generative\nretention: {decays: [0.0, 0.5, 0.875], levels: 4}\n"
        "model: {widths: [4], likelihood: poisson, glm_base: true, self_gain_max: 0.0}\n"
        "training: {max_epochs: 3, batch_size: 256, threads: 1}\n"
        "baselines: {glm: {n_bases: 3, n_bins: 8, l2: [0.001, 0.0001]}}\n")
    assert code == 0
    cap = capsys.readouterr()
    out = cap.out + cap.err
    assert out.count("glm: l2 0.001:") == 1                # one fit: the base is the reference
    assert "glm base: validation loss" in out
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    glm = m["baselines"]["glm"]
    card = StepModel(tmp_path / "run" / "model.onnx").card
    assert [s.name for s in card.states] == ["zeta", "glm_hist"] and card.extra["glm_base"]["l2"] == glm["l2"]
    # the data are the GLM's own: the network has little to add, but the model never starts below it
    assert m["model"]["bits_per_spike"] >= glm["bits_per_spike"] - 0.01 and glm["bits_per_spike"] > 0.02
    assert m["sample"]["runaway"]["runaway"] is False


@pytest.mark.parametrize(("model", "training", "needle"), [
    ({"likelihood": "bernoulli"}, {}, "needs kind generative and model.likelihood poisson"),
    ({"likelihood": "poisson"}, {"mode": "online"}, "needs training.mode offline"),
])
def test_glm_base_settings_it_cannot_serve_are_one_line(model, training, needle):
    with pytest.raises(ConfigError, match=needle):
        validate(_merge(DEFAULTS, {"kind": "generative", "model": {"glm_base": True, **model}, "training": training},
                        "x.yaml"), "x.yaml")
