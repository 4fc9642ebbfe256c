"""The closed-loop cursor task (DESIGN §9): trial state machine, cursor control and the LSL loop.

Three layers, so the logic is testable without a network:
- TaskCore: the pure state machine. `step(cursor, t)` takes the cursor position and the time
  of an update and returns the markers that update emits; it keeps every trial's cursor samples
  and turns each finished trial into a metrics.TrialRecord.
- cursor control: velocity (cursor += gain * v * dt per decoder sample, dt = the decoder's sample
  period, clamped to the workspace), position (the decoded position, clamped), or `observe`
  (a minimum-jerk reach to each target, no decoder).
- TaskRunner: the real-time loop. Updates at a fixed rate against a drift-free target clock
  (update k is due at T0 + k / rate, so a late wake-up delays one update, never the rest),
  reads whatever the decoder published since the last update, moves the cursor, steps the core
  and publishes `<t>-state` (one sample per update) and `<t>-markers` (CLOSEDLOOP.md layouts,
  from streams.py). Task update latency = local_clock() at the update that moved the cursor
  minus the decoder sample's timestamp (for `rt-decoder run` the bin end, so decode time and
  transport are included).

Trials: `center-out` alternates an outer target (8 on a ring, each cycle in a seeded random
order) with a return to the centre target, each a trial (the return is skipped when the cursor is
already in the centre target, e.g. after a timeout, so it is never a free success); `random` places targets uniformly in
the workspace at least 3 target radii from the cursor; `grid` tiles the workspace with N x N
square cells, one cued per trial: holding in ANY cell selects it (correct if cued, "wrong"
otherwise, for the achieved bitrate); the cell the cursor is in when the target comes on is not
selectable until the cursor has left it.
"""

from __future__ import annotations

import csv
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, StreamError
from . import metrics as M
from . import streams as S

TASKS = ("center-out", "random", "grid")
MODES = ("closed", "observe")


