"""The runtime runs any step graph: the baselines (state = a lag buffer / a Kalman estimate) as
exactly as retention models, and publishes the zeta image for the plot."""

from __future__ import annotations

import time
import uuid

import numpy as np
import onnx
import pytest

from rt_decoder.baselines import fit_kalman, fit_wiener
from rt_decoder.runtime import lsl as L
from rt_decoder.runtime.loop import Runtime
from rt_decoder.runtime.player import Player
from rt_decoder.runtime.probe import Consumer, RuntimeThread, linear_model, poisson_recording
from rt_decoder.runtime.session_log import rerun_log
from rt_decoder.step_model import StepModel

pytestmark = pytest.mark.lsl

D, B = 16, 0.02


@pytest.mark.parametrize("fit", [fit_wiener, fit_kalman])
def test_baseline_catch_up_is_exact(tmp_path, fit):
    rec = poisson_recording(600, D, bin_s=B, seed=11)
    path = tmp_path / "b.onnx"
    onnx.save(fit(rec.slice(0, 400), rec.slice(400, 500), lag_bins=1), str(path))
    m, ref = StepModel(path), StepModel(path)
    x = rec.counts[500:].astype(np.float32)
    want = ref.run(x)
    got = []
    for k in range(len(x)):  # every third bin "stale": state only
        if k % 3 == 1:
            m.advance(x[k])
        else:
            got.append((k, m.step(x[k])))
    for name in m.state:
        np.testing.assert_array_equal(m.state[name], ref.state[name])
    for k, p in got:
        np.testing.assert_array_equal(p, want[k])


def test_wiener_over_lsl_with_log(tmp_path):
    rec = poisson_recording(300, D, bin_s=B, seed=12)
    path = tmp_path / "w.onnx"
    onnx.save(fit_wiener(rec.slice(0, 200), rec.slice(200, 250), lag_bins=0), str(path))
    name = "t" + uuid.uuid4().hex[:10]
    player = Player(rec.slice(250, 300), name=name, speed=4.0)
    rt = Runtime(path, f"{name}-spikes", output=f"{name}-dec", stats=None, budget_ms=1000.0, log_path=tmp_path / "s.jsonl")
    th = RuntimeThread(rt).start()
    dec = Consumer(f"{name}-dec")
    player.start(wait_consumers_s=5.0)
    assert player.wait(10.0)
    dec.wait_for(50, 3.0)
    th.join()
    dec.stop()
    x, _, _ = dec.data()
    np.testing.assert_allclose(x, StepModel(path).run(rec.counts[250:300]), atol=1e-6)
    assert rerun_log(path, tmp_path / "s.jsonl")["exact"]
    assert L.desc_labels(dec.info) == rec.behavior_names


def test_zeta_stream(tmp_path):
    path = linear_model(tmp_path / "m.onnx", n_channels=D, n_outputs=2, bin_s=B)
    name = "t" + uuid.uuid4().hex[:10]
    rec = poisson_recording(60, D, bin_s=B, seed=13)
    player = Player(rec, name=name, speed=2.0)
    rt = Runtime(path, f"{name}-spikes", output=f"{name}-dec", stats=None, budget_ms=1000.0, zeta_stream=f"{name}-zeta")
    th = RuntimeThread(rt).start()
    zeta = Consumer(f"{name}-zeta")
    H, W = rt.card.canvas
    assert (int(L.desc_value(zeta.info, "canvas_h")), int(L.desc_value(zeta.info, "canvas_w"))) == (H, W)
    assert zeta.info.type() == "Zeta" and zeta.info.channel_count() == H * W
    player.start(wait_consumers_s=5.0)
    assert player.wait(10.0)
    zeta.wait_for(12, 3.0)
    time.sleep(0.05)
    th.join()
    zeta.stop()
    z, ts, _ = zeta.data()
    assert len(z) == 12  # every 5th of 60 bins: 10 Hz at 20 ms bins
    n = np.round((ts - player.t0) / player.Bs).astype(int) - 1
    ref = StepModel(path)
    for k, img in zip(n, z):  # each snapshot is the first decay's image after its bin
        ref.reset()
        ref.run(rec.counts[: k + 1])
        np.testing.assert_array_equal(img, ref.state["zeta"][0, 0].ravel())


@pytest.mark.realdata
@pytest.mark.slow
def test_chestek_test_split_live_equals_offline(tmp_path):
    from conftest import data_file

    from rt_decoder.metrics import r2
    from rt_decoder.recording import split_bounds
    from rt_decoder.runtime.player import load_for_replay, start_bin_for

    rec, _ = load_for_replay(data_file("chestek_contdata95", "contdata95.mat"))
    b = split_bounds(rec.n_bins)
    path = tmp_path / "w.onnx"
    onnx.save(fit_wiener(rec.slice(*b["train"]), rec.slice(*b["val"]), lag_bins=0), str(path))
    name = "t" + uuid.uuid4().hex[:10]
    start = start_bin_for(rec, split="test")
    n = 400  # 20 s of the test block at 20x
    player = Player(rec, name=name, speed=20.0, start_bin=start, duration_s=n * rec.bin_s)
    rt = Runtime(path, f"{name}-spikes", output=f"{name}-dec", stats=None, budget_ms=1000.0)
    th = RuntimeThread(rt).start()
    dec = Consumer(f"{name}-dec")
    player.start(wait_consumers_s=5.0)
    assert player.wait(20.0)
    dec.wait_for(n, 3.0)
    summary = th.join()
    dec.stop()
    x, _, _ = dec.data()
    assert summary["predictions"] == n
    want = StepModel(path).run(rec.counts[start:start + n])
    np.testing.assert_allclose(x, want, atol=1e-5)
    assert np.mean(r2(rec.behavior[start:start + n, :2], x[:, :2])) > 0.5  # live positions decode
