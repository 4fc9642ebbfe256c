"""A synthetic session: center-out reaches and a cosine-tuned Poisson population (DESIGN §3).

Tests and the demo need data with a known, decodable relation between spikes and kinematics
and no dependency on ../shared/data. Reaches follow minimum-jerk paths (bell-shaped speed) to 8
targets on a circle, hold, and return. Each neuron's log-rate is a baseline (5-30 Hz) plus a
cosine of the hand velocity `lead_s` in the future (neurons lead movement, so causal decoders
work), a little position tuning, optional shared latent dynamics (rotational pairs, plus a slow
gain factor) and optional slow drift of baselines. Deterministic per seed.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError, where
from .recording import Recording

BEHAVIOR_NAMES = ["pos_x", "pos_y", "vel_x", "vel_y"]
BEHAVIOR_UNITS = ["cm", "cm", "cm/s", "cm/s"]  # targets at `radius` cm
MAX_RATE_HZ = 300.0


def _check(name: str, value: float, low: float, strict: bool = True) -> float:
    v = float(value)
    if not np.isfinite(v) or (v <= low if strict else v < low):
        raise DataError(where("simulate", f"{name} must be {'>' if strict else '>='} {low:g}, got {value}"))
    return v


def center_out_trials(rng: np.random.Generator, duration_s: float, radius: float, n_targets: int) -> dict:
    """Segments (start, length, from, to) of hold / reach / hold / return phases covering duration_s."""
    starts, lengths, p0, p1, trial_t, targets = [], [], [], [], [], []
    centre = np.zeros(2)
    t = 0.0
    while t < duration_s:
        k = int(rng.integers(n_targets))
        angle = 2 * np.pi * k / n_targets
        target = radius * np.array([np.cos(angle), np.sin(angle)])
        trial_t.append(t)
        targets.append(k)
        for length, a, b in (
            (rng.uniform(0.3, 0.6), centre, centre),   # centre hold (delay)
            (rng.uniform(0.4, 0.6), centre, target),   # out-reach
            (rng.uniform(0.3, 0.5), target, target),   # target hold
            (rng.uniform(0.4, 0.6), target, centre),   # return
        ):
            starts.append(t)
            lengths.append(length)
            p0.append(a)
            p1.append(b)
            t += length
    return {"start": np.array(starts), "length": np.array(lengths), "p0": np.array(p0), "p1": np.array(p1),
            "trial_t": np.array(trial_t), "targets": np.array(targets)}


def kinematics(seg: dict, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position and velocity at times t: minimum-jerk s(τ) = 10τ³ − 15τ⁴ + 6τ⁵ within each segment."""
    i = np.clip(np.searchsorted(seg["start"], t, side="right") - 1, 0, len(seg["start"]) - 1)
    length = seg["length"][i]
    tau = np.clip((t - seg["start"][i]) / length, 0.0, 1.0)
    s = tau**3 * (10 - 15 * tau + 6 * tau**2)
    ds = 30 * tau**2 * (1 - tau) ** 2 / length
    d = seg["p1"][i] - seg["p0"][i]
    return seg["p0"][i] + d * s[:, None], d * ds[:, None]


def _ar1(a: np.ndarray, e: np.ndarray) -> np.ndarray:
    """z_k = a * z_(k-1) + e_k for each column (complex a allowed); a plain loop beats importing scipy.signal."""
    z = np.empty_like(e)
    acc = np.zeros(e.shape[1], dtype=e.dtype)
    for k in range(e.shape[0]):
        acc = a * acc + e[k]
        z[k] = acc
    return z


def latent_factors(rng: np.random.Generator, n: int, dim: int, bin_s: float) -> np.ndarray:
    """(n, dim) unit-variance latents: rotating pairs (about 1-2 Hz, 0.5 s decay), an odd one a slow gain."""
    pairs = dim // 2
    rho = np.exp(-bin_s / 0.5)
    a = rho * np.exp(1j * 2 * np.pi * rng.uniform(1.0, 2.0, pairs) * bin_s)
    e = (rng.standard_normal((n, pairs)) + 1j * rng.standard_normal((n, pairs))) * np.sqrt(1 - rho**2)
    c = _ar1(a, e)
    z = np.zeros((n, dim))
    z[:, 0 : 2 * pairs : 2], z[:, 1 : 2 * pairs : 2] = c.real, c.imag
    if dim % 2:
        rho = np.exp(-bin_s / 3.0)
        z[:, -1:] = _ar1(np.array([rho]), rng.standard_normal((n, 1)) * np.sqrt(1 - rho**2))
    return z


