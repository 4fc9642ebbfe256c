"""Encoding models for the simulated participant: intended 2-D velocity (cm/s) -> firing rates (Hz).

Two models, one interface (`Encoder.rates`, `Encoder.variability`, `Encoder.params`):

- `cosine` — the idealised population of the closed-loop simulators: each channel fires at
  baseline + modulation * (v . u) / v_max, u a preferred direction (Georgopoulos et al. 1982),
  as in the closed-loop human simulator of Cunningham et al. 2011 (J Neurophysiol 105:1932) and
  BRAND's sim2D node (Ali et al. 2024, "BRAND: a platform for closed-loop experiments with
  deep network models", J Neural Eng). Preferred directions are uniform on the circle, baselines
  uniform in [0, 20] Hz, and the modulation is chosen so the rate at max speed in the preferred
  direction is at most 100 Hz; speeds beyond max speed saturate, so rates stay in [0, 100] Hz.
- `fit:FILE` — per-channel Poisson GLM (log-linear, like the point-process encoders of
  Truccolo et al. 2005) of spike counts on [vx, vy, speed] fit on a real recording read through
  rt_decoder.loaders, so rates, tuning shapes and noise are a real array's. The variability the
  tuning does not explain is kept: a slow shared multiplicative gain (log-AR(1), variance and time
  constant fit on the population residual) and per-channel over-dispersion (gamma-Poisson, fit as
  the extra variance of the residual, one draw per channel per recording bin).

Optional non-stationarity (`Drift`): preferred directions rotate, baselines move, units are lost
or new ones appear, all as deterministic functions of session time and the seed, so a session
replays exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, where
from ..recording import split_bounds

PEAK_HZ = 100.0
BASELINE_HZ = (0.0, 20.0)


@dataclass
class Drift:
    """Non-stationarity over minutes; all zero = a stationary array.

    pd_deg_per_min: each channel's preferred direction rotates at a random rate drawn uniformly in
        [-x, x] deg/min (tuning drift). baseline_hz_per_min: each channel's baseline moves linearly
        at a rate ~ N(0, x) Hz/min (rates clipped at 0). units_lost_per_min / units_gained_per_min:
        expected number of units that go silent / appear on a silent channel per minute across the
        array (Poisson events); a new unit gets a fresh random preferred-direction rotation.
    """

    pd_deg_per_min: float = 0.0
    baseline_hz_per_min: float = 0.0
    units_lost_per_min: float = 0.0
    units_gained_per_min: float = 0.0

    def active(self) -> bool:
        return any(v != 0 for v in asdict(self).values())

    def check(self) -> Drift:
        for k, v in asdict(self).items():
            if not (math.isfinite(v) and v >= 0):
                raise DataError(f"--{k.replace('_', '-')} must be a non-negative number, got {v}")
        return self


@dataclass
class DriftState:
    """Drift realised for D channels: per-channel rates drawn once, unit events drawn lazily in time order."""

    drift: Drift
    D: int
    seed: int
    rot_rate: np.ndarray = field(init=False)      # rad / s
    base_rate: np.ndarray = field(init=False)     # Hz / s
    alive: np.ndarray = field(init=False)
    rot_offset: np.ndarray = field(init=False)    # rad, from new units
    _next_t: float = field(init=False)
    events: list = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng((self.seed, 0xD21F7))
        d = self.drift
        self.rot_rate = np.deg2rad(rng.uniform(-1, 1, self.D) * d.pd_deg_per_min) / 60.0
        self.base_rate = rng.normal(0, 1, self.D) * d.baseline_hz_per_min / 60.0
        self.alive = np.ones(self.D, bool)
        self.rot_offset = np.zeros(self.D)
        self._rng = np.random.default_rng((self.seed, 0x0E7E))
        self._total = (d.units_lost_per_min + d.units_gained_per_min) / 60.0
        self._next_t = self._draw_next(0.0)
        self.events = []

    def _draw_next(self, t: float) -> float:
        return t + self._rng.exponential(1.0 / self._total) if self._total > 0 else math.inf

    def advance(self, t: float) -> None:
        """Apply every unit event up to session time t (seconds), in order."""
        while self._next_t <= t:
            lost = self._rng.uniform() < self.drift.units_lost_per_min / 60.0 / self._total
            pool = np.flatnonzero(self.alive if lost else ~self.alive)
            if pool.size:
                c = int(self._rng.choice(pool))
                self.alive[c] = not lost
                if not lost:
                    self.rot_offset[c] = self._rng.uniform(-np.pi, np.pi)
                self.events.append({"t": round(self._next_t, 3), "unit": c, "event": "lost" if lost else "gained"})
            self._next_t = self._draw_next(self._next_t)

    def rotation(self, t: float) -> np.ndarray:
        return self.rot_rate * t + self.rot_offset

    def baseline(self, t: float) -> np.ndarray:
        return self.base_rate * t


def rotate(v: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """v (2,) rotated by -angle per channel -> (D, 2): rotating the input by -a = rotating tuning by +a."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([c * v[0] + s * v[1], -s * v[0] + c * v[1]], axis=1)


