"""Multi-session training (DESIGN §10) on three short simulated sessions with different channel
counts and drift: one shared trunk, a read-in per session, each session exported as an ordinary
step graph whose bin-by-bin predictions equal the torch model's."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

import torch  # noqa: E402

from rt_decoder.cli import main  # noqa: E402
from rt_decoder.evaluation import evaluate_decoder  # noqa: E402
from rt_decoder.model_card import read_card  # noqa: E402
from rt_decoder.recording import save_npz  # noqa: E402
from rt_decoder.retention import quantize, retention_parallel_f32  # noqa: E402
from rt_decoder.simulate import simulate_session  # noqa: E402
from rt_decoder.step_model import StepModel  # noqa: E402
from training.multisession import load_multi, ones_feats  # noqa: E402

SMALL = """
name: small-multi
retention: {decays: [0.0, 0.5, 0.875, 0.96875], quantizer: levels, levels: 4}
model: {widths: [8], head_hidden: 64, dropout: 0.1}
training: {batch_size: 128, lr: 0.003, max_epochs: 12, patience: 12, seed: 0}
multisession: {enabled: true}
"""
SCRATCH = """
name: scratch
retention: {decays: [0.0, 0.5, 0.875, 0.96875], quantizer: levels, levels: 4}
model: {widths: [8], head_hidden: 64, dropout: 0.1}
training: {batch_size: 128, lr: 0.003, max_epochs: 8, patience: 8, seed: 0}
"""
SESSIONS = [(40, 0.0), (36, 0.3), (44, 0.6)]   # (channels, within-session drift)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multi")
    recs = []
    for i, (D, drift) in enumerate(SESSIONS):
        rec = simulate_session(minutes=2.0, channels=D, bin_s=0.05, seed=7, drift=drift)
        save_npz(rec, tmp / f"day{i}.npz")
        recs.append(rec)
    (tmp / "small.yaml").write_text(SMALL)
    out = tmp / "run"
    code = main(["train", "--config", str(tmp / "small.yaml"), "--data", str(tmp / "day*.npz"), "--out", str(out),
                 "--no-baselines"])
    assert code == 0
    return tmp, out, recs


def test_every_session_exports_and_decodes(trained):
    _, out, recs = trained
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["multisession"] and set(summary["sessions"]) == {"day0", "day1", "day2"}
    assert summary["virtual_channels"] == max(D for D, _ in SESSIONS)     # channel names matched by name
    for i, rec in enumerate(recs):
        folder = out / "sessions" / f"day{i}"
        m = json.loads((folder / "metrics.json").read_text())
        card = read_card(folder / "model.onnx")
        assert card.n_channels == rec.n_channels and card.outputs == rec.behavior_names
        assert len(card.layout["readin"]["names"]) == summary["virtual_channels"]
        # contiguous blocks, test = the last 20% of that session
        assert m["split"]["train"][0] == 0 and m["split"]["train"][1] == m["split"]["val"][0]
        assert m["split"]["val"][1] == m["split"]["test"][0] and m["split"]["test"][1] == rec.n_bins
        assert np.mean(m["model"]["r2"]) > 0.3, (i, m["model"]["r2"])


def test_step_graph_matches_torch(trained):
    """ONNX parity: the exported graph (read-in in the front-end, output affine folded into the
    de-normalization) run bin by bin equals the torch model on the test block."""
    _, out, recs = trained
    model, ck = load_multi(out)
    decays = ck["config"]["retention"]["decays"]
    for i, rec in enumerate(recs):
        name = f"day{i}"
        a, b = ck["sessions"][name]["split"]["test"]
        sm = StepModel(out / "sessions" / name / "model.onnx")
        onnx_pred = evaluate_decoder(sm, rec, "test", split_bounds=ck["sessions"][name]["split"],
                                     return_predictions=True)["predictions"]
        q = quantize(rec.counts[a:b], levels=4, kind="levels").astype(np.float32)
        z = torch.as_tensor(retention_parallel_f32(q, decays))
        o = torch.as_tensor(ones_feats(b - a, decays, 0))
        with torch.no_grad():
            y = model(name, z, o).numpy()
        s = ck["sessions"][name]
        torch_pred = y * s["out_std"].numpy() + s["out_mean"].numpy()
        np.testing.assert_allclose(onnx_pred, torch_pred, rtol=1e-4, atol=1e-4 * np.abs(torch_pred).max())


def test_sessions_must_share_outputs_and_bin_width(trained, capsys):
    tmp, _, recs = trained
    other = simulate_session(minutes=2.0, channels=40, bin_s=0.05, seed=1)
    other.behavior_names = ["a", "b", "c", "d"]
    save_npz(other, tmp / "renamed.npz")
    code = main(["train", "--config", str(tmp / "small.yaml"), "--data", str(tmp / "day0.npz"), str(tmp / "renamed.npz"),
                 "--out", str(tmp / "bad"), "--no-baselines"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "renamed.npz" in err[-1] and "behaviour" in err[-1]
    save_npz(simulate_session(minutes=2.0, channels=40, bin_s=0.02, seed=1), tmp / "fast.npz")
    code = main(["train", "--config", str(tmp / "small.yaml"), "--data", str(tmp / "day0.npz"), str(tmp / "fast.npz"),
                 "--out", str(tmp / "bad"), "--no-baselines"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "fast.npz" in err[-1] and "20 ms bins" in err[-1]


# ---------------------------------------------------------------------------- calibrate


def drifted_day(minutes: float = 5.0, seed: int = 11):
    """A later day of day0's population (same neurons, longer session): each channel's counts
    scaled by a gain in [0.3, 3] plus an offset, stochastic rounding (a gain/offset drift)."""
    rec = simulate_session(minutes=minutes, channels=SESSIONS[0][0], bin_s=0.05, seed=7)
    rng = np.random.default_rng(seed)
    gain = np.exp(rng.uniform(np.log(0.3), np.log(3.0), rec.n_channels))
    offset = rng.uniform(0.0, 0.6, rec.n_channels) * (rng.random(rec.n_channels) < 0.5)
    x = rec.counts * gain + offset
    rec.counts = np.floor(x + rng.random(x.shape)).astype(np.int32)
    return rec.validate()


def _inits(path) -> dict:
    import onnx
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_calibrate_fits_only_the_readin_and_reports_every_reference(trained, capsys):
    tmp, out, _ = trained
    rec = drifted_day()
    save_npz(rec, tmp / "later.npz")
    before = _sha(out / "multisession.pt")
    cal = tmp / "cal"
    (tmp / "scratch.yaml").write_text(SCRATCH)
    code = main(["calibrate", str(out), "--data", str(tmp / "later.npz"), "--minutes", "1.5", "--out", str(cal),
                 "--scratch-config", str(tmp / "scratch.yaml"), "--time-limit", "10"])
    assert code == 0, capsys.readouterr().err
    m = json.loads((cal / "metrics.json").read_text())
    for key in ("model", "uncalibrated", "unsupervised", "scratch", "wiener", "kalman", "gru"):
        assert len(m[key]["r2"]) == 4, key
    # calibration minutes, then validation, then the contiguous rest: never overlapping
    s = m["split"]
    assert s["train"] == [0, 1800] and s["train"][1] <= s["val"][0] < s["val"][1] <= s["test"][0]
    assert s["test"][1] == rec.n_bins and m["model"] and m["fitted"] == ["readin", "output_affine"]
    # the trunk in the calibrated graph is bit-for-bit the trained one; only the read-in moved
    trained_w, cal_w = _inits(out / "sessions" / "day0" / "model.onnx"), _inits(cal / "model.onnx")
    net = [k for k in trained_w if k.startswith("net/")]
    assert net and all(np.array_equal(trained_w[k], cal_w[k]) for k in net)
    uncal_w = _inits(cal / "compare" / "uncalibrated.onnx")
    assert not np.array_equal(uncal_w["fe_readin_A"], cal_w["fe_readin_A"])
    assert _sha(out / "multisession.pt") == before                      # the multi-session model is untouched
    assert np.mean(m["model"]["r2"]) > np.mean(m["uncalibrated"]["r2"]) + 0.1, (m["model"]["r2"], m["uncalibrated"]["r2"])
    # --fit head moves the head's last layer too, and nothing else of the trunk
    code = main(["calibrate", str(out), "--data", str(tmp / "later.npz"), "--minutes", "1.5", "--out", str(tmp / "calh"),
                 "--fit", "head", "--no-baselines", "--time-limit", "10"])
    assert code == 0
    head_w = _inits(tmp / "calh" / "model.onnx")
    moved = sorted(k for k in net if not np.array_equal(trained_w[k], head_w[k]))
    assert moved and len(moved) <= 2 and all("fc" in k or "onnx::" in k for k in moved), moved


def test_unsupervised_alignment_recovers_a_gain_offset_drift(trained, capsys):
    """No behaviour used: aligning each input channel's mean/std to the training days recovers
    most of what a gain/offset drift took (this fails when the alignment is skipped)."""
    tmp, out, _ = trained
    rec = drifted_day(seed=12)
    rec.behavior_names = list(rec.behavior_names)
    save_npz(rec, tmp / "later_u.npz")
    code = main(["calibrate", str(out), "--data", str(tmp / "later_u.npz"), "--minutes", "1.5", "--unsupervised",
                 "--out", str(tmp / "calu"), "--no-baselines"])
    assert code == 0, capsys.readouterr().err
    m = json.loads((tmp / "calu" / "metrics.json").read_text())
    assert m["mode"] == "unsupervised" and m["calibrate_seconds"] < 5
    u, un = np.mean(m["model"]["r2"]), np.mean(m["uncalibrated"]["r2"])
    print(f"unsupervised {u:.3f} vs uncalibrated {un:.3f}")
    assert u > un + 0.1, (m["model"]["r2"], m["uncalibrated"]["r2"])


@pytest.mark.parametrize("change,needle", [("bin", "20 ms bins, the model"), ("names", "predicts pos_x")])
def test_calibrate_bad_new_day_is_one_line(trained, capsys, change, needle):
    tmp, out, _ = trained
    if change == "bin":
        rec = simulate_session(minutes=4.0, channels=40, bin_s=0.02, seed=2)
    else:
        rec = simulate_session(minutes=4.0, channels=40, bin_s=0.05, seed=2)
        rec.behavior_names = ["x", "y", "vx", "vy"]
    save_npz(rec, tmp / f"bad_{change}.npz")
    code = main(["calibrate", str(out), "--data", str(tmp / f"bad_{change}.npz"), "--out", str(tmp / "x"), "--no-baselines"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"bad_{change}.npz" in err[0] and needle in err[0], err
