"""Unsupervised input alignment (rt_decoder/adaptation.py): the online step-graph form equals its
numpy twin, and `run --adapt` over real LSL logs its state so a re-run is exact."""

from __future__ import annotations

import time
import uuid

import numpy as np
import onnx
import pytest

from rt_decoder.adaptation import align, online_align, state_gain, with_online_adaptation
from rt_decoder.errors import ModelError
from rt_decoder.model_card import CARD_KEY, ModelCard, attach
from rt_decoder.retention import quantize
from rt_decoder.runtime.loop import Runtime
from rt_decoder.runtime.player import Player
from rt_decoder.runtime.probe import Consumer, RuntimeThread, linear_model, poisson_recording
from rt_decoder.runtime.session_log import read_log, rerun_log

D, B = 24, 0.02


def _with_reference(path, mean, std):
    m = onnx.load(str(path))
    card = ModelCard.from_json({p.key: p.value for p in m.metadata_props}[CARD_KEY])
    card.extra = {"adapt_ref": {"mean": list(map(float, mean)), "std": list(map(float, std))}}
    attach(m, card)
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    mean, std = rng.uniform(0.1, 0.5, D), rng.uniform(0.2, 0.5, D)
    std[3] = 0.0                                  # a channel silent in training
    path = linear_model(tmp_path_factory.mktemp("a") / "m.onnx", n_channels=D, n_outputs=2, bin_s=B)
    return _with_reference(path, mean, std)


def test_align_is_robust_to_silent_channels():
    gain, offset = align(np.array([0.5, 0.5, 0.2, 0.0]), np.array([0.4, 0.001, 0.1, 0.0]),
                         np.array([0.3, 0.3, 0.3, 0.3]), np.array([0.2, 0.2, 0.2, 0.0]))
    np.testing.assert_allclose(gain, [0.5, 0.0, 2.0, 0.0])
    np.testing.assert_allclose(offset, [0.3 - 0.25, 0.3, 0.3 - 0.4, 0.3])


def test_online_graph_equals_numpy_twin(model_path):
    import onnxruntime as ort
    from onnx.utils import Extractor

    m = with_online_adaptation(onnx.load(str(model_path)), tau_s=0.5)
    sub = Extractor(onnx.shape_inference.infer_shapes(m)).extract_model(["counts", "adapt"], ["ad_v", "adapt_next"])
    sess = ort.InferenceSession(sub.SerializeToString())
    card = ModelCard.from_json({p.key: p.value for p in m.metadata_props}[CARD_KEY])
    ref = card.extra["adapt_ref"]
    rec = poisson_recording(400, D, bin_s=B, rate_hz=60.0, seed=1)
    x = rec.counts.astype(np.float32)
    x[:, 5] = 0                                    # silent on this day
    state = np.zeros((1, 2, D), np.float32)
    got = []
    for k in range(x.shape[0]):
        v, state = sess.run(None, {"counts": x[k:k + 1], "adapt": state})
        got.append(v[0])
    want = online_align(quantize(x, kind="binary"), ref["mean"], ref["std"], card.extra["online_adaptation"]["alpha"])
    np.testing.assert_allclose(np.array(got), want, atol=2e-4)
    gain, _ = state_gain(state, ref["mean"], ref["std"])
    assert gain[5] == 0.0 and gain[3] == 0.0 and np.all(gain[[0, 1, 2, 4]] > 0)


def test_adaptation_needs_reference_statistics(tmp_path):
    plain = linear_model(tmp_path / "plain.onnx", n_channels=D, n_outputs=2, bin_s=B)
    with pytest.raises(ModelError, match="adapt_ref"):
        with_online_adaptation(onnx.load(str(plain)), tau_s=10.0, source=str(plain))


@pytest.mark.lsl
def test_run_adapt_logs_its_state_and_reruns_exactly(model_path, tmp_path):
    name = "t" + uuid.uuid4().hex[:10]
    rec = poisson_recording(150, D, bin_s=B, rate_hz=40.0, seed=3)
    player = Player(rec, name=name, speed=4.0)
    log_path = tmp_path / "s.jsonl"
    rt = Runtime(model_path, f"{name}-spikes", output=f"{name}-dec", stats=None, budget_ms=1000.0,
                 log_path=log_path, adapt_tau_s=1.0, adapt_log_every_s=0.5)
    th = RuntimeThread(rt).start()
    dec = Consumer(f"{name}-dec")
    player.start(wait_consumers_s=5.0)
    assert player.wait(20.0)
    dec.wait_for(1, 5.0)
    time.sleep(0.2)
    summary = th.join()
    dec.stop()
    log = read_log(log_path)
    assert log["header"]["adapt"]["tau_s"] == 1.0
    states = [e for e in log["events"] if e["event"] == "adapt"]
    assert len(states) >= 2 and np.abs(states[-1]["state"]).max() > 0     # the aligner moved
    again = rerun_log(model_path, log_path)
    assert again["exact"] and again["model_matches"] and again["adapt_states_checked"] == len(states)
    assert again["predictions"] == summary["predictions"] > 0
    # the same log through the plain model is not the same predictions: the adaptation mattered
    from rt_decoder.step_model import StepModel

    plain = StepModel(model_path).run(log["counts"])
    assert np.abs(plain[log["has_pred"]] - log["pred"][log["has_pred"]]).max() > 1e-4
