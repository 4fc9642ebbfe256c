"""`rt-decoder evaluate` and evaluate_decoder: schema, name matching, and one-line errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from conftest import data_file

from rt_decoder.baselines import fit_baselines, fit_wiener_params
from rt_decoder.cli import main
from rt_decoder.errors import DataError
from rt_decoder.evaluation import evaluate_decoder
from rt_decoder.metrics import r2, tail_metrics, tail_note
from rt_decoder.recording import save_npz, split_bounds
from rt_decoder.simulate import simulate_session
from rt_decoder.step_graph import save


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ev")
    rec = simulate_session(minutes=2.0, channels=20, bin_s=0.05, seed=5)
    save_npz(rec, d / "sim.npz")
    models = fit_baselines(rec, split_bounds(rec.n_bins), lag_bins=1)
    save(models["wiener"], d / "wiener.onnx")
    save(models["kalman"], d / "kalman.onnx")
    return d, rec


def _one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_cli_json_schema(files, capsys):
    d, rec = files
    out = d / "m.json"
    assert main(["evaluate", str(d / "wiener.onnx"), "--data", str(d / "sim.npz"), "--json", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "pos_x" in text and "R2" in text
    res = json.loads(out.read_text())
    T = rec.n_bins
    b = split_bounds(T)
    assert res["outputs"] == ["pos_x", "pos_y", "vel_x", "vel_y"]
    assert res["bin_s"] == 0.05 and res["lag_bins"] == 1 and res["block"] == "test"
    assert res["split"] == {k: list(v) for k, v in b.items()}
    assert res["n_bins"] == T - b["test"][0]
    assert set(res["model"]) == {"r2", "rmse", "corr", "tail"} and all(len(res["model"][k]) == 4 for k in ("r2", "rmse", "corr"))
    assert set(res["model"]["tail"]) == {"sd", "bins", "fraction", "share", "r2_outside", "population"}
    # the figure equals the numpy Wiener twin run from reset at the test block start
    p = fit_wiener_params(rec.slice(*b["train"]), rec.slice(*b["val"]), lag_bins=1)
    te = rec.slice(*b["test"])
    np.testing.assert_allclose(res["model"]["r2"], r2(te.behavior, p.predict(te.counts)), atol=1e-4)


def test_outputs_matched_by_name_and_nan_rows_counted(files):
    d, rec = files
    base = evaluate_decoder(d / "kalman.onnx", rec)
    perm = [3, 1, 0, 2]
    y = rec.behavior[:, perm].copy()
    y[-20:-10] = np.nan
    shuffled = replace(rec, behavior=y, behavior_names=[rec.behavior_names[i] for i in perm])
    res = evaluate_decoder(d / "kalman.onnx", shuffled, "test")
    assert res["nan_rows_excluded"] == 10
    np.testing.assert_allclose(res["model"]["r2"], base["model"]["r2"], atol=0.02)
    renamed = replace(rec, behavior_names=["a", "b", "vel_x", "vel_y"])
    with pytest.raises(DataError, match="pos_x, pos_y"):
        evaluate_decoder(d / "kalman.onnx", renamed)


def test_channel_and_bin_width_mismatch_are_one_line(files, capsys, tmp_path):
    d, rec = files
    fewer = replace(rec, counts=rec.counts[:, :-1], channel_names=rec.channel_names[:-1], source="x")
    save_npz(fewer, tmp_path / "fewer.npz")
    err = _one_line_error(capsys, ["evaluate", str(d / "wiener.onnx"), "--data", str(tmp_path / "fewer.npz")])
    assert "fewer.npz" in err and "19 channels" in err and "20" in err
    fine = replace(rec, counts=np.repeat(rec.counts, 2, axis=0) // 2, bin_s=0.025,
                   behavior=np.repeat(rec.behavior, 2, axis=0), trial_starts=None)
    save_npz(fine, tmp_path / "fine.npz")
    err = _one_line_error(capsys, ["evaluate", str(d / "wiener.onnx"), "--data", str(tmp_path / "fine.npz")])
    assert "25 ms" in err and "--bin-ms 50" in err
    # and re-binning as suggested works
    assert main(["evaluate", str(d / "wiener.onnx"), "--data", str(tmp_path / "fine.npz"), "--bin-ms", "50", "--quiet"]) == 0


def test_bad_model_files_are_one_line(files, capsys, tmp_path):
    d, _ = files
    (tmp_path / "junk.onnx").write_bytes(b"\x00not onnx at all")
    err = _one_line_error(capsys, ["evaluate", str(tmp_path / "junk.onnx"), "--data", str(d / "sim.npz")])
    assert "junk.onnx" in err
    err = _one_line_error(capsys, ["evaluate", str(tmp_path / "absent.onnx"), "--data", str(d / "sim.npz")])
    assert "absent.onnx" in err
    err = _one_line_error(capsys, ["evaluate", str(d / "sim.npz"), "--data", str(d / "sim.npz")])
    assert "sim.npz" in err
    err = _one_line_error(capsys, ["evaluate", str(d / "wiener.onnx")])
    assert "--data" in err


def test_no_behaviour_and_tiny_block(files, tmp_path):
    d, rec = files
    with pytest.raises(DataError, match="no behaviour"):
        evaluate_decoder(d / "wiener.onnx", replace(rec, behavior=None, behavior_names=None))
    with pytest.raises(DataError, match="fewer than 2 bins"):
        evaluate_decoder(d / "wiener.onnx", rec.slice(0, 4))


def test_r2_of_an_idle_block_is_undefined_and_said_once(files, tmp_path, capsys):
    """A test block where the cursor rests (Spike_07-20's last 20%: sd 0.00 vs 3.0 in training)
    gives R2 of -1e3 for any decoder; it is NaN instead, and the table says why in one line."""
    d, rec = files
    lo = split_bounds(rec.n_bins)["test"][0]
    y = rec.behavior.copy()
    rng = np.random.default_rng(0)
    y[lo:, 0] = 1.5 + 1e-4 * rng.standard_normal(rec.n_bins - lo)     # pos_x at rest, tracking noise only
    idle = replace(rec, behavior=y)
    res = evaluate_decoder(d / "wiener.onnx", idle)
    assert np.isnan(res["model"]["r2"][0])
    np.testing.assert_allclose(res["model"]["r2"][1:], evaluate_decoder(d / "wiener.onnx", rec)["model"]["r2"][1:])
    assert np.isfinite(res["model"]["rmse"][0])
    save_npz(idle, tmp_path / "idle.npz")
    assert main(["evaluate", str(d / "wiener.onnx"), "--data", str(tmp_path / "idle.npz")]) == 0
    out = capsys.readouterr().out
    warn = [line for line in out.splitlines() if "WARNING" in line]
    assert len(warn) == 1 and "R2 undefined for pos_x:" in warn[0] and "test block" in warn[0]


def test_tail_metrics_on_hand_cases():
    """Bins beyond 8 training sd: counted, their share of each output's variance, R2 without them."""
    train = np.array([[-1.0, 0.0], [1.0, 0.0], [-1.0, 2.0], [1.0, -2.0]])       # sd 1 and sqrt(2)
    y = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [20.0, 0.0], [0.0, 1.0]])
    yhat = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 0.0], [0.0, 0.5]])
    t = tail_metrics(y, yhat, train)
    assert t["bins"] == 1 and t["fraction"] == pytest.approx(0.2)                # 20 lies 20 sd out
    ss = (y[:, 0] - y[:, 0].mean()) ** 2
    assert t["share"][0] == pytest.approx(ss[3] / ss.sum()) and t["share"][1] == pytest.approx(0.2**2 / 0.8)   # y1 mean 0.2
    np.testing.assert_allclose(t["r2_outside"], r2(np.delete(y, 3, 0), np.delete(yhat, 3, 0)))
    assert t["r2_outside"][0] == pytest.approx(1.0)
    note = tail_note(["pos", "vel"], t)
    assert note.startswith("20.0% of the test bins (1) lie beyond 8 training sd") and "variance: pos 80%;" in note
    assert note.endswith("R2 without them: pos 1.000, vel 0.667 (mean 0.833).")
    assert tail_note(["pos", "vel"], tail_metrics(y[:3], yhat[:3], train)) is None   # no tail bins: no line


