"""Wiener and Kalman baselines: ONNX step graphs equal their numpy twins, and they decode."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from rt_decoder.baselines import (
    fit_baselines,
    fit_kalman,
    fit_kalman_params,
    fit_wiener,
    fit_wiener_params,
    lagged_design,
)
from rt_decoder.errors import DataError
from rt_decoder.evaluation import evaluate_decoder
from rt_decoder.metrics import r2
from rt_decoder.model_card import CARD_KEY, ModelCard
from rt_decoder.recording import split_bounds
from rt_decoder.simulate import simulate_session
from rt_decoder.step_graph import save
from rt_decoder.step_model import StepModel


@pytest.fixture(scope="module")
def session():
    return simulate_session(minutes=3.0, channels=30, bin_s=0.05, seed=3)


def _blocks(rec):
    b = split_bounds(rec.n_bins)
    return b, rec.slice(*b["train"]), rec.slice(*b["val"]), rec.slice(*b["test"])


def _card(model) -> ModelCard:
    return ModelCard.from_json(next(p.value for p in model.metadata_props if p.key == CARD_KEY))


def test_lagged_design_is_causal():
    c = np.arange(12, dtype=float).reshape(6, 2)
    X = lagged_design(c, taps=2, lag_bins=1)
    np.testing.assert_array_equal(X[0], [0, 0, 0, 0])
    np.testing.assert_array_equal(X[1], [0, 1, 0, 0])
    np.testing.assert_array_equal(X[3], [4, 5, 2, 3])      # bins 2 and 1 predict y_3


@pytest.mark.parametrize("lag", [0, 1, 3])
def test_wiener_graph_equals_numpy(tmp_path, session, lag):
    _, tr, va, te = _blocks(session)
    p = fit_wiener_params(tr, va, lag_bins=lag, taps=5)
    path = tmp_path / "w.onnx"
    save(fit_wiener(tr, va, lag_bins=lag, taps=5), path)
    m = StepModel(path)
    assert m.card.model_type == "wiener" and m.card.lag_bins == lag
    assert m.card.states[0].name == "lagbuf" and m.card.states[0].shape == [1, 5 + lag, 30]
    _assert_graph_equals_numpy_and_causal(m, p, te, lag)


def _assert_graph_equals_numpy_and_causal(m, params, te, lag):
    want = params.predict(te.counts)
    got = m.run(te.counts)
    scale = np.nanstd(te.behavior, axis=0)
    assert np.max(np.abs(got - want) / scale) <= 1e-4
    # changing an early count changes nothing before it (causality) and something after lag bins
    x = te.counts.copy()
    x[50] += 5
    m.reset()
    moved = np.abs(m.run(x) - got).max(axis=1)
    assert moved[:50 + lag].max() == 0 and moved[50 + lag] > 0


@pytest.mark.parametrize("lag", [0, 1, 2])
def test_kalman_graph_equals_numpy(tmp_path, session, lag):
    _, tr, va, te = _blocks(session)
    p = fit_kalman_params(tr, va, lag_bins=lag)
    path = tmp_path / "k.onnx"
    save(fit_kalman(tr, va, lag_bins=lag), path)
    m = StepModel(path)
    assert m.card.model_type == "kalman" and m.card.states[0].shape == [1, 4]
    _assert_graph_equals_numpy_and_causal(m, p, te, lag)


def test_steady_state_gain_matches_full_filter(session):
    """After the transient the time-varying Kalman filter and the steady-state one agree."""
    _, tr, va, te = _blocks(session)
    p = fit_kalman_params(tr, va)
    n = p.A.shape[0]
    z = te.counts - p.z_mean
    s, P = np.zeros(n), p.W.copy()
    full = []
    for k in range(z.shape[0]):
        s, P = p.A @ s, p.A @ P @ p.A.T + p.W
        K = P @ p.H.T @ np.linalg.inv(p.H @ P @ p.H.T + p.Q)
        s, P = s + K @ (z[k] - p.H @ s), (np.eye(n) - K @ p.H) @ P
        full.append(s + p.x_mean)
    full = np.array(full)
    ss = p.predict(te.counts)
    scale = np.std(te.behavior, axis=0)
    err = np.max(np.abs(full - ss) / scale, axis=1)
    print("transient", err[[0, 10, 20, 40, 60, 100]])
    assert err[100:].max() < 1e-3


def test_baselines_decode_synthetic_session(tmp_path, session):
    b, *_ = _blocks(session)
    models = fit_baselines(session, b, lag_bins=1)
    assert set(models) == {"wiener", "kalman"}
    for name, model in models.items():
        card = _card(model)
        assert card.data_sha256 == session.fingerprint()
        assert card.extra["split"]["test"] == list(b["test"])
        save(model, tmp_path / f"{name}.onnx")
        res = evaluate_decoder(tmp_path / f"{name}.onnx", session, "test", b)
        assert res["outputs"] == session.behavior_names and res["lag_bins"] == 1
        print(name, np.round(res["model"]["r2"], 3))
        assert np.mean(res["model"]["r2"]) > 0.5, (name, res["model"]["r2"])


def test_nan_behaviour_rows_are_skipped_and_counted(session):
    _, tr, va, te = _blocks(session)
    y = tr.behavior.copy()
    y[100:130] = np.nan
    tr_nan = replace(tr, behavior=y)
    w = fit_wiener_params(tr_nan, va, taps=5)
    k = fit_kalman_params(tr_nan, va)
    assert w.info["nan_rows_skipped"] == 30 and k.info["nan_rows_skipped"] == 30
    assert np.all(np.isfinite(w.weights)) and np.all(np.isfinite(k.K))
    assert np.mean(r2(te.behavior, w.predict(te.counts))[2:]) > 0.5   # velocity


def test_too_short_or_no_behaviour_is_a_data_error(session):
    _, tr, va, _ = _blocks(session)
    with pytest.raises(DataError, match="too short"):
        fit_wiener(tr.slice(0, 8), va)
    with pytest.raises(DataError, match="too short"):
        fit_kalman(tr.slice(0, 5), va)
    with pytest.raises(DataError, match="no behaviour|has none"):
        fit_kalman(replace(tr, behavior=None, behavior_names=None), va)


@pytest.mark.parametrize("chunk", [None, 1000])
def test_wiener_weights_are_the_ridge_solution(session, monkeypatch, chunk):
    """Chunked sufficient statistics give the textbook ridge solution on the z-scored design."""
    import rt_decoder.baselines as bl

    if chunk:
        monkeypatch.setattr(bl, "CHUNK_VALUES", chunk)     # force many row chunks
    _, tr, va, _ = _blocks(session)
    taps, lag, a = 4, 2, 0.1
    p = fit_wiener_params(tr, va, lag_bins=lag, taps=taps, alphas=[a])
    X = lagged_design(tr.counts - tr.counts.mean(axis=0), taps, lag)[taps + lag - 1:]
    y = tr.behavior[taps + lag - 1:]
    xm, sd = X.mean(axis=0), X.std(axis=0)
    Z = (X - xm) / sd
    w = np.linalg.solve(Z.T @ Z / len(Z) + a * np.eye(Z.shape[1]), Z.T @ (y - y.mean(axis=0)) / len(Z))
    np.testing.assert_allclose(p.weights, w / sd[:, None], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(p.intercept, y.mean(axis=0) - xm @ (w / sd[:, None]), rtol=1e-6, atol=1e-9)
