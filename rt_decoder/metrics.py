"""Decoding metrics, per output column. One home: training, evaluate and the demo call these."""

from __future__ import annotations

import numpy as np


def _valid(y: np.ndarray, yhat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    if y.ndim == 1:
        y, yhat = y[:, None], yhat[:, None]
    if y.shape != yhat.shape:
        raise ValueError(f"truth {y.shape} and prediction {yhat.shape} differ in shape")
    keep = np.all(np.isfinite(y), axis=1) & np.all(np.isfinite(yhat), axis=1)
    return y[keep], yhat[keep]


def r2(y: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column: 1 - SS_res / SS_tot (rows with NaN dropped)."""
    y, yhat = _valid(y, yhat)
    ss_res = ((y - yhat) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    return 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, np.nan)


def rmse(y: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    y, yhat = _valid(y, yhat)
    return np.sqrt(((y - yhat) ** 2).mean(axis=0))


def corr(y: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    """Pearson correlation per column."""
    y, yhat = _valid(y, yhat)
    yc, pc = y - y.mean(axis=0), yhat - yhat.mean(axis=0)
    den = np.sqrt((yc**2).sum(axis=0) * (pc**2).sum(axis=0))
    return (yc * pc).sum(axis=0) / np.where(den > 0, den, np.nan)


def all_metrics(y: np.ndarray, yhat: np.ndarray) -> dict[str, list[float]]:
    """{"r2": [...], "rmse": [...], "corr": [...]} as plain floats for JSON."""
    return {
        "r2": [float(v) for v in r2(y, yhat)],
        "rmse": [float(v) for v in rmse(y, yhat)],
        "corr": [float(v) for v in corr(y, yhat)],
    }
