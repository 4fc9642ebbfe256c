"""The plot's data side without Qt: ring buffers and StreamWatcher over real LSL on loopback."""

from __future__ import annotations

import gc
import time
import uuid

import numpy as np
import pylsl
import pytest

from rt_decoder.plot.outputs import pick_position_columns
from rt_decoder.plot.ringbuffer import RingBuffer
from rt_decoder.plot.stats import StatsCounter, latency_values
from rt_decoder.plot.streams import CONNECTED, LOST, WAITING, StreamMeta, StreamWatcher
from rt_decoder.plot.synthetic import KIN_LABELS, KIN_UNITS, stream_info


def unique(prefix: str) -> str:
    """Stream names no other test (or helper running tests in parallel) will publish."""
    return f"test-plot-{prefix}-{uuid.uuid4().hex[:8]}"


def poll_until(w: StreamWatcher, cond, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        w.poll()
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"{w.name}: condition not met within {timeout} s (state {w.state!r})")


def test_ring_buffer_keeps_the_newest_samples_in_order():
    rng = np.random.default_rng(0)
    b = RingBuffer(capacity=50, channels=3)
    ref_x, ref_t = [], []
    t = 0.0
    for n in rng.integers(0, 23, size=60):  # chunks smaller and larger than what is left
        x = rng.normal(size=(n, 3)).astype(np.float32)
        ts = t + np.arange(n) * 0.01
        t += n * 0.01
        b.extend(ts, x)
        ref_x.append(x)
        ref_t.append(ts)
        all_x, all_t = np.concatenate(ref_x), np.concatenate(ref_t)
        got_t, got_x = b.last()
        assert len(b) == min(len(all_t), 50)
        np.testing.assert_array_equal(got_x, all_x[-50:])
        np.testing.assert_array_equal(got_t, all_t[-50:])
    assert b.total == len(all_t)
    got_t, got_x = b.last(7)
    np.testing.assert_array_equal(got_x, all_x[-7:])
    t_cut = all_t[-20]
    got_t, got_x = b.since(t_cut)
    np.testing.assert_array_equal(got_t, all_t[-20:])
    b.extend(np.arange(120.0), np.ones((120, 3)))  # one chunk larger than the capacity
    np.testing.assert_array_equal(b.last()[0], np.arange(70.0, 120.0))


def test_ring_buffer_rejects_wrong_shapes():
    b = RingBuffer(8, 2)
    with pytest.raises(ValueError, match="shape"):
        b.extend(np.zeros(3), np.zeros((3, 4)))
    with pytest.raises(ValueError):
        RingBuffer(0, 2)


def test_position_columns_prefer_named_pair():
    assert pick_position_columns(["vel_x", "vel_y", "pos_x", "pos_y"]) == (2, 3)
    assert pick_position_columns(["Cursor_Y", "cursor_x"]) == (1, 0)
    assert pick_position_columns(["f1", "f2", "f3"]) == (0, 1)
    assert pick_position_columns(["force"]) is None


@pytest.mark.lsl
def test_watcher_connects_receives_exact_samples_loses_and_reconnects():
    name = unique("dec")
    with StreamWatcher(name, window_s=5.0, clocksync=False) as w:
        w.poll()
        assert w.state == WAITING and w.buffer is None
        out = pylsl.StreamOutlet(stream_info(name, "Kinematics", KIN_LABELS, 50.0, units=KIN_UNITS, desc={"canvas_h": 8}))
        poll_until(w, lambda: w.state == CONNECTED)
        assert w.meta.labels == list(KIN_LABELS)
        assert w.meta.units == list(KIN_UNITS)
        assert w.meta.desc["canvas_h"] == "8"
        assert w.meta.column("POS_Y") == 1 and w.meta.column("nope") is None
        x = np.random.default_rng(1).normal(size=(120, 4)).astype(np.float32)
        ts = pylsl.local_clock() + np.arange(120) / 50.0
        out.push_chunk(x, ts)
        poll_until(w, lambda: w.buffer.total >= 120)
        got_t, got_x = w.buffer.last()
        assert w.buffer.total == 120
        np.testing.assert_array_equal(got_x, x)
        np.testing.assert_allclose(got_t, ts, atol=1e-6)
        assert w.rate == pytest.approx(50.0, rel=1e-6)

        del out
        gc.collect()
        poll_until(w, lambda: w.state == LOST)
        assert w.losses == 1
        out2 = pylsl.StreamOutlet(stream_info(name, "Kinematics", KIN_LABELS, 50.0))  # the source comes back
        poll_until(w, lambda: w.state == CONNECTED)
        assert w.connects == 2
        out2.push_sample(np.full(4, 7.0, dtype=np.float32))
        poll_until(w, lambda: w.buffer.total == 121)
        assert w.buffer.last(1)[1][0].tolist() == [7.0] * 4
        del out2


