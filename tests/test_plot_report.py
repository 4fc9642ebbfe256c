"""The static PNG report the demo writes (matplotlib only, no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

from rt_decoder.plot.report import latency_title, write_report


def session(t_bins: int = 1500, k: int = 4):
    rng = np.random.default_rng(0)
    t = np.arange(t_bins) * 0.02
    truth = np.stack([np.sin(t / (2 + i)) * (30 + 5 * i) for i in range(k)], axis=1)
    pred = truth + rng.normal(0, 3, truth.shape)
    pred[40:45] = np.nan  # skipped bins must not break R² or the plot
    lat = rng.lognormal(np.log(1.5), 0.3, t_bins)
    lat[::97] = 9.0
    return t, truth, pred, lat


def test_report_png_is_written_and_drawn(tmp_path):
    import matplotlib.image as mpimg

    t, truth, pred, lat = session()
    out = write_report(tmp_path / "sub" / "report.png", t, truth, pred, ["vel_x", "vel_y", "pos_x", "pos_y"], lat,
                       "test session", budget_ms=5.0, units=["mm/s", "mm/s", "mm", "mm"])
    assert out.exists() and out.stat().st_size > 20_000
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[0] > 500 and img.shape[1] > 1000
    assert img[..., :3].std() > 0.05  # not a blank page


def test_report_single_output_and_no_latency(tmp_path):
    t, truth, pred, _ = session(k=1)
    out = write_report(tmp_path / "one.png", t, truth[:, 0], pred[:, 0], ["force"], np.array([]), "one output")
    assert out.exists()


def test_report_rejects_mismatched_shapes(tmp_path):
    t, truth, pred, lat = session()
    with pytest.raises(ValueError, match="must be"):
        write_report(tmp_path / "x.png", t[:-1], truth, pred, ["a", "b", "c", "d"], lat, "bad")
    with pytest.raises(ValueError, match="names"):
        write_report(tmp_path / "x.png", t, truth, pred, ["a"], lat, "bad")


def test_latency_title_counts_misses_against_the_budget():
    lat = np.array([1.0, 2.0, 3.0, 6.0, np.nan])
    text = latency_title(lat, budget_ms=5.0)
    assert "p50 2.50 ms" in text and "misses 1 of 5" in text and "budget 5 ms" in text
    assert latency_title(lat, misses=3).endswith("misses 3 of 5")
    assert latency_title(np.array([])) == "latency: no data"
