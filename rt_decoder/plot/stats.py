"""Reading a DecoderStats stream: latency percentiles and miss/skip/gap counts, found by label.

Columns are looked up by channel label, so their order may change. The count columns may be
per-bin flags (0/1, summed here) or running totals kept by the decoder; a decoder that sends
totals says so in desc as `totals` = "deadline_miss,skipped,gap_bins" (what `rt-decoder run`
does), and then the newest value is the count.
"""

from __future__ import annotations

import numpy as np

from .streams import StreamMeta

COUNT_KEYS = ("deadline_miss", "skipped", "gap_bins")


class StatsCounter:
    """Counts of bins, deadline misses, skipped predictions and gap bins seen so far."""

    def __init__(self) -> None:
        self.bins = 0
        self.counts: dict[str, int] = dict.fromkeys(COUNT_KEYS, 0)

    def update(self, meta: StreamMeta, rows: np.ndarray) -> None:
        """Fold in new stats samples (n, channels) from a stream described by meta."""
        cumulative = {s.strip() for s in meta.desc.get("totals", "").split(",") if s.strip()}
        self.bins += len(rows)
        for key in COUNT_KEYS:
            c = meta.column(key)
            if c is None:
                continue
            v = rows[:, c]
            v = v[np.isfinite(v)]
            if not len(v):
                continue
            if key in cumulative:
                self.counts[key] = int(v[-1])
            else:
                self.counts[key] += int(v.sum())

    def as_dict(self) -> dict[str, int]:
        return {"bins": self.bins, **self.counts}


def latency_values(meta: StreamMeta | None, rows: np.ndarray) -> np.ndarray | None:
    """The finite latency_ms values among rows (skipped bins carry NaN), or None without that column."""
    c = None if meta is None else meta.column("latency_ms")
    if c is None:
        return None
    lat = rows[:, c]
    return lat[np.isfinite(lat)]
