"""The simulated participant (DESIGN §9): sees the task through a visual delay, intends, spikes on LSL.

Every control tick (default 100 Hz) it looks up the task state *as seen* `visual_delay_s` ago
(the last `<task>-state` sample stamped at or before t - delay: the frame on the screen then),
forms an intended velocity — a feedback controller toward the target, v = gain * (target - cursor),
speed-limited, zero in the inter-trial interval and while the seen cursor is inside the target, plus
Ornstein–Uhlenbeck motor noise — in the spirit of the closed-loop human simulator of Cunningham
et al. 2011 (a controller that corrects the decoder's errors through delayed visual feedback).
With `intent="mouse"` a person steers instead: v = gain * (pointer - seen cursor) from the task
window's `<task>-pointer` stream (BRAND's mouse -> simulator graph, over LSL).

The encoding model (closedloop.encoding) turns the intention into rates; Poisson spikes are drawn
at the source rate (default 1 kHz) and published as `<name>-spikes` (SpikeCounts: one sample per
source bin, timestamp = its end; or SpikeEvents: one sample per spike, timestamp = spike time),
pushed against a drift-free clock like the replay (runtime/player.py): bin n ends at
T0 + (n + 1) / source_rate with T0 on the grid announced in the desc (`bin_origin`). The intention
goes out as `<name>-intent` (one sample per tick, stamped at the tick).

Two seeds: `array_seed` fixes the array (tuning, drift), so blocks of one experiment (and its
calibration) see the same neurons; `seed` fixes the session's motor noise and spikes.
Determinism: tick k draws all of its randomness (motor noise, shared gain, over-dispersion,
Poisson counts, event times) from its own generator seeded (seed, k), in a fixed order, so the
same seed and the same seen states at each tick give the same spikes, however the process was
scheduled, and a differing tick never shifts the random numbers of the ticks after it.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, StreamError
from ..runtime.clocked import Clocked
from . import streams as S
from .encoding import Drift, Encoder, make_encoder

LOG_FORMAT = "rt-decoder-participant-log"
STALE_S = 0.5  # a seen state older than this (task gone, stream stalled) counts as nothing seen


@dataclass
class ParticipantConfig:
    """Every parameter of a simulated participant (all of it goes into the LSL desc and the log)."""

    task: str = S.DEFAULT_TASK_NAME
    name: str = S.DEFAULT_PARTICIPANT_NAME
    encoding: str = "cosine"
    intent: str = "auto"               # auto (feedback controller) | mouse (<task>-pointer)
    channels: int | None = None        # default: 96 for cosine, the recording's for fit:
    source_rate: float = S.SOURCE_RATE_HZ
    control_rate: float = 100.0
    fmt: str = "counts"                # counts (SpikeCounts) | events (SpikeEvents)
    visual_delay_s: float = S.VISUAL_DELAY_S
    max_speed: float = S.MAX_SPEED_CM_S
    gain: float = 4.0                  # 1/s: intended velocity per cm of distance to the target
    noise: float = 1.5                 # cm/s: stationary s.d. of the OU motor noise (per axis)
    noise_tau_s: float = 0.2
    seed: int = 0                      # this session's motor noise and spikes
    array_seed: int = 0                # the array: tuning (cosine preferred directions, baselines) and its drift
    drift: Drift = field(default_factory=Drift)
    duration_s: float | None = None
    wait_s: float = 10.0
    until_done: bool = False           # stop after the task's `done` state
    log: str | None = None
    priority: str = "normal"           # realtime: SCHED_FIFO for the pushing thread when permitted

    def check(self) -> ParticipantConfig:
        def pos(name: str, v: float, zero: bool = False) -> None:
            if not (math.isfinite(v) and (v >= 0 if zero else v > 0)):
                raise DataError(f"--{name} must be {'>= 0' if zero else 'positive'}, got {v}")

        if self.intent not in ("auto", "mouse"):
            raise DataError(f"--intent must be auto or mouse, got {self.intent!r}")
        if self.priority not in ("realtime", "normal"):
            raise DataError(f"--priority must be realtime or normal, got {self.priority!r}")
        if self.fmt not in ("counts", "events"):
            raise DataError(f"--format must be counts or events, got {self.fmt!r}")
        pos("source-rate", self.source_rate)
        pos("control-rate", self.control_rate)
        f = self.source_rate / self.control_rate
        if abs(f - round(f)) > 1e-6 or round(f) < 1:
            raise DataError(f"--source-rate {self.source_rate:g} Hz must be a whole multiple of the control rate "
                            f"({self.control_rate:g} Hz)")
        pos("visual-delay-ms", self.visual_delay_s * 1000.0, zero=True)
        pos("max-speed", self.max_speed)
        pos("gain", self.gain, zero=True)
        pos("noise", self.noise, zero=True)
        pos("noise-tau", self.noise_tau_s)
        pos("wait", self.wait_s, zero=True)
        if self.duration_s is not None:
            pos("duration", self.duration_s)
        if self.channels is not None and self.channels < 1:
            raise DataError(f"--channels must be at least 1, got {self.channels}")
        self.drift.check()
        return self

    @property
    def factor(self) -> int:
        """Source bins per control tick."""
        return int(round(self.source_rate / self.control_rate))

    def params(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("drift")
        d["visual_delay_ms"] = d.pop("visual_delay_s") * 1000.0
        return {**d, **{f"drift_{k}": v for k, v in asdict(self.drift).items()}}


class History:
    """Timestamped samples, looked up as 'the last sample at or before t' (what was on screen then)."""

    def __init__(self, width: int, keep_s: float = 5.0) -> None:
        self.t = np.zeros(0)
        self.x = np.zeros((0, width))
        self.keep = keep_s

    def add(self, ts: np.ndarray, x: np.ndarray) -> None:
        if len(ts) == 0:
            return
        self.t = np.concatenate([self.t, np.asarray(ts, np.float64)])
        self.x = np.concatenate([self.x, np.asarray(x, np.float64).reshape(len(ts), -1)])
        if not np.all(np.diff(self.t) >= 0):
            o = np.argsort(self.t, kind="stable")
            self.t, self.x = self.t[o], self.x[o]
        cut = np.searchsorted(self.t, self.t[-1] - self.keep)
        if cut > len(self.t) // 2:  # drop old samples now and then, keeping at least `keep` seconds
            self.t, self.x = self.t[cut:], self.x[cut:]

    def at(self, t: float, stale_s: float = STALE_S) -> np.ndarray | None:
        i = int(np.searchsorted(self.t, t, side="right")) - 1
        if i < 0 or t - self.t[i] > stale_s:
            return None
        return self.x[i]


class ParticipantModel:
    """The participant without LSL: seen state -> intention -> spikes, one control tick at a time."""

    def __init__(self, cfg: ParticipantConfig, encoder: Encoder | None = None) -> None:
        self.cfg = cfg.check()
        self.encoder = encoder or make_encoder(cfg.encoding, cfg.channels, cfg.max_speed, cfg.array_seed, cfg.drift)
        self.D = self.encoder.n_channels
        self.f = cfg.factor
        self.dt = 1.0 / cfg.source_rate
        self.tick_s = 1.0 / cfg.control_rate
        self.noise = np.zeros(2)
        self.a = math.exp(-self.tick_s / cfg.noise_tau_s)
        self.variability = self.encoder.new_variability()

    def controller(self, seen: np.ndarray | None, pointer: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
        """Intended velocity before noise, and whether the participant is trying to move at all."""
        c = self.cfg
        if seen is None:
            return np.zeros(2), False
        cursor = seen[[S.CURSOR_X, S.CURSOR_Y]]
        if c.intent == "mouse":
            if pointer is None or not np.all(np.isfinite(pointer)) or not np.all(np.isfinite(cursor)):
                return np.zeros(2), False
            u = c.gain * (pointer - cursor)
        else:
            target = seen[[S.TARGET_X, S.TARGET_Y]]
            r = seen[S.TARGET_RADIUS]
            code = int(seen[S.STATE]) if np.isfinite(seen[S.STATE]) else S.STATE_ITI
            if code not in (S.STATE_REACH, S.STATE_HOLD) or not np.all(np.isfinite(target)) or not np.all(np.isfinite(cursor)):
                return np.zeros(2), False
            e = target - cursor
            if np.hypot(*e) <= (r if np.isfinite(r) else 0.0):
                return np.zeros(2), False  # inside the target: hold still
            u = c.gain * e
        sp = float(np.hypot(*u))
        if sp > c.max_speed:
            u = u * (c.max_speed / sp)
        return u, True

    def tick(self, k: int, seen: np.ndarray | None, pointer: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tick k: (intention (2,), counts (f, D) int32, rates (D,) Hz). Randomness from rng (seed, k) only."""
        c = self.cfg
        rng = np.random.default_rng([c.seed, k])
        eps = rng.standard_normal(2)
        self.noise = self.a * self.noise + c.noise * math.sqrt(1 - self.a * self.a) * eps
        u, moving = self.controller(seen, pointer)
        if moving and c.intent == "auto":
            u = u + self.noise
            sp = float(np.hypot(*u))
            if sp > c.max_speed:
                u = u * (c.max_speed / sp)
        t = k * self.tick_s
        rates = self.encoder.rates(u, t) * self.variability.step(rng, self.tick_s)
        counts = rng.poisson(np.broadcast_to(rates * self.dt, (self.f, self.D))).astype(np.int32)
        self._rng = rng  # event times for this tick's bins come from the same generator, after the counts
        return u, counts, rates

    def event_times(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Spread one tick's counts (f, D) over their bins: (offset in source bins, channel), in time order."""
        rows, ch = np.nonzero(counts)
        n = counts[rows, ch]
        rows, ch = np.repeat(rows, n), np.repeat(ch, n).astype(np.int32)
        off = rows + self._rng.uniform(0.02, 0.98, rows.size)  # away from bin edges: re-binning is exact
        o = np.argsort(off, kind="stable")
        return off[o], ch[o]


def write_json_atomic(path: Path, obj: Any) -> None:
    """The log as JSON, written atomically (rt_decoder.atomic): a reader never sees half a log."""
    from ..atomic import write_json

    write_json(path, obj, indent=1, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o))


