"""The simulated participant over real LSL on loopback: closes the loop, reacts to the *delayed*
cursor, is deterministic per seed, and its spikes re-bin in the runtime's binners."""

from __future__ import annotations

import json
import threading
import uuid

import numpy as np
import pytest

from rt_decoder.closedloop import streams as S
from rt_decoder.closedloop.participant import STALE_S as STALE
from rt_decoder.closedloop.participant import Participant, ParticipantConfig, ParticipantModel
from rt_decoder.runtime import lsl as L
from rt_decoder.runtime.binner import CountsBinner, EventBinner

pytestmark = pytest.mark.lsl


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class MiniTask(threading.Thread):
    """The smallest task: publishes <name>-state at 100 Hz with one target. With `oracle`, the cursor
    integrates the participant's <p>-intent (a perfect decoder); `jump=(t, xy)` moves the cursor at
    local time t (tests that the intention follows what was seen, when it was seen)."""

    def __init__(self, name: str, target=(8.0, 0.0), cursor=(0.0, 0.0), radius: float = 1.5, oracle: str | None = None,
                 duration: float = 3.0, source_id: str | None = None) -> None:
        super().__init__(daemon=True)
        self.lsl = L.pylsl()
        self.out = L.make_outlet(S.state_name(name), S.STATE_TYPE, S.STATE_LABELS, 100.0, units=S.STATE_UNITS,
                                 source_id=source_id or uid("mini-task"))
        self.target, self.cursor, self.radius = np.array(target, float), np.array(cursor, float), radius
        self.oracle, self.duration = oracle, duration
        self.jump: tuple[float, np.ndarray] | None = None
        self.jumped_at: float | None = None
        self.path: list[tuple[float, float, float]] = []
        self.acquired_at: float | None = None
        self.stop_flag = threading.Event()

    def run(self) -> None:
        inlet = None
        if self.oracle:
            found = self.lsl.resolve_bypred(f"name='{self.oracle}'", 1, 5.0)
            inlet = self.lsl.StreamInlet(found[0], max_buflen=5)
            inlet.open_stream(timeout=5.0)
        clock = self.lsl.local_clock
        t0 = clock()
        inside_since = None
        k = 0
        while not self.stop_flag.is_set() and clock() - t0 < self.duration:
            k += 1
            due = t0 + k * 0.01
            if due > clock():
                self.stop_flag.wait(due - clock())
            if inlet is not None:
                data, ts = inlet.pull_chunk(timeout=0.0)
                for v in data:
                    self.cursor = np.clip(self.cursor + 0.01 * np.asarray(v, float), -12, 12)
            t = clock()
            if self.jump is not None and self.jumped_at is None and t >= self.jump[0]:
                self.cursor = np.array(self.jump[1], float)
                self.jumped_at = t
            inside = float(np.hypot(*(self.cursor - self.target))) <= self.radius
            inside_since = (inside_since or t) if inside else None
            if inside_since is not None and t - inside_since >= 0.5 and self.acquired_at is None:
                self.acquired_at = inside_since
                if self.oracle:
                    break  # held: the trial is won
            code = S.STATE_HOLD if inside else S.STATE_REACH
            self.out.push_sample([*self.cursor, *self.target, self.radius, 1.0, float(code)], t)
            self.path.append((t, *self.cursor))


def collect(stream: str, seconds: float, lsl=None) -> tuple[np.ndarray, np.ndarray, object]:
    """Everything a stream sends for `seconds` after it is found: (samples, timestamps, info)."""
    lsl = lsl or L.pylsl()
    found = lsl.resolve_bypred(f"name='{stream}'", 1, 5.0)
    assert found, f"{stream} not visible"
    inlet = lsl.StreamInlet(found[0], max_buflen=30)
    info = inlet.info(timeout=5.0)
    inlet.open_stream(timeout=5.0)
    xs, ts = [], []
    t_end = lsl.local_clock() + seconds
    while lsl.local_clock() < t_end:
        d, t = inlet.pull_chunk(timeout=0.05)
        if t:
            xs.append(np.asarray(d))
            ts.append(np.asarray(t))
    t_drain = lsl.local_clock() + 0.5
    while lsl.local_clock() < t_drain:  # what is already on the way, while a finished source goes quiet
        d, t = inlet.pull_chunk(timeout=0.2)
        if not t:
            break
        xs.append(np.asarray(d))
        ts.append(np.asarray(t))
    return np.concatenate(xs), np.concatenate(ts), info


