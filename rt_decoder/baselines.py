"""The decoders BCI labs compare against (DESIGN §4): a Wiener filter and a Kalman filter.

Both are fit in numpy and exported as ONNX step graphs with a model card, so the runtime,
`evaluate` and metrics.json run them exactly like our retention decoder: one bin in, one
prediction out, recurrent state carried by the caller and zeroed at reset.

Stable entry points (the trainer calls these):

    fit_baselines(rec, split, lag_bins) -> {"wiener": onnx.ModelProto, "kalman": onnx.ModelProto}
    fit_wiener(train, val, lag_bins=0, taps=10, alphas=None) -> onnx.ModelProto
    fit_kalman(train, val, lag_bins=0) -> onnx.ModelProto

Causality is the same as for our models: the prediction for bin k uses counts of bins
<= k - lag_bins only. The states hold *centered* counts / kinematics, so the runtime's
zero initial state means "average activity, average posture": the first predictions of a
session start at the training mean instead of being dragged by an imagined silence.
Rows whose behaviour is NaN are skipped when fitting and counted in the card's `extra`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import DataError, where
from .metrics import r2 as r2_score
from .model_card import ModelCard, StateSpec
from .recording import Recording
from .recording import split_bounds as default_split
from .step_graph import build_affine_state_model

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-4, 2, 13))
MIN_ROWS = 20
EIGH_MAX_FEATURES = 2500
CHUNK_VALUES = 4_000_000   # design values per chunk when accumulating X'X (32 MB)


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, np.float32), name=name)


def _i64(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, np.int64), name=name)


def _needs_behavior(rec: Recording, what: str) -> np.ndarray:
    if rec.behavior is None:
        raise DataError(where(rec.source, f"{what} needs behaviour (kinematics) to fit, the recording has none"))
    return np.asarray(rec.behavior, np.float64)




def _card(rec: Recording, model_type: str, states: list[StateSpec], lag_bins: int, extra: dict,
          origin: dict | None = None) -> ModelCard:
    """origin: {"data_sha256", "split", "run_id"} of the whole recording the blocks came from (fit_baselines);
    without it the card fingerprints the training block itself."""
    origin = origin or {}
    extra = extra | {k: origin[k] for k in ("split", "run_id") if origin.get(k)}
    return ModelCard(kind="decoder", model_type=model_type, bin_s=float(rec.bin_s),
                     channel_names=list(rec.channel_names), outputs=list(rec.behavior_names),
                     units=list(rec.behavior_units), states=states, lag_bins=int(lag_bins),
                     data_sha256=origin.get("data_sha256") or rec.fingerprint(), extra=extra)


def _shift_nodes(prefix: str, new: str, buf: str, out: str, length: int) -> tuple[list, list]:
    """Nodes: out = concat(new[:, None], buf[:, :length-1]) along axis 1 (a FIFO, newest first)."""
    nodes = [helper.make_node("Unsqueeze", [new, f"{prefix}_ax1"], [f"{prefix}_new3"])]
    inits = [_i64(f"{prefix}_ax1", [1])]
    if length == 1:
        nodes.append(helper.make_node("Identity", [f"{prefix}_new3"], [out]))
        return nodes, inits
    inits += [_i64(f"{prefix}_s0", [0]), _i64(f"{prefix}_s1", [length - 1])]
    nodes += [helper.make_node("Slice", [buf, f"{prefix}_s0", f"{prefix}_s1", f"{prefix}_ax1"], [f"{prefix}_keep"]),
              helper.make_node("Concat", [f"{prefix}_new3", f"{prefix}_keep"], [out], axis=1)]
    return nodes, inits


def lagged_design(centered: np.ndarray, taps: int, lag_bins: int) -> np.ndarray:
    """(T, taps*D) features for each bin k: centered counts of bins k-lag, ..., k-lag-taps+1.

    Bins before the start are zero (= the training mean), exactly like the step graph after reset.
    """
    c = np.asarray(centered, np.float64)
    T, D = c.shape
    X = np.zeros((T, taps * D))
    for j in range(taps):
        s = lag_bins + j
        if s < T:
            X[s:, j * D:(j + 1) * D] = c[:T - s]
    return X


# ----------------------------------------------------------------------------- Wiener


@dataclass
class WienerParams:
    """y_k = sum_j (x_{k-lag-j} - mu) W_j + intercept: ridge regression on a lag buffer of counts."""

    mu: np.ndarray          # (D,) training mean counts
    weights: np.ndarray     # (taps*D, K) in units of raw counts, newest tap first
    intercept: np.ndarray   # (K,)
    taps: int
    lag_bins: int
    alpha: float
    info: dict = field(default_factory=dict)

    def predict(self, counts: np.ndarray) -> np.ndarray:
        """The numpy twin of the step graph, run from reset over (T, D) counts -> (T, K)."""
        X = lagged_design(np.asarray(counts, np.float64) - self.mu, self.taps, self.lag_bins)
        return X @ self.weights + self.intercept

    def to_onnx(self, card: ModelCard) -> onnx.ModelProto:
        D = self.mu.size
        n = self.taps + self.lag_bins
        inits = [_init("wf_mu", self.mu[None]), _init("wf_W", self.weights),
                 _init("wf_b", self.intercept[None]), _i64("wf_flat", [1, self.taps * D]),
                 _i64("wf_f0", [self.lag_bins]), _i64("wf_f1", [self.lag_bins + self.taps])]
        nodes = [helper.make_node("Sub", ["counts", "wf_mu"], ["wf_c"])]
        sn, si = _shift_nodes("wf", "wf_c", "lagbuf", "lagbuf_next", n)
        nodes += sn
        inits += si
        if n == self.taps:
            nodes.append(helper.make_node("Identity", ["lagbuf_next"], ["wf_feat3"]))
        else:
            nodes.append(helper.make_node("Slice", ["lagbuf_next", "wf_f0", "wf_f1", "wf_ax1"], ["wf_feat3"]))
        nodes += [helper.make_node("Reshape", ["wf_feat3", "wf_flat"], ["wf_feat"]),
                  helper.make_node("MatMul", ["wf_feat", "wf_W"], ["wf_xw"]),
                  helper.make_node("Add", ["wf_xw", "wf_b"], ["prediction"])]
        return build_affine_state_model(card, nodes, inits)


def _valid_rows(y: np.ndarray) -> np.ndarray:
    return np.all(np.isfinite(y), axis=1)


def fit_wiener_params(train: Recording, val: Recording, lag_bins: int = 0, taps: int = 10,
                      alphas=None) -> WienerParams:
    """Ridge on z-scored lagged counts; alpha (relative to the number of rows) chosen by mean R2
    on the validation block; the final weights are those fit on the training block alone."""
    if taps < 1 or lag_bins < 0:
        raise ValueError(f"taps must be >= 1 and lag_bins >= 0, got taps={taps}, lag_bins={lag_bins}")
    ytr, yva = _needs_behavior(train, "the Wiener filter"), _needs_behavior(val, "the Wiener filter")
    alphas = DEFAULT_ALPHAS if alphas is None else tuple(float(a) for a in alphas)
    mu = train.counts.mean(axis=0).astype(np.float64)
    ctr = train.counts - mu
    # training rows with a full history and finite behaviour; validation rows with finite behaviour
    keep_tr = _valid_rows(ytr)
    keep_tr[:min(taps + lag_bins - 1, keep_tr.size)] = False
    keep_va = _valid_rows(yva)
    n_nan = int((~_valid_rows(ytr)).sum() + (~keep_va).sum())
    if keep_tr.sum() < MIN_ROWS or keep_va.sum() < 2:
        raise DataError(where(train.source, f"too short to fit a Wiener filter: {int(keep_tr.sum())} usable training "
                                            f"rows and {int(keep_va.sum())} validation rows (need >= {MIN_ROWS} and >= 2)"))
    # sufficient statistics in row chunks, so a long session never materializes its (T, taps*D) design
    n_feat = taps * train.n_channels
    Sxx, sx = np.zeros((n_feat, n_feat)), np.zeros(n_feat)
    Sxy, sy = np.zeros((n_feat, ytr.shape[1])), np.zeros(ytr.shape[1])
    hist = taps + lag_bins - 1
    step = max(256, CHUNK_VALUES // n_feat)
    for lo in range(0, ctr.shape[0], step):
        hi = min(lo + step, ctr.shape[0])
        start = max(0, lo - hist)
        X = lagged_design(ctr[start:hi], taps, lag_bins)[lo - start:]
        k = keep_tr[lo:hi]
        X, y = X[k], ytr[lo:hi][k]
        Sxx += X.T @ X
        sx += X.sum(axis=0)
        Sxy += X.T @ y
        sy += y.sum(axis=0)
    n = int(keep_tr.sum())
    xm, y_mean = sx / n, sy / n
    cov = Sxx / n - np.outer(xm, xm)
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    sd = np.where(sd > 1e-9, sd, 1.0)
    G = cov / np.outer(sd, sd)
    c = (Sxy / n - np.outer(xm, y_mean)) / sd[:, None]
    del Sxx, cov
    Zva = lagged_design(val.counts - mu, taps, lag_bins)[keep_va]
    yva = yva[keep_va]
    Zva -= xm
    Zva /= sd
    scores = []
    best = None
    if n_feat <= EIGH_MAX_FEATURES:
        # one eigendecomposition serves every alpha
        evals, evecs = np.linalg.eigh(G)
        proj = evecs.T @ c
        solve = lambda a: evecs @ (proj / (evals + a)[:, None])  # noqa: E731
    else:
        # many features: a Cholesky per alpha is cheaper than one eigh; use every other alpha
        from scipy.linalg import cho_factor, cho_solve

        alphas = alphas[::2] if len(alphas) > 4 else alphas
        eye = np.eye(n_feat)
        solve = lambda a: cho_solve(cho_factor(G + a * eye), c)  # noqa: E731
    for a in alphas:
        w = solve(a)
        pred = Zva @ w + y_mean
        s = float(np.nanmean(r2_score(yva, pred)))
        scores.append(s)
        if best is None or s > best[0]:
            best = (s, a, w)
    _, alpha, w = best
    W = w / sd[:, None]
    b = y_mean - xm @ W
    info = {"alpha": alpha, "alphas": list(alphas), "val_r2_mean": scores, "taps": taps,
            "nan_rows_skipped": n_nan, "train_rows": int(n)}
    return WienerParams(mu=mu, weights=W, intercept=b, taps=taps, lag_bins=lag_bins, alpha=alpha, info=info)


def fit_wiener(train: Recording, val: Recording, lag_bins: int = 0, taps: int = 10, alphas=None,
               origin: dict | None = None) -> onnx.ModelProto:
    """A Wiener filter (ridge on the last `taps` bins of counts <= k - lag_bins, plus intercept) as
    an ONNX step graph. State "lagbuf" [1, taps + lag_bins, D] holds centered counts, newest first."""
    p = fit_wiener_params(train, val, lag_bins, taps, alphas)
    states = [StateSpec("lagbuf", [1, taps + lag_bins, train.n_channels])]
    card = _card(train, "wiener", states, lag_bins, {"baseline": "wiener", **p.info}, origin)
    return p.to_onnx(card)


# ----------------------------------------------------------------------------- Kalman


@dataclass
class KalmanParams:
    """Steady-state Kalman filter in centered coordinates (Wu et al. 2003; Malik et al. 2011).

    s_{k+1} = A s_k + w (cov W), z_{k-L} = H s_k + q (cov Q), s = kinematics - mean, z = counts - mean,
    L = lag_bins: the counts L bins *before* a bin observe its kinematics (motor cortex leads the
    hand), which is what a decoder held to bins <= k - L can use. With the steady-state gain K the
    filter is affine, x' = M x + K z, M = (I - K H) A; the prediction for bin k is the posterior
    after the counts of bin k - L (for L >= 1 that is the state *before* this bin's update).
    """

    x_mean: np.ndarray      # (n,)
    z_mean: np.ndarray      # (D,)
    A: np.ndarray
    W: np.ndarray
    H: np.ndarray
    Q: np.ndarray
    K: np.ndarray           # (n, D) steady-state gain
    lag_bins: int
    info: dict = field(default_factory=dict)

    @property
    def M(self) -> np.ndarray:
        return (np.eye(self.A.shape[0]) - self.K @ self.H) @ self.A

    def predict(self, counts: np.ndarray) -> np.ndarray:
        """The numpy twin of the step graph, run from reset over (T, D) counts -> (T, n)."""
        z = np.asarray(counts, np.float64) - self.z_mean
        T = z.shape[0]
        L = self.lag_bins
        M, K = self.M, self.K
        s = np.zeros(self.A.shape[0])
        out = np.empty((T, s.size))
        for k in range(T):
            if L == 0:
                s = M @ s + K @ z[k]
                out[k] = s
            else:
                out[k] = s
                j = k - L + 1
                s = M @ s + K @ (z[j] if j >= 0 else np.zeros_like(z[0]))
        return out + self.x_mean

    def to_onnx(self, card: ModelCard) -> onnx.ModelProto:
        L = self.lag_bins
        inits = [_init("kf_zm", self.z_mean[None]), _init("kf_xm", self.x_mean[None]),
                 _init("kf_Mt", self.M.T), _init("kf_Kt", self.K.T)]
        nodes = [helper.make_node("Sub", ["counts", "kf_zm"], ["kf_c"])]
        if L >= 2:
            # a FIFO of the last L-1 centered count rows; the oldest is the observation due now
            sn, si = _shift_nodes("kd", "kf_c", "kf_delay", "kf_delay_next", L - 1)
            nodes += sn
            inits += si + [_i64("kf_last", [L - 2])]
            nodes += [helper.make_node("Gather", ["kf_delay", "kf_last"], ["kf_old3"], axis=1),
                      helper.make_node("Squeeze", ["kf_old3", "kd_ax1"], ["kf_obs"])]
        else:
            nodes.append(helper.make_node("Identity", ["kf_c"], ["kf_obs"]))
        nodes += [helper.make_node("MatMul", ["kf_x", "kf_Mt"], ["kf_mx"]),
                  helper.make_node("MatMul", ["kf_obs", "kf_Kt"], ["kf_kz"]),
                  helper.make_node("Add", ["kf_mx", "kf_kz"], ["kf_x_next"])]
        if L == 0:
            nodes.append(helper.make_node("Add", ["kf_x_next", "kf_xm"], ["prediction"]))
        else:
            nodes.append(helper.make_node("Add", ["kf_x", "kf_xm"], ["prediction"]))
        return build_affine_state_model(card, nodes, inits)


def steady_state_gain(A, W, H, Q, tol: float = 1e-10, max_iter: int = 20000) -> tuple[np.ndarray, int]:
    """Iterate the Riccati recursion from P = W until the gain stops changing -> (K, iterations)."""
    n = A.shape[0]
    P = W.copy()
    K = np.zeros((n, H.shape[0]))
    for it in range(1, max_iter + 1):
        Pp = A @ P @ A.T + W
        S = H @ Pp @ H.T + Q
        K_new = np.linalg.solve(S, H @ Pp).T       # Pp H' S^-1 (S symmetric)
        P = (np.eye(n) - K_new @ H) @ Pp
        P = (P + P.T) / 2
        if np.max(np.abs(K_new - K)) < tol * max(1.0, np.max(np.abs(K_new))):
            return K_new, it
        K = K_new
    return K, max_iter


def fit_kalman_params(train: Recording, val: Recording, lag_bins: int = 0) -> KalmanParams:
    """Least squares for A, W (state transition) and H, Q (observation) on the training block.

    The state is every behaviour column (e.g. pos + vel), centered on its training mean; the
    constant term of Wu et al. is handled by centering counts and kinematics. With lag_bins L the
    observation model pairs counts of bin j with kinematics of bin j + L (Wu et al. fit such a
    neural lead too); on chestek_contdata95 at L = 1 this beats forecasting an L = 0 filter
    L bins ahead with A^L by 0.1-0.3 R2 on velocity. `val` only reports the validation R2 in the
    card (the filter has no hyper-parameter to choose).
    """
    if lag_bins < 0:
        raise ValueError(f"lag_bins must be >= 0, got {lag_bins}")
    y = _needs_behavior(train, "the Kalman filter")
    ok = _valid_rows(y)
    n_nan = int((~ok).sum())
    n_state = y.shape[1]
    pairs = ok[:-1] & ok[1:]
    if ok.sum() < max(MIN_ROWS, n_state + 2) or pairs.sum() < n_state + 2:
        raise DataError(where(train.source, f"too short to fit a Kalman filter: {int(ok.sum())} usable training rows "
                                            f"(need >= {max(MIN_ROWS, n_state + 2)})"))
    z = train.counts.astype(np.float64)
    x_mean = y[ok].mean(axis=0)
    z_mean = z[ok].mean(axis=0)
    s = np.where(ok[:, None], y - x_mean, 0.0)
    zc = z - z_mean
    S0, S1 = s[:-1][pairs], s[1:][pairs]
    At, *_ = np.linalg.lstsq(S0, S1, rcond=None)
    A = At.T
    R = S1 - S0 @ At
    W = R.T @ R / max(1, R.shape[0] - n_state)
    # observation pairs: counts of bin j with kinematics of bin j + L
    L = lag_bins
    obs = ok[L:] if L else ok
    if obs.sum() < max(MIN_ROWS, n_state + 2):
        raise DataError(where(train.source, f"too short to fit a Kalman filter at lag {L}: {int(obs.sum())} usable rows"))
    so, zo = s[L:][obs], zc[:zc.shape[0] - L][obs]
    Ht, *_ = np.linalg.lstsq(so, zo, rcond=None)
    H = Ht.T
    E = zo - so @ Ht
    Q = E.T @ E / max(1, E.shape[0] - n_state)
    # silent or constant channels would make Q singular; a small floor keeps S invertible
    Q = Q + np.eye(Q.shape[0]) * max(1e-6, 1e-6 * float(np.trace(Q)) / Q.shape[0])
    W = W + np.eye(n_state) * 1e-9 * max(1.0, float(np.trace(W)))
    K, iters = steady_state_gain(A, W, H, Q)
    p = KalmanParams(x_mean=x_mean, z_mean=z_mean, A=A, W=W, H=H, Q=Q, K=K, lag_bins=lag_bins,
                     info={"nan_rows_skipped": n_nan, "riccati_iterations": iters, "train_rows": int(ok.sum()),
                           "spectral_radius_A": float(np.max(np.abs(np.linalg.eigvals(A))))})
    if val.behavior is not None:
        yv = np.asarray(val.behavior, np.float64)
        p.info["val_r2"] = [float(v) for v in r2_score(yv, p.predict(val.counts))]
        p.info["nan_rows_skipped"] += int((~_valid_rows(yv)).sum())
    return p


def fit_kalman(train: Recording, val: Recording, lag_bins: int = 0, origin: dict | None = None) -> onnx.ModelProto:
    """A steady-state Kalman filter (Wu et al. 2003) as an ONNX step graph; state "kf_x" [1, n]
    (plus "kf_delay" [1, lag-1, D] for lag >= 2).

    Why steady-state: the covariance recursion does not depend on the data, so the gain
    converges within a few seconds of bins to a constant; running the converged gain from the
    first bin makes each step two small matrix products (no matrix inverse op per bin, a fixed
    cost inside the latency budget), and its predictions are identical to the full filter after
    that short transient. It is the standard form in closed-loop BCIs (Malik et al. 2011,
    IEEE TNSRE 19:25).
    """
    p = fit_kalman_params(train, val, lag_bins)
    n = p.A.shape[0]
    states = [StateSpec("kf_x", [1, n])]
    if lag_bins >= 2:
        states.append(StateSpec("kf_delay", [1, lag_bins - 1, train.n_channels]))
    card = _card(train, "kalman", states, lag_bins, {"baseline": "kalman", **p.info}, origin)
    return p.to_onnx(card)


# ----------------------------------------------------------------------------- both


def _bounds(rec: Recording, split) -> dict[str, tuple[int, int]]:
    b = default_split(rec.n_bins) if split is None else {k: (int(v[0]), int(v[1])) for k, v in dict(split).items()}
    for name in ("train", "val"):
        if name not in b:
            raise ValueError(f"split needs a {name!r} block, got {sorted(b)}")
    return b


def fit_baselines(rec: Recording, split=None, lag_bins: int = 0, taps: int = 10,
                  run_id: str = "", names: tuple[str, ...] = ("wiener", "kalman")) -> dict[str, onnx.ModelProto]:
    """Fit {"wiener", "kalman"} (or the subset `names`) on rec's train block (Wiener's alpha on the val block).

    split: {"train": (a, b), "val": (b, c), ...} bin ranges (None: recording.split_bounds defaults).
    The cards carry the fingerprint of the whole recording, like the trained model's, and the
    id of the training run they belong to (run_id), so a folder's files can be told apart.
    """
    b = _bounds(rec, split)
    train, val = rec.slice(*b["train"]), rec.slice(*b["val"])
    origin = {"data_sha256": rec.fingerprint(), "split": {k: list(v) for k, v in b.items()}, "run_id": run_id}
    fits = {"wiener": lambda: fit_wiener(train, val, lag_bins=lag_bins, taps=taps, origin=origin),
            "kalman": lambda: fit_kalman(train, val, lag_bins=lag_bins, origin=origin)}
    unknown = [n for n in names if n not in fits]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {sorted(fits)}")
    return {n: fits[n]() for n in names}
