"""StepModel: card checks, state handling and equality with the numpy retention readout."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from rt_decoder.errors import ModelError
from rt_decoder.layout import default_canvas, raster_layout, to_canvas
from rt_decoder.model_card import CARD_KEY, ModelCard, StateSpec
from rt_decoder.retention import quantize, retention_parallel_f32
from rt_decoder.step_graph import build_retention_model, save
from rt_decoder.step_model import StepModel

DECAYS = [0.5, 0.9]


def _linear_model(tmp_path, D=12, K=2, lag=0):
    canvas = default_canvas(D)
    S = len(DECAYS)
    card = ModelCard(kind="decoder", model_type="retention_linear", bin_s=0.02,
                     channel_names=[f"c{i}" for i in range(D)], outputs=[f"y{k}" for k in range(K)],
                     units=["cm"] * K, states=[StateSpec("zeta", [1, S, *canvas])], decays=DECAYS,
                     canvas=list(canvas), layout={"kind": "raster", "pixels": raster_layout(D, canvas).tolist()},
                     lag_bins=lag)
    rng = np.random.default_rng(0)
    W = rng.normal(size=(S * canvas[0] * canvas[1], K))
    mean, std = np.array([1.0, -2.0][:K]), np.array([3.0, 0.5][:K])
    path = tmp_path / "m.onnx"
    save(build_retention_model(card, linear=(W, np.zeros(K)), out_mean=mean, out_std=std), path)
    return path, W, mean, std, canvas


@pytest.mark.parametrize("lag", [0, 1])
def test_step_model_matches_numpy(tmp_path, lag):
    path, W, mean, std, canvas = _linear_model(tmp_path, lag=lag)
    m = StepModel(path)
    assert "CPUExecutionProvider" in m.providers
    x = np.random.default_rng(1).poisson(0.7, size=(300, 12))
    pred = m.run(x)
    z = retention_parallel_f32(to_canvas(quantize(x), raster_layout(12, canvas), canvas), DECAYS).reshape(300, -1)
    if lag:
        z = np.vstack([np.zeros((1, z.shape[1]), np.float32), z[:-1]])
    np.testing.assert_allclose(pred, (z @ W) * std + mean, atol=1e-4)
    m.reset()
    np.testing.assert_allclose(m.run(x), pred, atol=0)


def test_missing_card_and_bad_file(tmp_path):
    path, *_ = _linear_model(tmp_path)
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "nocard.onnx"))
    with pytest.raises(ModelError, match="no model card"):
        StepModel(tmp_path / "nocard.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="junk.onnx"):
        StepModel(tmp_path / "junk.onnx")
    with pytest.raises(ModelError, match="no such model file"):
        StepModel(tmp_path / "absent.onnx")


def test_inconsistent_card(tmp_path):
    path, *_ = _linear_model(tmp_path)
    model = onnx.load(str(path))
    card = ModelCard.from_json(next(p.value for p in model.metadata_props if p.key == CARD_KEY))
    card.channel_names = card.channel_names[:-1]
    card.layout["pixels"] = card.layout["pixels"][:-1]
    for p in model.metadata_props:
        if p.key == CARD_KEY:
            p.value = card.to_json()
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(ModelError, match="counts"):
        StepModel(tmp_path / "bad.onnx")