class Encoder:
    """Intended velocity (cm/s) at session time t (s) -> rates (Hz) per channel; see the module doc."""

    kind = "base"
    n_channels: int
    max_speed: float

    def __init__(self, drift: Drift | None, seed: int) -> None:
        self.drift = (drift or Drift()).check()
        self.seed = seed
        self._drift: DriftState | None = None

    def _drift_state(self) -> DriftState:
        if self._drift is None:
            self._drift = DriftState(self.drift, self.n_channels, self.seed)
        return self._drift

    def rates(self, v: np.ndarray, t: float) -> np.ndarray:
        v = np.asarray(v, np.float64)
        if self.drift.active():
            ds = self._drift_state()
            ds.advance(t)
            r = self._rates(rotate(v, ds.rotation(t)))
            return np.where(ds.alive, np.clip(r + ds.baseline(t), 0.0, self.cap), 0.0)
        return self._rates(np.broadcast_to(v, (self.n_channels, 2)))

    def _rates(self, v: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def cap(self) -> np.ndarray | float:
        return PEAK_HZ

    def new_variability(self) -> Variability:
        """The unexplained variability as a process (stateless for cosine)."""
        return Variability(self.n_channels)

    def unit_events(self) -> list[dict]:
        return [] if self._drift is None else list(self._drift.events)

    def params(self) -> dict[str, Any]:
        return {"encoding": self.kind, "n_channels": self.n_channels, "array_seed": self.seed,
                **{f"drift_{k}": v for k, v in asdict(self.drift).items()}}


class Variability:
    """Multiplicative rate noise per control tick: shared slow gain x per-channel over-dispersion.

    Draws come from the caller's generator in tick order (one generator for the whole session,
    so the same seed and the same intentions give the same spikes).
    """

    def __init__(self, D: int, gain_sd: float = 0.0, gain_tau_s: float = 1.0, dispersion: np.ndarray | None = None,
                 hold_s: float = 0.05) -> None:
        self.D = D
        self.gain_sd, self.gain_tau = float(gain_sd), float(gain_tau_s)
        self.phi = np.zeros(D) if dispersion is None else np.asarray(dispersion, np.float64)
        self.hold_s = hold_s
        self.z = 0.0
        self.mult = np.ones(D)
        self._od = np.ones(D)
        self._held = math.inf

    def step(self, rng: np.random.Generator, dt: float) -> np.ndarray:
        """Advance by dt seconds; the (D,) multiplier for the next dt."""
        if self.gain_sd == 0 and not self.phi.any():
            return self.mult
        a = math.exp(-dt / self.gain_tau)
        self.z = a * self.z + math.sqrt(1 - a * a) * rng.standard_normal()
        g = math.exp(self.gain_sd * self.z - 0.5 * self.gain_sd**2)
        self._held += dt
        if self._held >= self.hold_s - 1e-9:  # a new over-dispersion draw per recording bin
            self._held = 0.0
            k = np.where(self.phi > 0, 1.0 / np.maximum(self.phi, 1e-12), 1.0)
            gam = rng.gamma(k, 1.0 / k)
            self._od = np.where(self.phi > 0, gam, 1.0)
        return g * self._od


class CosineEncoder(Encoder):
    """Cosine-tuned channels (Cunningham et al. 2011; BRAND sim2D): see the module doc."""

    kind = "cosine"

    def __init__(self, n_channels: int = 96, max_speed: float = 20.0, seed: int = 0, drift: Drift | None = None,
                 baseline_hz: tuple[float, float] = BASELINE_HZ, peak_hz: float = PEAK_HZ) -> None:
        if n_channels < 1:
            raise DataError(f"--channels must be at least 1, got {n_channels}")
        if not (max_speed > 0 and math.isfinite(max_speed)):
            raise DataError(f"--max-speed must be positive, got {max_speed}")
        super().__init__(drift, seed)
        self.n_channels, self.max_speed, self.peak = int(n_channels), float(max_speed), float(peak_hz)
        rng = np.random.default_rng((seed, 0xC05))
        self.pd = rng.uniform(0, 2 * np.pi, n_channels)
        self.u = np.stack([np.cos(self.pd), np.sin(self.pd)], axis=1)
        self.baseline = rng.uniform(*baseline_hz, n_channels)
        self.modulation = rng.uniform(0.3, 1.0, n_channels) * (self.peak - self.baseline)

    @property
    def cap(self) -> float:
        return self.peak

    def _rates(self, v: np.ndarray) -> np.ndarray:
        sp = np.linalg.norm(v, axis=1)
        v = v * np.minimum(1.0, self.max_speed / np.maximum(sp, 1e-12))[:, None]  # saturate beyond max speed
        r = self.baseline + self.modulation * np.einsum("dk,dk->d", v, self.u) / self.max_speed
        return np.clip(r, 0.0, self.peak)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "max_speed": self.max_speed, "baseline_hz": list(BASELINE_HZ),
                "peak_hz": self.peak, "preferred_directions": "uniform"}


