"""The canonical recording (DESIGN §3): one in-memory form and one .npz form for every loader.

Every loader returns a `Recording`; every command accepts one. Validation happens here, once,
so a malformed array is reported with the file it came from and what is wrong with it.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import DataError, where

UNKNOWN_UNIT = "a.u."  # a behaviour column whose source states no unit


@dataclass
class Recording:
    """Binned spike counts (T, D) with optional aligned behaviour (T, K)."""

    counts: np.ndarray
    bin_s: float
    behavior: np.ndarray | None = None
    behavior_names: list[str] | None = None
    channel_names: list[str] | None = None
    trial_starts: np.ndarray | None = None
    source: str = "<memory>"
    extra: dict = field(default_factory=dict)
    # one physical unit per behaviour column (cm, cm/s, mm/s, px, ...); "a.u." when the source does not say
    behavior_units: list[str] | None = None

    @property
    def n_bins(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.counts.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_bins * self.bin_s

    def validate(self) -> Recording:
        """Check shapes, types and values; raise DataError naming the source and the problem."""
        src = self.source
        c = np.asarray(self.counts)
        if c.ndim != 2:
            raise DataError(where(src, f"counts must be 2-D (T, D), got shape {c.shape}"))
        if c.shape[0] < 1 or c.shape[1] < 1:
            raise DataError(where(src, f"counts is empty, shape {c.shape}"))
        if not np.issubdtype(c.dtype, np.number):
            raise DataError(where(src, f"counts must be numeric, got dtype {c.dtype}"))
        if np.issubdtype(c.dtype, np.floating):
            bad = ~np.isfinite(c)
            if bad.any():
                t, d = np.argwhere(bad)[0]
                raise DataError(where(src, f"counts has {int(bad.sum())} NaN/inf values (first at bin {t}, channel {d})"))
            if not np.all(c == np.round(c)):
                raise DataError(where(src, "counts must be whole numbers (spike counts per bin)"))
        if (c < 0).any():
            t, d = np.argwhere(c < 0)[0]
            raise DataError(where(src, f"counts has {int((c < 0).sum())} negative values (first at bin {t}, channel {d})"))
        self.counts = c.astype(np.int32, copy=False)
        try:
            b = float(self.bin_s)
        except (TypeError, ValueError):
            raise DataError(where(src, f"bin_s must be a number, got {self.bin_s!r}")) from None
        if not np.isfinite(b) or b <= 0:
            raise DataError(where(src, f"bin_s must be a positive number of seconds, got {b}"))
        self.bin_s = b
        T, D = c.shape
        if self.behavior is not None:
            y = np.asarray(self.behavior, dtype=np.float64)
            if y.ndim == 1:
                y = y[:, None]
            if y.ndim != 2 or y.shape[0] != T:
                raise DataError(where(src, f"behavior must be (T={T}, K), got shape {y.shape}"))
            self.behavior = y
            if self.behavior_names is None:
                self.behavior_names = [f"y{i}" for i in range(y.shape[1])]
            self.behavior_names = [str(n) for n in self.behavior_names]
            if len(self.behavior_names) != y.shape[1]:
                raise DataError(where(src, f"behavior_names has {len(self.behavior_names)} names for {y.shape[1]} behaviour columns"))
            units = self.behavior_units
            if units is None and self.extra.get("behavior_units") is not None:  # older callers kept them in extra
                units = list(np.asarray(self.extra.pop("behavior_units")).ravel())
            self.behavior_units = [str(u) or UNKNOWN_UNIT for u in units] if units is not None else [UNKNOWN_UNIT] * y.shape[1]
            if len(self.behavior_units) != y.shape[1]:
                raise DataError(where(src, f"behavior_units has {len(self.behavior_units)} units for {y.shape[1]} behaviour columns"))
        else:
            self.behavior_names = self.behavior_units = None
        if self.channel_names is None:
            self.channel_names = [f"ch{i:03d}" for i in range(D)]
        self.channel_names = [str(n) for n in self.channel_names]
        if len(self.channel_names) != D:
            raise DataError(where(src, f"channel_names has {len(self.channel_names)} names for {D} channels"))
        if self.trial_starts is not None:
            ts = np.asarray(self.trial_starts).astype(np.int64).ravel()
            if ts.size and (ts.min() < 0 or ts.max() >= T or np.any(np.diff(ts) < 0)):
                raise DataError(where(src, f"trial_starts must be sorted bin indices in [0, {T}), got range {ts.min()}..{ts.max()}"))
            self.trial_starts = ts
        return self

    def fingerprint(self) -> str:
        """sha256 of counts, bin width and behaviour: ties a model card to its training data."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.counts, dtype=np.int32).tobytes())
        h.update(np.float64(self.bin_s).tobytes())
        if self.behavior is not None:
            h.update(np.ascontiguousarray(self.behavior, dtype=np.float64).tobytes())
        return h.hexdigest()

    def slice(self, start: int, stop: int) -> Recording:
        """Bins [start, stop) as a new recording; trial starts are shifted and clipped."""
        ts = None
        if self.trial_starts is not None:
            ts = self.trial_starts[(self.trial_starts >= start) & (self.trial_starts < stop)] - start
        return replace(
            self,
            counts=self.counts[start:stop],
            behavior=None if self.behavior is None else self.behavior[start:stop],
            trial_starts=ts,
        )

    def rebin_to_width(self, bin_s: float) -> Recording:
        """Re-bin to `bin_s` seconds, which must be a whole multiple of the native bin."""
        factor = bin_s / self.bin_s
        k = int(round(factor))
        if k < 1 or abs(factor - k) > 1e-6:
            raise DataError(where(self.source, f"cannot re-bin {self.bin_s * 1000:g} ms bins to {bin_s * 1000:g} ms "
                                               f"(must be a whole multiple of {self.bin_s * 1000:g} ms)"))
        return self.rebin(k).validate()

    def rebin(self, factor: int) -> Recording:
        """Sum counts over `factor` consecutive bins (behaviour: mean). Drops a ragged tail."""
        factor = int(factor)
        if factor < 1:
            raise DataError(where(self.source, f"rebin factor must be >= 1, got {factor}"))
        if factor == 1:
            return self
        T = (self.n_bins // factor) * factor
        if T == 0:
            raise DataError(where(self.source, f"{self.n_bins} bins are too few to re-bin by {factor}"))
        c = self.counts[:T].reshape(T // factor, factor, -1).sum(axis=1)
        y = None
        if self.behavior is not None:
            y = self.behavior[:T].reshape(T // factor, factor, -1).mean(axis=1)
        ts = None
        if self.trial_starts is not None:
            ts = np.unique(self.trial_starts[self.trial_starts < T] // factor)
        return replace(self, counts=c, bin_s=self.bin_s * factor, behavior=y, trial_starts=ts)


def split_bounds(n_bins: int, val: float = 0.1, test: float = 0.2) -> dict[str, tuple[int, int]]:
    """Contiguous train / validation / test blocks (test = the last `test` fraction). Nothing shuffled."""
    t2 = int(round(n_bins * (1.0 - test)))
    t1 = int(round(n_bins * (1.0 - test - val)))
    return {"train": (0, t1), "val": (t1, t2), "test": (t2, n_bins)}


def save_npz(rec: Recording, path: str | Path) -> Path:
    """Write the canonical .npz (compressed)."""
    from .atomic import atomic_path

    rec.validate()
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"counts": rec.counts, "bin_s": np.float64(rec.bin_s)}
    if rec.behavior is not None:
        arrays["behavior"] = rec.behavior
        arrays["behavior_names"] = np.array(rec.behavior_names, dtype=str)
        arrays["behavior_units"] = np.array(rec.behavior_units, dtype=str)
    arrays["channel_names"] = np.array(rec.channel_names, dtype=str)
    if rec.trial_starts is not None:
        arrays["trial_starts"] = rec.trial_starts
    for k, v in rec.extra.items():
        arrays[k] = np.asarray(v)
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def load_npz(path: str | Path, bin_s: float | None = None) -> Recording:
    """Read a canonical binned .npz (`counts`), re-binned to `bin_s` when given. Event .npz files
    (`spike_times` + `spike_channels`) are read by rt_decoder.loaders (events_npz), which bins them."""
    from .filekind import kind_of, not_what_expected, read_head

    path = Path(path)
    try:
        head = read_head(path)
    except FileNotFoundError:
        raise DataError(where(path, "no such file")) from None
    except OSError as e:
        raise DataError(where(path, f"cannot read file ({e.strerror or type(e).__name__})")) from None
    if kind_of(head) != "npz":
        raise DataError(where(path, not_what_expected(path, "npz", head)))
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(where(path, "no such file")) from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(where(path, f"not a readable .npz file ({type(e).__name__}: {e})")) from None
    if "counts" in data:
        if "bin_s" not in data:
            raise DataError(where(path, "missing key 'bin_s' (bin width in seconds)"))
        rec = Recording(
            counts=data["counts"],
            bin_s=float(np.asarray(data["bin_s"]).ravel()[0]) if np.asarray(data["bin_s"]).size else float("nan"),
            behavior=data.get("behavior"),
            behavior_names=list(data["behavior_names"]) if "behavior_names" in data else None,
            behavior_units=list(data["behavior_units"]) if "behavior_units" in data else None,
            channel_names=list(data["channel_names"]) if "channel_names" in data else None,
            trial_starts=data.get("trial_starts"),
            source=str(path),
        )
        rec.validate()
        return rec if bin_s is None else rec.rebin_to_width(bin_s)
    if "spike_times" in data and "spike_channels" in data:
        raise DataError(where(path, "an event recording (spike_times + spike_channels): read it with "
                                    "rt_decoder.loaders.load_recording, which bins it"))
    raise DataError(where(path, f"missing key 'counts' (or 'spike_times' + 'spike_channels'); found keys {sorted(data)}"))
