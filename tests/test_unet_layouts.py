"""A UNet of 1, 2 or 3 levels over each layout (raster, similarity, electrode map, auto) exports and
runs bin by bin equal to the torch network; the map layout puts each channel where the map says."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rt_decoder.errors import ConfigError, DataError  # noqa: E402
from rt_decoder.layout import map_layout, utah_grid  # noqa: E402
from rt_decoder.recording import Recording  # noqa: E402
from rt_decoder.step_model import StepModel  # noqa: E402
from training.config import DEFAULTS, _merge, validate  # noqa: E402
from training.data import prepare  # noqa: E402
from training.export import export_step_graph  # noqa: E402
from training.train import build_model, to_image  # noqa: E402

D = 96


def _rec(T: int = 400) -> Recording:
    rng = np.random.default_rng(0)
    return Recording(counts=rng.poisson(0.8, size=(T, D)), bin_s=0.05,
                     behavior=np.cumsum(rng.normal(size=(T, 2)), axis=0), source="<poisson>").validate()


def _cfg(layout: str, widths: list[int], emap=None) -> dict:
    return validate(_merge(DEFAULTS, {"retention": {"layout": layout, "map": emap},
                                      "model": {"widths": widths, "head_hidden": 16}}, "<t>"), "<t>")


@pytest.mark.parametrize("widths", [[4], [4, 8], [4, 8, 16]])
@pytest.mark.parametrize("layout", ["raster", "similarity", "map", "auto"])
def test_levels_and_layouts_export_and_run(tmp_path, widths, layout):
    rec = _rec()
    cfg = _cfg(layout, widths, utah_grid(D) if layout in ("map", "auto") else None)
    prep = prepare(rec, cfg)
    assert prep.layout == {"auto": "map"}.get(layout, layout)
    torch.manual_seed(0)
    model = build_model(prep, cfg).eval()
    assert len(model.net.unet.down) == len(widths) - 1
    export_step_graph(model, prep, cfg, tmp_path / "m.onnx")
    sm = StepModel(tmp_path / "m.onnx")
    assert sm.card.layout["kind"] == prep.layout
    got = sm.run(rec.counts[:60])
    with torch.no_grad():
        x = to_image(torch.as_tensor(prep.feats[:60]), torch.as_tensor(prep.pixels), prep.canvas)
        want = model.net(x).numpy() * prep.out_std + prep.out_mean
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)


def test_map_places_channels_where_the_map_says():
    grid = utah_grid(D)
    pix = map_layout(grid, D, (16, 16))
    r0 = c0 = 3                                           # a 10x10 grid centred on 16x16
    for r, row in enumerate(grid):
        for c, ch in enumerate(row):
            if ch >= 0:
                assert pix[ch] == (r + r0) * 16 + (c + c0)
    assert grid[0][0] == grid[0][9] == grid[9][0] == grid[9][9] == -1
    # a permuted wiring moves the channels with it
    perm = [[-1 if v < 0 else (v + 1) % D for v in row] for row in grid]
    pix2 = map_layout(perm, D, (16, 16))
    assert pix2[1] == pix[0] and pix2[0] == pix[D - 1]


def test_bad_maps_are_one_clear_error():
    with pytest.raises(ValueError, match="no electrode for channel"):
        map_layout(utah_grid(90), D, (16, 16))
    with pytest.raises(ValueError, match="does not fit"):
        map_layout(utah_grid(D), D, (8, 8))
    with pytest.raises(ConfigError, match="needs retention.map"):
        _cfg("map", [4])
    with pytest.raises(ConfigError, match="retention.map must be a grid"):
        _cfg("map", [4], [[0, 1], [2]])
    grid = utah_grid(D)
    grid[0][1] = 96
    with pytest.raises(DataError, match="names channel 96"):
        prepare(_rec(), _cfg("map", [4], grid))