def participant(task: str, name: str, **kw) -> Participant:
    cfg = ParticipantConfig(task=task, name=name, wait_s=kw.pop("wait_s", 5.0), **kw)
    return Participant(cfg)


def test_oracle_decoder_closes_the_loop(tmp_path) -> None:
    """Intention -> perfect decoder -> cursor -> seen (delayed) -> intention: the cursor gets to the target and holds."""
    task, name = uid("t"), uid("p")
    p = participant(task, name, seed=3, log=str(tmp_path / "p.json"))
    mt = MiniTask(task, target=(8.0, 0.0), oracle=S.intent_name(name), duration=4.0)
    p.start()
    mt.start()
    mt.join(timeout=10)
    summary = p.close()
    assert mt.acquired_at is not None, f"cursor never held the target; last {mt.path[-1]}"
    path = np.array(mt.path)
    t_in = mt.acquired_at - path[0, 0]
    assert t_in < 2.5, f"took {t_in:.2f} s to reach an 8 cm target"
    # the path is the controller's: toward the target, not overshooting far
    assert path[:, 1].max() < 8.0 + 1.5 + 1.0
    log = json.loads((tmp_path / "p.json").read_text())
    assert log["status"] == "ended" and log["params"]["seed"] == 3 and log["params"]["visual_delay_ms"] == 100.0
    assert log["ticks_moving"] > 10 and summary["state_samples"] > 50


@pytest.mark.parametrize("delay_ms", [100.0, 300.0])
def test_intention_follows_the_delayed_cursor(delay_ms: float) -> None:
    """The cursor jumps past the target at t_j: the intention flips only when the jump is *seen*, delay later."""
    task, name = uid("t"), uid("p")
    lsl = L.pylsl()
    p = participant(task, name, noise=0.0, visual_delay_s=delay_ms / 1000.0, seed=1)
    mt = MiniTask(task, target=(8.0, 0.0), cursor=(0.0, 0.0), duration=3.0)
    mt.jump = (lsl.local_clock() + 1.5, np.array([12.0, 0.0]))
    p.start()
    mt.start()
    x, ts, _ = collect(S.intent_name(name), 2.5, lsl)
    mt.join(timeout=5)
    p.close()
    tj = mt.jumped_at
    assert tj is not None
    vx = x[:, 0]
    # from the first intention toward the target (finding the task stream takes longer on a loaded
    # machine) until the jump can have been seen
    assert (vx > 0).any()
    first_seen = ts[np.argmax(vx > 0)]
    assert first_seen < tj - 0.1, "the participant never saw the task before the jump"
    seen_before = (ts >= first_seen) & (ts < tj + delay_ms / 1000.0)
    after = ts >= tj + delay_ms / 1000.0 + 0.011
    assert seen_before.sum() >= 5 and after.sum() >= 5
    assert np.all(vx[seen_before] > 0), "intention changed before the jump could have been seen"
    assert np.allclose(vx[seen_before], 20.0, atol=1e-4)  # 4/s x 8 cm = 32 cm/s -> speed limit 20
    assert np.allclose(vx[after], 4.0 * (8.0 - 12.0), atol=1e-4)  # feedback from the new, seen cursor
    flip = ts[np.argmax(vx < 0)]
    assert tj + delay_ms / 1000.0 - 1e-6 <= flip <= tj + delay_ms / 1000.0 + 0.011