# ---- fit on a real recording --------------------------------------------------------------------

def recording_velocity(rec: Any) -> tuple[np.ndarray, str]:
    """(T, 2) velocity from behaviour: vel_x/vel_y columns, else the derivative of pos_x/pos_y."""
    names = [n.lower() for n in (rec.behavior_names or [])]
    if rec.behavior is None or not names:
        raise DataError(where(rec.source, "has no behaviour to fit tuning on (need vel_x/vel_y or pos_x/pos_y); "
                                          "use a recording with kinematics, or --encoding cosine"))

    def pick(prefix: str) -> list[int] | None:
        for a, b in ((f"{prefix}_x", f"{prefix}_y"), (f"{prefix}x", f"{prefix}y")):
            if a in names and b in names:
                return [names.index(a), names.index(b)]
        return None

    iv = pick("vel")
    if iv is not None:
        return np.asarray(rec.behavior[:, iv], np.float64), f"behaviour columns {rec.behavior_names[iv[0]]}, {rec.behavior_names[iv[1]]}"
    ip = pick("pos")
    if ip is not None:
        return np.gradient(np.asarray(rec.behavior[:, ip], np.float64), rec.bin_s, axis=0), \
            f"derivative of {rec.behavior_names[ip[0]]}, {rec.behavior_names[ip[1]]}"
    raise DataError(where(rec.source, f"behaviour has no velocity or position columns (vel_x/vel_y or pos_x/pos_y); "
                                      f"found {', '.join(rec.behavior_names)}"))


def features(v: np.ndarray, speed_clip: float) -> np.ndarray:
    """[1, vx, vy, speed] for (N, 2) velocities, speeds saturated at speed_clip (keeps the GLM in range)."""
    sp = np.linalg.norm(v, axis=1)
    s = np.minimum(1.0, speed_clip / np.maximum(sp, 1e-12))
    v = v * s[:, None]
    return np.column_stack([np.ones(len(v)), v, sp * s])