def _desc_value(v: Any) -> str:
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v)
    return "" if v is None else str(v)


class Participant(Clocked):
    """The participant over LSL. Outlets exist (and spikes flow, intention 0) from `start()`, before
    the task is found, so a decoder can connect first; `<task>-state` must appear within wait_s."""

    def __init__(self, cfg: ParticipantConfig, encoder: Encoder | None = None, log: Any = None) -> None:
        from ..runtime import lsl as L

        self.cfg = cfg.check()
        self.model = ParticipantModel(cfg, encoder)
        self.encoder = self.model.encoder
        self.say = log or (lambda s: None)
        lsl = L.pylsl()
        self.origin = lsl.local_clock()
        D = self.model.D
        self.channel_names = getattr(self.encoder, "channel_names", None) or [f"ch{i}" for i in range(D)]
        # "n_channels", not "channels": desc/channels already holds the channel labels
        self.params = {**{k: v for k, v in cfg.params().items() if k != "channels"}, **self.encoder.params(), "n_channels": D,
                       "intent_controller": ("v = gain * (target - seen cursor), |v| <= max_speed, + OU noise; 0 in "
                                             "inter-trial and inside the target") if cfg.intent == "auto" else
                                            "v = gain * (pointer - seen cursor), |v| <= max_speed",
                       "state_stream": S.state_name(cfg.task),
                       "pointer_stream": S.pointer_name(cfg.task) if cfg.intent == "mouse" else ""}
        self.params.update(self._tuning())
        sid = f"rt-decoder-participant:{cfg.name}@{socket.gethostname()}"
        common = {"bin_origin": repr(self.origin), "speed": "1.0", "bin_s": repr(1.0 / cfg.source_rate),
                  "source": "rt-decoder participant", **{k: _desc_value(v) for k, v in self.params.items()}}
        if cfg.fmt == "counts":
            self.spikes_out = L.make_outlet(S.spikes_name(cfg.name), "SpikeCounts", self.channel_names, cfg.source_rate,
                                            fmt="int32", source_id=sid + "-spikes", extra=common)
        else:
            info = lsl.StreamInfo(S.spikes_name(cfg.name), "SpikeEvents", 1, lsl.IRREGULAR_RATE, lsl.cf_int32, sid + "-spikes")
            L.add_channels(info, ["channel"])
            for k, v in {**common, "n_channels": D}.items():
                info.desc().append_child_value(k, str(v))
            names = info.desc().append_child("spike_channels")
            for c in self.channel_names:
                names.append_child_value("label", c)
            self.spikes_out = lsl.StreamOutlet(info, chunk_size=0, max_buffered=60)
        self.intent_out = L.make_outlet(S.intent_name(cfg.name), S.INTENT_TYPE, S.INTENT_LABELS, cfg.control_rate,
                                        units=S.INTENT_UNITS, source_id=sid + "-intent",
                                        extra={"bin_origin": repr(self.origin), "seed": cfg.seed, "encoding": cfg.encoding})
        self.states = History(len(S.STATE_LABELS), keep_s=5.0 + cfg.visual_delay_s)
        self.pointer = History(len(S.POINTER_LABELS))
        self._inlets: dict[str, Any] = {}
        self._clocks: list[Any] = []
        Clocked.__init__(self)
        self._abandoned = threading.Event()  # set when the block ends before --wait ran out
        self.error: Exception | None = None
        self.n_pushed = 0
        self.k_next = 0
        self.lateness: list[float] = []
        self.stats = {"spikes": 0, "state_samples": 0, "pointer_samples": 0, "ticks_seen": 0, "ticks_moving": 0,
                      "first_seen_tick": None, "trials_seen": 0, "done_seen": False}
        self._speed_sum = 0.0

    def _tuning(self) -> dict[str, Any]:
        e = self.encoder
        if hasattr(e, "pd"):
            return {"tuning_pd_deg": [round(float(x), 2) for x in np.rad2deg(e.pd)],
                    "tuning_baseline_hz": [round(float(x), 3) for x in e.baseline],
                    "tuning_modulation_hz": [round(float(x), 3) for x in e.modulation]}
        if hasattr(e, "W"):
            return {"tuning_glm_weights": np.round(e.W.T, 5).tolist(), "tuning_feature_sd": e.vel_sd}
        return {}

    # ---- inputs ------------------------------------------------------------------------------
    def _resolve(self, stream: str, type_: str) -> None:
        from ..runtime import lsl as L

        lsl = L.pylsl()
        found = lsl.resolve_bypred(f"name='{stream}'", 1, max(self.cfg.wait_s, 0.05))
        if self._abandoned.is_set():
            return
        if not found:
            seen = L.visible_streams(0.5)
            hint = (f"start `rt-decoder task --name {self.cfg.task}` or pass --task NAME" if type_ == S.STATE_TYPE else
                    f"--intent mouse needs the task window open (`rt-decoder task --name {self.cfg.task}` without --headless)")
            self.error = StreamError(f"{type_} stream {stream!r}: not found after waiting {self.cfg.wait_s:g} s (visible: "
                                     f"{'; '.join(seen) if seen else 'no LSL streams'}); {hint}")
            self._stop.set()
            return
        inlet = lsl.StreamInlet(found[0], max_buflen=10, recover=True)
        try:
            info = inlet.info(timeout=5.0)
            inlet.open_stream(timeout=5.0)
        except Exception as e:
            self.error = StreamError(f"{type_} stream {stream!r}: cannot open ({e})")
            self._stop.set()
            return
        n = info.channel_count()
        want = len(S.STATE_LABELS) if type_ == S.STATE_TYPE else len(S.POINTER_LABELS)
        if n < want:
            self.error = StreamError(f"stream {stream!r}: has {n} channels, a {type_} stream needs {want} ({L.describe(info)})")
            self._stop.set()
            return
        self._clocks.append(L.ClockOffset(inlet, info))
        self._inlets[type_] = (inlet, self._clocks[-1])
        self.say(f"found {L.describe(info)}")

    def _pull(self) -> None:
        for type_, (inlet, clock) in list(self._inlets.items()):
            try:
                data, ts = inlet.pull_chunk(timeout=0.0, max_samples=4096)
            except Exception:  # a lost source: recover=True keeps looking for it; nothing seen meanwhile
                continue
            if not ts:
                continue
            x = np.asarray(data, np.float64)
            t = np.asarray(ts, np.float64) + clock.value
            if type_ == S.STATE_TYPE:
                x = x[:, : len(S.STATE_LABELS)]
                self.states.add(t, x)
                self.stats["state_samples"] += len(ts)
                self.stats["trials_seen"] = max(self.stats["trials_seen"], int(np.nanmax(x[:, S.TRIAL], initial=0)))
                if np.any(x[:, S.STATE] == S.STATE_DONE):
                    self.stats["done_seen"] = True
            else:
                self.pointer.add(t, x[:, : len(S.POINTER_LABELS)])
                self.stats["pointer_samples"] += len(ts)

    # ---- the loop ----------------------------------------------------------------------------
    def _tick(self, k: int) -> np.ndarray:
        """Compute tick k (intention, spikes), push its intention; the tick's counts (f, D)."""
        c, m = self.cfg, self.model
        t_k = self.t0 + k * m.tick_s
        seen = self.states.at(t_k - c.visual_delay_s)
        pointer = self.pointer.at(t_k) if c.intent == "mouse" else None
        u, counts, _ = m.tick(k, seen, pointer)
        if seen is not None:
            self.stats["ticks_seen"] += 1
            if self.stats["first_seen_tick"] is None:
                self.stats["first_seen_tick"] = k
        if np.any(u):
            self.stats["ticks_moving"] += 1
            self._speed_sum += float(np.hypot(*u))
        self.intent_out.push_sample(u.astype(np.float32), t_k)
        self._events = m.event_times(counts) if c.fmt == "events" else None
        return counts

    def _push(self, n0: int, n1: int) -> None:
        """Source bins [n0, n1) go out (each at or after its end), computing ticks as needed."""
        f, dt, T0 = self.model.f, self.model.dt, self.t0
        rows, stamps, ev_t, ev_c = [], [], [], []
        n = n0
        while n < n1:
            k = n // f
            if k >= self.k_next:
                self._counts = self._tick(k)
                self.k_next = k + 1
            a, b = n - k * f, min(f, n1 - k * f)
            block = self._counts[a:b]
            if self.cfg.fmt == "counts":
                rows.append(block)
                stamps.append(T0 + (k * f + np.arange(a, b) + 1) * dt)
            else:
                off, ch = self._events
                sel = (off >= a) & (off < b)
                ev_t.append(T0 + (k * f + off[sel]) * dt)
                ev_c.append(ch[sel])
            self.stats["spikes"] += int(block.sum())
            n = k * f + b
        if self.cfg.fmt == "counts":
            self.spikes_out.push_chunk(np.concatenate(rows), np.concatenate(stamps).tolist())
        else:
            ts = np.concatenate(ev_t)
            if ts.size:
                self.spikes_out.push_chunk(np.concatenate(ev_c).reshape(-1, 1), ts.tolist())
        self.n_pushed = n1

    def _run(self) -> None:
        from ..runtime import lsl as L
        from ..runtime.priority import raise_priority

        self.priority = raise_priority(self.cfg.priority)
        clock = L.pylsl().local_clock
        c, dt = self.cfg, self.model.dt
        n_total = None if c.duration_s is None else max(1, int(round(c.duration_s * c.source_rate)))
        per_wake = max(1, math.ceil(0.001 / dt - 1e-9))  # wake at most every ~1 ms
        n = 0
        try:
            while not self._stop.is_set() and (n_total is None or n < n_total):
                target = self.t0 + (n + per_wake) * dt
                rem = target - clock()
                if rem > 0 and self._stop.wait(rem):
                    break
                while clock() < target:
                    time.sleep(max(0.0, target - clock()))
                self._pull()
                now = clock()
                self.lateness.append(now - target)
                n1 = min(n + per_wake + int((now - target) // dt), n + 5000)
                if n_total is not None:
                    n1 = min(n1, n_total)
                self._push(n, n1)
                n = n1
                if c.until_done and self.stats["done_seen"]:
                    break
        except Exception as e:  # surfaced by run(); never a silent dead thread
            self.error = e
        finally:
            self.done.set()

    def start(self, lead_s: float = 0.05, wait_consumers_s: float = 0.0) -> Participant:
        """Start publishing (first bin on the grid >= now + lead) and look for the task's streams."""

        if wait_consumers_s > 0:
            self.spikes_out.wait_for_consumers(wait_consumers_s)

        from ..runtime.priority import quiet_gc

        self._header = self._log_header()
        if self.cfg.log:
            write_json_atomic(Path(self.cfg.log), self._header)
        quiet_gc()  # before the clock starts: a full collection over the set-up's objects takes milliseconds
        self.first_tick(self.origin, self.model.tick_s, lead_s)
        wanted = [(S.state_name(self.cfg.task), S.STATE_TYPE)]
        if self.cfg.intent == "mouse":
            wanted.append((S.pointer_name(self.cfg.task), S.POINTER_TYPE))
        self._resolvers = [threading.Thread(target=self._resolve, args=w, daemon=True, name=f"participant-resolve-{w[0]}")
                           for w in wanted]
        self._resolve_t0 = time.monotonic()
        for r in self._resolvers:
            r.start()
        self.start_thread(self._run, f"participant-{self.cfg.name}")
        return self

    def close(self) -> dict[str, Any]:
        """Stop, close inputs, write the final log; returns the summary. Raises the loop's error, if any."""
        self.stop()
        # a resolver past its --wait is about to report (a missing stream is an error, even when the
        # block's --duration ended first); one still inside its wait is abandoned (stopped early)
        late = time.monotonic() > getattr(self, "_resolve_t0", math.inf) + self.cfg.wait_s
        if not late:
            self._abandoned.set()
        for r in getattr(self, "_resolvers", []):
            r.join(timeout=self.cfg.wait_s + 10.0 if late else 0.1)
        for cl in self._clocks:
            cl.close()
        summary = self.summary()
        if self.cfg.log:
            write_json_atomic(Path(self.cfg.log), summary)
        self.spikes_out = self.intent_out = None
        if self.error is not None:
            raise self.error
        return summary

    # ---- log ---------------------------------------------------------------------------------
    def _log_header(self) -> dict[str, Any]:
        return {"format": LOG_FORMAT, "version": 1, "started": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "status": "running", "streams": {"spikes": S.spikes_name(self.cfg.name), "intent": S.intent_name(self.cfg.name),
                                                 "state": S.state_name(self.cfg.task),
                                                 "spikes_type": "SpikeCounts" if self.cfg.fmt == "counts" else "SpikeEvents"},
                "bin_origin": self.origin, "params": self.params}

    def timing(self) -> dict[str, Any]:
        late = np.asarray(self.lateness) * 1000.0
        if not late.size:
            return {"pushes": 0}
        return {"pushes": int(late.size), "late_ms_p50": float(np.median(late)), "late_ms_p99": float(np.percentile(late, 99)),
                "late_ms_max": float(late.max())}

    def summary(self) -> dict[str, Any]:
        secs = self.n_pushed * self.model.dt
        moving = self.stats["ticks_moving"]
        out = dict(getattr(self, "_header", None) or self._log_header())
        out.update({"status": "error" if self.error else "ended",
                    "ended": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                    "error": str(self.error) if self.error else None, "t0": self.t0,
                    "bins": self.n_pushed, "seconds": secs, "ticks": self.k_next,
                    "spikes": self.stats["spikes"], "mean_rate_hz": self.stats["spikes"] / max(secs, 1e-9) / self.model.D,
                    **{k: v for k, v in self.stats.items() if k != "spikes"},
                    "mean_intended_speed_cm_s": self._speed_sum / moving if moving else 0.0,
                    "unit_events": self.encoder.unit_events(), "timing": self.timing(),
                    "priority_obtained": getattr(self, "priority", None)})
        return out