def simulate_session(
    minutes: float = 1.0,
    channels: int = 96,
    bin_s: float = 0.02,
    seed: int = 0,
    latent_dim: int = 0,
    drift: float = 0.0,
    lead_s: float = 0.1,
    radius: float = 10.0,
    n_targets: int = 8,
    latent_scale: float = 0.4,
    untuned_fraction: float = 0.1,
) -> Recording:
    """A center-out session of `minutes` with `channels` Poisson neurons; positions in cm, velocities in cm/s.

    `drift` is the size (natural-log units of rate) of each baseline's slow change over the session;
    `latent_dim` shared latent factors modulate all rates by about ±`latent_scale` in log-rate.
    """
    minutes = _check("minutes", minutes, 0)
    bin_s = _check("bin width", bin_s, 0)
    drift = _check("drift", drift, 0, strict=False)
    if int(channels) < 1 or int(latent_dim) < 0 or int(n_targets) < 1:
        raise DataError(where("simulate", f"need channels >= 1, latent_dim >= 0, n_targets >= 1 (got {channels}, {latent_dim}, {n_targets})"))
    channels, latent_dim = int(channels), int(latent_dim)
    n = int(round(minutes * 60.0 / bin_s))
    if n < 1:
        raise DataError(where("simulate", f"{minutes} min is shorter than one {bin_s * 1000:g} ms bin"))
    rng = np.random.default_rng(seed)
    # neurons first, so the same seed gives the same population whatever the length
    baseline = rng.uniform(5.0, 30.0, channels)
    pd = rng.uniform(0, 2 * np.pi, channels)
    depth = rng.uniform(0.4, 1.0, channels) * (rng.random(channels) >= untuned_fraction)
    pos_pd = rng.uniform(0, 2 * np.pi, channels)
    pos_depth = rng.uniform(0.0, 0.25, channels)
    speed_gain = rng.uniform(0.0, 0.3, channels)
    loadings = rng.standard_normal((channels, latent_dim)) / np.sqrt(max(latent_dim, 1))
    drift_slope, drift_wave, drift_phase = rng.standard_normal(channels), rng.standard_normal(channels), rng.uniform(0, 2 * np.pi, channels)

    duration = n * bin_s
    seg = center_out_trials(rng, duration + lead_s + 1.0, radius, n_targets)
    centres = (np.arange(n) + 0.5) * bin_s
    pos, vel = kinematics(seg, centres)
    _, vel_ahead = kinematics(seg, centres + lead_s)
    pos_ahead, _ = kinematics(seg, centres + lead_s)
    v_scale = 1.875 * radius / 0.5  # peak speed of a 0.5 s minimum-jerk reach
    u = np.stack([np.cos(pd), np.sin(pd)])
    w = np.stack([np.cos(pos_pd), np.sin(pos_pd)])
    log_rate = (np.log(baseline)[None, :]
                + depth[None, :] * (vel_ahead @ u) / v_scale
                + pos_depth[None, :] * (pos_ahead @ w) / radius
                + speed_gain[None, :] * np.linalg.norm(vel_ahead, axis=1, keepdims=True) / v_scale)
    if latent_dim:
        log_rate += latent_scale * latent_factors(rng, n, latent_dim, bin_s) @ loadings.T
    if drift > 0:
        frac = centres[:, None] / duration
        log_rate += drift * (drift_slope * frac + 0.5 * drift_wave * np.sin(2 * np.pi * 3 * frac + drift_phase) - 0.5 * drift_wave * np.sin(drift_phase))
    rate = np.minimum(np.exp(log_rate), MAX_RATE_HZ)
    counts = rng.poisson(rate * bin_s).astype(np.int32)
    trial_starts = np.unique(np.floor(seg["trial_t"] / bin_s).astype(np.int64))
    keep = trial_starts < n
    return Recording(
        counts=counts,
        bin_s=bin_s,
        behavior=np.concatenate([pos, vel], axis=1),
        behavior_names=list(BEHAVIOR_NAMES),
        behavior_units=list(BEHAVIOR_UNITS),
        channel_names=[f"sim{i:03d}" for i in range(channels)],
        trial_starts=trial_starts[keep],
        source=f"simulate(seed={seed})",
        extra={"trial_targets": seg["targets"][: int(keep.sum())], "preferred_direction": pd, "lead_s": np.float64(lead_s)},
    ).validate()