def fit_poisson_glm(X: np.ndarray, Y: np.ndarray, ridge: float = 1e-3, iters: int = 20, tol: float = 1e-4,
                    W0: np.ndarray | None = None) -> np.ndarray:
    """Per-column Poisson GLM with log link by Newton's method (warm start W0): W (P, D), log E[Y] = X @ W.

    The small ridge (not on the intercept) keeps silent or barely-tuned channels finite."""
    T, P = X.shape
    D = Y.shape[1]
    if W0 is None:
        W = np.zeros((P, D))
        W[0] = np.log(np.maximum(Y.mean(axis=0), 1e-3))
    else:
        W = W0.copy()
    R = ridge * T * np.eye(P)
    R[0, 0] = 1e-6 * T
    # outer products once: H_d = sum_t mu_td x_t x_t'. Products by einsum, not BLAS: a multi-threaded
    # BLAS on a busy machine ran these thin products 20x slower than one plain loop
    XX = (X[:, :, None] * X[:, None, :]).reshape(T, P * P)
    for _ in range(iters):
        eta = np.einsum("tp,pd->td", X, W)
        np.minimum(eta, 10.0, out=eta)
        mu = np.exp(eta, out=eta)
        g = np.einsum("tp,td->pd", X, Y - mu) - R @ W
        H = np.einsum("tq,td->dq", XX, mu).reshape(D, P, P) + R
        step = np.clip(np.linalg.solve(H, g.T[:, :, None])[:, :, 0].T, -1.0, 1.0)  # damped: no overshoot
        W += step
        if np.abs(step).max() < tol:
            break
    return W