def test_controller_holds_still_inside_target_and_between_trials() -> None:
    m = ParticipantModel(ParticipantConfig(noise=2.0))
    state = np.array([8.5, 0.2, 8.0, 0.0, 1.5, 1.0, float(S.STATE_HOLD)])
    for k in range(5):
        assert not np.any(m.tick(k, state)[0])
    iti = np.array([3.0, 0.0, np.nan, np.nan, np.nan, 1.0, float(S.STATE_ITI)])
    assert not np.any(m.tick(5, iti)[0])
    assert not np.any(m.tick(6, None)[0])  # nothing seen yet
    reach = np.array([0.0, 0.0, 0.0, 8.0, 1.5, 2.0, float(S.STATE_REACH)])
    u = m.tick(7, reach)[0]
    assert u[1] > 10 and np.hypot(*u) <= 20.0 + 1e-9


def test_mouse_intent_steers_toward_pointer() -> None:
    m = ParticipantModel(ParticipantConfig(intent="mouse", gain=2.0))
    seen = np.array([1.0, 1.0, np.nan, np.nan, np.nan, 0.0, float(S.STATE_ITI)])
    u = m.tick(0, seen, pointer=np.array([3.0, -1.0]))[0]
    assert np.allclose(u, [4.0, -4.0])


def _states(n: int) -> list[np.ndarray | None]:
    """A varying seen-state sequence: nothing, reaching, holding, inter-trial."""
    out: list[np.ndarray | None] = []
    for k in range(n):
        if k < 3:
            out.append(None)
        elif k % 40 < 30:
            out.append(np.array([0.1 * (k % 40), 0.0, 8.0, 0.0, 1.5, 1.0, float(S.STATE_REACH)]))
        else:
            out.append(np.array([0.0, 0.0, np.nan, np.nan, np.nan, 1.0, float(S.STATE_ITI)]))
    return out


@pytest.mark.parametrize("encoding", ["cosine"])
def test_same_seed_same_spikes_model(encoding: str) -> None:
    def run(seed: int) -> np.ndarray:
        m = ParticipantModel(ParticipantConfig(encoding=encoding, seed=seed))
        return np.concatenate([m.tick(k, s)[1] for k, s in enumerate(_states(120))])

    a, b, c = run(7), run(7), run(8)
    assert a.sum() > 1000
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # --seed is the session's noise and spikes; --array-seed is the neurons: same array across sessions
    m7, m8 = ParticipantModel(ParticipantConfig(seed=7)), ParticipantModel(ParticipantConfig(seed=8))
    assert np.array_equal(m7.encoder.pd, m8.encoder.pd)
    assert not np.array_equal(m7.encoder.pd, ParticipantModel(ParticipantConfig(seed=7, array_seed=1)).encoder.pd)


def test_same_seed_same_spikes_over_lsl() -> None:
    """Three participants see the same (constant) task: the same seed gives the same spike bins, another does not."""
    task = uid("t")
    names = [uid("pa"), uid("pb"), uid("pc")]
    seeds = [11, 11, 12]
    lsl = L.pylsl()
    mt = MiniTask(task, target=(8.0, 4.0), cursor=(1.0, -2.0), duration=4.0)
    mt.start()
    ps = [participant(task, n, seed=s, duration_s=1.6) for n, s in zip(names, seeds)]
    results: dict[str, tuple] = {}

    def grab(n: str) -> None:
        results[n] = collect(S.spikes_name(n), 1.9, lsl)

    grabbers = [threading.Thread(target=grab, args=(n,)) for n in names]
    for g in grabbers:
        g.start()
    for p in ps:
        p.start(wait_consumers_s=5.0)
    for g in grabbers:
        g.join(timeout=15)
    sums = [p.close() for p in ps]
    mt.stop_flag.set()
    bins = []
    for p, n, s in zip(ps, names, sums):
        x, ts, _ = results[n]
        idx = np.round((ts - p.t0) * 1000.0).astype(int) - 1  # bin n ends at T0 + (n + 1) ms
        assert x.sum() == s["spikes"], "every pushed spike arrives"
        first = s["first_seen_tick"] * p.model.f
        bins.append({int(i): row for i, row in zip(idx, x) if i >= first})
    common = sorted(set(bins[0]) & set(bins[1]) & set(bins[2]))
    common = [i for i in common if i >= max(s["first_seen_tick"] for s in sums) * 10]
    assert len(common) > 500
    a = np.array([bins[0][i] for i in common])
    b = np.array([bins[1][i] for i in common])
    c = np.array([bins[2][i] for i in common])
    assert a.sum() > 1000
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def _runtime_origin(info) -> float:
    return float(L.desc_value(info, "bin_origin"))


