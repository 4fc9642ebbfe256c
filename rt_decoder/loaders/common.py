"""Helpers every loader shares: one-line error reasons, re-binning to a requested width, and
behaviour sampled at bin centres, so each format module stays about its format only."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DataError, where
from ..recording import Recording


def reason(e: BaseException) -> str:
    """An exception as a short single line (error lines must never wrap into a second line)."""
    text = " ".join(str(e).split()) or type(e).__name__
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(e).__name__}: {text}"


@contextlib.contextmanager
def quiet(*loggers: str) -> Iterator[list[logging.LogRecord]]:
    """Silence library warnings and log lines while reading; collect log records of level ERROR+.

    Readers such as pyxdf and hdmf write to stderr on their own; a CLI error must stay one line.
    """
    records: list[logging.LogRecord] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                records.append(record)

    handler = _Collect()
    saved = []
    for name in loggers:
        lg = logging.getLogger(name)
        saved.append((lg, lg.propagate, lg.level))
        lg.addHandler(handler)
        lg.propagate = False
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield records
    finally:
        for lg, propagate, level in saved:
            lg.removeHandler(handler)
            lg.propagate = propagate
            lg.setLevel(level)


def rebin_to(rec: Recording, bin_ms: float | None) -> Recording:
    """Re-bin a binned recording to `bin_ms` (an integer multiple of its native bin)."""
    if bin_ms is None:
        return rec
    check_bin_ms(rec.source, bin_ms)
    return rec.rebin_to_width(bin_ms / 1000.0)


def check_bin_ms(source: str | Path, bin_ms: float) -> float:
    """A bin width in ms that is a positive finite number, else DataError."""
    try:
        b = float(bin_ms)
    except (TypeError, ValueError):
        raise DataError(where(source, f"bin width must be a number of ms, got {bin_ms!r}")) from None
    if not np.isfinite(b) or b <= 0:
        raise DataError(where(source, f"bin width must be a positive number of ms, got {bin_ms}"))
    return b


def trim_to_behavior(rec: Recording) -> Recording:
    """Drop leading and trailing bins whose behaviour is undefined (outside the tracked span)."""
    if rec.behavior is None:
        return rec
    ok = np.all(np.isfinite(rec.behavior), axis=1)
    if ok.all():
        return rec
    if not ok.any():
        raise DataError(where(rec.source, "behaviour does not overlap the spikes in time (no bin has all behaviour values)"))
    idx = np.flatnonzero(ok)
    return rec.slice(int(idx[0]), int(idx[-1]) + 1).validate()


def axis_names(name: str, k: int) -> list[str]:
    """Column names for a K-column series: hand_vel -> hand_vel_x, hand_vel_y (then _z, then _3...)."""
    if k == 1:
        return [name]
    suffix = ["x", "y", "z"]
    return [f"{name}_{suffix[i]}" if k <= 3 else f"{name}_{i}" for i in range(k)]
