"""The exported step graph: zeta inside it equals the numpy retention, and ONNX Runtime gives the
torch network's outputs bin by bin (real chestek data when present)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from conftest import data_file  # noqa: E402

from rt_decoder.layout import to_canvas  # noqa: E402
from rt_decoder.recording import Recording  # noqa: E402
from rt_decoder.retention import quantize, retention_parallel_f32  # noqa: E402
from rt_decoder.step_model import StepModel  # noqa: E402
from training.config import DEFAULTS, _merge, validate  # noqa: E402
from training.data import prepare  # noqa: E402
from training.export import export_step_graph  # noqa: E402
from training.retention import retention_recurrent  # noqa: E402
from training.train import build_model, to_image  # noqa: E402


def _cfg(**over) -> dict:
    return validate(_merge(DEFAULTS, over, "<test>"), "<test>")


def _poisson_rec(T: int = 800, D: int = 40, K: int = 2, seed: int = 0) -> Recording:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.9, size=(T, D))
    y = np.cumsum(rng.normal(size=(T, K)), axis=0)
    return Recording(counts=counts, bin_s=0.05, behavior=y, source="<poisson>").validate()


def _torch_outputs(model, prep, rows) -> np.ndarray:
    with torch.no_grad():
        x = to_image(torch.as_tensor(prep.feats[rows]), torch.as_tensor(prep.pixels), prep.canvas)
        return model.net(x).numpy()


@pytest.mark.parametrize("lag_bins", [0, 1])
def test_zeta_in_graph_equals_numpy_retention(tmp_path, lag_bins):
    rec = _poisson_rec()
    cfg = _cfg(lag_bins=lag_bins, model={"widths": [8, 16], "head_hidden": 16})
    prep = prepare(rec, cfg)
    torch.manual_seed(0)
    model = build_model(prep, cfg).eval()
    export_step_graph(model, prep, cfg, tmp_path / "m.onnx")
    sm = StepModel(tmp_path / "m.onnx")
    q = quantize(rec.counts, 4, "levels").astype(np.float32)
    want = to_canvas(retention_parallel_f32(q, prep.decays), prep.pixels, prep.canvas)   # (T, S, H, W)
    pred = np.empty((rec.n_bins, prep.n_outputs), np.float32)
    for k in range(rec.n_bins):
        pred[k] = sm.step(rec.counts[k])
        np.testing.assert_array_equal(sm.state["zeta"][0], want[k])
    # and the prediction is the torch network on that zeta (lag-shifted), de-normalized
    ref = _torch_outputs(model, prep, np.arange(rec.n_bins)) * prep.out_std + prep.out_mean
    scale = np.abs(ref).max()
    np.testing.assert_allclose(pred, ref, atol=1e-4 * scale, rtol=0)


def test_learned_quantizer_graph_equals_torch(tmp_path):
    rec = _poisson_rec(T=300, D=20)
    cfg = _cfg(retention={"quantizer": "learned", "levels": 4}, training={"mode": "online"},
               model={"widths": [8], "head_hidden": 0})
    prep = prepare(rec, cfg)
    torch.manual_seed(1)
    model = build_model(prep, cfg).eval()
    with torch.no_grad():
        model.quant.w.mul_(0.5).add_(torch.rand_like(model.quant.w))   # not the initial staircase
    export_step_graph(model, prep, cfg, tmp_path / "m.onnx")
    sm = StepModel(tmp_path / "m.onnx")
    with torch.no_grad():
        q = model.quant(torch.as_tensor(rec.counts, dtype=torch.float32))
        z = retention_recurrent(q[:, None], prep.decays)[:, 0].numpy()
    want = to_canvas(z, prep.pixels, prep.canvas)
    for k in range(rec.n_bins):
        sm.step(rec.counts[k])
        np.testing.assert_allclose(sm.state["zeta"][0], want[k], atol=1e-6, rtol=0)


@pytest.mark.parametrize("likelihood", ["bernoulli", "poisson"])
def test_generative_graph_gives_link_of_pixel_logits(tmp_path, likelihood):
    rec = _poisson_rec(T=300, D=30)
    cfg = _cfg(kind="generative", model={"widths": [8, 16], "likelihood": likelihood},
               retention={"layout": "similarity"})
    prep = prepare(rec, cfg)
    torch.manual_seed(2)
    model = build_model(prep, cfg).eval()
    export_step_graph(model, prep, cfg, tmp_path / "g.onnx")
    card_outputs = StepModel(tmp_path / "g.onnx").card.outputs
    assert card_outputs == rec.channel_names
    pred = StepModel(tmp_path / "g.onnx").run(rec.counts)
    logits = _torch_outputs(model, prep, np.arange(rec.n_bins)).reshape(rec.n_bins, -1)[:, prep.pixels]
    want = np.exp(logits) if likelihood == "poisson" else 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(pred, want, rtol=1e-5, atol=1e-6)


@pytest.mark.realdata
def test_parity_onnx_vs_torch_on_chestek(tmp_path):
    """>= 1000 consecutive real bins: StepModel (ONNX Runtime) vs torch within 1e-4 of the output scale."""
    from rt_decoder.loaders import load_recording

    path = data_file("chestek_contdata95", "contdata95.mat")
    rec = load_recording(path, None)
    cfg = _cfg()                                   # configs/default.yaml's architecture, random init
    prep = prepare(rec, cfg)
    torch.manual_seed(0)
    model = build_model(prep, cfg).eval()
    graph = export_step_graph(model, prep, cfg, tmp_path / "m.onnx")
    onnx.checker.check_model(graph)
    n = 1200
    pred = StepModel(tmp_path / "m.onnx").run(rec.counts[:n])
    ref = _torch_outputs(model, prep, np.arange(n)) * prep.out_std + prep.out_mean
    scale = prep.out_std                           # the output scale, per output
    assert np.all(np.abs(pred - ref) <= 1e-4 * scale)
