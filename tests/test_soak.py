"""`rt-decoder bench soak`, short: replay -> run -> consumer at high speed, every bin accounted for."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rt_decoder.runtime.soak import account, per_minute


def test_account_counts_lost_duplicated_late_and_skipped():
    B = 0.02
    t0 = 100.0
    ends = t0 + np.arange(10) * B
    stats = np.zeros((10, 6))
    stats[:, 1] = 1.0
    stats[7, 1] = np.nan  # bin 7 skipped (state only): not lost
    pred = np.r_[ends[:3], ends[4:7], ends[6], ends[8:]]  # bin 3 never arrived, bin 6 twice
    lat = np.full(len(pred), 0.001)
    lat[0] = 0.009  # one late at a 5 ms budget
    r = account(10, B, pred, lat, stats, ends, budget_ms=5.0)
    assert (r["lost"], r["duplicated"], r["late"], r["skipped"]) == (1, 1, 1, 1)
    stats[-1, 5] = 2  # two gap bins: samples the runtime never got are lost too
    assert account(10, B, pred, lat, stats, ends, budget_ms=5.0)["lost"] == 3
    rows = per_minute(np.array([0.0, 30.0, 61.0]), np.array([0.001, 0.002, 0.003]))
    assert [m["bins"] for m in rows] == [2, 1] and rows[1]["p50_ms"] == pytest.approx(3.0)


@pytest.mark.lsl
def test_short_soak_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "soak.json"
    p = subprocess.run([sys.executable, "-m", "rt_decoder.cli", "bench", "soak", "--bins", "400", "--speed", "8",
                        "--channels", "32", "--priority", "normal", "--json", str(out)],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    assert {"bins", "lost", "duplicated", "rss_growth_mb", "p50_ms", "p99_ms"} <= set(r)
    assert r["bins"] == 400 and r["lost"] == 0 and r["duplicated"] == 0
    assert r["received"] + r["skipped"] == 400 and r["log"]["bins_logged"] == 400
    assert np.isfinite(r["rss_growth_mb"]) and r["per_minute"]
    assert "lost 0, duplicated 0" in p.stdout
