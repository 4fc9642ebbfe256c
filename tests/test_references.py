"""The neural references (gru, tcfnn, mlp): their exported step graphs equal the torch networks as
trained, the GRU carries its state from bin to bin, `train` writes them into metrics.json, and
`run` streams a GRU over LSL."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rt_decoder.cli import main  # noqa: E402
from rt_decoder.metrics import r2  # noqa: E402
from rt_decoder.recording import save_npz, split_bounds  # noqa: E402
from rt_decoder.step_model import StepModel  # noqa: E402
from training import gru  # noqa: E402
from training.reference import lag_window, train_reference  # noqa: E402

QUICK = {"gru": {"max_epochs": 2}, "tcfnn": {"max_epochs": 2}, "mlp": {"max_epochs": 2}}
TINY = {"gru": {"hidden": 32, "max_epochs": 3, "window": 32, "burn_in": 8},
        "tcfnn": {"hidden": 32, "layers": 2, "max_epochs": 3}, "mlp": {"hidden": 32, "max_epochs": 3}}


def _rec_chestek():
    from conftest import data_file

    from rt_decoder.loaders import load_recording

    return load_recording(data_file("chestek_contdata95", "contdata95.mat"), None).slice(0, 6000)


@pytest.fixture(scope="module")
def chestek_models(tmp_path_factory):
    """Each reference trained two epochs on the first 6000 bins of chestek (test block: 1200 bins)."""
    rec = _rec_chestek()
    split = split_bounds(rec.n_bins)
    d = tmp_path_factory.mktemp("refs")
    nets = {name: train_reference(name, rec, split, 0, d / f"{name}.onnx", overrides=QUICK[name], progress=False)
            for name in ("gru", "tcfnn", "mlp")}
    return rec, split, d, nets


def _forward(name: str, r, split) -> np.ndarray:
    """The trained network's own forward over the test block (as in training), in physical units:
    the GRU as one sequence from a zero state, the lag-buffer nets on windows with zeros before
    the block start (the graph's reset state)."""
    net, data, hp = r.net, r.data, r.hparams
    a, b = split["test"]
    with torch.no_grad():
        if name == "gru":
            out, _ = net(data.x[a:b, None], lag=data.lag_bins)
            out = out[:, 0]
        else:
            x = data.x[a:b]                                   # the block alone: zeros before its start
            out = net(lag_window(x, torch.arange(b - a), hp["taps"], data.lag_bins))
    return out.numpy() * data.out_std + data.out_mean


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["gru", "tcfnn", "mlp"])
def test_onnx_equals_torch_on_real_bins(chestek_models, name):
    rec, split, d, nets = chestek_models
    a, b = split["test"]
    assert b - a >= 1000
    want = _forward(name, nets[name], split)
    m = StepModel(d / f"{name}.onnx")
    assert m.card.model_type == name and m.card.extra["split"]["test"] == [a, b]
    got = m.run(rec.counts[a:b])
    scale = np.nanstd(rec.behavior[a:b], axis=0)
    assert np.max(np.abs(got - want) / scale) < 1e-4
    assert np.mean(r2(rec.behavior[a:b], got)) > 0.2          # two epochs already decode


@pytest.mark.realdata
def test_gru_state_is_carried_from_bin_to_bin(chestek_models):
    """Stepping with the state reset before every bin must decode far worse than carrying it:
    a graph that dropped gru_h (or returned it unchanged) would fail the parity test above and this one."""
    rec, split, d, _ = chestek_models
    a, b = split["test"]
    m = StepModel(d / "gru.onnx")
    assert [s.name for s in m.card.states] == ["gru_h"] and m.card.states[0].shape == [2, 1, 256]
    carried = m.run(rec.counts[a:b])
    reset = np.empty_like(carried)
    for k in range(b - a):
        m.reset()
        reset[k] = m.step(rec.counts[a + k])
    assert np.abs(m.state["gru_h"]).max() > 0
    r_carried, r_reset = np.mean(r2(rec.behavior[a:b], carried)), np.mean(r2(rec.behavior[a:b], reset))
    assert r_carried > r_reset + 0.2, (r_carried, r_reset)


@pytest.mark.parametrize("name", ["gru", "tcfnn", "mlp"])
def test_lag1_is_causal_and_matches(tmp_path, name):
    """lag_bins 1: the prediction for bin k ignores bin k's counts; the graph equals the net."""
    from rt_decoder.simulate import simulate_session

    rec = simulate_session(minutes=2.0, channels=20, bin_s=0.05, seed=5)
    split = split_bounds(rec.n_bins)
    path = tmp_path / f"{name}.onnx"
    res = train_reference(name, rec, split, 1, path, overrides=TINY[name], progress=False)
    a, b = split["test"]
    m = StepModel(path)
    assert m.card.lag_bins == 1
    got = m.run(rec.counts[a:b])
    np.testing.assert_allclose(got, _forward(name, res, split), atol=1e-4 * float(np.nanstd(rec.behavior)))
    x = rec.counts[a:b].copy()
    x[50] += 5
    m.reset()
    moved = np.abs(m.run(x) - got).max(axis=1)
    assert moved[:51].max() == 0 and moved[51] > 0


