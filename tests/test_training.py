"""Training end to end on a small synthetic session, and the bad inputs that must be one clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rt_decoder.cli import main  # noqa: E402
from rt_decoder.errors import ConfigError  # noqa: E402
from rt_decoder.recording import Recording, save_npz  # noqa: E402
from training.config import DEFAULTS, _merge, load_config, validate  # noqa: E402
from training.data import prepare, resolve_levels  # noqa: E402

SMALL = """
name: small
lag_bins: 0
retention: {decays: [0.0, 0.5, 0.875, 0.96875], quantizer: levels, levels: 4}
model: {widths: [8], head_hidden: 64, dropout: 0.1}
training: {batch_size: 128, lr: 0.003, max_epochs: 30, patience: 30, seed: 0}
"""


def _cli(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _session(tmp_path, minutes: float = 3.0):
    from rt_decoder.simulate import simulate_session

    rec = simulate_session(minutes=minutes, channels=40, bin_s=0.05, seed=3)
    return save_npz(rec, tmp_path / "sim.npz"), rec


def test_short_training_beats_wiener_and_writes_schema(tmp_path, capsys):
    data, rec = _session(tmp_path)
    (tmp_path / "small.yaml").write_text(SMALL)
    out = tmp_path / "run"
    code, stdout, err = _cli(["train", "--config", str(tmp_path / "small.yaml"), "--data", str(data),
                              "--out", str(out), "--baselines", "wiener,kalman"], capsys)
    assert code == 0, err
    for f in ("model.onnx", "metrics.json", "wiener.onnx", "kalman.onnx", "checkpoint.pt"):
        assert (out / f).exists(), f
    m = json.loads((out / "metrics.json").read_text())
    K = rec.behavior.shape[1]
    assert m["outputs"] == rec.behavior_names and m["bin_s"] == pytest.approx(0.05) and m["lag_bins"] == 0
    assert set(m["split"]) == {"train", "val", "test"} and m["split"]["test"][1] == rec.n_bins
    assert m["split"]["train"][1] == m["split"]["val"][0] and m["split"]["val"][1] == m["split"]["test"][0]
    for block in (m["model"], m["baselines"]["wiener"], m["baselines"]["kalman"]):
        assert all(len(block[k]) == K for k in ("r2", "rmse", "corr"))
    assert m["train_seconds"] > 0 and len(m["data_sha256"]) == 64
    ours, wiener = np.mean(m["model"]["r2"]), np.mean(m["baselines"]["wiener"]["r2"])
    assert ours > wiener, (m["model"]["r2"], m["baselines"]["wiener"]["r2"])
    # the card carries the same test metrics
    from rt_decoder.model_card import read_card

    assert read_card(out / "model.onnx").metrics["r2"] == m["model"]["r2"]


def test_resume_continues_from_checkpoint(tmp_path, capsys):
    data, _ = _session(tmp_path, minutes=1.5)
    cfg = SMALL.replace("max_epochs: 30, patience: 30", "max_epochs: 2, patience: 5")
    (tmp_path / "a.yaml").write_text(cfg)
    out = tmp_path / "run"
    args = ["train", "--config", str(tmp_path / "a.yaml"), "--data", str(data), "--out", str(out), "--no-baselines"]
    assert _cli(args, capsys)[0] == 0
    (tmp_path / "a.yaml").write_text(cfg.replace("max_epochs: 2", "max_epochs: 3"))
    code, _, err = _cli(args + ["--resume"], capsys)
    assert code == 0 and "resumed from" in err and "at epoch 2" in err
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 3


@pytest.mark.parametrize("text,needle", [
    ("model: {widths: [16, 32]\n", "not valid YAML"),
    ("trainng: {lr: 0.1}\n", "unknown key 'trainng'"),
    ("training: {lr: fast}\n", "training.lr must be a number"),
    ("retention: {decays: [0.5, 1.5]}\n", "retention.decays"),
    ("kind: classifier\n", "kind must be one of"),
    ("- just\n- a list\n", "a config is a mapping"),
])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, capsys, text, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert needle in str(e.value) and str(cfg) in str(e.value)
    code, _, err = _cli(["train", "--config", str(cfg), "--data", "x.npz"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and needle in err


def test_missing_config_and_missing_data_are_one_line(tmp_path, capsys):
    code, _, err = _cli(["train", "--config", str(tmp_path / "none.yaml")], capsys)
    assert code == 2 and "no such config file" in err and err.count("\n") == 1
    (tmp_path / "c.yaml").write_text("name: c\n")
    code, _, err = _cli(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "no data" in err and err.count("\n") == 1


def test_data_shorter_than_needed_is_one_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rec = Recording(counts=rng.poisson(1, (120, 10)), bin_s=0.05, behavior=rng.normal(size=(120, 2)))
    data = save_npz(rec, tmp_path / "short.npz")
    (tmp_path / "c.yaml").write_text("name: c\n")
    code, _, err = _cli(["train", "--config", str(tmp_path / "c.yaml"), "--data", str(data),
                         "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.count("\n") == 1 and "too few to train" in err and "short.npz" in err


def test_nan_behaviour_rows_are_excluded_and_counted():
    rng = np.random.default_rng(1)
    T = 1000
    y = rng.normal(size=(T, 2))
    y[[5, 50, 500, 900], 0] = np.nan
    rec = Recording(counts=rng.poisson(1, (T, 10)), bin_s=0.05, behavior=y, source="<nan>")
    cfg = validate(_merge(DEFAULTS, {}, "<t>"), "<t>")
    prep = prepare(rec, cfg)
    assert prep.nan_rows == 4
    assert np.isfinite(prep.out_mean).all() and np.isfinite(prep.out_std).all()
    import torch

    from training.model import Net, NetConfig

    net = Net(NetConfig(in_channels=3, canvas=prep.canvas, n_outputs=2, widths=[4], head_hidden=0))
    target = torch.as_tensor(prep.target[:64])
    loss = net.loss(net(torch.zeros(64, 3, *prep.canvas)), target, torch.isfinite(target))
    assert torch.isfinite(loss)


def test_decoder_on_recording_without_behaviour_is_one_line(tmp_path, capsys):
    rec = Recording(counts=np.random.default_rng(0).poisson(1, (2000, 10)), bin_s=0.05)
    data = save_npz(rec, tmp_path / "nobeh.npz")
    (tmp_path / "c.yaml").write_text("name: c\n")
    code, _, err = _cli(["train", "--config", str(tmp_path / "c.yaml"), "--data", str(data),
                         "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "no behaviour" in err and err.count("\n") == 1


def test_generative_targets_line_up_with_pixels_under_similarity_layout():
    """The loss reads logits at occupied pixels; targets must be in the same (pixel) order."""
    import torch

    from training.train import Batches, build_model, to_image

    rng = np.random.default_rng(4)
    base = rng.poisson(0.5, (1500, 1))
    counts = rng.poisson(0.3, (1500, 30)) + base * (np.arange(30) % 3 == 0)   # correlated group -> a shuffled layout
    rec = Recording(counts=counts, bin_s=0.05, source="<gen>")
    cfg = validate(_merge(DEFAULTS, {"kind": "generative", "retention": {"layout": "similarity"},
                                     "model": {"widths": [4]}}, "<t>"), "<t>")
    prep = prepare(rec, cfg)
    assert not np.array_equal(np.argsort(prep.pixels), np.arange(30))
    batches = Batches(prep, cfg, build_model(prep, cfg), torch.Generator().manual_seed(0))
    rows = torch.arange(100, 164)
    y_channels = torch.as_tensor(rec.counts[101:165], dtype=torch.float32)          # next-bin counts, channel order
    image = to_image(y_channels[:, None], torch.as_tensor(prep.pixels), prep.canvas)
    picked = image.flatten(1)[:, batches.mask(None)]
    np.testing.assert_array_equal(picked.numpy(), batches.target[rows].numpy())


def test_online_mode_trains_the_learned_quantizer(tmp_path):
    """Windows + carried zeta (thesis algorithm 1): the quantizer's weights get gradients and move,
    and validation loss improves on a session where counts carry the signal."""
    import torch

    from rt_decoder.simulate import simulate_session
    from training.train import fit

    rec = simulate_session(minutes=2, channels=24, bin_s=0.05, seed=5)
    cfg = validate(_merge(DEFAULTS, {
        "retention": {"quantizer": "learned", "levels": 4, "decays": [0.0, 0.5, 0.875]},
        "model": {"widths": [4], "head_hidden": 0, "dropout": 0.0},
        "training": {"mode": "online", "window": 64, "streams": 8, "max_epochs": 4, "patience": 4, "lr": 0.01},
    }, "<t>"), "<t>")
    prep = prepare(rec, cfg)
    torch.manual_seed(0)
    res = fit(prep, cfg, tmp_path / "ck.pt", log=lambda s: None)
    w0 = torch.full_like(res.model.quant.w, 4.0)
    assert float((res.model.quant.w.detach() - w0).abs().max()) > 1e-3
    assert res.history[-1]["val"] < res.history[0]["val"]
    assert (tmp_path / "ck.pt").exists()


def test_resume_with_other_data_is_refused(tmp_path, capsys):
    data, _ = _session(tmp_path, minutes=1.5)
    from rt_decoder.simulate import simulate_session

    other = save_npz(simulate_session(minutes=1.5, channels=40, bin_s=0.05, seed=4), tmp_path / "other.npz")
    (tmp_path / "a.yaml").write_text(SMALL.replace("max_epochs: 30, patience: 30", "max_epochs: 1, patience: 5"))
    out = tmp_path / "run"
    base = ["train", "--config", str(tmp_path / "a.yaml"), "--out", str(out), "--no-baselines"]
    assert _cli(base + ["--data", str(data)], capsys)[0] == 0
    before = (out / "model.onnx").read_bytes()
    code, _, err = _cli(base + ["--data", str(other), "--resume"], capsys)
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert "checkpoint.pt" in errors[0] and "different data" in errors[0]
    assert (out / "model.onnx").read_bytes() == before          # nothing was overwritten


def test_every_artifact_names_its_data_and_run_and_stale_baselines_go(tmp_path, capsys):
    import torch

    from rt_decoder.model_card import read_card

    data, rec = _session(tmp_path, minutes=1.5)
    (tmp_path / "a.yaml").write_text(SMALL.replace("max_epochs: 30, patience: 30", "max_epochs: 1, patience: 5"))
    out = tmp_path / "run"
    base = ["train", "--config", str(tmp_path / "a.yaml"), "--data", str(data), "--out", str(out)]
    assert _cli(base, capsys)[0] == 0
    m = json.loads((out / "metrics.json").read_text())
    run_id, sha = m["run_id"], rec.fingerprint()
    assert run_id and m["data_sha256"] == sha and m["partial"] is False
    for f in ("model.onnx", "wiener.onnx", "kalman.onnx"):
        card = read_card(out / f)
        assert card.data_sha256 == sha and card.extra["run_id"] == run_id, f
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["data_sha256"] == sha and ck["run_id"] == run_id
    # retrain without baselines: the earlier run's wiener/kalman must not sit beside the new model
    code, _, err = _cli(base + ["--no-baselines"], capsys)
    assert code == 0 and "removed" in err
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["run_id"] != run_id and read_card(out / "model.onnx").extra["run_id"] == m2["run_id"]
    assert not (out / "wiener.onnx").exists() and not (out / "kalman.onnx").exists()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_exports_the_best_model_so_far_marked_partial(tmp_path, sig):
    """A real SIGINT (or SIGTERM) to a real `rt-decoder train`: best weights exported, partial, resume command printed."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from rt_decoder.model_card import read_card

    exe = Path(sys.executable).parent / "rt-decoder"
    if not exe.exists():
        pytest.skip("rt-decoder console script not installed next to this Python")
    from rt_decoder.simulate import simulate_session

    data = save_npz(simulate_session(minutes=1.0, channels=20, bin_s=0.05, seed=3), tmp_path / "sim.npz")
    (tmp_path / "long.yaml").write_text(SMALL.replace("max_epochs: 30, patience: 30", "max_epochs: 500, patience: 500"))
    out = tmp_path / "run"
    (out).mkdir()
    (out / "wiener.onnx").write_bytes(b"stale baseline of an earlier run")
    # SIGINT at its default in the child: a shell without job control starts background jobs with SIGINT
    # ignored, the ignore is inherited through exec, and Python then keeps it (no KeyboardInterrupt)
    p = subprocess.Popen([str(exe), "train", "--config", str(tmp_path / "long.yaml"), "--data", str(data),
                          "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert p.poll() is None, p.communicate()
    time.sleep(0.5)
    p.send_signal(getattr(signal, sig))
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    assert "Traceback" not in stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["partial"] is True and m["stopped"] == "interrupted" and 1 <= m["epochs"] < 500
    assert len(m["model"]["r2"]) == 4 and m["baselines"] == {}
    card = read_card(out / "model.onnx")
    assert card.extra["partial"] is True and card.extra["run_id"] == m["run_id"]
    assert not (out / "wiener.onnx").exists()
    hint = [ln for ln in stderr.splitlines() if "--resume" in ln]
    assert hint and f"--out {out}" in hint[-1] and "--config" in hint[-1], stderr
    assert "wrote" in stdout


@pytest.mark.parametrize("keep", ["best", "last"])
def test_keep_returns_the_best_or_the_last_weights(tmp_path, keep):
    """training.keep: best returns the best-validation weights (early stopping on), last the weights
    at the end of the schedule with early stopping off, even with patience 1."""
    from training.train import fit

    _, rec = _session(tmp_path, minutes=2.0)
    cfg = validate(_merge(load_config(None), {"retention": {"decays": [0.0, 0.5, 0.875]},
                                               "model": {"widths": [4], "head_hidden": 16, "stack": "none"},
                                               "training": {"max_epochs": 8, "patience": 1, "keep": keep,
                                                            "threads": 1, "lr": 0.02}}, "<test>"), "<test>")
    cfg = resolve_levels(cfg, rec)          # the shipped default says levels: auto
    res = fit(prepare(rec, cfg), cfg, tmp_path / "ck.pt", log=lambda *_: None)
    ck = torch.load(tmp_path / "ck.pt", weights_only=False)
    want = ck["model" if keep == "last" else "best_model"]
    got = res.model.state_dict()
    assert res.kept == keep
    assert all(torch.equal(got[k], want[k]) for k in want)
    vals = [h["val"] for h in res.history]
    if keep == "last":
        assert res.epochs == 8 and res.stopped == "max epochs"
    else:
        assert res.best_val == min(vals)


def test_levels_auto_is_resolved_on_the_training_block(tmp_path, capsys):
    """retention.levels: auto becomes a number before training: the one auto_levels picks on the
    training block, written into the step graph's card and said in one log line."""
    from rt_decoder.model_card import read_card
    from rt_decoder.recording import split_bounds
    from rt_decoder.retention import auto_levels

    data, rec = _session(tmp_path, minutes=1.0)
    from dataclasses import replace

    sparse = np.minimum(rec.counts, 1)                  # at most one spike per bin: 4 levels lose nothing
    busy = rec.counts * 3                               # 3x the counts: clipping at 3 loses spikes
    save_npz(replace(rec, counts=sparse), tmp_path / "sparse.npz")
    save_npz(replace(rec, counts=busy), tmp_path / "busy.npz")
    (tmp_path / "auto.yaml").write_text(SMALL.replace("levels: 4", "levels: auto").replace("max_epochs: 30", "max_epochs: 2"))
    a, b = split_bounds(rec.n_bins)["train"]
    for name, counts in (("sparse", sparse), ("busy", busy)):
        out = tmp_path / name
        code, _, err = _cli(["train", "--config", str(tmp_path / "auto.yaml"), "--data", str(tmp_path / f"{name}.npz"),
                             "--out", str(out), "--no-baselines"], capsys)
        assert code == 0, err
        want = auto_levels(counts[a:b])
        assert read_card(out / "model.onnx").levels == want
        assert [ln for ln in err.splitlines() if ln.startswith("retention.levels auto:")] == [
            next(ln for ln in err.splitlines() if ln.startswith("retention.levels auto:"))]
        assert f"auto: {want} (" in err
    assert read_card(tmp_path / "sparse" / "model.onnx").levels == 4 and read_card(tmp_path / "busy" / "model.onnx").levels == 8
    (tmp_path / "bad.yaml").write_text(SMALL.replace("levels: 4", "levels: many"))
    code, _, err = _cli(["train", "--config", str(tmp_path / "bad.yaml"), "--data", str(data), "--out", str(tmp_path / "x")], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "retention.levels" in err and "or auto" in err
