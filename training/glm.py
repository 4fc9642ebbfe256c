"""Fit the coupled Poisson GLM reference (rt_decoder/glm.py) on the generative model's split.

L2-regularised maximum likelihood (the bias is not penalised) with scipy's L-BFGS on analytic
gradients, along a path of penalties from strong to weak, each fit warm-started from the last.
The validation block picks the penalty; the path stops once validation got worse `patience`
times in a row (early stopping along the path, so weak penalties that overfit are never fit).

Each block is featurized from its own first bin, with an empty history, exactly as the step graph
runs it after a reset (evaluation scores the test block the same way). Binary, sparse data (calcium
events, spikes in short bins) keep the history features sparse, so they are multiplied as a
scipy sparse matrix: a 452-neuron coupled fit then takes seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from scipy import optimize, sparse

from rt_decoder.errors import ConfigError
from rt_decoder.evaluation import constant_rate, log_likelihood
from rt_decoder.glm import ETA_MAX, LIKELIHOODS, GLMParams, glm_card, history_features, link
from rt_decoder.glm import raised_cosine_basis as basis_of
from rt_decoder.recording import Recording
from rt_decoder.step_graph import save

HPARAMS = {
    "n_bases": 5,            # raised cosines per filter
    "n_bins": 20,            # filter length in bins
    "l2": [1.0, 0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5],   # penalty path (per bin, on the
                             # summed log-likelihood, on weights of unit-RMS features), strong to weak
    "max_iter": 100,         # L-BFGS iterations per penalty (each fit starts from the previous one)
    "patience": 2,           # stop the path after this many penalties without a better validation score
}
ETA_MIN = -30.0
SPARSE_BELOW = 0.15          # history features this sparse are multiplied as a sparse matrix


def _design(counts: np.ndarray, basis: np.ndarray):
    """(features of bins lo..hi-2, targets = bins lo+1..hi-1) for one block, from an empty history."""
    X = history_features(counts, basis)[:-1]
    if X.size and np.count_nonzero(X) / X.size < SPARSE_BELOW:
        X = sparse.csr_matrix(X)
    return X, np.asarray(counts[1:], np.float64)


def _scale(X, s: np.ndarray):
    """X with column j multiplied by s[j] (dense or sparse)."""
    return X @ sparse.diags(s).tocsr() if sparse.issparse(X) else X * s.astype(X.dtype)


def _objective(theta: np.ndarray, X, Y: np.ndarray, likelihood: str, l2: float) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood per bin (summed over neurons, constants dropped) + l2 * |W|^2, and its gradient."""
    n, D = Y.shape
    F = X.shape[1]
    W = theta[:F * D].reshape(F, D)
    b = theta[F * D:]
    eta = np.asarray(X @ W) + b
    clipped = (eta > ETA_MAX) | (eta < ETA_MIN)
    eta = np.clip(eta, ETA_MIN, ETA_MAX)
    lam = np.exp(eta)
    if likelihood == "poisson":
        nll = float((lam - Y * eta).sum())
        r = lam - Y
    else:                                   # P(spike) = 1 - exp(-lam): s log(1 - e^-lam) - (1 - s) lam
        s = Y > 0
        nll = float(lam[~s].sum() - np.log(-np.expm1(-lam[s])).sum())
        r = np.where(s, -lam / np.expm1(np.minimum(lam, 700.0)), lam)
    r[clipped] = 0.0
    gW = np.asarray(X.T @ r) / n + 2 * l2 * W
    gb = r.sum(axis=0) / n
    return nll / n + l2 * float((W**2).sum()), np.concatenate([gW.ravel(), gb])


def _val_ll(theta: np.ndarray, X, Y: np.ndarray, likelihood: str, D: int) -> float:
    """Validation log-likelihood per bin, scored by rt_decoder.evaluation (the metric's one home)."""
    F = X.shape[1]
    eta = np.asarray(X @ theta[:F * D].reshape(F, D)) + theta[F * D:]
    return float(log_likelihood(Y, link(eta, likelihood), likelihood).sum()) / max(1, Y.shape[0])


