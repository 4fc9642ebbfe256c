"""The cause of runaway sampling is fixed in training: a generative model fitted to task-driven rate
changes explains them as self-excitation that sustains itself once fed its own samples. By default
each neuron's net self-excitation through its linear history paths is projected to <= 0, and a
penalty keeps firing patterns (every bin or every other bin, any subset of neurons) from sustaining
themselves through any path; without them the same data run away."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rt_decoder.cli import main  # noqa: E402
from rt_decoder.recording import Recording, save_npz  # noqa: E402
from training.config import DEFAULTS, _merge, validate  # noqa: E402
from training.data import prepare  # noqa: E402
from training.train import build_model  # noqa: E402

D = 12


def _model(likelihood: str = "poisson"):
    rng = np.random.default_rng(0)
    rec = Recording(counts=rng.poisson(0.4, (300, D)), bin_s=0.01, source="<gen>").validate()
    cfg = validate(_merge(DEFAULTS, {"kind": "generative", "retention": {"layout": "similarity", "decays": [0.0, 0.5, 0.9]},
                                     "model": {"widths": [4, 8], "likelihood": likelihood, "coupling_rank": 6}}, "<t>"), "<t>")
    prep = prepare(rec, cfg)
    torch.manual_seed(0)
    return build_model(prep, cfg).eval(), prep


def test_self_gain_is_the_linear_paths_response_and_the_projection_bounds_it():
    model, prep = _model()
    head = model.net.head
    with torch.no_grad():
        head.own.normal_(0.5, 0.5)            # mostly self-exciting
        head.coupling[2].weight.normal_(0, 0.3)
    H, W = prep.canvas
    S = head.own.shape[1]
    p = int(prep.pixels[3])
    zeta = torch.zeros(1, S, H, W)
    zeta.view(1, S, -1)[0, :, p] = 1.0        # one neuron that has fired at the top level for ever
    feats = torch.zeros(1, model.net.unet.out_channels, H, W)
    with torch.no_grad():
        rise = (head(feats, zeta) - head(feats, torch.zeros_like(zeta))).view(-1)[p]
        assert float(rise) == pytest.approx(float(head.self_gain().view(-1)[p]), abs=1e-4)
        assert float(head.self_gain().view(-1)[p]) > 0.5
        head.own.view(S, -1)[:, p] -= 5.0     # this neuron is net refractory: the projection leaves it be
        before, g0 = head.own.clone(), head.self_gain().view(-1)
        assert float(g0[p]) < 0 and float(g0.max()) > 0.5
        head.bound_self_gain(0.0)
        g = head.self_gain().view(-1)
        assert float(g.max()) <= 1e-5
        assert float(g[p]) == pytest.approx(float(g0[p])) and torch.equal(head.own.view(S, -1)[:, p], before.view(S, -1)[:, p])
        head.own.copy_(before)
        head.bound_self_gain(None)            # null: unbounded, nothing changes
        assert torch.equal(head.own, before)


@pytest.mark.parametrize("likelihood", ["bernoulli", "poisson"])
def test_saturation_excess_sees_self_sustaining_firing(likelihood):
    model, prep = _model(likelihood)
    occupied = torch.zeros(prep.canvas[0] * prep.canvas[1], dtype=torch.bool)
    occupied[torch.as_tensor(prep.pixels)] = True
    torch.manual_seed(1)
    with torch.no_grad():
        model.net.head.bias.fill_(-6.0)       # quiet, no history: nothing sustains itself
        model.net.head.own.zero_()
        quiet = float(model.net.saturation_excess(occupied, levels=4, n=64))
        model.net.head.own.fill_(4.0)         # strong self-excitation: firing feeds itself
        loud = float(model.net.saturation_excess(occupied, levels=4, n=64))
    assert quiet < 0.01 and loud > 0.1


def _blocks(tmp_path) -> None:
    """Task epochs, no history effect at all: every neuron fires faster in every other 300-bin block."""
    rng = np.random.default_rng(0)
    state = (np.arange(8000) // 300) % 2
    x = rng.poisson(np.exp(-3.5 + 2.5 * state)[:, None] * np.ones(D))
    save_npz(Recording(counts=x, bin_s=0.01, channel_names=[f"n{i}" for i in range(D)], source="sim").validate(),
             tmp_path / "sim.npz")


def _train(tmp_path, name: str, extra: str) -> dict:
    (tmp_path / f"{name}.yaml").write_text(
        f"name: {name}\nkind: generative\nretention: {{decays: [0.0, 0.5, 0.875, 0.96875], quantizer: levels, levels: 4}}\n"
        f"model: {{widths: [4], likelihood: poisson, coupling_rank: 8{extra}}}\n"
        "training: {max_epochs: 4, batch_size: 256, threads: 1}\n")
    assert main(["train", "--config", str(tmp_path / f"{name}.yaml"), "--data", str(tmp_path / "sim.npz"),
                 "--out", str(tmp_path / name), "--no-baselines"]) == 0
    return json.loads((tmp_path / name / "metrics.json").read_text())


def test_task_driven_rates_run_away_unconstrained_and_not_with_the_fix(tmp_path):
    _blocks(tmp_path)
    free = _train(tmp_path, "free", "")                    # the defaults: unconstrained
    assert free["sample"]["runaway"]["runaway"] is True
    fixed = _train(tmp_path, "fixed", ", self_gain_max: 0.0, saturation_penalty: 1.0")
    assert fixed["sample"]["runaway"]["runaway"] is False
    assert fixed["sample"]["mean_rate_generated"] < 3 * fixed["sample"]["mean_rate_real"]