@dataclass
class TaskConfig:
    """Everything that defines a block (cm, s). Defaults are CLOSEDLOOP.md's."""

    task: str = "center-out"
    mode: str = "closed"
    workspace: float = S.WORKSPACE_HALF_CM      # half-width of the square workspace
    ring_radius: float = S.RING_RADIUS_CM
    n_ring: int = S.N_RING_TARGETS
    target_radius: float = S.TARGET_RADIUS_CM
    hold_s: float = S.HOLD_S
    timeout_s: float = S.TIMEOUT_S
    iti_s: float = S.ITI_S
    grid: int = 5
    seed: int = 0
    reach_s: float = 1.0                        # observe mode: duration of each minimum-jerk reach
    n_trials: int | None = None                 # end the block after this many trials

    def check(self) -> None:
        """One ConfigError line for a setting that cannot run."""
        if self.task not in TASKS:
            raise ConfigError(f"--task {self.task}: must be one of {', '.join(TASKS)}")
        if self.mode not in MODES:
            raise ConfigError(f"--mode {self.mode}: must be one of {', '.join(MODES)}")
        for name in ("workspace", "target_radius", "timeout_s", "reach_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("hold_s", "iti_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.task == "center-out" and self.ring_radius + self.target_radius > self.workspace:
            raise ConfigError(f"center-out ring {self.ring_radius} cm + target radius {self.target_radius} cm "
                              f"does not fit the workspace half-width {self.workspace} cm")
        if self.task == "random" and self.target_radius * 4 > self.workspace:
            raise ConfigError(f"random targets of radius {self.target_radius} cm do not fit a workspace of half-width {self.workspace} cm")
        if self.task == "grid" and self.grid < 2:
            raise ConfigError(f"--grid {self.grid}: a grid needs at least 2 x 2 cells")
        if self.n_trials is not None and self.n_trials < 1:
            raise ConfigError(f"--trials {self.n_trials}: must be >= 1")

    @property
    def cell_width(self) -> float:
        return 2.0 * self.workspace / self.grid


# ------------------------------------------------------------------------------------ targets

@dataclass(frozen=True)
class Target:
    x: float
    y: float
    radius: float           # circle radius, or half the cell width on the grid
    cell: int = -1          # grid cell index (row-major from the top left), else -1

    @property
    def square(self) -> bool:
        return self.cell >= 0


def cell_of(xy: Any, workspace: float, n: int) -> int:
    """Row-major index (row 0 at the top) of the cell of an n x n grid over [-workspace, workspace]^2
    that holds the point xy (points on the edge belong to the edge cell)."""
    w = 2.0 * workspace / n
    col = min(max(int(math.floor((xy[0] + workspace) / w)), 0), n - 1)
    row = min(max(int(math.floor((workspace - xy[1]) / w)), 0), n - 1)
    return row * n + col


def grid_cell(cfg: TaskConfig, xy: np.ndarray) -> int:
    return cell_of(xy, cfg.workspace, cfg.grid)


def grid_centre(cfg: TaskConfig, cell: int) -> tuple[float, float]:
    row, col = divmod(cell, cfg.grid)
    w = cfg.cell_width
    return (-cfg.workspace + (col + 0.5) * w, cfg.workspace - (row + 0.5) * w)


class TargetSequence:
    """The next target for each trial, deterministic per seed."""

    def __init__(self, cfg: TaskConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self._ring: list[int] = []
        self._outer_next = True

    def next(self, cursor: np.ndarray) -> Target:
        c = self.cfg
        if c.task == "center-out":
            if not self._outer_next:
                self._outer_next = True
                if math.hypot(cursor[0], cursor[1]) > c.target_radius:  # already at the centre (e.g. after a
                    return Target(0.0, 0.0, c.target_radius)          # timeout): no free return trial
            if not self._ring:
                self._ring = list(self.rng.permutation(c.n_ring))
            k = self._ring.pop(0)
            a = 2.0 * math.pi * k / c.n_ring
            self._outer_next = False
            return Target(round(c.ring_radius * math.cos(a), 9), round(c.ring_radius * math.sin(a), 9), c.target_radius)
        if c.task == "random":
            lim = c.workspace - c.target_radius
            for _ in range(1000):
                x, y = self.rng.uniform(-lim, lim, size=2)
                if math.hypot(x - cursor[0], y - cursor[1]) >= 3 * c.target_radius:
                    break
            return Target(float(x), float(y), c.target_radius)
        here = grid_cell(c, cursor)
        cell = int(self.rng.integers(c.grid * c.grid - 1))
        cell += cell >= here  # any cell but the one the cursor is in
        x, y = grid_centre(c, cell)
        return Target(x, y, c.cell_width / 2.0, cell)


# ------------------------------------------------------------------------------ state machine

class TaskCore:
    """The trial state machine, free of LSL and clocks: feed it (cursor, t) at every update."""

    def __init__(self, cfg: TaskConfig) -> None:
        cfg.check()
        self.cfg = cfg
        self.targets = TargetSequence(cfg)
        self.state = S.STATE_ITI
        self.trial = 0
        self.target: Target | None = None
        self.records: list[M.TrialRecord] = []
        self.t_begin: float | None = None
        self.t_end: float | None = None
        self.trial_on: float = math.nan
        self._iti_until = math.inf
        self._t: list[float] = []
        self._xy: list[tuple[float, float]] = []
        self._hold_start = math.nan
        self._hold_cell = -1
        self._blocked_cell = -1
        self._acquired = math.nan

    # ---- block ------------------------------------------------------------------------------
    def begin(self, t: float) -> list[str]:
        self.t_begin = t
        self._iti_until = t + self.cfg.iti_s
        return [S.format_marker("block_start", self.cfg.task, self.cfg.mode)]

    @property
    def finished(self) -> bool:
        """All --trials done (the runner then calls end())."""
        return self.cfg.n_trials is not None and len(self.records) >= self.cfg.n_trials and self.state == S.STATE_ITI

    def end(self, t: float) -> list[str]:
        """Close the block; a trial still running is dropped (it has no outcome)."""
        self.t_end = t
        self.state = S.STATE_DONE
        self.target = None
        return [S.format_marker("block_end", len(self.records))]

    def sample(self, cursor: np.ndarray) -> list[float]:
        """The `<t>-state` sample for this update (streams.STATE_LABELS order)."""
        tg = self.target
        if tg is None or self.state in (S.STATE_ITI, S.STATE_DONE):
            tx = ty = r = math.nan
        else:
            tx, ty, r = tg.x, tg.y, tg.radius
        return [float(cursor[0]), float(cursor[1]), tx, ty, r, float(self.trial), float(self.state)]

    def summary(self) -> dict:
        end = self.t_end if self.t_end is not None else (self._t[-1] if self._t else self.t_begin or 0.0)
        grid = self.cfg.grid ** 2 if self.cfg.task == "grid" else None
        return M.block_summary(self.records, end - (self.t_begin or end), grid)

    # ---- one update --------------------------------------------------------------------------
    def _inside(self, cursor: np.ndarray) -> bool:
        tg = self.target
        if tg is None:
            return False
        if tg.square:
            return bool(M.inside_square(cursor, (tg.x, tg.y), tg.radius)[0])
        return bool(M.inside_circle(cursor, (tg.x, tg.y), tg.radius)[0])

    def _selectable_cell(self, cursor: np.ndarray) -> int:
        """Grid: the cell the cursor is in, or -1 while it is still in the cell it started in."""
        cell = grid_cell(self.cfg, cursor)
        if cell == self._blocked_cell:
            return -1
        self._blocked_cell = -1  # left the starting cell once: every cell counts from now on
        return cell

    def step(self, cursor: np.ndarray, t: float) -> list[str]:
        """Advance to time t with the cursor at `cursor`; returns the markers emitted now."""
        if self.t_begin is None:
            raise RuntimeError("TaskCore.begin() first")
        cursor = np.asarray(cursor, dtype=np.float64)
        out: list[str] = []
        if self.state == S.STATE_DONE:
            return out
        if self.state == S.STATE_ITI:
            if t < self._iti_until or self.finished:
                return out
            self.trial += 1
            self.target = self.targets.next(cursor)
            self.trial_on = t
            self._t, self._xy = [], []
            self._hold_start = math.nan
            self._hold_cell = -1
            self._acquired = math.nan
            self._blocked_cell = grid_cell(self.cfg, cursor) if self.cfg.task == "grid" else -1
            self.state = S.STATE_REACH
            tg = self.target
            out += [S.format_marker("trial_start", self.trial),
                    S.format_marker("target_on", self.trial, tg.x, tg.y, tg.radius)]
        self._t.append(t)
        self._xy.append((float(cursor[0]), float(cursor[1])))
        n = self.trial
        if self.cfg.task == "grid":
            holding_in = self._selectable_cell(cursor)
        else:
            holding_in = 0 if self._inside(cursor) else -1
        if self.state == S.STATE_HOLD and holding_in != self._hold_cell:
            out.append(S.format_marker("hold_broken", n))
            self.state = S.STATE_REACH
        if self.state == S.STATE_REACH and holding_in >= 0:
            self.state = S.STATE_HOLD
            self._hold_start = t
            self._hold_cell = holding_in
            self._acquired = t
            out.append(S.format_marker("acquired", n))
        if self.state == S.STATE_HOLD and t - self._hold_start >= self.cfg.hold_s - 1e-9:
            right = self.cfg.task != "grid" or self._hold_cell == self.target.cell
            out.append(S.format_marker("success" if right else "wrong", n))
            self._finish_trial("success" if right else "wrong", t)
        elif t - self.trial_on >= self.cfg.timeout_s - 1e-9:
            out.append(S.format_marker("timeout", n))
            self._finish_trial("timeout", t)
        return out

    def _finish_trial(self, outcome: str, t: float) -> None:
        tg = self.target
        assert tg is not None
        tt, xy = np.asarray(self._t), np.asarray(self._xy)
        inside = (M.inside_square(xy, (tg.x, tg.y), tg.radius) if tg.square
                  else M.inside_circle(xy, (tg.x, tg.y), tg.radius))
        acquired = None if outcome == "timeout" else self._acquired
        rec = M.trial_record(self.trial, tt, xy, (tg.x, tg.y), tg.radius, outcome, t, acquired, inside=inside,
                             width=2.0 * tg.radius, selected=self._hold_cell if tg.square and acquired is not None else -1,
                             cued=tg.cell)
        self.records.append(rec)
        self.state = S.STATE_ITI
        self._iti_until = t + self.cfg.iti_s


# ---------------------------------------------------------------------------- cursor control

def clamp(xy: np.ndarray, half: float) -> np.ndarray:
    return np.clip(xy, -half, half)


def integrate_velocity(cursor: np.ndarray, v: np.ndarray, dt: float, gain: float, half: float) -> np.ndarray:
    """cursor + gain * v * dt, clamped to the square workspace (velocity control)."""
    return clamp(cursor + gain * np.asarray(v, dtype=np.float64) * dt, half)


def minimum_jerk(p0: np.ndarray, p1: np.ndarray, tau: float) -> np.ndarray:
    """Position at normalised time tau in [0, 1] of a minimum-jerk reach p0 -> p1
    (Flash & Hogan 1985): p0 + (p1 - p0)(10 tau^3 - 15 tau^4 + 6 tau^5)."""
    s = min(max(tau, 0.0), 1.0)
    return p0 + (p1 - p0) * (10 * s**3 - 15 * s**4 + 6 * s**5)


def pick_control(labels: list[str], where: str = "decoder stream") -> tuple[str, list[int]]:
    """("velocity", [i_vx, i_vy]) when the labels hold vel_x/vel_y, else ("position", ...) for
    pos_x/pos_y; neither is a StreamError naming the labels seen."""
    low = [str(s).strip().lower() for s in labels]
    for kind, names in (("velocity", S.VELOCITY_LABELS), ("position", S.POSITION_LABELS)):
        if all(n in low for n in names):
            return kind, [low.index(n) for n in names]
    seen = ", ".join(labels) if labels else "no channel labels in desc/channels"
    raise StreamError(f"{where}: channels ({seen}) name neither {'/'.join(S.VELOCITY_LABELS)} (velocity control) "
                      f"nor {'/'.join(S.POSITION_LABELS)} (position control)")


# ------------------------------------------------------------------------------------ files


def trials_csv(records: list[M.TrialRecord]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=M.TrialRecord.columns(), lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) and math.isfinite(v) else ("" if isinstance(v, float) else v))
                    for k, v in r.row().items()})
    return buf.getvalue()