def test_train_writes_every_reference(tmp_path, capsys):
    from rt_decoder.simulate import simulate_session

    rec = simulate_session(minutes=2.0, channels=24, bin_s=0.05, seed=3)
    data = save_npz(rec, tmp_path / "sim.npz")
    refs = "\n".join(f"  {k}: {json.dumps(v)}" for k, v in TINY.items())
    (tmp_path / "c.yaml").write_text("name: small\nretention: {decays: [0.0, 0.5, 0.875]}\n"
                                     "model: {widths: [4], head_hidden: 32}\ntraining: {max_epochs: 2}\n"
                                     f"baselines:\n{refs}\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--data", str(data), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["baselines"]) == ["gru", "tcfnn", "mlp", "wiener", "kalman"]
    K = rec.behavior.shape[1]
    for name, block in m["baselines"].items():
        assert (out / f"{name}.onnx").exists() and name + " R2" in printed
        assert all(len(block[k]) == K for k in ("r2", "rmse", "corr"))
        assert block["lag_bins"] == 0 and block["train_seconds"] >= 0
        assert StepModel(out / f"{name}.onnx").card.model_type == name
    for name in ("gru", "tcfnn", "mlp"):
        assert m["baselines"][name]["epochs"] >= 1 and m["baselines"][name]["stopped"]
    assert m["baselines_seconds"] > 0 and m["wall_seconds"] >= m["train_seconds"]
    # a chosen subset, in the order given; and none
    out2 = tmp_path / "run2"
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--data", str(data), "--out", str(out2),
                 "--baselines", "mlp,wiener"]) == 0
    assert list(json.loads((out2 / "metrics.json").read_text())["baselines"]) == ["mlp", "wiener"]
    assert not (out2 / "gru.onnx").exists()
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--data", str(data), "--out", str(tmp_path / "r3"),
                 "--no-baselines"]) == 0
    assert json.loads((tmp_path / "r3" / "metrics.json").read_text())["baselines"] == {}