def poisson_ll(y: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Poisson log-likelihood per column, without the log(y!) term (cancels in comparisons)."""
    mu = np.maximum(mu, 1e-12)
    return (y * np.log(mu) - mu).sum(axis=0)


def pseudo_r2(y: np.ndarray, mu: np.ndarray, mu0: np.ndarray) -> np.ndarray:
    """Deviance pseudo-R² per channel: 1 - D(model) / D(constant rate mu0)."""
    def dev(m: np.ndarray) -> np.ndarray:
        m = np.maximum(m, 1e-12)
        return 2 * (np.where(y > 0, y * np.log(np.maximum(y, 1e-12) / m), 0.0) - (y - m)).sum(axis=0)
    d0 = dev(np.broadcast_to(mu0, y.shape))
    return 1.0 - dev(mu) / np.where(d0 > 0, d0, np.nan)


class FitEncoder(Encoder):
    """Poisson GLM tuning per channel, fit on a real recording (see the module doc).

    Intention mapping: v_rec = (speed_p95_rec / max_speed) * v_intent — the participant's max speed
    maps onto the recording's 95th-percentile speed, so the intention spans the velocities the
    array was recorded at. The fit uses counts at bin t against velocity at bin t + lead (neurons
    lead movement; lead chosen on the validation split); online, rates follow the current intention.
    """

    kind = "fit"

    def __init__(self, path: str | Path, max_speed: float = 20.0, seed: int = 0, drift: Drift | None = None,
                 n_channels: int | None = None, leads: tuple[int, ...] = (0, 1, 2, 3)) -> None:
        from ..loaders import load_recording

        if not (max_speed > 0 and math.isfinite(max_speed)):
            raise DataError(f"--max-speed must be positive, got {max_speed}")
        super().__init__(drift, seed)
        self.path = Path(path)
        rec = load_recording(self.path)
        rec.validate()
        vel, self.velocity_from = recording_velocity(rec)
        D = rec.n_channels
        if n_channels is not None:
            if not 1 <= n_channels <= D:
                raise DataError(where(self.path, f"--channels {n_channels}: the recording has {D} channels"))
            D = int(n_channels)
        self.n_channels, self.max_speed, self.bin_s = D, float(max_speed), rec.bin_s
        self.channel_names = list(rec.channel_names or [f"ch{i}" for i in range(rec.n_channels)])[:D]
        Y = rec.counts[:, :D].astype(np.float64)
        ok = np.all(np.isfinite(vel), axis=1)
        speed = np.linalg.norm(vel, axis=1)
        if ok.sum() < 100 or not np.nanpercentile(speed[ok], 95) > 0:
            raise DataError(where(self.path, "behaviour has too few finite, moving samples to fit tuning on"))
        self.speed_p95 = float(np.percentile(speed[ok], 95))
        self.speed_clip = float(np.percentile(speed[ok], 99))
        self.scale = self.speed_p95 / self.max_speed
        # standardise features for a well-conditioned fit; the weights are mapped back below
        self.vel_sd = float(np.std(vel[ok])) or 1.0
        b = split_bounds(rec.n_bins)
        self.lead, best = 0, -math.inf
        fits: dict[int, np.ndarray] = {}
        for lead in leads:  # a few warm-started Newton steps per lead are enough to rank them
            Xl, Yl, okl = self._design(vel, Y, ok, lead)
            idx_tr = np.flatnonzero(okl[: b["train"][1]])
            W = fit_poisson_glm(Xl[idx_tr], Yl[idx_tr], iters=5, W0=fits.get(lead - 1))
            va = np.arange(b["val"][0], min(b["val"][1], len(Xl)))
            va = va[okl[va]]
            ll = float(poisson_ll(Yl[va], np.exp(Xl[va] @ W)).sum())
            fits[lead] = W
            if ll > best:
                self.lead, best = lead, ll
        X, Yl, okl = self._design(vel, Y, ok, self.lead)
        tr = np.flatnonzero(okl[: b["train"][1]])
        self.W = fit_poisson_glm(X[tr], Yl[tr], W0=fits[self.lead])
        te = np.arange(b["test"][0], len(X))
        te = te[okl[te]]
        mu_tr = np.exp(X[tr] @ self.W)
        mu_te = np.exp(X[te] @ self.W)
        const = Yl[tr].mean(axis=0)
        self.heldout = {
            "pseudo_r2": pseudo_r2(Yl[te], mu_te, const),
            "ll_model_per_bin": float(poisson_ll(Yl[te], mu_te).sum() / len(te)),
            "ll_constant_per_bin": float(poisson_ll(Yl[te], np.broadcast_to(np.maximum(const, 1e-12), Yl[te].shape)).sum() / len(te)),
            "corr": np.array([np.corrcoef(Yl[te, c], mu_te[:, c])[0, 1] if Yl[te, c].std() > 0 else np.nan for c in range(D)]),
            "bins": int(len(te)),
        }
        self._fit_variability(Yl[tr], mu_tr)
        self.cap_hz = np.maximum(Y.max(axis=0), 1.0) / self.bin_s
        self.mean_rate_hz = Y.mean(axis=0) / self.bin_s

    def _design(self, vel: np.ndarray, Y: np.ndarray, ok: np.ndarray, lead: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Counts at bin t against velocity at t + lead; features standardised by vel_sd."""
        T = len(Y)
        v = vel[lead:] / self.vel_sd
        X = features(np.nan_to_num(v), self.speed_clip / self.vel_sd)
        return X, Y[: T - lead], ok[lead:]

    def _fit_variability(self, y: np.ndarray, mu: np.ndarray, window_s: float = 1.0) -> None:
        """Slow shared gain from the population residual; per-channel over-dispersion from what remains."""
        W = max(1, int(round(window_s / self.bin_s)))
        ys, ms = y.sum(axis=1), mu.sum(axis=1)
        lr = np.log((ys + 0.5) / (ms + 0.5))
        ker = np.ones(W) / W
        ls = np.convolve(lr, ker, mode="same")
        noise = float(np.mean(1.0 / np.maximum(ms, 1e-3)) / W)  # Poisson part of the smoothed log ratio
        var = max(0.0, float(np.var(ls)) - noise)
        self.gain_sd = float(math.sqrt(var))
        lsc = ls - ls.mean()
        den = float((lsc**2).sum()) or 1.0
        tau_bins = W
        for lag in range(W, min(len(lsc) // 4, int(120 / self.bin_s))):
            if float((lsc[lag:] * lsc[:-lag]).sum()) / den < math.exp(-1):
                tau_bins = lag
                break
        self.gain_tau_s = float(tau_bins * self.bin_s)
        mg = mu * np.exp(ls - 0.5 * var)[:, None]
        phi = ((y - mg) ** 2 - y).sum(axis=0) / np.maximum((mg**2).sum(axis=0), 1e-12)
        self.dispersion = np.clip(phi, 0.0, 5.0)

    @property
    def cap(self) -> np.ndarray:
        return self.cap_hz

    def expected_counts(self, vel_rec: np.ndarray) -> np.ndarray:
        """Expected counts per recording bin for (N, 2) velocities on the recording's own scale."""
        X = features(np.asarray(vel_rec, np.float64) / self.vel_sd, self.speed_clip / self.vel_sd)
        return np.exp(X @ self.W)

    def _rates(self, v: np.ndarray) -> np.ndarray:
        vr = v * (self.scale / self.vel_sd)
        X = features(vr, self.speed_clip / self.vel_sd)  # (D, 4): one row per channel (rotations differ)
        r = np.exp(np.einsum("dp,pd->d", X, self.W)) / self.bin_s
        return np.minimum(r, self.cap_hz)

    def new_variability(self) -> Variability:
        return Variability(self.n_channels, self.gain_sd, self.gain_tau_s, self.dispersion, hold_s=self.bin_s)

    def summary(self) -> str:
        r2 = self.heldout["pseudo_r2"]
        return (f"fit {self.path.name}: {self.n_channels} channels, Poisson GLM on [vx, vy, speed] ({self.velocity_from}), "
                f"lead {self.lead * self.bin_s * 1000:g} ms; held-out pseudo-R² median {np.nanmedian(r2):.3f} "
                f"({int(np.sum(r2 > 0))}/{r2.size} channels > 0), log-lik/bin {self.heldout['ll_model_per_bin']:.2f} vs "
                f"constant {self.heldout['ll_constant_per_bin']:.2f}; shared gain sd {self.gain_sd:.3f} (tau {self.gain_tau_s:.1f} s), "
                f"over-dispersion median {np.median(self.dispersion):.3f}; intention scale x{self.scale:.3g} "
                f"({self.max_speed:g} cm/s -> recording p95 speed {self.speed_p95:.3g})")

    def params(self) -> dict[str, Any]:
        r2 = self.heldout["pseudo_r2"]
        return {**super().params(), "encoding": f"fit:{self.path}", "fit_file": str(self.path), "max_speed": self.max_speed,
                "fit_model": "Poisson GLM, log rate = b0 + b . [vx, vy, speed] (recording scale)",
                "fit_velocity": self.velocity_from, "fit_bin_s": self.bin_s, "fit_lead_s": self.lead * self.bin_s,
                "intent_scale": self.scale, "intent_mapping": f"v_rec = {self.scale:.6g} * v_intent (max speed -> recording p95 speed {self.speed_p95:.6g})",
                "heldout_pseudo_r2_median": float(np.nanmedian(r2)), "heldout_pseudo_r2": [round(float(x), 4) for x in r2],
                "heldout_corr_median": float(np.nanmedian(self.heldout["corr"])),
                "heldout_ll_model_per_bin": self.heldout["ll_model_per_bin"],
                "heldout_ll_constant_per_bin": self.heldout["ll_constant_per_bin"],
                "shared_gain_sd": self.gain_sd, "shared_gain_tau_s": self.gain_tau_s,
                "overdispersion": [round(float(x), 4) for x in self.dispersion],
                "mean_rate_hz": [round(float(x), 3) for x in self.mean_rate_hz]}


def make_encoder(spec: str, n_channels: int | None = None, max_speed: float = 20.0, seed: int = 0,
                 drift: Drift | None = None) -> Encoder:
    """`cosine` or `fit:FILE` -> an Encoder."""
    if spec == "cosine":
        return CosineEncoder(n_channels or 96, max_speed=max_speed, seed=seed, drift=drift)
    if spec.startswith("fit:"):
        path = spec[4:]
        if not path:
            raise DataError("--encoding fit:FILE needs a file, e.g. fit:../shared/data/chestek_contdata95/contdata95.mat")
        return FitEncoder(path, max_speed=max_speed, seed=seed, drift=drift, n_channels=n_channels)
    raise DataError(f"--encoding must be cosine or fit:FILE, got {spec!r}")