def read_trials_csv(path: Path) -> list[dict]:
    """trials.csv rows with numbers parsed (empty cells -> NaN)."""
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            d: dict[str, Any] = {}
            for k, v in row.items():
                if k == "outcome":
                    d[k] = v
                elif k in ("trial", "entries", "selected", "cued"):
                    d[k] = int(v)
                else:
                    d[k] = float(v) if v != "" else math.nan
            out.append(d)
    return out


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def percentiles_ms(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    v = np.asarray(values, dtype=np.float64)
    return {"n": int(v.size), "p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99)),
            "max_ms": float(v.max())}


# ------------------------------------------------------------------------------------ runner

@dataclass
class Snapshot:
    """What the window draws; replaced as a whole each update (one attribute store, thread-safe)."""

    cursor: tuple[float, float] = (0.0, 0.0)
    target: Target | None = None
    state: int = S.STATE_ITI
    trial: int = 0
    done: int = 0
    successes: int = 0
    last_outcome: str = ""
    grid: int = 0
    workspace: float = S.WORKSPACE_HALF_CM


@dataclass
class RunnerSettings:
    name: str = S.DEFAULT_TASK_NAME
    decoder: str = S.DEFAULT_DECODER_NAME
    gain: float = 1.0
    rate: float = S.TASK_RATE_HZ
    wait_s: float = 10.0
    lead_s: float = 1.0          # ITI at the centre before block_start, so recorders and participants connect
    priority: str = "normal"     # "realtime": SCHED_FIFO for the thread that runs the loop, when permitted
    duration_s: float | None = None
    out: Path | None = None
    extra: dict = field(default_factory=dict)


class TaskRunner:
    """The task over LSL: wait for the decoder, publish state and markers at `rate`, write files."""

    def __init__(self, cfg: TaskConfig, settings: RunnerSettings, log: Callable[[str], None] | None = None) -> None:
        cfg.check()
        if not settings.rate > 0:
            raise ConfigError(f"--rate {settings.rate}: must be > 0")
        self.cfg = cfg
        self.set = settings
        self.log = log or (lambda s: print(f"rt-decoder task: {s}", file=sys.stderr, flush=True))
        self.core = TaskCore(cfg)
        self.snapshot = Snapshot(grid=cfg.grid if cfg.task == "grid" else 0, workspace=cfg.workspace)
        self.control = "observe" if cfg.mode == "observe" else ""
        self.latencies_ms: list[float] = []
        self.late_updates = 0
        self.updates = 0
        self._stop = threading.Event()
        self.summary: dict | None = None
        self.inlet: Any = None
        self.decoder_desc = ""

    def stop(self) -> None:
        """Finish the block at the next update (thread- and signal-safe)."""
        self._stop.set()

    # ---- set-up ------------------------------------------------------------------------------
    def connect(self) -> None:
        """Closed mode: find the decoder's stream (within wait_s) and pick velocity or position control."""
        if self.cfg.mode != "closed":
            return
        from ..runtime import lsl as L

        lsl = L.pylsl()
        name = self.set.decoder
        self.log(f"waiting up to {self.set.wait_s:g} s for the decoder stream {name!r} (Kinematics) ...")
        found = lsl.resolve_bypred(f"name='{name}'", 1, max(self.set.wait_s, 0.05))
        if not found:
            seen = L.visible_streams(0.5)
            raise StreamError(f"decoder stream {name!r}: not found after waiting {self.set.wait_s:g} s "
                              f"(visible: {'; '.join(seen) if seen else 'no LSL streams'}); start `rt-decoder run --output {name}` "
                              f"or pass --decoder NAME")
        inlet = lsl.StreamInlet(found[0], max_buflen=10, processing_flags=0)
        try:
            info = inlet.info(timeout=5.0)
        except Exception as e:
            raise StreamError(f"decoder stream {name!r}: cannot open ({e})") from None
        labels = L.desc_labels(info)
        self.control, self.idx = pick_control(labels, f"decoder stream {name!r}")
        rate = info.nominal_srate()
        self.sample_dt = 1.0 / rate if rate > 0 else None
        self.clock = L.ClockOffset(inlet, info)
        self.inlet = inlet
        self.decoder_desc = L.describe(info)
        cols = ", ".join(labels[i] for i in self.idx)
        self.log(f"decoder {self.decoder_desc}: {self.control} control from {cols}"
                 + (f", gain {self.set.gain:g}" if self.control == "velocity" else ""))
        inlet.open_stream(timeout=5.0)

    def _open_outlets(self) -> None:
        from ..runtime import lsl as L

        c, s = self.cfg, self.set
        desc = {"task": c.task, "mode": c.mode, "workspace": c.workspace, "hold_s": c.hold_s, "timeout_s": c.timeout_s,
                "iti_s": c.iti_s, "target_radius": c.target_radius, "decoder": s.decoder if c.mode == "closed" else "",
                "control": self.control, "gain": s.gain, "grid": c.grid if c.task == "grid" else 0, "seed": c.seed,
                "state_codes": ",".join(f"{k}={v}" for k, v in S.STATE_NAMES.items())}
        self.state_out = L.make_outlet(S.state_name(s.name), S.STATE_TYPE, S.STATE_LABELS, s.rate, units=S.STATE_UNITS,
                                       source_id=f"rt-decoder-task:{s.name}-state", extra=desc)
        self.markers_out = L.make_outlet(S.markers_name(s.name), S.MARKERS_TYPE, ["marker"], 0.0, fmt="string",
                                         source_id=f"rt-decoder-task:{s.name}-markers", extra={"task": c.task})

    # ---- the loop ----------------------------------------------------------------------------
    def _read_decoder(self, cursor: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """Apply every decoder sample that arrived since the last update; their timestamps."""
        data, ts = self.inlet.pull_chunk(timeout=0.0)
        if not ts:
            return cursor, []
        y = np.asarray(data, dtype=np.float64)[:, self.idx]
        half = self.cfg.workspace
        if self.control == "position":
            last = y[-1]
            cursor = clamp(last, half) if np.all(np.isfinite(last)) else cursor
        else:
            dt = self.sample_dt
            prev = self._last_ts
            for row, t in zip(y, ts):
                step = dt if dt is not None else (min(t - prev, 0.1) if prev is not None else 0.0)
                prev = t
                if np.all(np.isfinite(row)):
                    cursor = integrate_velocity(cursor, row, step, self.set.gain, half)
            self._last_ts = prev
        return cursor, [t + self.clock.value for t in ts]

    def run(self) -> dict:
        """Run the block to its end (--trials, --duration or stop()); returns summary.json's content."""
        from ..runtime import lsl as L
        from ..runtime.priority import quiet_gc, raise_priority

        lsl = L.pylsl()
        self.priority = raise_priority(self.set.priority)  # before liblsl's threads exist: they inherit it
        self.connect()
        self._open_outlets()
        if self.set.priority == "realtime":
            quiet_gc()  # process-wide (gc.freeze): only for the real-time command, not for in-process callers
        self._last_ts: float | None = None
        cursor = np.zeros(2)
        core = self.core
        period = 1.0 / self.set.rate
        t0 = lsl.local_clock()
        t_block = t0 + max(self.set.lead_s, 0.0)
        self.log(f"publishing {S.state_name(self.set.name)!r} at {self.set.rate:g} Hz and {S.markers_name(self.set.name)!r}; "
                 f"{self.cfg.task} block ({self.cfg.mode}) starts in {self.set.lead_s:g} s"
                 + (f", {self.cfg.n_trials} trials" if self.cfg.n_trials else "")
                 + (f", {self.set.duration_s:g} s" if self.set.duration_s else "")
                 + ("" if self.cfg.n_trials or self.set.duration_s else "; Ctrl-C to stop"))
        k = 0
        reach_from = (np.zeros(2), -1)
        try:
            while True:
                k += 1
                due = t0 + k * period
                now = lsl.local_clock()
                if due > now:
                    time.sleep(due - now)
                else:
                    behind = int((now - due) // period)
                    if behind:  # whole periods lost: skip them rather than bunch updates
                        self.late_updates += behind
                        k += behind
                if core.t_begin is None:  # lead-in: the cursor waits at the centre, consumers connect
                    if self.inlet is not None:
                        self.inlet.pull_chunk(timeout=0.0)
                    t = lsl.local_clock()
                    if t < t_block and not self._stop.is_set():
                        self.state_out.push_sample(core.sample(cursor), t)
                        continue
                    for m in core.begin(t):
                        self.markers_out.push_sample([m], t)
                    t_run = t
                if self.cfg.mode == "closed":
                    cursor, used = self._read_decoder(cursor)
                else:
                    used = []
                    if core.state in (S.STATE_REACH, S.STATE_HOLD) and core.target is not None:
                        if reach_from[1] != core.trial:
                            reach_from = (cursor.copy(), core.trial)
                        tg = np.array([core.target.x, core.target.y])
                        cursor = minimum_jerk(reach_from[0], tg, (lsl.local_clock() - core.trial_on) / self.cfg.reach_s)
                t = lsl.local_clock()
                stopping = self._stop.is_set() or (self.set.duration_s is not None and t - t_run >= self.set.duration_s)
                markers = core.step(cursor, t)
                if core.finished or stopping:
                    markers += core.end(t)
                self.state_out.push_sample(core.sample(cursor), t)
                for m in markers:
                    self.markers_out.push_sample([m], t)
                if used:
                    done = lsl.local_clock()
                    self.latencies_ms.extend((done - u) * 1000.0 for u in used)
                self.updates += 1
                recs = core.records
                self.snapshot = Snapshot((float(cursor[0]), float(cursor[1])), core.target, core.state, core.trial, len(recs),
                                         sum(r.outcome == "success" for r in recs), recs[-1].outcome if recs else "",
                                         self.snapshot.grid, self.cfg.workspace)
                if core.state == S.STATE_DONE:
                    break
        finally:
            if core.t_begin is not None and core.state != S.STATE_DONE:  # an exception: still close the block
                t = lsl.local_clock()
                for m in core.end(t):
                    self.markers_out.push_sample([m], t)
            self.summary = self._summarize()
            if self.set.out is not None:
                self.write(self.set.out)
            if self.inlet is not None:
                self.clock.close()
        return self.summary

    def _summarize(self) -> dict:
        out = self.core.summary()
        out["update_latency"] = percentiles_ms(self.latencies_ms)
        out["update_latency"]["definition"] = ("local_clock() at the task update that moved the cursor minus the decoder "
                                               "sample's timestamp")
        out["updates"] = self.updates
        out["late_updates_skipped"] = self.late_updates
        settings = asdict(self.cfg)
        settings.update(name=self.set.name, decoder=self.set.decoder if self.cfg.mode == "closed" else None,
                        control=self.control, gain=self.set.gain, rate_hz=self.set.rate, duration_s=self.set.duration_s,
                        priority=getattr(self, "priority", "normal"),
                        decoder_stream=self.decoder_desc, **self.set.extra)
        out["settings"] = settings
        return out

    def write(self, out_dir: Path) -> None:
        from ..atomic import write_json, write_text

        write_text(out_dir / "trials.csv", trials_csv(self.core.records))
        write_json(out_dir / "summary.json", _json_safe(self.summary))
