"""`rt-decoder bench latency --channels A B`: one measurement per channel count, one table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.lsl, pytest.mark.slow]


def test_latency_table_per_channel_count(tmp_path):
    out = tmp_path / "scale.json"
    p = subprocess.run([sys.executable, "-m", "rt_decoder.cli", "bench", "latency", "--channels", "16", "40",
                        "--bins", "60", "--warmup-s", "0.2", "--priority", "normal", "--json", str(out)],
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["channels"] for r in rows] == [16, 40]
    for r in rows:
        assert r["bins_measured"] == 60 and r["step_us"]["p50"] > 0 and r["consumer_latency_ms"]["p99"] > 0
    table = p.stdout.splitlines()
    assert any(line.split()[:1] == ["16"] for line in table) and any(line.split()[:1] == ["40"] for line in table)
