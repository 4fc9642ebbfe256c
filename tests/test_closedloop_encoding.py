"""Encoding models of the simulated participant: cosine ranges, a fit on real data that beats a
constant rate on held-out bins, behaviour-less files refused, drift, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_file

from rt_decoder.closedloop.encoding import (
    CosineEncoder,
    Drift,
    FitEncoder,
    make_encoder,
    poisson_ll,
)
from rt_decoder.errors import DataError
from rt_decoder.recording import Recording, save_npz, split_bounds
from rt_decoder.simulate import simulate_session


def _velocities(n: int, vmax: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ang = rng.uniform(0, 2 * np.pi, n)
    sp = rng.uniform(0, 2 * vmax, n)  # up to twice the max speed: rates must still saturate
    return np.stack([sp * np.cos(ang), sp * np.sin(ang)], axis=1)


def test_cosine_rates_in_range_and_tuned() -> None:
    e = CosineEncoder(96, max_speed=20.0, seed=4)
    rest = e.rates(np.zeros(2), 0.0)
    assert rest.shape == (96,) and np.all((rest >= 0) & (rest <= 20.0))
    R = np.array([e.rates(v, 0.0) for v in _velocities(500, 20.0)])
    assert R.min() >= 0.0 and R.max() <= 100.0
    # at max speed along a channel's preferred direction it fires baseline + modulation (<= 100 Hz);
    # against it, baseline - modulation (clipped at 0)
    for c in (0, 17, 95):
        u = np.array([np.cos(e.pd[c]), np.sin(e.pd[c])])
        top, bottom = e.rates(20.0 * u, 0.0)[c], e.rates(-20.0 * u, 0.0)[c]
        assert top == pytest.approx(e.baseline[c] + e.modulation[c]) and top <= 100.0
        assert bottom == pytest.approx(max(0.0, e.baseline[c] - e.modulation[c]))
        assert top > rest[c] + 10.0
    # preferred directions cover the circle
    assert np.histogram(e.pd, bins=4, range=(0, 2 * np.pi))[0].min() >= 10


def test_cosine_deterministic_per_seed() -> None:
    a, b, c = CosineEncoder(seed=1), CosineEncoder(seed=1), CosineEncoder(seed=2)
    assert np.array_equal(a.pd, b.pd) and np.array_equal(a.baseline, b.baseline)
    assert not np.array_equal(a.pd, c.pd)


def test_tuning_drift_rotates_preferred_directions() -> None:
    e = CosineEncoder(8, seed=3, drift=Drift(pd_deg_per_min=30.0))
    ang = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    V = 20.0 * np.stack([np.cos(ang), np.sin(ang)], axis=1)

    def pds(t: float) -> np.ndarray:
        R = np.array([e.rates(v, t) for v in V])
        return ang[np.argmax(R, axis=0)]

    moved = np.angle(np.exp(1j * (pds(60.0) - pds(0.0))))
    expected = e._drift.rot_rate * 60.0
    assert np.allclose(moved, expected, atol=np.deg2rad(1.0))
    assert np.abs(np.rad2deg(expected)).max() <= 30.0 and np.abs(np.rad2deg(expected)).max() > 5.0


def test_baseline_drift_and_unit_turnover() -> None:
    d = Drift(baseline_hz_per_min=5.0, units_lost_per_min=20.0, units_gained_per_min=5.0)
    e = CosineEncoder(40, seed=2, drift=d)
    r0 = e.rates(np.zeros(2), 0.0)
    r1 = e.rates(np.zeros(2), 120.0)
    events = e.unit_events()
    lost = {x["unit"] for x in events if x["event"] == "lost"}
    assert 20 <= sum(x["event"] == "lost" for x in events) <= 70 and lost
    assert np.sum(r1 == 0) >= 5  # silent units
    alive = e._drift.alive
    assert np.all(r1[~alive] == 0) and not np.allclose(r0[alive], r1[alive])
    # the same seed gives the same history of units
    e2 = CosineEncoder(40, seed=2, drift=d)
    e2.rates(np.zeros(2), 120.0)
    assert e2.unit_events() == events
    with pytest.raises(DataError, match="non-negative"):
        CosineEncoder(4, drift=Drift(pd_deg_per_min=-1.0))


def _heldout_ll(e: FitEncoder, rec: Recording, vel: np.ndarray) -> tuple[float, float]:
    """Model vs constant-rate log-likelihood on the test split, computed here from the counts."""
    b = split_bounds(rec.n_bins)
    lead = e.lead
    y = rec.counts[: rec.n_bins - lead, : e.n_channels].astype(float)
    v = vel[lead:]
    te = np.arange(b["test"][0], len(y))
    tr = np.arange(0, b["train"][1])
    mu = e.expected_counts(v[te])
    const = np.broadcast_to(y[tr].mean(axis=0), (len(te), e.n_channels))
    return float(poisson_ll(y[te], mu).sum()), float(poisson_ll(y[te], const).sum())


@pytest.mark.realdata
def test_fit_on_chestek_beats_constant_rate() -> None:
    path = data_file("chestek_contdata95", "contdata95.mat")
    from rt_decoder.loaders import load_recording

    rec = load_recording(path)
    e = make_encoder(f"fit:{path}", seed=0)
    assert isinstance(e, FitEncoder) and e.n_channels == rec.n_channels
    vel = rec.behavior[:, [rec.behavior_names.index("vel_x"), rec.behavior_names.index("vel_y")]]
    ll_model, ll_const = _heldout_ll(e, rec, vel)
    assert ll_model > ll_const
    r2 = e.heldout["pseudo_r2"]
    assert np.nanmedian(r2) > 0 and np.mean(r2 > 0) > 0.5
    # rates for intentions of any size stay finite, non-negative and under the array's own maximum
    R = np.array([e.rates(v, 0.0) for v in _velocities(200, 20.0)])
    assert np.all(np.isfinite(R)) and R.min() >= 0 and np.all(R <= e.cap_hz + 1e-9)
    # the intention is mapped onto the recording's speeds: max speed -> its 95th percentile
    sp = np.linalg.norm(vel, axis=1)
    assert e.scale * 20.0 == pytest.approx(np.percentile(sp, 95))
    # the real array's unexplained variability is kept
    var = e.new_variability()
    m = np.array([var.step(np.random.default_rng(k), 0.01) for k in range(2000)])
    assert m.mean() == pytest.approx(1.0, abs=0.1) and m.std() > 0.05
    p = e.params()
    assert p["encoding"].startswith("fit:") and "intent_mapping" in p and len(p["heldout_pseudo_r2"]) == e.n_channels


def test_fit_from_positions_only(tmp_path) -> None:
    """A recording with positions only: velocity is their derivative, and the fit finds the tuning."""
    rec = simulate_session(minutes=3.0, channels=20, seed=1)
    ip = [rec.behavior_names.index("pos_x"), rec.behavior_names.index("pos_y")]
    pos_only = Recording(rec.counts, rec.bin_s, rec.behavior[:, ip], ["pos_x", "pos_y"], source="sim")
    f = save_npz(pos_only, tmp_path / "pos_only.npz")
    e = FitEncoder(f, n_channels=12)
    assert "derivative of pos_x, pos_y" in e.velocity_from and e.n_channels == 12
    vel = np.gradient(rec.behavior[:, ip], rec.bin_s, axis=0)
    ll_model, ll_const = _heldout_ll(e, pos_only, vel)
    assert ll_model > ll_const
    assert np.nanmedian(e.heldout["pseudo_r2"]) > 0.02


def test_fit_without_behaviour_is_refused(tmp_path) -> None:
    f = tmp_path / "counts_only.npz"
    np.savez(f, counts=np.ones((300, 4), np.int32), bin_s=np.float64(0.05))
    with pytest.raises(DataError, match=r"counts_only.npz: has no behaviour .*vel_x/vel_y or pos_x/pos_y"):
        make_encoder(f"fit:{f}")
    g = tmp_path / "other_behaviour.npz"
    np.savez(g, counts=np.ones((300, 4), np.int32), bin_s=np.float64(0.05), behavior=np.zeros((300, 1)),
             behavior_names=np.array(["force"]))
    with pytest.raises(DataError, match="no velocity or position columns"):
        make_encoder(f"fit:{g}")
    with pytest.raises(DataError, match="fit:FILE needs a file"):
        make_encoder("fit:")
