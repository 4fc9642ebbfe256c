"""The synthetic session: deterministic per seed, center-out kinematics with minimum-jerk reaches,
velocity tuning a linear decoder can read, neural activity leading movement, latents and drift."""

from __future__ import annotations

import numpy as np
import pytest

from rt_decoder.cli import main
from rt_decoder.errors import DataError
from rt_decoder.recording import load_npz
from rt_decoder.simulate import simulate_session


def ridge_r2(counts: np.ndarray, y: np.ndarray, shift: int = 1, history: int = 5, lam: float = 1.0) -> np.ndarray:
    """R² on the last 20% of a ridge decoder from counts at bins k-shift-history+1 .. k-shift to y_k.

    A negative shift reads counts *after* the kinematics (acausal)."""
    T = counts.shape[0]
    x = counts.astype(np.float64)
    feats = []
    for h in range(history):
        s = shift + h
        f = np.zeros_like(x)
        if s >= 0:
            f[s:] = x[: T - s]
        else:
            f[:s] = x[-s:]
        feats.append(f)
    Z = np.concatenate(feats + [np.ones((T, 1))], axis=1)
    n = int(0.8 * T)
    w = np.linalg.solve(Z[:n].T @ Z[:n] + lam * np.eye(Z.shape[1]), Z[:n].T @ y[:n])
    p = Z[n:] @ w
    return 1 - ((p - y[n:]) ** 2).sum(0) / ((y[n:] - y[n:].mean(0)) ** 2).sum(0)


def test_same_seed_same_session_other_seed_other_session():
    a = simulate_session(minutes=0.5, channels=20, seed=4, latent_dim=3, drift=0.2)
    b = simulate_session(minutes=0.5, channels=20, seed=4, latent_dim=3, drift=0.2)
    c = simulate_session(minutes=0.5, channels=20, seed=5, latent_dim=3, drift=0.2)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.behavior, b.behavior)
    np.testing.assert_array_equal(a.trial_starts, b.trial_starts)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_shapes_names_and_rates():
    rec = simulate_session(minutes=1.0, channels=96, bin_s=0.02, seed=0)
    assert rec.counts.shape == (3000, 96) and rec.bin_s == 0.02
    assert rec.behavior_names == ["pos_x", "pos_y", "vel_x", "vel_y"]
    assert rec.counts.dtype == np.int32 and rec.counts.min() >= 0
    rates = rec.counts.mean(0) / rec.bin_s
    assert 10 < rates.mean() < 35 and rates.min() > 2
    # trials of about 2 s: a hold, a reach, a hold, a return
    assert 20 <= len(rec.trial_starts) <= 45 and rec.trial_starts[0] == 0


def test_center_out_minimum_jerk_kinematics():
    rec = simulate_session(minutes=2.0, channels=4, bin_s=0.01, seed=1)
    pos, vel = rec.behavior[:, :2], rec.behavior[:, 2:]
    radius = np.linalg.norm(pos, axis=1)
    assert radius.max() == pytest.approx(10.0, abs=1e-6)
    # reach endpoints sit on the 8 target directions
    far = pos[radius > 9.999]
    angles = np.mod(np.arctan2(far[:, 1], far[:, 0]), 2 * np.pi) / (2 * np.pi / 8)
    np.testing.assert_allclose(angles, np.round(angles), atol=1e-6)
    # velocity is the time derivative of position
    np.testing.assert_allclose(np.gradient(pos[:, 0], rec.bin_s)[1:-1], vel[1:-1, 0], atol=1.5)
    # peak speed of a 0.4-0.6 s minimum-jerk reach of 10 cm: 1.875 * 10 / duration
    speed = np.linalg.norm(vel, axis=1)
    assert 1.875 * 10 / 0.6 - 0.5 < speed.max() < 1.875 * 10 / 0.4 + 0.5
    # bell-shaped: speed rises then falls within each reach, no plateaus at the peak
    out = rec.trial_starts[1]
    seg = speed[: out]
    k = int(np.argmax(seg))
    assert np.all(np.diff(seg[: k + 1][seg[: k + 1] > 0.5]) > 0)


def test_velocity_is_decodable_by_a_causal_linear_decoder():
    rec = simulate_session(minutes=3.0, channels=96, bin_s=0.02, seed=2)
    r2 = ridge_r2(rec.counts, rec.behavior[:, 2:], shift=1)
    assert np.all(r2 > 0.5), r2


def test_neural_activity_leads_movement():
    rec = simulate_session(minutes=3.0, channels=96, bin_s=0.02, seed=3, lead_s=0.1)
    y = rec.behavior[:, 2:]
    before = ridge_r2(rec.counts, y, shift=5, history=1).mean()   # counts 100 ms before the movement
    after = ridge_r2(rec.counts, y, shift=-5, history=1).mean()   # counts 100 ms after
    assert before > after + 0.2, (before, after)


def test_latent_factors_correlate_channels():
    def mean_abs_corr(rec):  # loadings have either sign, so the size of correlations, not their mean
        c = np.corrcoef(rec.counts[:, rec.counts.std(0) > 0].T)
        return np.abs(c[np.triu_indices_from(c, 1)]).mean()

    plain = simulate_session(minutes=2.0, channels=40, seed=6, latent_dim=0)
    shared = simulate_session(minutes=2.0, channels=40, seed=6, latent_dim=1, latent_scale=0.8)
    assert mean_abs_corr(shared) > 2 * mean_abs_corr(plain)


def test_drift_moves_baselines():
    def change(rec):
        n = rec.n_bins // 5
        first, last = rec.counts[:n].mean(0) + 0.1, rec.counts[-n:].mean(0) + 0.1
        return np.abs(np.log(last / first)).mean()

    steady = simulate_session(minutes=3.0, channels=60, seed=8, drift=0.0)
    drifting = simulate_session(minutes=3.0, channels=60, seed=8, drift=0.8)
    assert change(drifting) > change(steady) + 0.2


def test_cli_writes_the_api_session(tmp_path, capsys):
    out = tmp_path / "sim.npz"
    assert main(["simulate", "--minutes", "0.5", "--channels", "16", "--bin-ms", "25", "--seed", "9",
                 "--latent-dim", "2", "--drift", "0.1", "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(out)) and "T=1200 bins x D=16 channels, bin 25 ms, K=4" in line
    rec = load_npz(out)
    api = simulate_session(minutes=0.5, channels=16, bin_s=0.025, seed=9, latent_dim=2, drift=0.1)
    np.testing.assert_array_equal(rec.counts, api.counts)
    np.testing.assert_allclose(rec.behavior, api.behavior)
    np.testing.assert_array_equal(rec.trial_starts, api.trial_starts)


@pytest.mark.parametrize("kwargs", [{"minutes": 0}, {"channels": 0}, {"bin_s": -0.01}, {"drift": -1}, {"latent_dim": -1}])
def test_bad_arguments_are_data_errors(kwargs):
    with pytest.raises(DataError, match="simulate: "):
        simulate_session(**kwargs)
