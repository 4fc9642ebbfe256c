"""Samples and spike events -> the model's bins, with gaps and bad values made explicit.

Two binners, one output: a sequence of `Bin`s in order, every model bin exactly once.

- `CountsBinner` (SpikeCounts): each sample is one source bin whose timestamp is its end. A run
  of `factor = bin_s * rate` samples makes one model bin (1 kHz -> 20 ms: 20 samples). Samples
  are counted, not placed by timestamp, so timestamp jitter never moves a spike across bins;
  only a jump of more than 1.5 sample periods counts as missing samples. When the stream's desc
  carries `bin_origin` (the replay does), the first sample is placed on that grid so a runtime
  that joins mid-bin stays aligned with the source's bins.
- `EventBinner` (SpikeEvents): bin k holds events with origin + k*B <= t < origin + (k+1)*B
  (rt_decoder.events.bin_index, the offline rule). Bin k closes when the clock passes its end
  plus a grace period; events arriving after their bin closed are counted as late and dropped.

Bad values, one documented rule (counted per bin in `Bin.bad`):
  counts  NaN / inf -> 0, negative -> 0, above max_count -> max_count (clipped);
  events  channel index outside [0, D) -> dropped.
After a reconnect the bins the source missed are emitted as empty bins flagged `gap`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..events import bin_index


@dataclass
class Bin:
    """One model bin: counts (D,) float32 and its end on the local LSL clock."""

    t_end: float
    counts: np.ndarray
    gap: bool = False
    partial: bool = False
    bad: int = 0


def sanitize_counts(x: np.ndarray, max_count: float) -> tuple[np.ndarray, dict[str, int], np.ndarray]:
    """Apply the bad-value rule to count samples (n, D).

    Returns float32 counts, totals per kind, and the number of fixed values per sample.
    """
    is_float = np.issubdtype(np.asarray(x).dtype, np.floating)
    x = np.array(x, dtype=np.float32)
    lo, hi = (x.min(), x.max()) if x.size else (0.0, 0.0)
    per_row = np.zeros(len(x), np.int64)
    if lo >= 0 and hi <= max_count:  # the common case, decided in two reductions (NaN fails both)
        return x, {"nan": 0, "negative": 0, "clipped": 0}, per_row
    nonfinite = ~np.isfinite(x) if is_float else np.zeros(x.shape, bool)
    neg = (x < 0) & ~nonfinite
    over = (x > max_count) & ~nonfinite
    n_nan, n_neg, n_over = int(nonfinite.sum()), int(neg.sum()), int(over.sum())
    if n_nan or n_neg or n_over:
        per_row = (nonfinite | neg | over).sum(axis=1)
        x[nonfinite] = 0
        x[neg] = 0
        x[over] = max_count
    return x, {"nan": n_nan, "negative": n_neg, "clipped": n_over}, per_row


class CountsBinner:
    """SpikeCounts samples at `rate` Hz -> bins of `bin_s` (rate * bin_s must be a whole number)."""

    def __init__(self, n_channels: int, bin_s: float, rate: float, max_count: float = 1000.0) -> None:
        self.D = n_channels
        self.bin_s = bin_s
        self.rate = rate
        self.factor = int(round(bin_s * rate))
        self.max_count = max_count
        self.origin: float | None = None
        self.j_last: int | None = None  # end index (in source samples) of the last sample seen
        self.t_last = 0.0
        self.open_k: int | None = None  # the bin being filled
        self.acc = np.zeros(n_channels, np.float64)
        self.acc_bad = 0
        self.acc_n = 0
        self.t_last_end: float | None = None  # end of the last emitted bin
        self._k_last: int | None = None
        self.counters = {"nan": 0, "negative": 0, "clipped": 0}
        self._reanchor = True

    def anchor(self, origin: float | None, rate: float | None = None, bin_s: float | None = None) -> None:
        """A (re)connected source: its bin grid origin (local clock) if it publishes one, and its
        rate (a restarted source may run at another rate that still divides the bin)."""
        self.origin = origin
        if rate:
            self.rate = rate
        if bin_s:
            self.bin_s = bin_s
        self.factor = int(round(self.bin_s * self.rate))
        self._reanchor = True

    def next_deadline(self) -> float | None:
        return None

    def flush(self) -> list[Bin]:
        """The source is gone: close the bin in progress now (partial) instead of on its next sample."""
        return self._close_open() if self.open_k is not None else []

    def poll(self, now: float) -> list[Bin]:
        return []

    def _first_index(self, t: float) -> int:
        f = self.factor
        if self.j_last is None:
            j = int(round((t - self.origin) * self.rate)) if self.origin is not None else 1
            return max(j, 1)
        j = self.j_last + max(1, int(round((t - self.t_last) * self.rate)))
        if self.origin is not None:
            phase = int(round((t - self.origin) * self.rate)) % f
            j += (phase - j) % f
        return j

    def feed(self, x: np.ndarray, ts: np.ndarray) -> list[Bin]:
        """Samples (n, D) with end timestamps (n,) on the local clock -> the bins they close."""
        n = len(ts)
        if n == 0:
            return []
        if n == 1 and self.factor == 1 and self.open_k is None and not self._reanchor:
            t = float(ts[0])
            if 0 < t - self.t_last < 1.5 / self.rate:  # one whole bin, right after the last: no bookkeeping
                row, bad, bad_rows = sanitize_counts(x[:1], self.max_count)
                if bad_rows[0]:
                    for k_, v in bad.items():
                        self.counters[k_] += v
                self.j_last += 1
                self.t_last = self.t_last_end = t
                self._k_last += 1
                return [Bin(t_end=t, counts=row[0], bad=int(bad_rows[0]))]
        x, bad, bad_rows = sanitize_counts(x[:n], self.max_count)
        for k_, v in bad.items():
            self.counters[k_] += v
        ts = np.asarray(ts, np.float64)
        steps = np.ones(n, np.int64)
        if self._reanchor or self.j_last is None:
            first = self._first_index(float(ts[0]))
            self._reanchor = False
        else:
            dt0 = ts[0] - self.t_last
            first = self.j_last + (int(round(dt0 * self.rate)) if dt0 > 1.5 / self.rate else 1)
        if n > 1:
            dt = np.diff(ts)
            big = dt > 1.5 / self.rate
            if big.any():
                steps[1:][big] = np.maximum(1, np.round(dt[big] * self.rate)).astype(np.int64)
        steps[0] = 0
        j = first + np.cumsum(steps)
        f = self.factor
        k = (j - 1) // f
        out: list[Bin] = []
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        ends = np.r_[starts[1:], n]
        for a, b in zip(starts, ends):
            kb = int(k[a])
            if self.open_k is not None and kb != self.open_k:
                out += self._close_open()
            if self.open_k is None:
                out += self._gaps_until(kb, float(ts[a]), int(j[a]))
                self.open_k = kb
            self.acc += x[a:b].sum(axis=0)
            self.acc_n += b - a
            self.acc_bad += int(bad_rows[a:b].sum())
            jl, tl = int(j[b - 1]), float(ts[b - 1])
            self.j_last, self.t_last = jl, tl
            if jl % f == 0:
                out.append(self._emit(tl, partial=self.acc_n < f))
        return out

    def _gaps_until(self, k: int, t: float, j: int) -> list[Bin]:
        """Empty bins for every model bin the source skipped before bin k."""
        if self._k_last is None:
            return []
        missing = max(0, k - self._k_last - 1)
        out = []
        end_k = t + ((k + 1) * self.factor - j) / self.rate  # where bin k will end
        for i in range(missing, 0, -1):
            out.append(Bin(t_end=end_k - i * self.bin_s, counts=np.zeros(self.D, np.float32), gap=True))
        return out

    def _close_open(self) -> list[Bin]:
        """Close the open bin early (its last samples never came)."""
        f = self.factor
        rest = (-self.j_last) % f
        return [self._emit(self.t_last + rest / self.rate, partial=True)]

    def _emit(self, t_end: float, partial: bool) -> Bin:
        b = Bin(t_end=t_end, counts=self.acc.astype(np.float32), partial=partial, bad=self.acc_bad)
        self._k_last = self.open_k
        self.open_k = None
        self.acc = np.zeros(self.D, np.float64)
        self.acc_n = 0
        self.acc_bad = 0
        self.t_last_end = t_end
        return b


class EventBinner:
    """SpikeEvents (channel index per event) -> bins closed by the clock after a grace period."""

    def __init__(self, n_channels: int, bin_s: float, grace_s: float = 0.003) -> None:
        self.D = n_channels
        self.bin_s = bin_s
        self.grace = grace_s
        self.origin = 0.0
        self.next_k: int | None = None
        self.acc: dict[int, np.ndarray] = {}
        self.bad: dict[int, int] = {}
        self.t_last_end: float | None = None
        self.counters = {"out_of_range": 0, "late": 0}
        self._partial_k: int | None = None

    def anchor(self, origin: float | None, now: float, bin_s: float | None = None) -> list[Bin]:
        """(Re)connected at `now`: set the grid, start at the bin in progress, fill any gap."""
        if bin_s:
            self.bin_s = bin_s
        self.origin = float(origin) if origin is not None else 0.0
        k_now = int(math.floor((now - self.origin) / self.bin_s))
        out: list[Bin] = []
        if self.t_last_end is not None:
            start = self.origin + k_now * self.bin_s
            missing = max(0, int(round((start - self.t_last_end) / self.bin_s)))
            out = [Bin(t_end=start - i * self.bin_s, counts=np.zeros(self.D, np.float32), gap=True)
                   for i in range(missing - 1, -1, -1)]
        self.next_k = k_now
        self._partial_k = k_now
        self.acc = {}
        self.bad = {}
        return out

    def feed(self, ch: np.ndarray, ts: np.ndarray) -> list[Bin]:
        n = len(ts)
        if n == 0 or self.next_k is None:
            return []
        c = np.asarray(ch).reshape(n, -1)[:, 0].astype(np.int64)
        k = bin_index(np.asarray(ts, np.float64), self.origin, self.bin_s)
        late = k < self.next_k
        oor = (c < 0) | (c >= self.D)
        self.counters["late"] += int(late.sum())
        self.counters["out_of_range"] += int((oor & ~late).sum())
        for kb in np.unique(k[oor & ~late]):
            self.bad[int(kb)] = self.bad.get(int(kb), 0) + int(((k == kb) & oor).sum())
        keep = ~late & ~oor
        for kb in np.unique(k[keep]):
            sel = keep & (k == kb)
            a = self.acc.get(int(kb))
            if a is None:
                a = self.acc[int(kb)] = np.zeros(self.D, np.float64)
            np.add.at(a, c[sel], 1.0)
        return []

    def flush(self) -> list[Bin]:
        """The source is gone: close every bin up to the last one holding events, without waiting
        for the clock (those events were received; a reconnect must not drop them)."""
        if self.next_k is None or not (self.acc or self.bad):
            return []
        last = max([*self.acc, *self.bad])
        return self.poll(self.origin + (last + 1) * self.bin_s + self.grace)

    def next_deadline(self) -> float | None:
        if self.next_k is None:
            return None
        return self.origin + (self.next_k + 1) * self.bin_s + self.grace

    def poll(self, now: float) -> list[Bin]:
        """Close every bin whose end + grace has passed."""
        out: list[Bin] = []
        if self.next_k is None:
            return out
        while self.origin + (self.next_k + 1) * self.bin_s + self.grace <= now:
            k = self.next_k
            a = self.acc.pop(k, None)
            t_end = self.origin + (k + 1) * self.bin_s
            out.append(Bin(t_end=t_end, counts=np.zeros(self.D, np.float32) if a is None else a.astype(np.float32),
                           partial=k == self._partial_k, bad=self.bad.pop(k, 0)))
            self.t_last_end = t_end
            self.next_k = k + 1
        return out