@pytest.mark.lsl
def test_watcher_reports_a_silent_stream_as_lost_and_recovers():
    name = unique("silent")
    out = pylsl.StreamOutlet(stream_info(name, "DecoderStats", ["latency_ms"], 50.0))
    with StreamWatcher(name, silence_s=0.3) as w:
        poll_until(w, lambda: w.state == CONNECTED)
        out.push_sample([1.0])
        poll_until(w, lambda: w.buffer.total == 1)
        poll_until(w, lambda: w.state == LOST, timeout=3.0)  # the outlet is alive but quiet
        out.push_sample([2.0])
        poll_until(w, lambda: w.state == CONNECTED, timeout=3.0)
        assert w.buffer.last()[1][:, 0].tolist() == [1.0, 2.0]
    del out


def _meta(labels: list[str], desc: dict[str, str] | None = None) -> StreamMeta:
    return StreamMeta(name="s", type="DecoderStats", channel_count=len(labels), nominal_srate=50.0, source_id="",
                      uid="u", hostname="h", labels=labels, units=[""] * len(labels), desc=desc or {})


def test_stats_counter_sums_flags_or_takes_running_totals():
    labels = ["latency_ms", "gap_bins", "deadline_miss", "skipped"]
    flags = np.array([[1.0, 0, 1, 0], [np.nan, 2, 0, 1], [2.0, 0, 1, 0]], dtype=np.float32)
    c = StatsCounter()
    c.update(_meta(labels), flags)
    c.update(_meta(labels), flags[:1])
    assert c.as_dict() == {"bins": 4, "deadline_miss": 3, "skipped": 1, "gap_bins": 2}
    totals = np.array([[1.0, 0, 4, 0], [np.nan, 2, 4, 1], [2.0, 2, 5, 1]], dtype=np.float32)
    c = StatsCounter()
    c.update(_meta(labels, {"totals": "deadline_miss,skipped,gap_bins"}), totals)  # as `rt-decoder run` sends
    assert c.as_dict() == {"bins": 3, "deadline_miss": 5, "skipped": 1, "gap_bins": 2}
    np.testing.assert_array_equal(latency_values(_meta(labels), flags), [1.0, 2.0])
    assert latency_values(_meta(["bin_index"]), flags[:, :1]) is None


def test_raster_from_counts_and_from_events_agree():
    from rt_decoder.plot.raster import raster_image

    rng = np.random.default_rng(2)
    now, d = 100.0, 5
    ts = now - 2.0 + (np.arange(100) + 1) * 0.02  # 50 Hz bin ends over the last 2 s
    counts = rng.poisson(0.7, (100, d)).astype(np.float32)
    meta = StreamMeta(name="s", type="SpikeCounts", channel_count=d, nominal_srate=50.0, source_id="", uid="",
                      hostname="", labels=[f"c{i}" for i in range(d)], units=[""] * d)
    img, t0, colw = raster_image(ts, counts, meta, now, 2.0)
    assert colw == pytest.approx(0.02) and img.shape == (100, d)
    assert img.sum() == counts.sum()
    # the same spikes as events: one sample per spike, channel index, timestamp inside its bin
    ev_t = np.repeat(ts - 0.01, counts.sum(axis=1).astype(int))
    ev_c = np.concatenate([np.repeat(np.arange(d), counts[k].astype(int)) for k in range(100)])
    ev_meta = StreamMeta(name="e", type="SpikeEvents", channel_count=1, nominal_srate=0.0, source_id="", uid="",
                         hostname="", labels=["channel"], units=[""], desc={"n_channels": str(d)})
    img_e, _, colw_e = raster_image(ev_t, ev_c[:, None].astype(np.float32), ev_meta, now, 2.0)
    assert img_e.shape == (500, d) and colw_e == pytest.approx(0.004)
    np.testing.assert_array_equal(img_e.sum(axis=0), counts.sum(axis=0))  # every spike on its channel


def test_ring_buffer_grows_keeping_its_samples():
    b = RingBuffer(4, 1)
    b.extend(np.arange(6.0), np.arange(6.0)[:, None])
    b.grow(10)
    assert b.capacity == 10 and b.total == 6
    np.testing.assert_array_equal(b.last()[0], [2.0, 3.0, 4.0, 5.0])
    b.extend(np.arange(6.0, 12.0), np.arange(6.0, 12.0)[:, None])
    np.testing.assert_array_equal(b.last()[1][:, 0], np.arange(2.0, 12.0))


@pytest.mark.lsl
def test_watcher_buffers_a_fast_irregular_stream_for_the_whole_window():
    name = unique("events")
    out = pylsl.StreamOutlet(stream_info(name, "SpikeEvents", ["channel"], pylsl.IRREGULAR_RATE, fmt=pylsl.cf_int32))
    with StreamWatcher(name, window_s=2.0, irregular_capacity=100, clocksync=False) as w:
        poll_until(w, lambda: w.state == CONNECTED)
        now = pylsl.local_clock()
        ts = now - 1.5 + np.arange(3000) * 0.0005  # 2 kHz of events over 1.5 s, inside the window
        for i in range(0, 3000, 500):
            out.push_chunk(np.arange(i, i + 500, dtype=np.int32)[:, None] % 96, ts[i : i + 500])
            poll_until(w, lambda i=i: w.buffer.total >= i + 500)
        assert len(w.buffer) == 3000 and w.buffer.capacity >= 3000
        np.testing.assert_array_equal(w.buffer.last()[1][:, 0], np.arange(3000) % 96)
    del out
