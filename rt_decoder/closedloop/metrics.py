"""Closed-loop cursor metrics (DESIGN §9), pure numpy; one home for each, with its source.

The task computes every trial's record from the cursor samples it published (time, x, y), the
target and the state machine's events; the block summary is computed from the records. An
analysis of a recorded session (XDF: `<t>-state` + `<t>-markers`) calls the same functions.

Definitions (all times in s, distances in cm):
- success rate: successful trials / trials (Gilja et al. 2012, Nat Neurosci 15:1752).
- time to target: target on -> success, INCLUDING the hold (so a 0.5 s hold adds 0.5 s);
  successful trials only (Gilja et al. 2012 report it the same way for ReFIT vs KF).
- path efficiency: straight-line distance / length of the cursor path, both from the cursor at
  target on to the cursor at the final acquisition (the entry that began the completed hold), so
  it is <= 1 (Kim et al. 2008, J Neural Eng 5:455; "path efficiency" in iBCI cursor studies).
- dial-in time: first entry into the target -> final acquisition (Gilja et al. 2012; Sussillo
  et al. 2012, J Neural Eng 9:026027); 0 when the first entry is the final one.
- orbiting: target entries per trial (each outside -> inside crossing counts one).
- Fitts index of difficulty ID = log2((D + W) / W) bits, D = distance from the cursor at target on
  to the target centre, W = target diameter (Fitts 1954, Shannon form of MacKenzie 1992; as used
  for iBCIs by Gilja et al. 2012); Fitts ITR = ID / acquisition time, the acquisition time being
  the time to target above (hold included).
- achieved bitrate (selection grids, Nuyujukian et al. 2015, IEEE TBME 62:21):
  B = log2(N - 1) * max(Sc - Si, 0) / t, N selectable targets, Sc correct and Si wrong selections
  in elapsed time t (the block's time).
- bitrate_bps of a block: for `grid`, the achieved bitrate; for other tasks, the bits delivered
  per second of block: sum of Fitts ID over successful trials / block time (ITIs and failed
  trials included in the time, so failures and idle time cost throughput).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

OUTCOMES = ("success", "timeout", "wrong")  # "wrong": a grid selection of a cell that was not cued


# ---------------------------------------------------------------- per-trial pieces

def path_length(xy: np.ndarray) -> float:
    """Sum of the distances between consecutive cursor samples (cm)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(xy) < 2:
        return 0.0
    return float(np.hypot(*np.diff(xy, axis=0).T).sum())


