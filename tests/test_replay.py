"""Replay: what goes on the wire (timestamps on a drift-free grid, labels, markers, real spike
times), read back by plain LSL consumers."""

from __future__ import annotations

import subprocess
import sys
import uuid

import numpy as np
import pytest

from rt_decoder.events import bin_index
from rt_decoder.recording import Recording, save_npz
from rt_decoder.runtime import lsl as L
from rt_decoder.runtime.player import Player, load_for_replay, start_bin_for
from rt_decoder.runtime.probe import Consumer, poisson_recording

pytestmark = pytest.mark.lsl


def _name() -> str:
    return "t" + uuid.uuid4().hex[:10]


def test_counts_behavior_markers_on_a_drift_free_grid():
    name = _name()
    rec = poisson_recording(150, 8, seed=1)
    player = Player(rec, name=name, speed=2.0, start_bin=start_bin_for(rec, start_s=1.0))
    spikes, beh, marks = Consumer(f"{name}-spikes"), Consumer(f"{name}-behavior"), Consumer(f"{name}-markers")
    assert L.desc_labels(beh.info) == ["pos_x", "pos_y"]
    assert float(L.desc_value(spikes.info, "bin_origin")) == player.origin
    player.start(wait_consumers_s=5.0)
    assert player.wait(10.0)
    spikes.wait_for(100, 2.0)
    marks.wait_for(3, 2.0)
    for c in (spikes, beh, marks):
        c.stop()
    x, ts, late = spikes.data()
    n = len(ts)
    assert n == 100  # from 1.0 s (bin 50) to the end
    np.testing.assert_array_equal(x, rec.counts[50:])
    np.testing.assert_allclose(ts, player.t0 + (np.arange(n) + 1) * player.Bs, atol=1e-9, rtol=0)
    # arrival vs. target: per-push lateness only, no accumulation across the run
    assert abs(np.median(late[-25:]) - np.median(late[:25])) < 1e-3
    y, yts, _ = beh.data()
    np.testing.assert_allclose(y, rec.behavior[50:], rtol=1e-6)
    np.testing.assert_array_equal(yts, ts)
    m, mts, _ = marks.data()
    labels = list(m[:, 0])
    assert labels[0] == "replay_start" and "trial_start 100" in labels and labels[-1] == "replay_end"
    k = labels.index("trial_start 100")
    assert mts[k] == pytest.approx(player.t0 + 50 * player.Bs, abs=1e-9)  # a trial starts at its bin's start


def test_events_from_real_spike_times_rebin_exactly(tmp_path):
    rng = np.random.default_rng(2)
    T, D, B = 60, 6, 0.02
    times = np.sort(rng.uniform(3.0, 3.0 + T * B, 500))
    chans = rng.integers(0, D, 500)
    path = tmp_path / "ev.npz"
    np.savez(path, spike_times=times, spike_channels=chans, bin_s=B)
    rec, spikes = load_for_replay(path)
    assert spikes is not None and rec.n_channels == D
    name = _name()
    player = Player(rec, name=name, fmt="events", spikes=spikes, speed=2.0)
    ev = Consumer(f"{name}-spikes")
    assert int(L.desc_value(ev.info, "n_channels")) == D
    player.start(wait_consumers_s=5.0)
    assert player.wait(10.0)
    ev.wait_for(int(rec.counts.sum()), 2.0)
    ev.stop()
    c, ts, _ = ev.data()
    origin = float(L.desc_value(ev.info, "bin_origin"))
    k = bin_index(ts, origin, player.Bs) - round((player.t0 - origin) / player.Bs)
    got = np.zeros_like(rec.counts)
    np.add.at(got, (k, c[:, 0].astype(int)), 1)
    np.testing.assert_array_equal(got, rec.counts)
    # the real spike times survive (up to the speed-up), not a re-spread of the counts
    offs = (ts - player.t0) * player.speed - k * B
    want = (times - spikes[2]) - bin_index(times, spikes[2], B) * B
    # (clamped 1e-4 of a bin away from the edges, so re-binning never depends on rounding)
    np.testing.assert_allclose(np.sort(offs), np.sort(want), atol=1e-4 * B + 1e-9)


def test_source_rate_splits_bins_exactly():
    name = _name()
    rec = poisson_recording(20, 5, seed=3)
    player = Player(rec, name=name, source_rate=1000.0, speed=4.0)
    sp = Consumer(f"{name}-spikes")
    assert sp.info.nominal_srate() == 1000.0
    player.start(wait_consumers_s=5.0)
    assert player.wait(10.0)
    sp.wait_for(400, 2.0)
    sp.stop()
    x, ts, _ = sp.data()
    assert len(x) == 400
    np.testing.assert_array_equal(x.reshape(20, 20, 5).sum(axis=1), rec.counts)
    np.testing.assert_allclose(np.diff(ts), player.Bs / 20, atol=1e-9)


def test_replay_command(tmp_path):
    path = save_npz(Recording(counts=np.ones((40, 3), np.int32), bin_s=0.05), tmp_path / "r.npz")
    name = _name()
    p = subprocess.run([sys.executable, "-m", "rt_decoder.cli", "replay", str(path), "--name", name, "--speed", "20"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "40 bins pushed" in p.stderr
    bad = subprocess.run([sys.executable, "-m", "rt_decoder.cli", "replay", str(tmp_path / "absent.npz")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "absent.npz" in bad.stderr
    odd = subprocess.run([sys.executable, "-m", "rt_decoder.cli", "replay", str(path), "--source-rate", "30"],
                         capture_output=True, text=True, timeout=60)
    assert odd.returncode == 2 and "does not split" in odd.stderr
