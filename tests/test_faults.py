"""Fault injection on the live runtime (issue 12): each fault over real LSL on loopback, real
ONNX Runtime, real files. For every fault: no crash, nothing that was received is lost, and the
fault is counted (summary) and logged (session log event).

Fast versions (seconds each); stream names carry a fresh uuid so parallel runs never meet.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from rt_decoder.runtime import lsl as L
from rt_decoder.runtime.loop import Runtime
from rt_decoder.runtime.player import Player
from rt_decoder.runtime.probe import Consumer, RuntimeThread, linear_model, poisson_recording
from rt_decoder.runtime.session_log import read_log, rerun_log
from rt_decoder.step_model import StepModel

pytestmark = pytest.mark.lsl

D = 24
B = 0.02
GRACE_MS = 100.0  # generous: on a loaded 2-core machine a pusher can wake tens of ms late


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return linear_model(tmp_path_factory.mktemp("m") / "m.onnx", n_channels=D, n_outputs=2, bin_s=B)


def _name() -> str:
    return "f" + uuid.uuid4().hex[:10]


def _outlet(name: str, **kw):
    return L.make_outlet(f"{name}-spikes", "SpikeCounts", [f"c{i}" for i in range(D)], 1.0 / B, fmt="int32",
                         source_id=f"test:{name}", **kw)


def _push_realtime(out, x: np.ndarray, t: float, shift: float = 0.0) -> float:
    """Push one bin per B seconds (timestamp = bin end on our clock, plus `shift`); returns the last end."""
    lsl = L.pylsl()
    for row in x:
        t += B
        while lsl.local_clock() < t:
            time.sleep(0.001)
        out.push_sample(row, t + shift)
    return t


def _assert_all_received(log, dec: Consumer) -> None:
    """Every prediction the runtime logged (from the consumer's first one on) reached the consumer once."""
    _, ts, _ = dec.data()
    want = log["t_end"][log["has_pred"]]
    want = want[want >= ts[0] - 1e-5]
    assert len(ts) == len(want) and np.allclose(np.sort(ts), want, atol=2e-6, rtol=0)


def _events(log) -> list[str]:
    return [e["event"] for e in log["events"]]


@pytest.mark.parametrize("fmt", ["counts", "events"])
def test_source_killed_and_restarted(model_path, tmp_path, fmt):
    name = _name()
    rec = poisson_recording(400, D, bin_s=B, seed=4)
    first = Player(rec, name=name, fmt=fmt, speed=2.0, duration_s=30 * B)
    # a long grace keeps the source's last event bin open when it dies: the runtime has its
    # events in hand, and must decode them rather than drop them when the source comes back
    grace = 1000.0
    rt = Runtime(model_path, f"{name}-spikes", output=f"{name}-dec", stats=None, budget_ms=1000.0, grace_ms=grace,
                 log_path=tmp_path / "s.jsonl")
    th = RuntimeThread(rt).start()
    dec = Consumer(f"{name}-dec")
    first.start(wait_consumers_s=5.0)
    assert first.wait(10.0)
    time.sleep(0.2)  # its last samples reach the runtime ...
    first.close()  # ... then it is killed: its last event bin is still open in the runtime
    time.sleep(0.6)
    second = Player(rec, name=name, fmt=fmt, speed=2.0, start_bin=100, duration_s=40 * B)
    second.start(wait_consumers_s=10.0)
    assert second.wait(10.0)
    time.sleep(0.3 + grace / 1000)
    summary = th.join()
    dec.stop()
    log = read_log(tmp_path / "s.jsonl")
    assert summary["reconnects"] == 1 and summary["gap_bins"] >= 10
    assert _events(log)[:2] == ["lost", "reconnected"] and log["complete"]
    # nothing received is lost: every spike of both sources is in the decoded bins, or counted
    # as late (events that reach a loaded machine after their bin closed: the documented rule)
    late = summary["bad_values"].get("late", 0)
    assert log["counts"].sum() + late == rec.counts[:30].sum() + rec.counts[100:140].sum()
    assert late <= 20
    _assert_all_received(log, dec)
    assert rerun_log(model_path, tmp_path / "s.jsonl")["exact"]


def test_source_hangs_without_closing(model_path, tmp_path):
    name = _name()
    out = _outlet(name)
    x = np.random.default_rng(1).poisson(0.6, size=(20, D)).astype(np.int32)
    rt = Runtime(model_path, f"{name}-spikes", output=f"{name}-dec", stats=None, budget_ms=1000.0,
                 log_path=tmp_path / "s.jsonl")
    th = RuntimeThread(rt).start()
    dec = Consumer(f"{name}-dec")
    out.wait_for_consumers(5.0)
    _push_realtime(out, x[:10], L.pylsl().local_clock())
    time.sleep(1.5)  # hung: the outlet stays, nothing is sent
    _push_realtime(out, x[10:], L.pylsl().local_clock())
    assert dec.wait_for(20, 5.0)
    time.sleep(0.1)
    summary = th.join()
    dec.stop()
    log = read_log(tmp_path / "s.jsonl")
    assert summary["silences"] == 1 and "silent" in _events(log) and "resumed" in _events(log)
    assert 60 <= summary["gap_bins"] <= 100  # ~1.5 s of 20 ms bins, counted as gap bins
    assert summary["bins"] == 20 + summary["gap_bins"]
    assert log["counts"].sum() == x.sum()
    data = ~np.array(["gap" in f for f in log["flags"]])
    np.testing.assert_array_equal(log["counts"][data], x)


def test_burst_of_10000_bins(model_path, tmp_path):
    name = _name()
    out = _outlet(name, max_buffered=600)
    n = 10_000
    x = np.random.default_rng(2).poisson(0.6, size=(n, D)).astype(np.int32)
    rt = Runtime(model_path, f"{name}-spikes", output=f"{name}-dec", stats=f"{name}-stats", budget_ms=5.0,
                 log_path=tmp_path / "s.jsonl")
    th = RuntimeThread(rt).start()
    stats = Consumer(f"{name}-stats")
    out.wait_for_consumers(5.0)
    t0 = L.pylsl().local_clock() - n * B  # 200 s of bins that all arrive at once
    for a in range(0, n, 1000):
        out.push_chunk(x[a:a + 1000], (t0 + (np.arange(a, a + 1000) + 1) * B).tolist())
    t_end = time.monotonic() + 120  # generous: the machine is shared
    while time.monotonic() < t_end and not (rt.n_bins >= n and stats.samples and stats.samples[-1][0] == n - 1):
        time.sleep(0.1)
    summary = th.join()
    stats.stop()
    assert summary["bins"] == n and summary["gap_bins"] == 0  # every bin absorbed, none invented
    ref = StepModel(model_path)
    ref.run(x)
    np.testing.assert_array_equal(rt.model.state["zeta"], ref.state["zeta"])
    assert summary["skipped"] >= n - 100 and summary["max_backlog"] >= 1000  # counted
    s, _, _ = stats.data()
    assert s[-1, 4] == summary["skipped"]
    log = read_log(tmp_path / "s.jsonl")
    assert log["complete"] and len(log["counts"]) == n and sum("skipped" in f for f in log["flags"]) == summary["skipped"]


def test_clock_jump_forward_and_back(model_path, tmp_path):
    name = _name()
    out = _outlet(name)
    x = np.random.default_rng(3).poisson(0.6, size=(30, D)).astype(np.int32)
    rt = Runtime(model_path, f"{name}-spikes", output=f"{name}-dec", stats=None, budget_ms=1000.0,
                 log_path=tmp_path / "s.jsonl")
    th = RuntimeThread(rt).start()
    dec = Consumer(f"{name}-dec")
    out.wait_for_consumers(5.0)
    t = _push_realtime(out, x[:10], L.pylsl().local_clock())
    t = _push_realtime(out, x[10:20], t, shift=5.0)  # the source's clock jumps 5 s ahead ...
    _push_realtime(out, x[20:], t)  # ... and back
    assert dec.wait_for(30, 5.0)
    summary = th.join()
    dec.stop()
    log = read_log(tmp_path / "s.jsonl")
    assert summary["clock_jumps"] == 2 and _events(log).count("clock_jump") == 2
    assert summary["bins"] == 30 and summary["gap_bins"] == 0  # no 250 invented gap bins, nothing dropped
    np.testing.assert_array_equal(log["counts"], x)
    _, _, lat = dec.data()
    assert np.all(np.abs(lat) < 0.5)  # timestamps stay on our clock: latency stays meaningful
    got, _, _ = dec.data()
    np.testing.assert_allclose(got, StepModel(model_path).run(x), atol=1e-6)


def _limit_file_size(limit: int):
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return pre


def test_disk_full_during_log(model_path, tmp_path):
    """The log's disk fills (ulimit -f): a loud warning, decoding and publishing go on, the
    summary is printed, and every reader knows the log is truncated."""
    name = _name()
    n = 300
    rec = poisson_recording(n, D, bin_s=B, seed=5)
    player = Player(rec, name=name, speed=4.0)
    log_path, summary_path = tmp_path / "s.jsonl", tmp_path / "summary.json"
    proc = subprocess.Popen([sys.executable, "-m", "rt_decoder.cli", "run", str(model_path), "--input", f"{name}-spikes",
                             "--output", f"{name}-dec", "--stats", "none", "--budget-ms", "60000", "--log", str(log_path),
                             "--json", str(summary_path), "--max-bins", str(n), "--status-every", "0"],
                            stderr=subprocess.PIPE, text=True, preexec_fn=_limit_file_size(40_000))
    try:
        dec = Consumer(f"{name}-dec", timeout=30.0)
        player.start(wait_consumers_s=10.0)
        assert player.wait(20.0)
        _, err = proc.communicate(timeout=60)  # it stops by itself after n bins
        dec.wait_for(n, 2.0)
    finally:
        if proc.poll() is None:
            proc.kill()
    dec.stop()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "LOGGING STOPPED" in err
    assert f"rt-decoder run: {n} bins, " in err and "SESSION LOG FAILED" in err
    summary = json.loads(summary_path.read_text())
    assert summary["bins"] == n and summary["log"]["error"] and summary["log"]["bins_logged"] < n
    assert summary["predictions"] == n - summary["skipped"]
    # publishing went on after the log failed (the last few may die with the outlet at exit)
    assert len(dec.stamps) >= summary["predictions"] - 3 and len(dec.stamps) > summary["log"]["bins_logged"] + 50
    assert os.path.getsize(log_path) <= 40_000
    log = read_log(log_path)
    assert not log["complete"] and "truncated" in log["truncated"] and len(log["counts"]) < n
    r = rerun_log(model_path, log_path)
    assert r["exact"] and not r["complete"]  # what is there is right, and known to be incomplete
    p = subprocess.run([sys.executable, "-m", "rt_decoder.cli", "evaluate", str(model_path), "--log", str(log_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "TRUNCATED LOG" in p.stdout


def test_truncated_log_states_bins_vs_found(model_path, tmp_path):
    from rt_decoder.runtime.session_log import SessionLog

    m = StepModel(model_path)
    log = SessionLog(tmp_path / "s.jsonl", {"channels": m.card.channel_names, "outputs": m.card.outputs})
    x = np.ones((10, D), np.float32)
    for i in range(10):
        log.bin(i, float(i), x[i], m.step(x[i]), 1.0, 0, [])
    log.close()
    assert read_log(tmp_path / "s.jsonl")["complete"]
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    (tmp_path / "cut.jsonl").write_text("\n".join(lines[:6] + lines[-1:]) + "\n")  # bins lost in the middle of the end
    r = read_log(tmp_path / "cut.jsonl")
    assert not r["complete"] and r["stated_bins"] == 10 and "states 10 bins, 5 found" in r["truncated"]
    (tmp_path / "noend.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    assert "no end record" in read_log(tmp_path / "noend.jsonl")["truncated"]


def test_consumer_gone(model_path, tmp_path):
    """A consumer process dies mid-session: the loop goes on, the consumers left get everything,
    and an outlet losing its last consumer is counted and logged."""
    name = _name()
    n = 100
    rec = poisson_recording(n, D, bin_s=B, seed=6)
    player = Player(rec, name=name, speed=2.0)
    rt = Runtime(model_path, f"{name}-spikes", output=f"{name}-dec", stats=f"{name}-stats", budget_ms=1000.0,
                 log_path=tmp_path / "s.jsonl")
    th = RuntimeThread(rt).start()
    other = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, pylsl\n"
        "for n in sys.argv[1:]:\n"
        "    s = pylsl.StreamInlet(pylsl.resolve_byprop('name', n, 1, 10)[0]); s.open_stream(5); globals()[n] = s\n"
        "print('ok', flush=True)\n"
        "while True: time.sleep(1)"), f"{name}-dec", f"{name}-stats"], stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "ok"
    dec = Consumer(f"{name}-dec")
    player.start(wait_consumers_s=5.0)
    assert dec.wait_for(n // 3, 10.0)
    other.kill()  # a consumer dies mid-session: the stats outlet is left with none
    other.wait(5)
    assert player.wait(10.0)
    assert dec.wait_for(n, 5.0), "the other consumer still gets every prediction"
    time.sleep(0.6)
    summary = th.join()
    dec.stop()
    assert summary["bins"] == n == summary["predictions"] and summary["skipped"] == 0
    assert summary["consumers_gone"] == 1
    gone = [e for e in read_log(tmp_path / "s.jsonl")["events"] if e["event"] == "consumers" and not e["present"]]
    assert [e["outlet"] for e in gone] == [f"{name}-stats"]


def test_outlet_name_taken(model_path, caplog):
    name = _name()
    lsl = L.pylsl()
    squatter = L.make_outlet(f"{name}-dec", "Kinematics", ["a", "b"], 50.0, source_id=f"someone-else:{name}")
    out = _outlet(name)
    with caplog.at_level("WARNING", logger="rt_decoder.runtime"):
        rt = Runtime(model_path, f"{name}-spikes", output=f"{name}-dec", stats=None, budget_ms=1000.0)
        th = RuntimeThread(rt).start()
    assert any("already on the network" in r.getMessage() and f"someone-else:{name}" in r.getMessage()
               for r in caplog.records)
    both = lsl.resolve_byprop("name", f"{name}-dec", 2, 5.0)
    ours = [i.source_id() for i in both if rt.run_id in i.source_id()]
    assert len(both) == 2 and len(ours) == 1  # distinguishable by source_id
    dec = Consumer(ours[0], prop="source_id")
    out.wait_for_consumers(5.0)
    x = np.random.default_rng(7).poisson(0.6, size=(10, D)).astype(np.int32)
    t0 = lsl.local_clock()
    out.push_chunk(x, [t0 + (i + 1) * B for i in range(10)])
    assert dec.wait_for(10, 5.0)
    th.join()
    dec.stop()
    np.testing.assert_allclose(dec.data()[0], StepModel(model_path).run(x), atol=1e-6)
    del squatter


def test_model_file_replaced_while_running(tmp_path):
    path = linear_model(tmp_path / "m.onnx", n_channels=D, n_outputs=2, bin_s=B, seed=0)
    want = StepModel(path)
    name = _name()
    out = _outlet(name)
    x = np.random.default_rng(8).poisson(0.6, size=(20, D)).astype(np.int32)
    rt = Runtime(path, f"{name}-spikes", output=f"{name}-dec", stats=None, budget_ms=1000.0, log_path=tmp_path / "s.jsonl")
    th = RuntimeThread(rt).start()
    dec = Consumer(f"{name}-dec")
    out.wait_for_consumers(5.0)
    t = _push_realtime(out, x[:10], L.pylsl().local_clock())
    os.replace(linear_model(tmp_path / "new.onnx", n_channels=D, n_outputs=2, bin_s=B, seed=1), path)
    time.sleep(0.6)
    _push_realtime(out, x[10:], t)
    assert dec.wait_for(20, 5.0)
    summary = th.join()
    dec.stop()
    np.testing.assert_allclose(dec.data()[0], want.run(x), atol=1e-6)  # the loaded session, throughout
    log = read_log(tmp_path / "s.jsonl")
    assert summary["model_changed"] and "model_changed" in _events(log)
    assert not rerun_log(path, tmp_path / "s.jsonl")["model_matches"]  # the file on disk is not the one that ran