def test_tail_bins_where_the_whole_population_surges_are_named():
    """Spike 07-24 / 08-07: the array fires about twice as much in the tail bins as elsewhere.
    The ratio of mean population counts is recorded, and the WARNING names it from SURGE on."""
    train = np.array([[-1.0], [1.0], [-1.0], [1.0]])
    y = np.array([[0.0], [1.0], [-1.0], [20.0], [30.0]])
    counts = np.array([[2, 0], [1, 1], [0, 2], [4, 3], [5, 2]])                  # rest 2 a bin, tail 7
    t = tail_metrics(y, y * 0.5, train, counts)
    assert t["bins"] == 2 and t["population"] == pytest.approx(3.5)
    assert "In them the population fires 3.5x its rate in the other bins" in tail_note(["v"], t)
    calm = tail_metrics(y, y * 0.5, train, np.array([[2, 0], [1, 1], [0, 2], [1, 1], [2, 1]]))
    assert calm["population"] == pytest.approx(1.25) and "population" not in tail_note(["v"], calm)
    assert tail_metrics(y[:3], y[:3], train, counts[:3])["population"] is None    # no tail bins: no ratio
    assert "population" not in tail_metrics(y, y, train)                          # no counts: no key
    gap = np.array([[0.0], [np.nan], [-1.0], [20.0], [30.0]])                      # a NaN prediction drops its counts row too
    assert tail_metrics(y, gap, train, counts)["population"] == pytest.approx(7 / 2)
    with pytest.raises(ValueError, match="4 rows of counts for 5 rows of truth"):
        tail_metrics(y, y, train, counts[:4])