@pytest.mark.parametrize("argv,needle", [
    (["--baselines", "gru,lstm"], "unknown reference(s) lstm"),
    (["--baselines", "gru", "--no-baselines"], "contradict"),
])
def test_bad_reference_flags_are_one_line(tmp_path, capsys, argv, needle):
    (tmp_path / "c.yaml").write_text("name: x\n")
    code = main(["train", "--config", str(tmp_path / "c.yaml"), "--data", str(tmp_path / "none.npz"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1


def test_bad_reference_setting_is_one_line(tmp_path, capsys):
    from rt_decoder.simulate import simulate_session

    data = save_npz(simulate_session(minutes=1.5, channels=8, bin_s=0.05, seed=1), tmp_path / "s.npz")
    (tmp_path / "c.yaml").write_text("name: x\ntraining: {max_epochs: 1}\nbaselines: {gru: {hiden: 3}}\n")
    code = main(["train", "--config", str(tmp_path / "c.yaml"), "--data", str(data), "--out", str(tmp_path / "o"),
                 "--baselines", "gru"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "c.yaml" in err[-1] and "baselines.gru.hiden" in err[-1]


@pytest.mark.lsl
def test_run_streams_a_gru_over_lsl(tmp_path):
    from rt_decoder.runtime.probe import decode_replay, poisson_recording
    from rt_decoder.runtime.session_log import rerun_log

    rec = poisson_recording(700, 16, bin_s=0.02, seed=21)
    path = tmp_path / "gru.onnx"
    train_reference("gru", rec.slice(0, 600), split_bounds(600), 0, path, overrides=TINY["gru"], progress=False)
    live = rec.slice(600, 700)
    x, summary = decode_replay(path, live, log_path=tmp_path / "s.jsonl")
    assert summary["predictions"] == 100
    want = StepModel(path).run(live.counts)
    np.testing.assert_allclose(x, want, atol=1e-5)
    assert np.abs(np.diff(want, axis=0)).max() > 0               # the state moves the prediction
    assert rerun_log(path, tmp_path / "s.jsonl")["exact"]


def test_gru_window_loss_ignores_the_burn_in():
    """Targets inside the burn-in do not count; targets after it do."""
    torch.manual_seed(0)
    net = gru.GRUNet(6, 2, hidden=8, layers=2, dropout=0.0)
    x, y = torch.randn(24, 3, 6), torch.randn(24, 3, 2)
    y2 = y.clone()
    with torch.no_grad():
        base = float(gru.window_loss(net, x, y, 8, 0))
        y2[:8] = 1e3
        assert float(gru.window_loss(net, x, y2, 8, 0)) == base
        y2[8] = 1e3
        assert float(gru.window_loss(net, x, y2, 8, 0)) > base + 1


def test_bench_accuracy_table_chart_and_json(tmp_path, capsys, monkeypatch):
    """`bench accuracy` on a simulated recording: one row per model with R2, train s, p50/p99; a PNG; JSON."""
    from rt_decoder.simulate import simulate_session
    from training import bench

    save_npz(simulate_session(minutes=1.0, channels=12, bin_s=0.05, seed=4), tmp_path / "sim.npz")
    monkeypatch.setitem(bench.DATASETS, "sim", ("sim.npz", None))
    code = main(["bench", "accuracy", "--datasets", "sim", "--data-dir", str(tmp_path), "--out", str(tmp_path / "b"),
                 "--baselines", "mlp,wiener", "--time-limit", "2", "--latency-steps", "50",
                 "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0
    table = [ln.split() for ln in out.splitlines() if ln.startswith("sim ")]
    assert [row[3] for row in table] == ["ours", "mlp", "wiener"]
    for row in table:
        r2_, p50, p99 = float(row[4]), float(row[-2]), float(row[-1])
        assert -1 < r2_ <= 1 and 0 < p50 <= p99
    res = json.loads((tmp_path / "r.json").read_text())[0]
    assert set(res["latency"]) == {"ours", "mlp", "wiener"} and set(res["baselines"]) == {"mlp", "wiener"}
    cores = [np.mean(m["tail"]["r2_outside"]) for m in (res["model"], res["baselines"]["mlp"], res["baselines"]["wiener"])]
    np.testing.assert_allclose([float(row[-5]) for row in table], cores, atol=1e-4)   # the "w/o tail" column
    png = tmp_path / "b" / "accuracy.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_accuracy_over_seeds_shows_mean_and_spread(tmp_path, capsys, monkeypatch):
    """`bench accuracy --seeds 0 1`: one training per seed in its own folder, one table row per model
    whose R2 is the mean over the seeds' results and whose spread is their standard deviation."""
    from rt_decoder.simulate import simulate_session
    from training import bench

    save_npz(simulate_session(minutes=1.0, channels=12, bin_s=0.05, seed=4), tmp_path / "sim.npz")
    monkeypatch.setitem(bench.DATASETS, "sim", ("sim.npz", None))
    code = main(["bench", "accuracy", "--datasets", "sim", "--data-dir", str(tmp_path), "--out", str(tmp_path / "b"),
                 "--config", "default_flat", "--baselines", "mlp", "--seeds", "0", "1", "--time-limit", "2",
                 "--latency-steps", "20", "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert [r["seed"] for r in res] == [0, 1]
    assert all((tmp_path / "b" / f"sim-default_flat-s{s}" / "model.onnx").exists() for s in (0, 1))
    table = {ln.split()[3]: ln.split() for ln in out.splitlines() if ln.startswith("sim ")}
    assert set(table) == {"ours", "mlp"}
    per_seed = [np.mean(r["model"]["r2"]) for r in res]
    ours = table["ours"]
    assert float(ours[4]) == pytest.approx(np.mean(per_seed), abs=1e-4)
    assert float(ours[5]) == pytest.approx(np.std(per_seed), abs=1e-4) and int(ours[6]) == 2
    assert (tmp_path / "b" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_accuracy_chart_and_table_take_an_undefined_r2(tmp_path):
    """A recording whose test block is idle has R2 NaN for every model (rt_decoder.metrics.r2); the
    table shows nan and the chart leaves its bars out instead of failing on NaN axis limits."""
    from training import bench

    lat = {"p50_ms": 0.1, "p99_ms": 0.2}

    def result(dataset: str, ours: float, gru: float) -> dict:
        return {"dataset": dataset, "config": "default", "seed": 0, "lag_bins": 0, "train_seconds": 1.0,
                "train_cpu_seconds": 1.0, "model": {"r2": [ours, ours]}, "latency": {"ours": lat, "gru": lat},
                "baselines": {"gru": {"r2": [gru, gru], "train_seconds": 1.0, "train_cpu_seconds": 1.0}}}

    results = [result("spike_wf_0720", float("nan"), float("nan")), result("chestek", 0.97, 0.96)]
    table = bench.accuracy_table(results)
    idle = [ln.split() for ln in table.splitlines() if ln.startswith("spike_wf_0720")]
    assert len(idle) == 2 and all(row[4] == "nan" for row in idle)
    png = tmp_path / "acc.png"
    bench.accuracy_chart(results, png)
    assert png.read_bytes()[:4] == b"\x89PNG"
