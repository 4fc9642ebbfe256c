"""tools/tail_figure.py on the real Spike 07-24 file: its tail bins and population surge match
what `evaluate` reports (rt_decoder.metrics), the figure is a PNG, a missing day is one line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import data_file

from rt_decoder.metrics import SURGE, tail_metrics

TOOL = Path(__file__).resolve().parents[1] / "tools" / "tail_figure.py"


def _tool():
    spec = importlib.util.spec_from_file_location("tail_figure", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_spike_07_24_tail_bins_carry_a_population_surge(tmp_path, capsys):
    f = data_file("limblab_spike_wf", "Spike_07-24-12_WF_001.mat")
    tool = _tool()
    d = tool.blocks("07-24", f.parent)
    (pte, vte, yte), tail = d["test"], d["tail"]
    assert 0.02 < tail.mean() < 0.1 and vte[tail].mean() > 5 * vte[~tail].mean()    # cursor jumps
    t = tail_metrics(yte, np.zeros_like(yte), d["train"][2], np.stack([pte, np.zeros_like(pte)], 1))
    assert t["bins"] == tail.sum() and t["population"] == d["population"]
    assert d["population"] == pytest.approx(pte[tail].mean() / pte[~tail].mean()) and d["population"] > SURGE  # ~1.8x
    out = tmp_path / "tail.png"
    assert tool.main(["--days", "07-24", "--data", str(f.parent), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert tool.main(["--days", "01-01", "--data", str(f.parent), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Spike_01-01-12_WF_001.mat" in err[0]