def fit_glm(rec: Recording, split: dict, likelihood: str = "poisson", overrides: dict | None = None,
            time_limit: float | None = None, log=print) -> GLMParams:
    """Fit on split["train"], choose the penalty on split["val"]; returns the GLM (info: path, penalty, seconds)."""
    hp = dict(HPARAMS)
    unknown = sorted(set(overrides or {}) - set(hp))
    if unknown:
        raise ConfigError(f"baselines.glm: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(hp))})")
    hp.update(overrides or {})
    if likelihood not in LIKELIHOODS:
        raise ConfigError(f"baselines.glm: likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
    t0, c0 = time.perf_counter(), time.process_time()
    basis = basis_of(int(hp["n_bases"]), int(hp["n_bins"]))
    counts = np.asarray(rec.counts, np.float64)
    (a, b), (c, d) = split["train"], split["val"]
    Xt, Yt = _design(counts[a:b], basis)
    Xv, Yv = _design(counts[c:d], basis)
    if sparse.issparse(Xv) != sparse.issparse(Xt):       # the train block decides for both
        Xv = sparse.csr_matrix(Xv) if sparse.issparse(Xt) else Xv.toarray()
    D, F = counts.shape[1], Xt.shape[1]
    # dense counts are fit on standardized features (centred, unit spread), which L-BFGS needs
    # to converge: their raw features are large and nearly collinear with the bias. The penalty
    # then acts on the standardized weights; weights and bias are mapped back at the end. Sparse
    # features stay raw (centring would fill them in, and on ziv CA1 the raw penalty validated
    # better: 1.08 vs 1.00 held-out bits/spike).
    if sparse.issparse(Xt):
        mu, rms = np.zeros(F), np.ones(F)
    else:
        mu = Xt.mean(axis=0)
        Xt, Xv = Xt - mu, Xv - mu
        rms = np.sqrt((Xt**2).mean(axis=0))
    rms = np.where(rms > 1e-8, rms, 1.0)
    Xt, Xv = _scale(Xt, 1 / rms), _scale(Xv, 1 / rms)
    rate = constant_rate(counts[a:b], likelihood).clip(1e-6, 1 - 1e-6)
    bias0 = np.log(rate) if likelihood == "poisson" else np.log(-np.log1p(-rate))
    theta = np.concatenate([np.zeros(F * D), bias0])
    best = (_val_ll(theta, Xv, Yv, likelihood, D), None, theta.copy())
    path, bad = [], 0
    for l2 in hp["l2"]:
        res = optimize.minimize(_objective, theta, args=(Xt, Yt, likelihood, float(l2)), jac=True,
                                method="L-BFGS-B", options={"maxiter": int(hp["max_iter"])})
        theta = res.x
        v = _val_ll(theta, Xv, Yv, likelihood, D)
        path.append({"l2": float(l2), "val_ll_per_bin": v, "iterations": int(res.nit)})
        log(f"glm: l2 {l2:g}: validation log-likelihood {v:.4f} per bin ({res.nit} iterations)")
        if v > best[0]:
            best, bad = (v, float(l2), theta.copy()), 0
        else:
            bad += 1
            if bad >= int(hp["patience"]):
                break
        if time_limit is not None and time.process_time() - c0 > time_limit:
            log(f"glm: time limit {time_limit:g} s reached; keeping the best penalty so far")
            break
    theta = best[2]
    W = theta[:F * D].reshape(F, D) / rms[:, None]
    theta[F * D:] -= mu @ W
    theta[:F * D] = W.ravel()
    info = {"l2": best[1], "n_bases": int(hp["n_bases"]), "n_bins": int(hp["n_bins"]), "val_ll_per_bin": best[0],
            "path": path, "fit_seconds": round(time.perf_counter() - t0, 1),
            "fit_cpu_seconds": round(time.process_time() - c0, 1), "sparse": sparse.issparse(Xt)}
    return GLMParams(bias=theta[F * D:], weights=theta[:F * D].reshape(F, D), basis=basis, likelihood=likelihood,
                     info=info)


def train_glm(rec: Recording, split: dict, likelihood: str, path: str | Path, overrides: dict | None = None,
              time_limit: float | None = None, run_id: str = "", log=print) -> GLMParams:
    """Fit the GLM (fit_glm) and write it as a generative step graph at `path`, its card carrying
    the recording's fingerprint, the split and the run id like the model's."""
    params = fit_glm(rec, split, likelihood, overrides, time_limit, log)
    write_glm(params, rec, split, path, run_id)
    return params


def write_glm(params: GLMParams, rec: Recording, split: dict, path: str | Path, run_id: str = "") -> None:
    """The GLM as a generative step graph at `path`, its card carrying the recording's fingerprint,
    the split and the run id like the model's."""
    origin = {"data_sha256": rec.fingerprint(), "split": {k: [int(v[0]), int(v[1])] for k, v in split.items()},
              "run_id": run_id}
    save(params.to_onnx(glm_card(rec, params, origin)), path)
