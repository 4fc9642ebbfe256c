"""retention.canvas: fit — the smallest near-square canvas the UNet's levels divide; a decoder on
it exports and runs bin by bin equal to the torch network, and an electrode map keeps its grid."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rt_decoder.errors import ConfigError  # noqa: E402
from rt_decoder.layout import fit_canvas, utah_grid  # noqa: E402
from rt_decoder.recording import Recording  # noqa: E402
from rt_decoder.step_model import StepModel  # noqa: E402
from training.config import DEFAULTS, _merge, validate  # noqa: E402
from training.data import prepare  # noqa: E402
from training.export import export_step_graph  # noqa: E402
from training.train import build_model, to_image  # noqa: E402


def test_fit_canvas_is_small_and_divisible():
    assert fit_canvas(95) == (8, 12)
    assert fit_canvas(97, 2) == (10, 10)
    assert fit_canvas(97, 4) == (12, 12)
    assert fit_canvas(31) == (5, 7)
    for n in (1, 4, 31, 95, 97, 142, 452, 1000):
        for m in (1, 2, 4):
            h, w = fit_canvas(n, m)
            assert h * w >= n and h % m == 0 and w % m == 0 and h <= w <= 1.5 * h
            assert h * w <= max(4 * m * m, 1.6 * n + 4 * m * m)      # never the 16x16 floor of default_canvas


def _cfg(widths, layout="raster", emap=None) -> dict:
    return validate(_merge(DEFAULTS, {"retention": {"canvas": "fit", "layout": layout, "map": emap},
                                      "model": {"widths": widths, "head_hidden": 16}}, "<t>"), "<t>")


@pytest.mark.parametrize("widths", [[4], [4, 8], [4, 8, 16]])
def test_fit_canvas_model_exports_and_runs(tmp_path, widths):
    D = 97
    rng = np.random.default_rng(0)
    rec = Recording(counts=rng.poisson(0.8, size=(400, D)), bin_s=0.05,
                    behavior=np.cumsum(rng.normal(size=(400, 2)), axis=0), source="<poisson>").validate()
    cfg = _cfg(widths)
    prep = prepare(rec, cfg)
    assert prep.canvas == fit_canvas(D, 2 ** (len(widths) - 1))
    torch.manual_seed(0)
    model = build_model(prep, cfg).eval()
    export_step_graph(model, prep, cfg, tmp_path / "m.onnx")
    sm = StepModel(tmp_path / "m.onnx")
    assert tuple(sm.card.canvas) == prep.canvas
    got = sm.run(rec.counts[:60])
    with torch.no_grad():
        x = to_image(torch.as_tensor(prep.feats[:60]), torch.as_tensor(prep.pixels), prep.canvas)
        want = model.net(x).numpy() * prep.out_std + prep.out_mean
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)


def test_fit_canvas_keeps_the_electrode_map_grid():
    rng = np.random.default_rng(1)
    rec = Recording(counts=rng.poisson(0.5, size=(400, 96)), bin_s=0.05,
                    behavior=rng.normal(size=(400, 2)), source="<poisson>").validate()
    assert prepare(rec, _cfg([4], "map", utah_grid(96))).canvas == (10, 10)
    assert prepare(rec, _cfg([4, 8, 16], "map", utah_grid(96))).canvas == (12, 12)


def test_bad_canvas_is_one_clear_error():
    with pytest.raises(ConfigError, match="retention.canvas must be"):
        validate(_merge(DEFAULTS, {"retention": {"canvas": "tight"}}, "<t>"), "<t>")