def path_efficiency(xy: np.ndarray) -> float:
    """Straight-line distance from the first to the last sample / path length (1 = a straight
    path); NaN when the cursor did not move (Kim et al. 2008)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    length = path_length(xy)
    if length <= 0:
        return math.nan
    return float(np.hypot(*(xy[-1] - xy[0])) / length)


def fitts_id(distance: float, width: float) -> float:
    """Index of difficulty log2((D + W) / W) bits (Fitts 1954; Shannon form, MacKenzie 1992)."""
    if width <= 0:
        raise ValueError(f"target width must be > 0, got {width}")
    return math.log2((max(distance, 0.0) + width) / width)


def fitts_itr(distance: float, width: float, acquisition_time_s: float) -> float:
    """Fitts information transfer rate ID / acquisition time (bits/s) (Gilja et al. 2012)."""
    if not acquisition_time_s > 0:
        return math.nan
    return fitts_id(distance, width) / acquisition_time_s


def inside_circle(xy: np.ndarray, centre: tuple[float, float], radius: float) -> np.ndarray:
    """|cursor - centre| <= radius, per sample (the task's acquisition rule)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return np.hypot(xy[:, 0] - centre[0], xy[:, 1] - centre[1]) <= radius


def inside_square(xy: np.ndarray, centre: tuple[float, float], half_width: float) -> np.ndarray:
    """Cursor inside the axis-aligned square cell (grid task), per sample."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return (np.abs(xy[:, 0] - centre[0]) <= half_width) & (np.abs(xy[:, 1] - centre[1]) <= half_width)


def entry_times(t: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Times of the samples where the cursor enters (outside -> inside; inside at the first
    sample counts as an entry)."""
    inside = np.asarray(inside, dtype=bool)
    if inside.size == 0:
        return np.zeros(0)
    rising = inside & ~np.concatenate([[False], inside[:-1]])
    return np.asarray(t, dtype=np.float64)[rising]


def target_entries(inside: np.ndarray) -> int:
    """Orbiting: how many times the cursor entered the target."""
    inside = np.asarray(inside, dtype=bool)
    return int((inside & ~np.concatenate([[False], inside[:-1]])).sum()) if inside.size else 0


def dial_in_time(first_entry_s: float, acquired_s: float) -> float:
    """First entry -> final acquisition (s) (Gilja et al. 2012; Sussillo et al. 2012)."""
    return float(acquired_s - first_entry_s)


def achieved_bitrate(n_targets: int, n_correct: int, n_wrong: int, elapsed_s: float) -> float:
    """B = log2(N - 1) * max(Sc - Si, 0) / t bits/s (Nuyujukian et al. 2015, IEEE TBME 62:21)."""
    if n_targets < 2:
        raise ValueError(f"achieved bitrate needs N >= 2 selectable targets, got {n_targets}")
    if not elapsed_s > 0:
        return math.nan
    return math.log2(n_targets - 1) * max(n_correct - n_wrong, 0) / elapsed_s


def success_rate(outcomes: list[str]) -> float:
    """Successful trials / trials (NaN for no trials)."""
    return sum(o == "success" for o in outcomes) / len(outcomes) if outcomes else math.nan


# ---------------------------------------------------------------- records

@dataclass
class TrialRecord:
    """One trial, as a row of trials.csv. Times are LSL clock seconds; NaN where not defined
    (e.g. time to target of a timeout). path_length_cm runs from target on to the final
    acquisition (successful or wrong selection) or to the trial's end (timeout)."""

    trial: int
    target_x: float
    target_y: float
    target_radius: float      # circle radius, or half the cell width on the grid
    start_time: float         # target on
    end_time: float           # success / wrong selection / timeout
    outcome: str              # success | timeout | wrong
    time_to_target_s: float   # target on -> success, hold included
    path_length_cm: float
    path_efficiency: float
    dial_in_s: float
    entries: int
    fitts_id_bits: float
    fitts_itr_bps: float
    start_x: float = math.nan  # cursor at target on
    start_y: float = math.nan
    selected: int = -1         # grid: the selected cell (row-major), -1 otherwise / none
    cued: int = -1             # grid: the cued cell

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def row(self) -> dict:
        return asdict(self)


def trial_record(trial: int, t: np.ndarray, xy: np.ndarray, target: tuple[float, float], radius: float,
                 outcome: str, end_time: float, acquired_time: float | None = None,
                 inside: np.ndarray | None = None, width: float | None = None,
                 selected: int = -1, cued: int = -1) -> TrialRecord:
    """A trial's record from its cursor samples (t[0] = target on) and the state machine's outcome.

    acquired_time: the final acquisition (start of the completed hold) for success / wrong;
    inside: per-sample "cursor in the target" (default: the circle rule); width: W for Fitts
    (default: the diameter 2 * radius)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    t = np.asarray(t, dtype=np.float64)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(t) == 0 or len(t) != len(xy):
        raise ValueError(f"a trial needs matching cursor times and positions, got {len(t)} and {len(xy)}")
    if inside is None:
        inside = inside_circle(xy, target, radius)
    start = xy[0]
    width = 2.0 * radius if width is None else width
    distance = float(np.hypot(target[0] - start[0], target[1] - start[1]))
    ident = fitts_id(distance, width)
    nan = math.nan
    if outcome == "timeout" or acquired_time is None:
        return TrialRecord(trial, target[0], target[1], radius, float(t[0]), end_time, outcome, nan,
                           path_length(xy), nan, nan, target_entries(inside), ident, nan,
                           float(start[0]), float(start[1]), selected, cued)
    upto = t <= acquired_time + 1e-9
    path = xy[upto]
    entries = entry_times(t[upto], inside[upto])
    success = outcome == "success"
    ttt = end_time - float(t[0])
    return TrialRecord(
        trial, target[0], target[1], radius, float(t[0]), end_time, outcome,
        ttt if success else nan,
        path_length(path), path_efficiency(path) if success else nan,
        dial_in_time(float(entries[0]), acquired_time) if success and len(entries) else nan,
        int(len(entries)) if success else target_entries(inside), ident,
        fitts_itr(distance, width, ttt) if success else nan,
        float(start[0]), float(start[1]), selected, cued)


def _mean(values: list[float]) -> float:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    return float(v.mean()) if v.size else math.nan


def block_summary(records: list[TrialRecord], block_time_s: float, grid_targets: int | None = None) -> dict:
    """The block's metrics under the bench's keys (`trials, success_rate, time_to_target_s,
    path_efficiency, bitrate_bps`) plus fitts_itr_bps, dial_in_s, orbiting and, for a grid of
    `grid_targets` cells, achieved_bitrate_bps. Means run over successful trials; bitrate_bps is
    defined in the module docstring. Plain floats (NaN where undefined) for JSON."""
    ok = [r for r in records if r.outcome == "success"]
    n_wrong = sum(r.outcome == "wrong" for r in records)
    out = {
        "trials": len(records),
        "successes": len(ok),
        "timeouts": sum(r.outcome == "timeout" for r in records),
        "success_rate": success_rate([r.outcome for r in records]),
        "time_to_target_s": _mean([r.time_to_target_s for r in ok]),
        "path_efficiency": _mean([r.path_efficiency for r in ok]),
        "dial_in_s": _mean([r.dial_in_s for r in ok]),
        "orbiting": _mean([float(r.entries) for r in ok]),
        "fitts_itr_bps": _mean([r.fitts_itr_bps for r in ok]),
        "block_time_s": float(block_time_s),
    }
    if grid_targets is not None:
        out["wrong"] = n_wrong
        out["achieved_bitrate_bps"] = achieved_bitrate(grid_targets, len(ok), n_wrong, block_time_s)
        out["bitrate_bps"] = out["achieved_bitrate_bps"]
        out["bitrate_definition"] = "achieved bitrate log2(N-1)*max(Sc-Si,0)/t (Nuyujukian et al. 2015)"
    else:
        bits = sum(r.fitts_id_bits for r in ok)
        out["bitrate_bps"] = bits / block_time_s if block_time_s > 0 else math.nan
        out["bitrate_definition"] = "sum of Fitts ID over successful trials / block time"
    return out
