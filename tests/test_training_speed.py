"""What makes the stacked default train faster: byte-mask dropout, bfloat16 autocast, batches
sized by the training block (training.streams auto), and checkpoints written at most every
CHECKPOINT_EVERY_S. Each must change only speed: the same dropout statistics, a float32 step
graph equal to the torch network, the final epoch always in the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rt_decoder.errors import ConfigError  # noqa: E402
from rt_decoder.recording import Recording  # noqa: E402
from rt_decoder.step_model import StepModel  # noqa: E402
from training import train as train_mod  # noqa: E402
from training.config import DEFAULTS, _merge, use_bf16, validate  # noqa: E402
from training.data import prepare  # noqa: E402
from training.export import export_step_graph  # noqa: E402
from training.model import ByteDropout  # noqa: E402
from training.stacked import Windows, auto_streams, predict  # noqa: E402
from training.train import fit  # noqa: E402


def _cfg(**training) -> dict:
    over = {"retention": {"decays": [0.0, 0.5, 0.875]},
            "model": {"widths": [4], "head_hidden": 32, "head_layers": 2, "stack": "gru", "stack_size": 16,
                      "dropout_mask": "bytes"},
            "training": {"window": 16, "streams": 4, "threads": 1, "max_epochs": 2, "keep": "last", **training}}
    return validate(_merge(DEFAULTS, over, "<test>"), "<test>")


def _rec(T: int = 900, D: int = 12, seed: int = 0) -> Recording:
    rng = np.random.default_rng(seed)
    y = np.cumsum(rng.normal(size=(T, 2)), axis=0)
    counts = rng.poisson(np.exp(0.3 * (y @ rng.normal(size=(2, D))) / np.sqrt(T) + 0.2))
    return Recording(counts=counts, bin_s=0.05, behavior=y, source="<sim>").validate()


@pytest.mark.parametrize("p", [0.3, 0.5, 0.1])
def test_byte_dropout_drops_p_and_keeps_the_mean(p):
    torch.manual_seed(0)
    d = ByteDropout(p).train()
    x = torch.ones(1000, 1000)
    y = d(x)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - round(256 * p) / 256) < 0.003          # p, rounded to 1/256
    assert abs(float(y.mean()) - 1.0) < 0.005                   # kept values scaled up: the mean is kept
    assert torch.equal(torch.unique(y), torch.tensor([0.0, 256 / (256 - round(256 * p))]))
    assert not torch.equal(d(x), y)                             # a fresh mask every call
    assert torch.equal(d.eval()(x), x)                          # eval: identity
    assert torch.equal(ByteDropout(0.0).train()(x), x)


def test_byte_dropout_passes_gradients_through_kept_units_only():
    torch.manual_seed(1)
    x = torch.randn(64, 300, requires_grad=True)
    y = ByteDropout(0.3).train()(x)
    y.sum().backward()
    kept = y != 0
    assert torch.all(x.grad[~kept] == 0) and torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 256 / 179))


def test_auto_streams_sizes_batches_by_the_training_block():
    assert auto_streams(16800, 32) == 32      # a 20-min, 50 ms recording's training block
    assert auto_streams(21989, 32) == 32      # capped
    assert auto_streams(14517, 32) == 28
    assert auto_streams(8316, 32) == 16       # short: 16 streams, >= 16 steps per epoch
    assert auto_streams(500, 32) == 16
    feats = torch.zeros(16800, 2, 5)
    w = Windows(feats, torch.zeros(16800, 1), torch.arange(5), (1, 5), (0, 16800), "auto", 32)
    assert len(w.starts) == 32 and len(w) == 525 // 32 + 1


def test_streams_auto_and_precision_are_checked():
    with pytest.raises(ConfigError, match="training.streams auto sizes model.stack"):
        validate(_merge(DEFAULTS, {"training": {"streams": "auto"}}, "<test>"), "<test>")
    with pytest.raises(ConfigError, match="training.precision must be one of fp32, bf16, auto"):
        _cfg(precision="half")
    with pytest.raises(ConfigError, match="model.dropout_mask must be one of"):
        validate(_merge(DEFAULTS, {"model": {"dropout_mask": "fast"}}, "<test>"), "<test>")
    assert use_bf16("bf16") and not use_bf16("fp32")
    assert use_bf16("auto") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _fit(tmp_path, name: str, **training):
    rec = _rec()
    cfg = _cfg(**training)
    prep = prepare(rec, cfg)
    lines: list[str] = []
    res = fit(prep, cfg, tmp_path / f"{name}.pt", log=lines.append)
    return rec, prep, cfg, res, lines


def test_bf16_training_changes_the_arithmetic_not_the_exported_graph(tmp_path):
    """Same seed: fp32 twice gives identical weights, bf16 different ones (the autocast is on);
    the bf16-trained weights stay float32 and the exported step graph equals the torch network."""
    _, _, _, a, _ = _fit(tmp_path, "a", precision="fp32")
    _, _, _, b, _ = _fit(tmp_path, "b", precision="fp32")
    rec, prep, cfg, c, lines = _fit(tmp_path, "c", precision="bf16")
    wa, wb, wc = (dict(r.model.state_dict()) for r in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert all(v.dtype == torch.float32 for k, v in wc.items() if v.is_floating_point())
    assert any("bfloat16 autocast" in ln for ln in lines)
    export_step_graph(c.model, prep, cfg, tmp_path / "m.onnx")
    got = StepModel(tmp_path / "m.onnx").run(rec.counts[:200])
    win = Windows(torch.as_tensor(prep.feats[:200]), torch.zeros(200, 2), torch.as_tensor(prep.pixels), prep.canvas,
                  (0, 200), 1, 200)
    want = predict(c.model.net, win, 0, 200).numpy() * prep.out_std + prep.out_mean
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)


def test_streams_auto_is_logged(tmp_path):
    *_, lines = _fit(tmp_path, "s", streams="auto", max_epochs=1)
    assert any("training.streams auto: 16 streams of 16 bins" in ln for ln in lines)


def test_checkpoints_are_spaced_but_the_last_epoch_is_always_written(tmp_path, monkeypatch):
    written: list[int] = []
    real = train_mod.save_checkpoint

    def spy(path, state):
        written.append(state["epoch"])
        real(path, state)

    monkeypatch.setattr(train_mod, "save_checkpoint", spy)
    monkeypatch.setattr(train_mod, "CHECKPOINT_EVERY_S", 1e9)
    _fit(tmp_path, "k", max_epochs=4)
    assert written == [1, 4]
    ck = torch.load(tmp_path / "k.pt", weights_only=True)
    assert ck["epoch"] == 4
    written.clear()
    monkeypatch.setattr(train_mod, "CHECKPOINT_EVERY_S", 0.0)
    _fit(tmp_path, "k0", max_epochs=3)
    assert written == [1, 2, 3]


def test_auto_threads_count_the_cores_busy_now():
    """threads 0 reads the cores idle now, not the lagging load average: with every core held by a
    busy process it takes one thread (2 threads on a busy 2-core machine ran 10x slower)."""
    import os
    import subprocess
    import sys
    import time

    from rt_decoder.runtime.priority import normal_priority
    from training.config import idle_cores, torch_threads

    cores = os.cpu_count() or 1
    assert torch_threads(3) == 3
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=normal_priority) for _ in range(cores)]
    try:
        time.sleep(0.5)
        idle = idle_cores()
        assert idle is not None and idle < 0.5, idle
        assert torch_threads(0) == 1
    finally:
        for p in busy:
            p.kill()
            p.wait()