def test_counts_rebin_in_runtime_binner() -> None:
    """1 kHz SpikeCounts -> the runtime's CountsBinner at 20 ms: every spike lands in a 20-sample bin."""
    task, name = uid("t"), uid("p")
    p = participant(task, name, seed=5, duration_s=1.0, wait_s=30.0)
    lsl = L.pylsl()
    res = {}
    g = threading.Thread(target=lambda: res.update(r=collect(S.spikes_name(name), 1.3, lsl)))
    g.start()
    p.start(wait_consumers_s=5.0)
    g.join(timeout=10)
    p.stop()
    x, ts, info = res["r"]
    assert info.type() == "SpikeCounts" and info.nominal_srate() == 1000.0 and info.channel_count() == 96
    assert L.desc_value(info, "encoding") == "cosine" and L.desc_value(info, "seed") == "5"
    # every parameter is in the desc: delay, gains, noise, channel count, rates, the tuning itself
    for key, want in {"visual_delay_ms": "100.0", "gain": "4.0", "noise": "1.5", "max_speed": "20.0", "n_channels": "96",
                      "source_rate": "1000.0", "control_rate": "100.0", "task": task, "drift_pd_deg_per_min": "0.0"}.items():
        assert L.desc_value(info, key) == want, key
    assert len(json.loads(L.desc_value(info, "tuning_baseline_hz"))) == 96
    assert L.desc_labels(info) == [f"ch{i}" for i in range(96)]
    assert len(ts) == 1000 and x.sum() == p.stats["spikes"]
    assert np.allclose(np.diff(ts), 0.001, atol=1e-6), "timestamps are the drift-free grid"
    binner = CountsBinner(96, 0.02, 1000.0)
    binner.anchor(_runtime_origin(info))
    out = binner.feed(x, ts)
    assert len(out) >= 49 and all(not b.gap for b in out)
    full = [b for b in out if not b.partial]
    assert len(full) >= 49
    assert sum(float(b.counts.sum()) for b in out) + binner.acc.sum() == x.sum()
    # bins end on the runtime's 20 ms grid from the announced origin
    ends = np.array([b.t_end for b in full])
    phase = ((ends - _runtime_origin(info)) / 0.02) % 1.0
    assert np.all(np.minimum(phase, 1 - phase) < 1e-3)
    assert 5.0 < x.sum() / 96 / 1.0 < 60.0  # cosine at rest: baselines 0-20 Hz (+ motor noise 0 at rest)
    p.close()


def test_events_rebin_in_runtime_binner() -> None:
    task, name = uid("t"), uid("p")
    p = participant(task, name, seed=5, duration_s=1.0, wait_s=30.0, fmt="events")
    lsl = L.pylsl()
    res = {}
    g = threading.Thread(target=lambda: res.update(r=collect(S.spikes_name(name), 1.3, lsl)))
    g.start()
    p.start(wait_consumers_s=5.0)
    g.join(timeout=10)
    p.stop()
    ch, ts, info = res["r"]
    assert info.type() == "SpikeEvents" and L.desc_value(info, "n_channels") == "96"
    assert len(ts) == p.stats["spikes"] > 100
    assert np.all(np.diff(ts) >= 0) and ch.min() >= 0 and ch.max() < 96
    binner = EventBinner(96, 0.02)
    binner.anchor(_runtime_origin(info), now=float(ts[0]))
    binner.feed(ch, ts)
    out = binner.poll(float(ts[-1]) + 1.0)
    assert sum(float(b.counts.sum()) for b in out) == len(ts)
    assert binner.counters == {"out_of_range": 0, "late": 0}
    p.close()


