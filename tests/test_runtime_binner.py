"""Binners: every model bin exactly once, gaps explicit, bad values fixed by the documented rule."""

from __future__ import annotations

import numpy as np

from rt_decoder.events import bin_events
from rt_decoder.runtime.binner import CountsBinner, EventBinner, sanitize_counts

D = 5


def _feed_all(binner, x, ts, chunk):
    out = []
    for a in range(0, len(ts), chunk):
        out += binner.feed(x[a:a + chunk], ts[a:a + chunk])
    return out


def test_counts_rebin_1khz_to_20ms_any_chunking():
    rng = np.random.default_rng(0)
    x = rng.poisson(0.05, size=(20 * 30, D))
    t0 = 1000.0
    ts = t0 + (np.arange(len(x)) + 1) / 1000 + rng.uniform(-2e-4, 2e-4, len(x))  # jittered stamps
    want = x.reshape(30, 20, D).sum(axis=1)
    for chunk in (1, 7, 20, 600):
        bins = _feed_all(CountsBinner(D, 0.02, 1000.0), x, ts, chunk)
        assert len(bins) == 30
        np.testing.assert_array_equal(np.array([b.counts for b in bins]), want)
        assert not any(b.gap or b.partial for b in bins)
        np.testing.assert_allclose([b.t_end for b in bins], ts[19::20])


def test_counts_origin_aligns_a_late_joiner_and_gaps_are_filled():
    origin = 50.0
    x = np.ones((200, D))
    ts = origin + (np.arange(200) + 1) / 1000
    b = CountsBinner(D, 0.02, 1000.0)
    b.anchor(origin)
    bins = b.feed(x[5:], ts[5:])  # joined 5 samples into bin 0
    assert bins[0].partial and bins[0].counts[0] == 15
    assert [bb.counts[0] for bb in bins[1:]] == [20] * 9
    # then 60 ms of samples never arrive: three whole bins are gaps, the next bin is complete
    ts2 = ts[-1] + 0.06 + (np.arange(40) + 1) / 1000
    bins2 = b.feed(np.ones((40, D)), ts2)
    assert [bb.gap for bb in bins2] == [True, True, True, False, False]
    assert all(bb.counts.sum() == 0 for bb in bins2[:3])
    np.testing.assert_allclose(np.diff([bb.t_end for bb in bins[-1:] + bins2]), 0.02, atol=1e-9)


def test_bad_values_rule():
    x = np.array([[1, np.nan, -3, 5000, np.inf]], np.float64)
    y, counts, per_row = sanitize_counts(x, max_count=1000)
    np.testing.assert_array_equal(y, [[1, 0, 0, 1000, 0]])
    assert counts == {"nan": 2, "negative": 1, "clipped": 1} and per_row.tolist() == [4]
    y, counts, _ = sanitize_counts(np.array([[-np.inf, 1.0]]), max_count=1000)
    assert counts == {"nan": 1, "negative": 0, "clipped": 0}, "-inf is one bad value, counted once"


def test_events_match_offline_binning_and_grace():
    rng = np.random.default_rng(1)
    origin, B = 10.0, 0.02
    times = np.sort(origin + rng.uniform(0, 1.0, 400))
    chans = rng.integers(0, D, 400)
    b = EventBinner(D, B, grace_s=0.003)
    b.anchor(origin, now=origin)
    out = []
    for a in range(0, 400, 37):
        b.feed(chans[a:a + 37, None], times[a:a + 37])
        out += b.poll(times[min(a + 36, 399)])  # the clock is where the last event is
    out += b.poll(origin + 1.0 + B)
    assert len(out) == 50
    want = bin_events(times, chans, B, n_channels=D, t_start=origin, t_stop=origin + 1.0).counts
    np.testing.assert_array_equal(np.array([o.counts for o in out]), want)
    # a bin is not closed before its end + grace
    b2 = EventBinner(D, B, grace_s=0.003)
    b2.anchor(origin, now=origin)
    assert b2.poll(origin + B + 0.002) == [] and len(b2.poll(origin + B + 0.003)) == 1


def test_events_late_and_out_of_range_are_counted():
    b = EventBinner(D, 0.02, grace_s=0.0)
    b.anchor(0.0, now=0.0)
    b.feed(np.array([[0], [D], [-1]]), np.array([0.001, 0.002, 0.003]))
    (first,) = b.poll(0.02)
    assert first.counts.sum() == 1 and first.bad == 2
    b.feed(np.array([[1]]), np.array([0.005]))  # its bin already closed
    assert b.counters == {"out_of_range": 2, "late": 1}
    # reconnect 0.1 s later: the missed bins come out as gaps
    gaps = b.anchor(0.0, now=0.125)
    assert len(gaps) == 5 and all(g.gap for g in gaps)
