"""baselines.jobs: the references fitted in worker processes while our model trains give the same
figures as fitted one after another, land in metrics.json in the order asked, and a stale
reference file of an earlier run does not survive."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from rt_decoder.cli import main  # noqa: E402
from rt_decoder.recording import save_npz  # noqa: E402


def _config(path, jobs: int):
    path.write_text("name: small\nretention: {decays: [0.0, 0.5, 0.875]}\n"
                    "model: {widths: [4], head_hidden: 32}\ntraining: {max_epochs: 2, threads: 1}\n"
                    f"baselines:\n  jobs: {jobs}\n  mlp: {{hidden: 32, max_epochs: 3}}\n")
    return path


def test_parallel_references_equal_sequential(tmp_path):
    from rt_decoder.simulate import simulate_session

    rec = simulate_session(minutes=2.0, channels=24, bin_s=0.05, seed=3)
    data = save_npz(rec, tmp_path / "sim.npz")
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        out.mkdir()
        (out / "gru.onnx").write_bytes(b"stale")            # from an "earlier run": must go
        assert main(["train", "--config", str(_config(tmp_path / f"c{jobs}.yaml", jobs)), "--data", str(data),
                     "--out", str(out), "--baselines", "mlp,wiener"]) == 0
        runs[jobs] = json.loads((out / "metrics.json").read_text())
        assert not (out / "gru.onnx").exists()
        assert all((out / f"{n}.onnx").exists() for n in ("mlp", "wiener"))
    seq, par = runs[1], runs[2]
    assert seq["baselines_parallel"] is False and par["baselines_parallel"] is True
    assert list(par["baselines"]) == ["mlp", "wiener"]
    for name in ("mlp", "wiener"):
        assert par["baselines"][name]["r2"] == pytest.approx(seq["baselines"][name]["r2"], abs=1e-6), name
    assert par["model"]["r2"] == pytest.approx(seq["model"]["r2"], abs=1e-6)