def test_missing_task_stream_is_one_clear_line(capsys) -> None:
    from rt_decoder.cli import main

    task = uid("nosuch")
    rc = main(["participant", "--task", task, "--name", uid("p"), "--wait", "0.5", "--duration", "60"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("rt-decoder participant: error: TaskState stream") and f"{task}-state" in err[-1]
    assert "not found after waiting 0.5 s" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_fit_file_without_behaviour_is_one_clear_line(tmp_path, capsys) -> None:
    from rt_decoder.cli import main

    f = tmp_path / "counts_only.npz"
    np.savez(f, counts=np.random.default_rng(0).poisson(1.0, (500, 8)).astype(np.int32), bin_s=np.float64(0.02))
    rc = main(["participant", "--encoding", f"fit:{f}", "--wait", "0.1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"rt-decoder participant: error: {f}: has no behaviour")


def test_bad_flags_are_one_clear_line(capsys) -> None:
    from rt_decoder.cli import main

    assert main(["participant", "--source-rate", "1050", "--wait", "0.1"]) == 2
    assert "multiple of the control rate" in capsys.readouterr().err
    assert main(["participant", "--encoding", "gauss", "--wait", "0.1"]) == 2
    assert "--encoding must be cosine or fit:FILE" in capsys.readouterr().err


class OracleDecoder(threading.Thread):
    """A perfect decoder: republishes the participant's <p>-intent as Kinematics vel_x, vel_y."""

    def __init__(self, name: str, participant: str) -> None:
        super().__init__(daemon=True)
        self.src = S.intent_name(participant)
        self.out = L.make_outlet(name, S.KINEMATICS_TYPE, list(S.VELOCITY_LABELS), 100.0, units=["cm/s", "cm/s"],
                                 source_id=uid("oracle"))
        self.stop_ev = threading.Event()

    def run(self) -> None:
        lsl = L.pylsl()
        found = lsl.resolve_bypred(f"name='{self.src}'", 1, 5.0)
        inlet = lsl.StreamInlet(found[0], max_buflen=5)
        inlet.open_stream(timeout=5.0)
        while not self.stop_ev.is_set():
            data, ts = inlet.pull_chunk(timeout=0.02)
            for v in data:
                self.out.push_sample(v, lsl.local_clock())


def test_real_task_with_oracle_decoder_succeeds(tmp_path) -> None:
    """rt-decoder's own task, the participant and a perfect decoder: every center-out trial succeeds."""
    from rt_decoder.closedloop.task import RunnerSettings, TaskConfig, TaskRunner

    task, name, dec = uid("t"), uid("p"), uid("oracle")
    p = participant(task, name, seed=2, until_done=True, log=str(tmp_path / "p.json"))
    p.start()
    oracle = OracleDecoder(dec, name)
    oracle.start()
    runner = TaskRunner(TaskConfig(task="center-out", n_trials=4, hold_s=0.3, timeout_s=5.0, iti_s=0.1, seed=1),
                        RunnerSettings(name=task, decoder=dec, wait_s=10.0, lead_s=0.5, out=tmp_path / "task"),
                        log=lambda s: None)
    summary = runner.run()
    p.wait(5.0)
    oracle.stop_ev.set()
    log = p.close()
    assert summary["trials"] == 4
    assert summary["success_rate"] == 1.0, summary
    assert log["done_seen"] and log["trials_seen"] >= 4 and log["status"] == "ended"
    assert (tmp_path / "task" / "trials.csv").exists()


def test_runtime_decodes_the_participant_bin_for_bin(tmp_path) -> None:
    """participant-spikes (1 kHz) -> `rt-decoder run` (20 ms model): every model bin the runtime logged
    holds exactly the spikes the participant sent in it, and each gets a prediction."""
    from rt_decoder.runtime.loop import Runtime
    from rt_decoder.runtime.probe import RuntimeThread, linear_model
    from rt_decoder.runtime.session_log import read_log

    model = linear_model(tmp_path / "m.onnx", n_channels=96, n_outputs=2, bin_s=0.02)
    task, name = uid("t"), uid("p")
    p = participant(task, name, seed=9, duration_s=1.0, wait_s=30.0)
    lsl = L.pylsl()
    res = {}
    g = threading.Thread(target=lambda: res.update(r=collect(S.spikes_name(name), 1.4, lsl)))
    g.start()
    rt = Runtime(model, S.spikes_name(name), output=uid("dec"), stats=None, budget_ms=1000.0, grace_ms=100.0,
                 log_path=tmp_path / "s.jsonl")
    th = RuntimeThread(rt).start()
    p.start(wait_consumers_s=5.0)
    g.join(timeout=10)
    p.stop()
    th.join()
    x, ts, info = res["r"]
    origin = float(L.desc_value(info, "bin_origin"))
    k = (np.round((ts - origin) * 1000.0).astype(int) - 1) // 20  # the model bin each 1 ms sample falls in
    log = read_log(tmp_path / "s.jsonl")
    full = [i for i, f in enumerate(log["flags"]) if "partial" not in f and "gap" not in f]
    assert len(full) >= 45
    kb = np.round((log["t_end"][full] - origin) / 0.02).astype(int) - 1
    for i, kk in zip(full, kb):
        assert np.array_equal(log["counts"][i], x[k == kk].sum(axis=0)), f"model bin {kk}"
    assert log["has_pred"][full].all()
    p.close()


def test_mouse_intent_over_lsl() -> None:
    """--intent mouse: the intention steers from the seen cursor toward the task window's pointer."""
    task, name = uid("t"), uid("p")
    lsl = L.pylsl()
    pointer = L.make_outlet(S.pointer_name(task), S.POINTER_TYPE, S.POINTER_LABELS, 100.0, units=S.POINTER_UNITS,
                            source_id=uid("pointer"))
    stop = threading.Event()

    def move_pointer() -> None:
        while not stop.is_set():
            pointer.push_sample([-3.0, 5.0], lsl.local_clock())
            stop.wait(0.01)

    pt = threading.Thread(target=move_pointer, daemon=True)
    pt.start()
    mt = MiniTask(task, target=(8.0, 0.0), cursor=(1.0, 1.0), duration=2.0)
    mt.start()
    p = participant(task, name, intent="mouse", gain=2.0, seed=1)
    p.start()
    x, ts, _ = collect(S.intent_name(name), 1.2, lsl)
    stop.set()
    p.close()
    moving = x[np.any(x != 0, axis=1)]
    assert len(moving) > 20
    assert np.allclose(moving[-10:], [2.0 * (-3.0 - 1.0), 2.0 * (5.0 - 1.0)], atol=1e-4)


def test_next_block_task_is_seen_again() -> None:
    """The task process ends and the next block's task (same source_id) starts: the participant
    holds still in between (nothing fresh seen) and, once liblsl has recovered the stream (~1 s),
    follows the new task's target."""
    task, name, sid = uid("t"), uid("p"), uid("task-sid")
    lsl = L.pylsl()
    p = participant(task, name, noise=0.0, seed=1)
    first = MiniTask(task, target=(8.0, 0.0), duration=0.8, source_id=sid)
    first.start()
    p.start()
    res = {}
    g = threading.Thread(target=lambda: res.update(r=collect(S.intent_name(name), 4.4, lsl)))
    g.start()
    first.join(timeout=5)
    first.out = None  # the block's task is gone
    time_gone = lsl.local_clock()
    threading.Event().wait(1.0)
    second = MiniTask(task, target=(0.0, -8.0), duration=3.0, source_id=sid)
    second.start()
    g.join(timeout=10)
    second.stop_flag.set()
    p.close()
    x, ts, _ = res["r"]
    gap = (ts > time_gone + 0.1 + STALE + 0.05) & (ts < time_gone + 1.05)
    assert gap.sum() > 5 and np.all(x[gap] == 0), "nothing fresh on screen: hold still"
    late = ts > ts[-1] - 0.3
    assert np.allclose(x[late], [0.0, -20.0], atol=1e-4), "the new block's target is followed"
