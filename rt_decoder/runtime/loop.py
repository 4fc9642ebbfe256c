"""The real-time loop (DESIGN §6): spikes in over LSL -> bins -> step model -> Kinematics out.

One thread does everything in order, so a bin's latency is measured on one clock with no
hand-offs: it wakes on data (pull_chunk waits for the first sample, then drains), closes bins,
advances the model and pushes the prediction with the bin's end as its timestamp.

Budget and catch-up: a bin's deadline is its end + budget. When a newer bin is already waiting
and this one's deadline has passed, its prediction is stale: the state absorbs the bin (the
state-only graph, exact) and the prediction is skipped and counted. The queue is drained every
time the loop wakes, so the backlog cannot grow while a state update is faster than a bin.
`emit="fixed"` holds each prediction until end + budget, so latency is constant; a prediction
ready after its deadline is pushed at once and counted as a miss (in both modes).

Faults, each counted in the summary and written to the session log as an event:
  lost / reconnected   the source vanished; bins it had already delivered are closed at once
                       (nothing received is dropped), the gap is filled with empty `gap` bins
  silent / resumed     a SpikeCounts source stopped sending without closing (hung) for
                       max(1 s, 10 samples); a warning, then its missing samples count as gap bins
  clock_jump           input timestamps jumped (ahead of our clock, or back) by more than
                       JUMP_S: later timestamps are shifted to continue the grid, nothing dropped
  model_changed        the model file changed on disk: this run keeps the session it loaded
  consumers            an outlet's last consumer left: a warning and an event; the loop
                       never waits for consumers (LSL outlets drop nothing for those connected)
  a failed log write   (disk full) a warning; the log stops, decoding and publishing continue

DecoderStats channels (one sample per bin, timestamp = bin end):
  bin_index, latency_ms (NaN when skipped), backlog (bins waiting), deadline_miss, skipped,
  gap_bins -- the last three are running totals, so a consumer that drops samples still sees
  them.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from array import array
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, StreamError
from ..step_model import StepModel
from . import lsl as L
from .binner import Bin, CountsBinner, EventBinner
from .priority import quiet_gc, scheduling
from .session_log import SessionLog, file_sha256

log = logging.getLogger("rt_decoder.runtime")

INT_FORMATS = {4: "int32", 5: "int16", 6: "int8", 7: "int64"}
BUFFER_S = 600  # seconds of input (and of output per consumer) held in liblsl's queues
JUMP_S = 0.5  # input timestamps this far ahead of our clock (or back from the last) are a clock jump


def wait_until(t: float, clock, spin: float = 0.0) -> None:
    """Sleep until clock() >= t; with spin > 0 the last `spin` seconds poll the clock instead.

    Spinning pays only at real-time priority (a normal thread that spins is preempted: measured
    p99 ~4 ms late here, while a sleeping one wakes ~0.1-0.2 ms late)."""
    while True:
        rem = t - clock()
        if rem <= 0:
            return
        if rem > spin:
            time.sleep(rem - spin)
        else:
            os.sched_yield()


def check_input(info: Any, model: StepModel) -> dict[str, Any]:
    """The input stream against the model card, before the first bin; StreamError says what is wrong."""
    card = model.card
    name = f"stream {info.name()!r}"
    D, B = card.n_channels, card.bin_s
    fmt, rate, n = info.channel_format(), info.nominal_srate(), info.channel_count()
    speed = float(L.desc_value(info, "speed") or 1.0)
    origin = L.desc_value(info, "bin_origin")
    origin = float(origin) if origin is not None else None
    kind = info.type()
    if kind not in L.INPUT_TYPES:
        kind = "SpikeEvents" if rate == 0 else "SpikeCounts"
        log.warning("%s has type %r; treating it as %s", name, info.type(), kind)
    if kind == "SpikeEvents":
        if fmt not in INT_FORMATS:
            raise StreamError(f"{name}: SpikeEvents must carry integer channel indices (int32), got {L.describe(info)}")
        if rate != 0:
            raise StreamError(f"{name}: SpikeEvents must have an irregular rate, got {rate:g} Hz")
        if n not in (1, 2):
            raise StreamError(f"{name}: SpikeEvents has {n} channels, expected 1 (channel index) or 2 (channel, unit)")
        declared = L.desc_value(info, "n_channels")
        if declared is not None and int(declared) != D:
            raise StreamError(f"{name}: events come from {declared} channels, the model {model.path.name} expects {D}")
        return {"kind": kind, "rate": 0.0, "origin": origin, "speed": speed, "factor": 0}
    if fmt == 3:
        raise StreamError(f"{name}: SpikeCounts must be numeric, got a string stream")
    if n != D:
        raise StreamError(f"{name}: has {n} channels, the model {model.path.name} expects {D}")
    if rate <= 0:
        raise StreamError(f"{name}: SpikeCounts needs a regular rate, got irregular")
    f = B * rate
    if round(f) < 1 or abs(f - round(f)) > 1e-6 * max(1.0, f):
        raise StreamError(f"{name}: source rate {rate:g} Hz does not divide the model's {B * 1000:g} ms bin "
                          f"(need a whole number of samples per bin, got {f:g})")
    return {"kind": kind, "rate": rate, "origin": origin, "speed": speed, "factor": int(round(f))}


def input_misfit(info: Any, model: StepModel) -> str | None:
    """Why a candidate input stream cannot feed the model (None: it fits). SpikeEvents streams
    state their channel count in the desc, so one is opened briefly to read it."""
    if info.type() == "SpikeEvents":
        try:
            inlet = L.pylsl().StreamInlet(info, max_buflen=1, recover=False)
            info = inlet.info(timeout=2.0)
            del inlet
        except Exception as e:  # gone while we looked
            return f"cannot be opened ({e})"
    try:
        check_input(info, model)
    except StreamError as e:
        return str(e).split(": ", 1)[-1]
    return None


def run_id() -> str:
    """Unique per run (pid + start time): it ends every source_id we publish, so two decoders
    with the same output names on one network stay distinguishable."""
    return f"{os.getpid()}-{int(time.time() * 1000):x}"


class Runtime:
    """Run a step model on a live LSL spike stream inside a latency budget.

    model: a StepModel or a path to a step graph. input: StreamSpec or its text ("NAME",
    "type=X", "source_id=X"; None = any SpikeCounts/SpikeEvents stream, the one that fits the
    model when several are visible). stats / zeta_stream: outlet names, "{output}" is replaced by
    `output` (default "{output}-stats"; None = not published). Call `run()` (blocks; returns the
    summary) in any thread; `stop()` from any other; `ready` is set once the input is open and
    the outlets exist (the input is found first, so nothing is announced for a run that cannot
    start).
    """

    def __init__(self, model: StepModel | str | Path, input: L.StreamSpec | str | None = None, *,
                 output: str = "rt-decoder", stats: str | None = "{output}-stats", budget_ms: float = 5.0,
                 emit: str = "asap", log_path: str | Path | None = None, threads: int = 1,
                 providers: str = "auto", resolve_timeout: float = 10.0, grace_ms: float = 3.0,
                 max_count: float = 1000.0, zeta_stream: str | None = None, status_every_s: float = 0.0,
                 reconnect_timeout: float | None = None, priority: str = "normal", spin_ms: float = 0.0,
                 keep_warm: bool = False, adapt_tau_s: float | None = None, adapt_log_every_s: float = 10.0) -> None:
        if emit not in ("asap", "fixed"):
            raise StreamError(f"--emit must be asap or fixed, got {emit!r}")
        if not (isinstance(budget_ms, (int, float)) and math.isfinite(budget_ms) and budget_ms > 0):
            raise ConfigError(f"--budget-ms must be a positive number of milliseconds, got {budget_ms}")
        if log_path is not None:
            from ..atomic import check_output

            check_output(log_path, "--log file")
        self.adapt = None
        if adapt_tau_s is not None:  # online input alignment: a derived graph with one more state (adaptation.py)
            model, self.adapt = self._adapted(model, adapt_tau_s, log_path, adapt_log_every_s)
        self.model = model if isinstance(model, StepModel) else StepModel(model, threads=threads, providers=providers)
        self.card = self.model.card
        self.spec = input if isinstance(input, L.StreamSpec) else L.StreamSpec.parse(input)
        self.output_name = output
        self.stats_name = stats.replace("{output}", output) if stats else None
        self.zeta_name = zeta_stream.replace("{output}", output) if zeta_stream else None
        self.run_id = run_id()
        self.budget = budget_ms / 1000.0
        self.budget_ms = budget_ms
        self.emit = emit
        self.log_path = log_path
        self.resolve_timeout = resolve_timeout
        self.grace = grace_ms / 1000.0
        self.max_count = max_count
        self.status_every = status_every_s
        self.reconnect_timeout = reconnect_timeout
        self.priority = priority
        self.spin = spin_ms / 1000.0
        self.keep_warm = keep_warm
        self._warmed_for = -1.0
        self.model.prepare_advance()
        self._zeros = np.zeros(self.card.n_channels, np.float32)
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._reset = threading.Event()
        self.resets = 0
        self.queue: deque[Bin] = deque()
        self.n_bins = self.n_pred = self.skipped = self.misses = self.gap_bins = self.reconnects = 0
        self.max_backlog = 0
        self.late_input = 0
        self.latencies = array("d")
        self.clock_jumps = self.silences = self.consumers_gone = 0
        self._listened: dict[str, bool] = {}
        self.model_changed = False
        self._jump = 0.0  # seconds subtracted from input timestamps since the last clock jump
        self._last_ts = -math.inf
        self._t_data = 0.0
        self._silent = False
        self.input_desc = ""
        self.inlet: Any = None
        self.binner: CountsBinner | EventBinner | None = None
        self._session_log: SessionLog | None = None

    @staticmethod
    def _adapted(model: StepModel | str | Path, tau_s: float, log_path, every_s: float) -> tuple[Path, dict]:
        """Write the online-adapting twin of the model (beside the log, else in a temp folder)."""
        import tempfile

        from ..adaptation import write_adapted

        base = Path(model.path if isinstance(model, StepModel) else model)
        folder = Path(log_path).parent if log_path else Path(tempfile.mkdtemp(prefix="rt-decoder-adapt-"))
        name = (Path(log_path).name if log_path else base.stem) + ".adapt.onnx"
        path = write_adapted(base, tau_s, folder / name)
        return path, {"tau_s": float(tau_s), "graph": str(path), "base_model": str(base),
                      "base_model_sha256": file_sha256(base), "every_s": float(every_s)}

    # ---- control -------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the bin in hand and return (thread- and signal-safe)."""
        self._stop.set()

    def reset(self) -> None:
        """Zero the model state before the next bin (a new block or subject; thread-safe).
        The session log records it, so a re-run resets at the same bin."""
        self._reset.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # ---- set-up ---------------------------------------------------------------------------
    def source_id(self, type_: str, name: str) -> str:
        return f"rt-decoder:{type_}:{name}@{socket.gethostname()}:{self.run_id}"

    def _find_input(self) -> Any:
        """The input stream: the only match, or among several the only one that fits the model.
        Also notes streams already on the network under our output names (`self.taken`)."""
        own = [n for n in (self.output_name, self.stats_name, self.zeta_name) if n]
        infos, self.taken = L.resolve_all(self.spec, self.resolve_timeout, also=own, stop=self._stop, say=log.info)
        if len(infos) == 1:
            return infos[0]
        why = {i.uid(): input_misfit(i, self.model) for i in infos}
        fit = [i for i in infos if why[i.uid()] is None]
        card = self.card
        want = f"the model {self.model.path.name} ({card.n_channels} ch, {card.bin_s * 1000:g} ms bins)"
        if len(fit) == 1:
            log.info("input: %s fits %s; also visible: %s", L.describe(fit[0]), want,
                     "; ".join(f"{i.name()!r} ({why[i.uid()]})" for i in infos if i is not fit[0]))
            return fit[0]
        if not fit:
            listing = "; ".join(f"{i.name()!r} (source_id {i.source_id()!r}): {why[i.uid()]}" for i in infos)
            raise StreamError(f"input {self.spec}: {len(infos)} streams found, none fits {want}: {listing}")
        listing = "; ".join(L.describe(i) for i in fit)
        raise StreamError(f"input {self.spec}: {len(fit)} streams fit {want}; choose one with --input NAME "
                          f"(or --input source_id=X when names repeat): {listing}")

    def _open_outputs(self) -> None:
        card = self.card
        extra = {"model": self.model.path.name, "bin_s": card.bin_s, "providers": ",".join(self.model.providers),
                 "budget_ms": self.budget_ms, "emit": self.emit, "run_id": self.run_id}
        for other in getattr(self, "taken", []):
            log.warning("another stream named %r is already on the network (source_id %r, host %r); ours are told "
                        "apart by source_id (ending %s): choose another --output to avoid the clash",
                        other.name(), other.source_id(), other.hostname(), self.run_id)
        self.out = L.make_outlet(self.output_name, "Kinematics", card.outputs, 1.0 / card.bin_s, units=card.units,
                                 extra=extra, source_id=self.source_id("Kinematics", self.output_name),
                                 max_buffered=BUFFER_S)
        published = [f"{self.output_name} (Kinematics)"]
        self.stats_out = None
        if self.stats_name:
            self.stats_out = L.make_outlet(self.stats_name, "DecoderStats", L.STATS_LABELS, 1.0 / card.bin_s, units=L.STATS_UNITS,
                                           extra={"decoder": self.output_name, "totals": "deadline_miss,skipped,gap_bins",
                                                  "run_id": self.run_id},
                                           source_id=self.source_id("DecoderStats", self.stats_name),
                                           max_buffered=BUFFER_S)
            published.append(f"{self.stats_name} (DecoderStats)")
        self.zeta_out = None
        self._zeta_every = max(1, round(0.1 / card.bin_s))
        if self.zeta_name and "zeta" in self.model.state and len(card.canvas) == 2:
            H, W = card.canvas
            self.zeta_out = L.make_outlet(self.zeta_name, "Zeta", [f"px{i}" for i in range(H * W)], 1.0 / (self._zeta_every * card.bin_s),
                                          extra={"canvas_h": H, "canvas_w": W, "decay": card.decays[0], "decoder": self.output_name,
                                                 "run_id": self.run_id},
                                          source_id=self.source_id("Zeta", self.zeta_name))
            published.append(f"{self.zeta_name} (Zeta)")
        elif self.zeta_name:
            log.warning("model %s has no zeta image; --zeta-stream ignored", self.model.path.name)
        log.info("publishing %s; run id %s", ", ".join(published), self.run_id)

    def _open_input(self, info: Any) -> None:
        lsl = L.pylsl()
        # a generous buffer: a source that stalls and then flushes minutes of bins at once loses
        # none of them (measured: a 10^4-bin burst dropped 44% with 60 s)
        inlet = lsl.StreamInlet(info, max_buflen=BUFFER_S, recover=False)
        try:
            inlet.open_stream(timeout=5.0)
            full = inlet.info(timeout=5.0)
        except Exception as e:  # timeout or lost while opening
            raise ConnectionError(f"stream {info.name()!r}: cannot open ({e})") from None
        self.meta = check_input(full, self.model)
        self.info = full
        self.inlet = inlet
        self.clock_offset = L.ClockOffset(inlet, full)
        self.input_desc = L.describe(full)
        dtype = np.dtype(getattr(inlet, "np_dtype", None) or np.float32)
        self._buf = np.empty((4096, full.channel_count()), dtype=dtype)

    def _anchor(self, now: float) -> list[Bin]:
        m = self.meta
        origin = None if m["origin"] is None else m["origin"] + self.clock_offset.value
        B = self.card.bin_s
        if m["kind"] == "SpikeEvents":
            if not isinstance(self.binner, EventBinner):
                self.binner = EventBinner(self.card.n_channels, B / m["speed"], self.grace)
            return self.binner.anchor(origin, now, B / m["speed"])
        if not isinstance(self.binner, CountsBinner):
            self.binner = CountsBinner(self.card.n_channels, B / m["speed"], m["rate"] * m["speed"], self.max_count)
        self.binner.anchor(origin, m["rate"] * m["speed"], B / m["speed"])
        return []

    def _close_input(self) -> None:
        if self.inlet is not None:
            self.clock_offset.close()
            try:
                self.inlet.close_stream()
            except Exception:
                pass
            self.inlet = None

    def _reconnect(self, lsl: Any) -> list[Bin]:
        """The source vanished: wait for it (same source_id), reopen, re-check, count the gap."""
        t_lost = lsl.local_clock()
        sid = self.info.source_id()
        log.warning("input %r lost; waiting for source_id %r to come back", self.info.name(), sid)
        if self._session_log:
            self._session_log.event("lost", t_lost, source_id=sid)
        held = self.binner.flush() if self.binner is not None else []
        if held:  # bins the source delivered before it vanished: decoded now, never dropped
            self._process(held, lsl.local_clock)
        old = self.info
        self._close_input()
        while not self._stop.is_set():
            found = L.resolve_again(old, 0.5)
            if found is not None:
                try:
                    self._open_input(found)
                    break
                except ConnectionError as e:  # the stream went away again while opening
                    log.warning("reconnect failed (%s); retrying", e)
            if self.reconnect_timeout is not None and lsl.local_clock() - t_lost > self.reconnect_timeout:
                raise StreamError(f"stream {old.name()!r}: lost and not back after {self.reconnect_timeout:g} s")
        if self.inlet is None:
            return []
        self.reconnects += 1
        self._jump, self._last_ts, self._t_data = 0.0, -math.inf, lsl.local_clock()  # a new source, a new clock
        gap = self._anchor(lsl.local_clock())
        log.warning("input %r back after %.2f s", self.info.name(), lsl.local_clock() - t_lost)
        if self._session_log:
            self._session_log.event("reconnected", lsl.local_clock(), down_s=round(lsl.local_clock() - t_lost, 4))
        return gap

    # ---- the loop ---------------------------------------------------------------------------
    def run(self, max_bins: int | None = None, duration_s: float | None = None) -> dict[str, Any]:
        """Resolve the input, check it, then loop until stop(), max_bins or duration_s; the calling
        thread runs at the requested priority until then and at its own again after."""
        with scheduling(self.priority) as got:
            self.priority = got
            return self._run(max_bins, duration_s)

    def _run(self, max_bins: int | None, duration_s: float | None) -> dict[str, Any]:
        lsl = L.pylsl()
        clock = lsl.local_clock
        card = self.card
        try:  # the input first: a run that cannot start announces nothing
            self._open_input(self._find_input())
        except ConnectionError as e:
            raise StreamError(str(e)) from None
        self._open_outputs()
        log.info("model %s: %d ch -> %s, bin %g ms, providers %s, budget %g ms, emit %s, %s priority; input %s",
                 self.model.path.name, card.n_channels, ",".join(card.outputs), card.bin_s * 1000,
                 ",".join(self.model.providers), self.budget_ms, self.emit, self.priority, self.input_desc)
        if self.log_path:
            adapt = {}
            if self.adapt:  # the log names the model the user gave; re-runs rebuild the adapting twin from it
                adapt = {"adapt": {k: v for k, v in self.adapt.items() if k != "every_s"}}
                self._adapt_every = max(1, round(self.adapt["every_s"] / card.bin_s))
            self._session_log = SessionLog(self.log_path, adapt | {
                "model": str(self.adapt["base_model"] if self.adapt else self.model.path),
                "model_sha256": self.adapt["base_model_sha256"] if self.adapt else file_sha256(self.model.path),
                "channels": card.channel_names, "outputs": card.outputs, "units": card.units, "bin_s": card.bin_s,
                "input": self.input_desc, "budget_ms": self.budget_ms, "emit": self.emit,
                "providers": self.model.providers})
        self.t_start = clock()
        t_stop = None if duration_s is None else self.t_start + duration_s
        next_status = self.t_start + self.status_every if self.status_every else math.inf
        pending = self._anchor(clock())
        next_check = self._t_data = clock()
        self._model_stat = self._stat_model()
        quiet_gc()
        self.ready.set()
        try:
            if pending:
                self._process(pending, clock)
            while not self._stop.is_set():
                now = clock()
                if (max_bins is not None and self.n_bins >= max_bins) or (t_stop is not None and now >= t_stop):
                    break
                timeout = 0.05
                dl = self.binner.next_deadline()
                if dl is not None:
                    timeout = min(timeout, max(0.0, dl - now))
                if t_stop is not None:
                    timeout = min(timeout, max(0.0, t_stop - now))
                if self.spin and self.binner.t_last_end is not None and self.binner.bin_s > 4 * self.spin:
                    # poll without blocking from `spin` before the next bin is due until `spin`
                    # after: the core stays awake, so data is picked up and run on a hot cache
                    due = self.binner.t_last_end + self.binner.bin_s
                    if due - self.spin <= now <= due + self.spin:
                        timeout = 0.0
                        if self.keep_warm and self._warmed_for != due:
                            self._warm_up()
                            self._warmed_for = due
                    elif now < due - self.spin:
                        timeout = min(timeout, due - self.spin - now)
                try:
                    _, ts = self.inlet.pull_chunk(timeout=timeout, max_samples=len(self._buf), dest_obj=self._buf,
                                                  min_samples=1, as_numpy=True)
                except L.LostError:
                    bins = self._reconnect(lsl)
                    if bins:
                        self._process(bins, clock, max_bins)
                    continue
                bins = []
                if len(ts):
                    ts = ts + (self.clock_offset.value - self._jump)
                    if ts[-1] - now > JUMP_S or ts[0] < self._last_ts - JUMP_S:
                        ts = self._clock_jump(ts, now)
                    self._last_ts = ts[-1]
                    self._t_data = now
                    if self._silent:
                        self._resumed(now)
                    bins = self.binner.feed(self._buf[: len(ts)], ts)
                elif timeout == 0.0:
                    os.sched_yield()  # spinning at FIFO priority must let liblsl's receiver threads run
                bins += self.binner.poll(clock())
                if bins:
                    self._process(bins, clock, max_bins)
                if now >= next_check:
                    next_check = now + 0.25
                    self._check(now)
                if clock() >= next_status:
                    next_status += self.status_every
                    s = self.summary()
                    log.info("%d bins, %d predictions, %d skipped, %d gap bins, %d misses, latency p50 %.2f p99 %.2f ms",
                             s["bins"], s["predictions"], s["skipped"], s["gap_bins"], s["misses"],
                             s["latency_ms"]["p50"], s["latency_ms"]["p99"])
        finally:
            self.t_end = clock()
            summary = self.summary()
            if self._session_log:
                self._session_log.event("stop", self.t_end, summary=summary)
                self._session_log.close()
                summary = self.summary()
            self._close_input()
            self.ready.set()
        return summary

    # ---- faults that do not stop the loop ------------------------------------------------------
    def _event(self, kind: str, t: float, **info: Any) -> None:
        if self._session_log is not None:
            self._session_log.event(kind, t, **info)

    def _clock_jump(self, ts: np.ndarray, now: float) -> np.ndarray:
        """Shift timestamps from the first jumped one on so they continue the grid we are on."""
        rate = self.meta["rate"] * self.meta["speed"]
        step = 1.0 / rate if rate > 0 else 0.0
        prev = np.r_[self._last_ts if math.isfinite(self._last_ts) else ts[0] - step, ts[:-1]]
        bad = np.flatnonzero((ts - now > JUMP_S) | (ts < prev - JUMP_S))
        f = int(bad[0]) if bad.size else 0
        jump = float(ts[f] - prev[f] - step) if (rate > 0 or ts[f] < prev[f]) else float(ts[f] - now)
        self._jump += jump
        self.clock_jumps += 1
        log.warning("input %r: timestamps jumped %+.3f s (source clock reset?); shifted back onto our grid, nothing "
                    "dropped", self.info.name(), jump)
        self._event("clock_jump", now, jump_s=round(jump, 6), before_bin=self.n_bins)
        ts = ts.copy()
        ts[f:] -= jump
        return ts

    def _resumed(self, now: float) -> None:
        self._silent = False
        log.warning("input %r resumed", self.info.name())
        self._event("resumed", now)

    def _stat_model(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.model.path)
            return st.st_ino, st.st_size, st.st_mtime_ns
        except OSError:
            return None

    def _check(self, now: float) -> None:
        """Every 0.25 s: a hung SpikeCounts source, a model file changed on disk."""
        if self.inlet is not None and self.meta["kind"] == "SpikeCounts" and not self._silent:
            limit = max(1.0, 10.0 / (self.meta["rate"] * self.meta["speed"]))
            if now - self._t_data > limit:
                self._silent = True
                self.silences += 1
                log.warning("input %r silent for %.1f s without closing (hung source?); waiting, its missing samples "
                            "will count as gap bins", self.info.name(), now - self._t_data)
                self._event("silent", now, since=round(self._t_data, 6))
        for name, outlet in ((self.output_name, self.out), (self.stats_name, self.stats_out)):
            if outlet is None:
                continue
            has = bool(outlet.have_consumers())
            if has != self._listened.get(name, False):
                if not has:
                    self.consumers_gone += 1
                    log.warning("outlet %r: its last consumer left; decoding and publishing continue", name)
                    self._event("consumers", now, outlet=name, present=False)
                self._listened[name] = has
        if not self.model_changed and self._stat_model() != self._model_stat:
            self.model_changed = True
            log.warning("model file %s changed on disk; this run keeps the model it loaded (sha256 in the session "
                        "log); restart to use the new one", self.model.path)
            self._event("model_changed", now)

    def _warm_up(self) -> None:
        """One throw-away step just before a bin is due (state restored): the weights and the
        session's buffers are in cache when the real bin arrives."""
        saved = dict(self.model.state)
        self.model.step(self._zeros)
        self.model.state = saved

    def _process(self, bins: list[Bin], clock, max_bins: int | None = None) -> None:
        """Drain the queue: every bin updates the state; stale ones skip the prediction."""
        self.queue.extend(bins)
        model, out = self.model, self.out
        while self.queue:
            if max_bins is not None and self.n_bins >= max_bins:
                self.queue.clear()
                return
            b = self.queue.popleft()
            i = self.n_bins
            self.n_bins += 1
            if self._reset.is_set():
                self._reset.clear()
                model.reset()
                self.resets += 1
                if self._session_log is not None:
                    self._session_log.event("reset", b.t_end, before_bin=i)
            backlog = len(self.queue)
            self.max_backlog = max(self.max_backlog, backlog)
            deadline = b.t_end + self.budget
            flags = []
            if b.gap:
                flags.append("gap")
                self.gap_bins += 1
            if b.partial:
                flags.append("partial")
            pred = None
            lat = math.nan
            if backlog and clock() > deadline:
                model.advance(b.counts)
                self.skipped += 1
                flags.append("skipped")
            else:
                t_seen = clock()
                pred = model.step(b.counts)
                t_ready = clock()
                miss = t_ready > deadline
                if self.emit == "fixed" and not miss:
                    wait_until(deadline, clock, min(self.spin, 0.0003) if self.priority == "realtime" else 0.0)
                out.push_sample(pred, b.t_end)
                lat = (clock() - b.t_end) * 1000.0
                self.latencies.append(lat)
                self.n_pred += 1
                if miss:
                    self.misses += 1
                    flags.append("miss")
                    if t_seen > deadline:  # the bin reached us after its deadline: upstream, not us
                        self.late_input += 1
            if self.stats_out is not None:
                self.stats_out.push_sample([i, lat, backlog, self.misses, self.skipped, self.gap_bins], b.t_end)
            if self.zeta_out is not None and i % self._zeta_every == 0:
                self.zeta_out.push_sample(model.state["zeta"][0, 0].ravel(), b.t_end)
            if self._session_log is not None:
                timing = None if pred is None else ((t_seen - b.t_end) * 1000.0, (t_ready - b.t_end) * 1000.0)
                self._session_log.bin(i, b.t_end, b.counts, pred, None if pred is None else lat, backlog, flags, b.bad,
                                      timing)
                if self.adapt and (i + 1) % self._adapt_every == 0:  # the aligner's state after this bin
                    self._session_log.event("adapt", b.t_end, after_bin=i, state=model.state["adapt"].ravel().tolist())

    # ---- report -----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        lat = np.frombuffer(self.latencies, dtype=np.float64) if len(self.latencies) else np.zeros(0)

        def pct(q: float) -> float:
            return float(np.percentile(lat, q)) if lat.size else math.nan

        bad = dict(self.binner.counters) if self.binner is not None else {}
        return {"bins": self.n_bins, "predictions": self.n_pred, "skipped": self.skipped, "gap_bins": self.gap_bins,
                "misses": self.misses, "misses_input_late": self.late_input, "reconnects": self.reconnects, "resets": self.resets, "max_backlog": self.max_backlog,
                "latency_ms": {"p50": pct(50), "p99": pct(99), "max": float(lat.max()) if lat.size else math.nan},
                "bad_values": bad, "budget_ms": self.budget_ms, "emit": self.emit,
                "providers": list(self.model.providers), "priority": self.priority, "input": self.input_desc,
                "clock_jumps": self.clock_jumps, "silences": self.silences, "model_changed": self.model_changed,
                "consumers_gone": self.consumers_gone,
                "run_id": self.run_id, "log": self._log_summary()}

    def _log_summary(self) -> dict[str, Any] | None:
        sl = self._session_log
        if sl is None:
            return None
        return {"path": str(sl.path), "bins_logged": sl.bins_logged if sl.error is None else sl.bins_at_error,
                "error": sl.error}


def format_summary(s: dict[str, Any]) -> str:
    lat = s["latency_ms"]
    bad = ", ".join(f"{k} {v}" for k, v in s["bad_values"].items() if v) or "none"
    return (f"{s['bins']} bins, {s['predictions']} predictions, {s['skipped']} skipped, {s['gap_bins']} gap bins, "
            f"{s['reconnects']} reconnects; latency p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms, "
            f"max {lat['max']:.3f} ms; {s['misses']} deadline misses at {s['budget_ms']:g} ms ({s['emit']}; "
            f"{s['misses_input_late']} with the input already late); "
            f"bad values: {bad}; providers {','.join(s['providers'])}"
            + (f"; faults: {s['clock_jumps']} clock jumps, {s['silences']} silences, {s['consumers_gone']} outlets "
               f"left without consumers{', model file changed on disk (kept the loaded one)' if s['model_changed'] else ''}"
               if s.get("clock_jumps") or s.get("silences") or s.get("model_changed") or s.get("consumers_gone") else "")
            + (f"; SESSION LOG FAILED after {s['log']['bins_logged']} bins ({s['log']['error']}): "
               f"{s['log']['path']} is truncated" if s.get("log") and s["log"].get("error") else ""))