def test_a_block_whose_variance_sits_in_a_few_far_bins_is_said_once(files, tmp_path, capsys):
    """Spike_07-24's test block: 4% of its bins (a cursor 30 cm outside the training workspace)
    hold 96% of vel_x's variance, so R2 there ranks decoders by those bins; evaluate says so in
    one line with R2 without them."""
    d, rec = files
    lo = split_bounds(rec.n_bins)["test"][0]
    y = rec.behavior.copy()
    y[lo + 50:lo + 55, 2] += 40 * y[:lo, 2].std()               # five bins of a jump in vel_x
    jump = replace(rec, behavior=y)
    save_npz(jump, tmp_path / "jump.npz")
    assert main(["evaluate", str(d / "wiener.onnx"), "--data", str(tmp_path / "jump.npz"), "--json", str(tmp_path / "j.json")]) == 0
    warn = [line for line in capsys.readouterr().out.splitlines() if "WARNING" in line]
    assert len(warn) == 1 and "(5) lie beyond 8 training sd" in warn[0] and "vel_x 9" in warn[0], warn
    tail = json.loads((tmp_path / "j.json").read_text())["model"]["tail"]
    assert tail["bins"] == 5 and tail["share"][2] > 0.9
    pred = evaluate_decoder(d / "wiener.onnx", jump, return_predictions=True)["predictions"]
    keep = np.ones(rec.n_bins - lo, bool)
    keep[50:55] = False
    np.testing.assert_allclose(tail["r2_outside"], r2(y[lo:][keep], pred[keep]), atol=1e-9)
    assert main(["evaluate", str(d / "wiener.onnx"), "--data", str(d / "sim.npz")]) == 0
    assert "WARNING" not in capsys.readouterr().out                 # the plain block: no line


@pytest.mark.realdata
@pytest.mark.slow
def test_chestek_baselines(capsys, tmp_path):
    """Real data: Wiener and Kalman R2 on chestek_contdata95, test = last 20%, lag 0 and 1."""
    from rt_decoder.loaders import load_recording

    rec = load_recording(data_file("chestek_contdata95", "contdata95.mat"))
    b = split_bounds(rec.n_bins)
    for lag in (0, 1):
        models = fit_baselines(rec, b, lag_bins=lag)
        for name, m in models.items():
            save(m, tmp_path / f"{name}{lag}.onnx")
            res = evaluate_decoder(tmp_path / f"{name}{lag}.onnx", rec, "test", b)
            with capsys.disabled():
                print(f"chestek {name} lag {lag}: R2 {np.round(res['model']['r2'], 3).tolist()}")
            assert np.mean(res["model"]["r2"]) > (0.6 if name == "wiener" else 0.3)


def test_rerun_session_log(files, tmp_path, capsys):
    """`evaluate --log`: a session log written while stepping the model is reproduced exactly;
    a log whose prediction was altered is not (exit 1)."""
    from rt_decoder.runtime.session_log import SessionLog
    from rt_decoder.step_model import StepModel

    d, rec = files
    m = StepModel(d / "kalman.onnx")
    x = rec.counts[:300]
    for name, tamper in (("good.jsonl", None), ("bad.jsonl", 123)):
        log = SessionLog(tmp_path / name, {"channels": m.card.channel_names, "outputs": m.card.outputs})
        m.reset()
        for i, row in enumerate(x):
            pred = m.step(row).copy()
            if i == tamper:
                pred[0] += 1e-3
            log.bin(i, 0.05 * (i + 1), row, pred, 1.0, 0, [])
        log.close()
    args = ["evaluate", str(d / "kalman.onnx"), "--log"]
    assert main(args + [str(tmp_path / "good.jsonl"), "--json", str(tmp_path / "r.json")]) == 0
    assert "reproduced exactly" in capsys.readouterr().out
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["exact"] is True and res["predictions"] == 300
    assert main(args + [str(tmp_path / "bad.jsonl")]) == 1
    assert "NOT reproduced" in capsys.readouterr().out
    err = _one_line_error(capsys, args + [str(tmp_path / "absent.jsonl")])
    assert "absent.jsonl" in err


def test_cli_uses_the_models_own_split_on_its_training_data(files, tmp_path, capsys):
    d, rec = files
    T = rec.n_bins
    own = {"train": (0, T // 2), "val": (T // 2, T // 2 + 100), "test": (T // 2 + 100, T)}
    save(fit_baselines(rec, own, lag_bins=0)["wiener"], tmp_path / "w.onnx")
    argv = ["evaluate", str(tmp_path / "w.onnx"), "--data", str(d / "sim.npz"), "--quiet", "--json", str(tmp_path / "a.json")]
    assert main(argv) == 0
    assert "training split" in capsys.readouterr().out
    assert json.loads((tmp_path / "a.json").read_text())["range"] == [T // 2 + 100, T]
    assert main(argv + ["--test-frac", "0.2"]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["range"] == list(split_bounds(T)["test"])
    other = replace(rec, counts=rec.counts[::-1].copy())          # different data: default fractions
    save_npz(other, tmp_path / "other.npz")
    assert main(argv[:3] + [str(tmp_path / "other.npz")] + argv[4:]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["range"] == list(split_bounds(T)["test"])


def test_cli_baselines_side_by_side(files, tmp_path, capsys):
    d, rec = files
    out = tmp_path / "b.json"
    argv = ["evaluate", str(d / "wiener.onnx"), "--data", str(d / "sim.npz"), "--baselines", "--quiet", "--json", str(out),
            "--save-baselines", str(tmp_path / "bl")]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert set(res["baselines"]) == {"wiener", "kalman"}
    assert res["baselines"]["wiener"]["lag_bins"] == 1           # the model's lag
    # the same Wiener fit on the same split: identical figures
    np.testing.assert_allclose(res["baselines"]["wiener"]["r2"], res["model"]["r2"], atol=1e-6)
    assert (tmp_path / "bl" / "kalman.onnx").exists()
    capsys.readouterr()
    assert main(["evaluate", "--baselines", "--data", str(d / "sim.npz"), "--lag-bins", "0", "--quiet", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "wiener" in text and "kalman" in text and "lag_bins=0" in text
    assert json.loads(out.read_text())["baselines"]["kalman"]["lag_bins"] == 0
    err = _one_line_error(capsys, ["evaluate", "--data", str(d / "sim.npz")])
    assert "MODEL.onnx" in err


def test_cli_warns_when_the_model_was_trained_on_other_data(files, tmp_path, capsys):
    d, rec = files
    argv = ["evaluate", str(d / "wiener.onnx"), "--quiet", "--json", str(tmp_path / "p.json"), "--data"]
    assert main(argv + [str(d / "sim.npz")]) == 0
    assert "warning" not in capsys.readouterr().err                # its own data: no warning
    other = replace(rec, counts=rec.counts[::-1].copy())
    save_npz(other, tmp_path / "other.npz")
    assert main(argv + [str(tmp_path / "other.npz")]) == 0
    err = capsys.readouterr().err
    warn = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warn) == 1 and "other data" in warn[0] and rec.fingerprint()[:12] in warn[0]
    assert other.fingerprint()[:12] in warn[0] and "other.npz" in warn[0]
    res = json.loads((tmp_path / "p.json").read_text())
    assert res["model_data_sha256"] == rec.fingerprint() and res["data_sha256"] == other.fingerprint()
